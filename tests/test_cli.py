"""The ``scoreda`` command line: listing, refusing bad parameters before anything runs, run
folders that are never overwritten, resuming, and reproducible result files."""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scoreda import chapters, cli, glued, runs
from test_notebooks import SMALL  # tests/ is on sys.path (pytest's rootdir-less import)

SMALL_06 = SMALL["06_hybrid_training.ipynb"]  # the notebook test's small sizes


def test_list_shows_every_notebook_with_its_parameters():
    done = subprocess.run([sys.executable, "-m", "scoreda.cli", "list"], capture_output=True,
                          text=True, check=True)
    for path in chapters.notebooks():
        assert f"{path.stem}: {chapters.title(path)}" in done.stdout
        for name, param in chapters.parameters(path).items():
            assert f"    {name} = {param.default!r}" in done.stdout
    assert len(chapters.notebooks()) >= 7


@pytest.mark.slow
def test_the_paper_scale_sets_only_known_parameters_with_valid_values():
    """The sizes a notebook switches to at scale="paper" (its `if scale == "paper":` block)
    are parameters of that notebook, with values the command line would accept; the dry run
    prints them without executing anything."""
    changed = {}
    for path in chapters.notebooks():
        overrides = chapters.scale_overrides(path)
        chapters.validate(path, overrides)  # SystemExit on an unknown name or a bad value
        changed[path.stem] = overrides
    assert changed["04_lorenz96_experiment"]["hidden"] == 128  # the paper's LSTM, 5 x 128
    assert changed["04_lorenz96_experiment"]["layers"] == 5
    assert changed["04_lorenz96_experiment"]["da_steps"] == 2500
    assert changed["02_kdv"] == {} and chapters.scale_overrides(chapters.find_notebook("04"), "book") == {}
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
    params = chapters.parameters(chapters.find_notebook("04"))
    assert chapters.check_value(params["lr_faithful"], 1) == 1.0  # an int is a fine float
    assert chapters.check_value(params["scale"], "paper") == "paper"
    with pytest.raises(ValueError, match="'book', 'paper'"):
        chapters.check_value(params["scale"], "gpu")
    assert chapters.check_value(params["inflation_grid"], [1.0, 1.2]) == [1.0, 1.2]
    assert chapters.check_value(params["seed"], 0) == 0
    assert chapters.check_value(params["spin_up"], 0) == 0  # its comment says "0 or more": the paper's start
    with pytest.raises(ValueError, match="spin_up must be a finite number >= 0, got -1"):
        chapters.check_value(params["spin_up"], -1)
    older = chapters.Parameter("burn_in", 10, "draws left out, >= 0")  # the older wording
    assert older.may_be_zero() and not chapters.Parameter("burn_in", 10, "draws").may_be_zero()
    for comment in ("members, 10 or more", "a rate, >= 0.5", "a width, >= 0.25"):
        assert not chapters.Parameter("n", 20, comment).may_be_zero(), comment
    for comment in ("steps, >= 0.", "a rate, >= 0.0", "a rate, 0.0 or more", "0 or more steps"):
        assert chapters.Parameter("n", 20, comment).may_be_zero(), comment
    with pytest.raises(ValueError, match="ssp_tests must be a finite number > 0, got 0"):
        chapters.check_value(params["ssp_tests"], 0)
    assert chapters.parse_value("[1.1, 2]") == [1.1, 2] and chapters.parse_value("paper") == "paper"
    with pytest.raises(SystemExit, match="no single notebook"):
        chapters.find_notebook("99")
    # a path, as tab completion gives it, names the same notebook
    assert chapters.find_notebook("notebooks/04_lorenz96_experiment.ipynb") == chapters.find_notebook("04")


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

    path = chapters.find_notebook("02")
    folder = tmp_path / "run"

    def broken(*args, **kwargs):
        raise RuntimeError("d must be >= 4, got 3")

    monkeypatch.setattr(papermill, "execute_notebook", broken)
    with pytest.raises(RuntimeError):
        runs.run_notebook(path, {"seed": 1}, folder, progress=False)
    record = json.loads((folder / "run.json").read_text())
    assert record["status"] == "failed" and "d must be >= 4, got 3" in record["error"]
    with pytest.raises(SystemExit, match=re.escape("['seed'] differ")):
        runs.run_notebook(path, {"seed": 2}, folder, resume=True, progress=False)
    (folder / "results.json").write_text("{}")  # as if an older run had completed here
    with pytest.raises(RuntimeError):
        runs.run_notebook(path, {"seed": 1}, folder, force=True, progress=False)
    assert not (folder / "results.json").exists()


