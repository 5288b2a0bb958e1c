"""The student's path into the book, as the introduction and the README give it: a fresh
virtual environment, ``pip install ".[book]"`` from a copy of the repository (what a clone
or a downloaded archive holds), then ``scoreda run 01``, the first chapter at its defaults.
And ``environment.yml``, the conda path, lists what ``pyproject.toml`` requires (no conda
on the test machine: checked for content, not executed).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: what a student's copy of the repository needs to install and run a chapter
STUDENT_FILES = ["pyproject.toml", "README.md", "src", "notebooks"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].strip().lower()


def test_environment_yml_installs_what_pyproject_requires_with_the_same_pins():
    yaml = pytest.importorskip("yaml")
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert python.split("=")[1] >= project["requires-python"].lstrip(">=")
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip, "environment.yml must install the package itself"
    listed = {_name(r): r.replace(" ", "") for r in pip if r != "-e ."}
    wanted = project["dependencies"] + project["optional-dependencies"]["book"] + ["pytest>=8"]
    for requirement in wanted:
        requirement = requirement.split(";")[0].replace(" ", "")
        assert listed.get(_name(requirement)) == requirement, \
            f"environment.yml: {requirement} (pyproject.toml) is {listed.get(_name(requirement))}"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="the venv layout below is POSIX's")
def test_a_student_installs_with_pip_and_runs_chapter_one(tmp_path):
    """About a minute for the install (wheels from the registry) and half a minute for the
    chapter; the chapter's numbers land in results.json."""
    copy = tmp_path / "scoreda"
    copy.mkdir()
    for name in STUDENT_FILES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, copy / name,
                            ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", "tmp*.ipynb"))
        else:
            shutil.copy2(source, copy / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python, scoreda = env_dir / "bin" / "python", env_dir / "bin" / "scoreda"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    environ["SCOREDA_CACHE"] = str(tmp_path / "cache")
    install = subprocess.run([python, "-m", "pip", "install", "--quiet", ".[book]"], cwd=copy,
                             env=environ, capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    run = subprocess.run([scoreda, "run", "01", "--runs", str(tmp_path / "runs")], cwd=copy,
                         env=environ, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    folder = tmp_path / "runs" / "01_lorenz96"
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "completed"
    results = json.loads((folder / "results.json").read_text())
    assert results["values"], "chapter 1 glued no numbers"
    assert all(v is not None for v in results["values"].values()), results["values"]
    # the student's copy, not the repository's source, was imported
    where = subprocess.run([python, "-c", "import scoreda; print(scoreda.__file__)"], cwd=tmp_path,
                           env=environ, capture_output=True, text=True)
    assert str(env_dir) in where.stdout, where.stdout + where.stderr
