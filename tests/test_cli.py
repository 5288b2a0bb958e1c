"""The ``scoreda`` command line: listing, refusing bad parameters before anything runs, run
folders that are never overwritten, resuming, and reproducible result files."""

import json
import re
import subprocess
import sys

import pytest

from scoreda import cli
from test_notebooks import SMALL  # tests/ is on sys.path (pytest's rootdir-less import)

SMALL_06 = SMALL["06_hybrid_training.ipynb"]  # the notebook test's small sizes


def test_list_shows_every_notebook_with_its_parameters():
    done = subprocess.run([sys.executable, "-m", "scoreda.cli", "list"], capture_output=True,
                          text=True, check=True)
    for path in cli.notebooks():
        assert f"{path.stem}: {cli.title(path)}" in done.stdout
        for name, param in cli.parameters(path).items():
            assert f"    {name} = {param.default!r}" in done.stdout
    assert len(cli.notebooks()) >= 7


def test_the_paper_scale_sets_only_known_parameters_with_valid_values():
    """The sizes a notebook switches to at scale="paper" (its `if scale == "paper":` block)
    are parameters of that notebook, with values the command line would accept; the dry run
    prints them without executing anything."""
    changed = {}
    for path in cli.notebooks():
        overrides = cli.scale_overrides(path)
        cli.validate(path, overrides)  # SystemExit on an unknown name or a bad value
        changed[path.stem] = overrides
    assert changed["04_lorenz96_experiment"]["hidden"] == 128  # the paper's LSTM, 5 x 128
    assert changed["04_lorenz96_experiment"]["layers"] == 5
    assert changed["04_lorenz96_experiment"]["da_steps"] == 2500
    assert changed["02_kdv"] == {} and cli.scale_overrides(cli.find_notebook("04"), "book") == {}
    done = subprocess.run([sys.executable, "-m", "scoreda.cli", "reproduce", "--scale", "paper",
                           "--dry-run", "04", "02"], capture_output=True, text=True, check=True)
    assert "    layers: 1 -> 5" in done.stdout and "the same sizes at scale 'paper'" in done.stdout
    assert "nothing was executed" in done.stdout
    # chapter 4 is priced stage by stage (chapter 2 has no estimator), in hours or minutes
    estimate = done.stdout.split("estimated on this machine", 1)[1]
    for stage in ("training", "SSP and LTP", "comparison, surrogates", "comparison, true model", "in all"):
        assert re.search(rf"^ +{re.escape(stage)} +[\d.,]+ (min|h)", estimate, re.M), stage
    assert "6 LSTMs 5 x 128" in estimate and "windows every 10 steps" in estimate
    assert done.stdout.count("estimated on this machine") == 1


@pytest.mark.parametrize("args, message", [
    (["-p", "n_iteration", "3"], "no parameter n_iteration; allowed: n_steps, n_iterations"),
    (["-p", "n_iterations", "2.5"], "n_iterations must be an integer"),
    (["-p", "n_iterations", "many"], "n_iterations must be a number"),
    (["-p", "n_members", "-3"], "n_members must be a finite number > 0, got -3"),
    (["-p", "n_members", "0"], "n_members must be a finite number > 0, got 0"),
    (["-p", "seed", "-1"], "seed must be a finite number >= 0, got -1"),
    (["--name", "/abs/elsewhere"], "--name must be a plain folder name"),
    (["--name", "../up"], "--name must be a plain folder name"),
    (["-p", "scale", "huge"], "scale must be one of ['book', 'paper']"),
    (["-p", "ensf_eps_b", "0.1"], "ensf_eps_b must be a dict"),
])
def test_bad_parameters_are_refused_before_anything_runs(tmp_path, args, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        cli.main(["run", "06", "--runs", str(tmp_path)] + args)
    assert not any(tmp_path.iterdir())


def test_values_are_parsed_and_checked_against_the_defaults():
    params = cli.parameters(cli.find_notebook("04"))
    assert cli.check_value(params["lr_faithful"], 1) == 1.0  # an int is a fine float
    assert cli.check_value(params["scale"], "paper") == "paper"
    with pytest.raises(ValueError, match="'book', 'paper'"):
        cli.check_value(params["scale"], "gpu")
    assert cli.check_value(params["inflation_grid"], [1.0, 1.2]) == [1.0, 1.2]
    assert cli.check_value(params["seed"], 0) == 0
    assert cli.check_value(params["spin_up"], 0) == 0  # its comment says ">= 0": the paper's start
    with pytest.raises(ValueError, match="spin_up must be a finite number >= 0, got -1"):
        cli.check_value(params["spin_up"], -1)
    with pytest.raises(ValueError, match="ssp_tests must be a finite number > 0, got 0"):
        cli.check_value(params["ssp_tests"], 0)
    assert cli.parse_value("[1.1, 2]") == [1.1, 2] and cli.parse_value("paper") == "paper"
    with pytest.raises(SystemExit, match="no single notebook"):
        cli.find_notebook("99")
    # a path, as tab completion gives it, names the same notebook
    assert cli.find_notebook("notebooks/04_lorenz96_experiment.ipynb") == cli.find_notebook("04")


def test_an_existing_run_folder_is_not_overwritten(tmp_path):
    folder = tmp_path / "06_hybrid_training"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="exists; use --force"):
        cli.main(["run", "06", "--runs", str(tmp_path)])
    assert (folder / "keep.txt").read_text() == "mine"
    with pytest.raises(SystemExit, match="nothing to resume"):
        cli.main(["run", "06", "--runs", str(tmp_path), "--name", "other", "--resume"])