@pytest.mark.slow
def test_same_configuration_and_seed_give_identical_results_and_a_run_resumes(tmp_path, monkeypatch):
    """Notebook 06 (training and filtering) at a small size, twice, each with its own empty
    cache; the first run is interrupted once and resumed."""
    import papermill

    path = chapters.find_notebook("06")
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "cache_a"))
    real = papermill.execute_notebook

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(papermill, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runs.run_notebook(path, SMALL_06, tmp_path / "a", progress=False)
    assert json.loads((tmp_path / "a" / "run.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(papermill, "execute_notebook", real)
    runs.run_notebook(path, {}, tmp_path / "a", resume=True, progress=False)

    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "cache_b"))
    runs.run_notebook(path, SMALL_06, tmp_path / "b", progress=False)

    a, b = (json.loads((tmp_path / run / "results.json").read_text()) for run in "ab")
    assert a["parameters"] == SMALL_06 and a["versions"]["scoreda"] and a["versions"]["jax"]
    assert len(a["values"]) > 20 and a["values"] == b["values"]
    record = json.loads((tmp_path / "a" / "run.json").read_text())
    assert record["status"] == "completed"
    # the interrupted attempt is kept, so the record's time covers both attempts
    attempt, = record["earlier_attempts"]
    assert attempt["status"] == "interrupted" and attempt["started"] <= attempt["ended"] <= record["started"]
    assert attempt["commit"] == record["versions"].get("commit")  # each attempt says what code ran
    assert record["effective_parameters"] == chapters.effective_parameters(path) | SMALL_06
    assert record["command"] and record["machine"]["cpu_count"] >= 1
    from scoreda.experiments import records
    assert records.check(tmp_path / "a") == []
    done = records.Record(tmp_path / "a", record, a)
    assert done.summary()["attempts"] == 2 and done.wall_seconds() > 0
    with pytest.raises(SystemExit, match="is complete"):
        runs.run_notebook(path, {}, tmp_path / "a", resume=True, progress=False)


# --- relations between parameters: the notebooks' `checks` cells -----------------------------

@pytest.mark.parametrize("notebook, args, message", [
    ("04", ["-p", "burn_in", "400"], "burn_in (400) must leave steps to score"),
    ("04", ["-p", "tuning_seeds", "[0]"], "tuning_seeds must differ from the reported trials"),
    ("04", ["-p", "tuning_seeds", "[50000]", "-p", "ssp_tests", "3"], "the SSP trajectories"),
    ("04", ["-p", "tuned_kalman", "['IEnKF']"], "tuned_kalman must name EnKF and/or LETKF"),
    ("05", ["-p", "burn_in", "117"], "burn_in (117) must leave snapshots to score"),
    ("05", ["-p", "n_observed", "101"], "n_observed must be between 1 and the 100 sensors"),
    ("03", ["-p", "burn_in", "300"], "burn_in (300) must be below n_cycles (250)"),
    ("08", ["-p", "tuning_seeds", "[3]"], "tuning_seeds [3] must differ from the evaluation twins"),
    ("06", ["-p", "case_burn_in", "150"], "case_burn_in (150) must be below case_steps (150)"),
    ("06", ["-p", "tuning_seeds", "[0]"], "tuning_seeds must differ from the reported trials (and the close calls') and"),
    ("09", ["-p", "thinning_strides", "[0, 10]"], "thinning_strides must be positive"),
    ("02", ["-p", "save_dt", "0.015"], "save_dt (0.015) must be a whole number of steps dt (0.01)"),
    ("02", ["-p", "save_dt", "1e-9"], "save_dt (1e-09) must be a whole number of steps dt (0.01)"),
    ("03", ["-p", "tuning_seeds", "[]"], "tuning_seeds must name at least one trajectory"),
    ("06", ["-p", "tuning_seeds", "[]"], "tuning_seeds must name at least one trajectory"),
])
def test_relations_between_parameters_are_refused_before_anything_runs(tmp_path, monkeypatch,
                                                                     notebook, args, message):
    """Each listed case ran for minutes, or "completed" with NaN results, before the
    notebooks' checks cells; now it is refused before a folder exists or a kernel starts."""
    import papermill

    def never(*args, **kwargs):
        raise AssertionError("papermill ran")

    monkeypatch.setattr(papermill, "execute_notebook", never)
    with pytest.raises(SystemExit, match=re.escape(message)):
        cli.main(["run", notebook, "--runs", str(tmp_path)] + args)
    assert not any(tmp_path.iterdir())


def test_every_checks_cell_is_plain_python_and_passes_at_both_scales():
    """One cell tagged `checks` per chapter, the first code cell after the parameters (so that
    papermill's injected values reach it before any import), with no import: the command
    line executes it as it is."""
    for path in chapters.notebooks():
        cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        tags = [c["metadata"].get("tags", []) for c in cells]
        assert "parameters" in tags[0] and "checks" in tags[1], path.name
        tree = ast.parse(chapters.checks_source(path))
        assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        chapters.check_relations(path, SMALL[path.name])  # the small sizes of the papermill test
        for scale in ("book", "paper"):
            namespace = chapters.check_relations(path, {"scale": scale})
            assert {k: namespace[k] for k in chapters.scale_overrides(path, scale)} == \
                chapters.scale_overrides(path, scale)


@pytest.mark.parametrize("notebook, experiment", [("04", "lorenz96"), ("05", "kdv")])
def test_the_scored_steps_the_checks_allow_are_those_the_harness_scores(notebook, experiment):
    """The largest burn_in the checks cell accepts leaves exactly one row of the trial that
    the harness (``rollout.case``) builds, and the next one is refused by both."""
    import importlib

    ex = importlib.import_module(f"scoreda.experiments.{experiment}")
    path = chapters.find_notebook(notebook)
    da_steps = 30
    namespace = chapters.check_relations(path, {"da_steps": da_steps, "burn_in": 0})
    assert namespace["window"] == ex.WINDOW
    rows = ex.make_truth(ex.DAConfig(n_steps=da_steps, spin_up=0), 0).states.shape[0] - (ex.WINDOW - 1)
    chapters.check_relations(path, {"da_steps": da_steps, "burn_in": rows - 1})
    with pytest.raises(SystemExit, match="must leave"):
        chapters.check_relations(path, {"da_steps": da_steps, "burn_in": rows})


def test_an_ambiguous_notebook_name_lists_its_matches_and_a_unique_part_is_enough():
    with pytest.raises(SystemExit, match=re.escape("2 match: 01_lorenz96, 04_lorenz96_experiment")):
        chapters.find_notebook("lorenz")
    assert chapters.find_notebook("hybrid").stem == "06_hybrid_training"
    with pytest.raises(SystemExit, match="known: 01_lorenz96"):
        chapters.find_notebook("nothing-like-it")


def test_results_carry_descriptions_units_and_nan_as_null():
    """``about`` quotes the sentence of the book that shows a number, with the unit printed
    after it; NaN is null in JSON, and a run where most numbers are NaN is not completed."""
    path = chapters.find_notebook("04")
    values = glued.glued_values(json.loads(path.read_text()))
    about = glued.describe_values(path, values)
    assert set(about) == set(values)
    assert about["transient_steps"]["unit"] == "steps" and about["transient_steps"]["shown"]
    assert "The transient lasts {value} steps" in about["transient_steps"]["description"]
    assert about["authors_clip_share"]["unit"] == "%"
    shown = [a for a in about.values() if a["shown"]]
    assert len(shown) > 60 and all("{value}" in a["description"] for a in shown)
    assert glued._json_number("nan") is None and glued._json_number(float("nan")) is None
    assert glued._json_number(float("-inf")) == "-inf" and glued._json_number(0.5) == 0.5
    assert glued._nan_names({"a": "nan", "b": 1.0, "c": "text", "d": float("nan")}) == (["a", "d"], 3)


@pytest.mark.parametrize("n_nan, status", [(1, "completed"), (2, "failed")])
def test_a_run_whose_numbers_are_mostly_nan_is_failed(tmp_path, monkeypatch, n_nan, status):
    """Chapter 2 glues three numbers; the executed notebook is faked with some of them NaN.
    One NaN of three: completed, the NaN named in run.json and null in results.json; two:
    failed, with a SystemExit that names them (it once ended "completed" with NaN results)."""
    import papermill

    path = chapters.find_notebook("02")

    def fake_execute(source, output, **kwargs):
        executed = json.loads(Path(source).read_text())
        names = []
        for cell in executed["cells"]:
            for out in cell.get("outputs", []):
                record = out.get("metadata", {}).get("scrapbook")
                if record and len(names) < n_nan:
                    out["data"][record["mime_prefix"] + "text/plain"] = "nan"
                    names.append(record["name"])
        Path(output).write_text(json.dumps(executed))

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    folder = tmp_path / "run"
    if status == "failed":
        with pytest.raises(SystemExit, match="2 of the 3 numbers the notebook glued are NaN"):
            runs.run_notebook(path, {}, folder, progress=False)
    else:
        runs.run_notebook(path, {}, folder, progress=False)
    record = json.loads((folder / "run.json").read_text())
    results = json.loads((folder / "results.json").read_text())
    assert record["status"] == status
    assert sum(v is None for v in results["values"].values()) == n_nan
    if status == "completed":
        assert record["nan_results"] == [k for k, v in results["values"].items() if v is None]
    assert set(results["about"]) == set(results["values"])


def test_a_wrapped_parameter_comment_is_read_whole(tmp_path):
    """A comment continued on comment-only lines in the same column belongs to the
    assignment above (its choices included); a comment in another column does not."""
    cell = ('x = ["a"]  # choices: "a",\n'
            '           # "b" and "c"\n'
            '# a note about y, not x: "z"\n'
            'y = 1  # a size\n'
            '       # continued\n')
    nb = {"cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": cell,
                     "outputs": [], "execution_count": None}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "99_toy.ipynb"
    path.write_text(json.dumps(nb))
    params = chapters.parameters(path)
    assert params["x"].comment == 'choices: "a", "b" and "c"'
    assert params["y"].comment == "a size continued"
    assert chapters.check_value(params["x"], ["c"]) == ["c"]
    with pytest.raises(ValueError):
        chapters.check_value(params["x"], ["z"])
    # the book's own: chapter 4's tuned_kalman lists "LETKF-tan" on its third comment line
    ch4 = chapters.parameters(chapters.find_notebook("04"))
    assert chapters.check_value(ch4["tuned_kalman"], ["LETKF-tan"]) == ["LETKF-tan"]