def test_run_records_say_failed_resumed_and_forced_truthfully(tmp_path, monkeypatch):
    """Without executing anything: a notebook error is recorded as "failed" with the error,
    --resume refuses other parameters, and --force removes the old run's results.json."""
    import papermill

    path = cli.find_notebook("02")
    folder = tmp_path / "run"

    def broken(*args, **kwargs):
        raise RuntimeError("d must be >= 4, got 3")

    monkeypatch.setattr(papermill, "execute_notebook", broken)
    with pytest.raises(RuntimeError):
        cli.run_notebook(path, {"seed": 1}, folder, progress=False)
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed" and "d must be >= 4, got 3" in record["error"]
    with pytest.raises(SystemExit, match=re.escape("['seed'] differ")):
        cli.run_notebook(path, {"seed": 2}, folder, resume=True, progress=False)
    (folder / "results.json").write_text("{}")  # as if an older run had completed here
    with pytest.raises(RuntimeError):
        cli.run_notebook(path, {"seed": 1}, folder, force=True, progress=False)
    assert not (folder / "results.json").exists()


def test_same_configuration_and_seed_give_identical_results_and_a_run_resumes(tmp_path, monkeypatch):
    """Notebook 06 (training and filtering) at a small size, twice, each with its own empty
    cache; the first run is interrupted once and resumed."""
    import papermill

    path = cli.find_notebook("06")
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "cache_a"))
    real = papermill.execute_notebook

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.run_notebook(path, SMALL_06, tmp_path / "a", progress=False)
    assert json.loads((tmp_path / "a" / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(papermill, "execute_notebook", real)
    cli.run_notebook(path, {}, tmp_path / "a", resume=True, progress=False)

    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "cache_b"))
    cli.run_notebook(path, SMALL_06, tmp_path / "b", progress=False)

    a, b = (json.loads((tmp_path / run / "results.json").read_text()) for run in "ab")
    assert a["parameters"] == SMALL_06 and a["versions"]["scoreda"] and a["versions"]["jax"]
    assert len(a["values"]) > 20 and a["values"] == b["values"]
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["status"] == "completed"
    # the interrupted attempt is kept, so the record's time covers both attempts
    attempt, = record["earlier_attempts"]
    assert attempt["status"] == "interrupted" and attempt["started"] <= attempt["ended"] <= record["started"]
    assert attempt["commit"] == record["versions"].get("commit")  # each attempt says what code ran
    assert record["effective_parameters"] == cli.effective_parameters(path) | SMALL_06
    assert record["command"] and record["machine"]["cpu_count"] >= 1
    from scoreda.experiments import records
    assert records.check(tmp_path / "a") == []
    done = records.Record(tmp_path / "a", record, a)
    assert done.summary()["attempts"] == 2 and done.wall_seconds() > 0
    with pytest.raises(SystemExit, match="is complete"):
        cli.run_notebook(path, {}, tmp_path / "a", resume=True, progress=False)
