"""The book's notebooks: structure, a papermill run at small sizes, and the book build.

nbval re-executes every notebook at its stored defaults (``pytest --nbval-lax notebooks``,
see scripts/test.sh) and compares the cells marked ``# NBVAL_CHECK_OUTPUT``. The tests here
check what nbval does not: that each notebook has a ``parameters`` cell, that papermill can
override its parameters, and that the book builds without a warning.
"""

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: Small parameters for the papermill run of each notebook (seconds, not minutes).
SMALL = {
    "01_lorenz96.ipynb": dict(n_steps=200, n_trajectories=4, lyapunov_time=20.0, climate_time=50.0),
    "02_kdv.ipynb": dict(t_final=20.0, n_initial_conditions=3),
    "03_ensemble_score_filter.ipynb": dict(n_members_toy=100, n_steps=50, n_cycles=30, burn_in=10,
                                           n_knob_cases=1, n_trials=2, close_call_trials=1,
                                           tuning_seeds=[101]),
    "04_lorenz96_experiment.ipynb": dict(n_traj_sufficient=6, n_traj_insufficient=3, epochs=1,
                                         samples_per_epoch=1024, da_steps=60, burn_in=10,
                                         n_members=10, ensf_steps=10, n_trials=2,
                                         close_call_trials=1, tuning_seeds=[999], eps_b_grid=[0.05],
                                         inflation_grid=[1.1], model_error_grid=[0.0],
                                         radius_grid=[2.0]),
    "05_kdv_experiment.ipynb": dict(n_traj_standard=3, n_traj_insufficient=2, epochs=1,
                                    samples_per_epoch=512, da_steps=30, burn_in=5, n_members=8,
                                    ensf_steps=10, n_trials=2, close_call_trials=1, tuning_seeds=[999],
                                    eps_b_grid=[0.01], inflation_grid=[1.1], model_error_grid=[0.1],
                                    radius_grid=[2.0], convergence_steps=[10]),
    "06_hybrid_training.ipynb": dict(n_steps=200, n_iterations=1, n_members=10, ensf_steps=10,
                                     epochs_initial=1, epochs_retrain=1, n_starts=10,
                                     case_steps=60, case_burn_in=10, n_trials=2, close_call_trials=1,
                                     tuning_seeds=[101],
                                     eps_b_grid=[0.025], inflation_grid=[1.2],
                                     model_error_grid=[0.3], radius_grid=[2.0]),
    "07_scaling.ipynb": dict(d_grid=[100, 1000, 10000], n_grid=[10, 20], d_for_n=1000,
                             timing_steps=5, repeats=1, storage_d=1000, storage_steps=50,
                             reference_d=10000, reference_cycles=2),
    "08_closing_the_gap.ipynb": dict(n_cycles=30, burn_in=10, n_trials=2, close_call_trials=1,
                                     tuning_seeds=[101],
                                     ensf_steps=20, known_answer_members=200,
                                     regimes=["linear, half observed"]),
    "09_paper_numbers.ipynb": dict(thinning_strides=[1, 10], thinning_seeds=[0], thinning_trajectories=8,
                                   thinning_epochs=1, thinning_samples=1024, thinning_tests=2),
}

#: notebooks that tests/test_cli.py already runs through papermill with SMALL's parameters
#: (twice, and interrupted once): not run a third time here
RUN_BY_THE_CLI_TEST = {"06_hybrid_training.ipynb"}


def parameters_of(path: Path) -> dict:
    """Names and default values assigned in the notebook's cell tagged ``parameters``."""
    cells = json.loads(path.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}"
    tree = ast.parse("".join(tagged[0]["source"]))
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def test_every_notebook_is_registered_and_stored_executed():
    assert NOTEBOOKS, "no notebooks found"
    assert {p.name for p in NOTEBOOKS} == set(SMALL)
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]
        assert all(c.get("execution_count") for c in code), f"{path.name} is not stored executed"
        assert not any(o.get("output_type") == "error" for c in code for o in c.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_through_papermill_with_small_parameters(path, tmp_path, monkeypatch):
    defaults = parameters_of(path)
    small = SMALL[path.name]
    unknown = set(small) - set(defaults)
    assert not unknown, f"{path.name} has no parameters {unknown}"
    if path.name in RUN_BY_THE_CLI_TEST:
        pytest.skip("run through papermill with these parameters by tests/test_cli.py")
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "cache"))  # the kernel inherits it
    papermill = pytest.importorskip("papermill")
    assert defaults.get("scale") == "book"
    out = tmp_path / path.name
    papermill.execute_notebook(
        str(path), str(out), parameters=small, cwd=str(path.parent), kernel_name="python3",
        progress_bar=False,
    )
    executed = json.loads(out.read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected, "papermill did not inject the parameters"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_glued_markdown_holds_no_raw_latex(path):
    """Text glued as Markdown and shown with ``{glue:md}`` inside a sentence is not typeset:
    a ``$x_1$`` there reaches the reader as raw LaTeX (chapter 3 once did); write x₁."""
    raw = []
    for cell in json.loads(path.read_text())["cells"]:
        for out in cell.get("outputs", []):
            text = "".join(out.get("data", {}).get("application/papermill.record/text/markdown", ""))
            if "$" in text:
                raw.append((out["metadata"]["scrapbook"]["name"], text[:80]))
    assert not raw, f"{path.name}: glued Markdown with LaTeX: {raw}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_sees_every_parameter(path):
    """``papermill --help-notebook`` and ``inspect_notebook`` list every parameter: papermill
    drops a line it cannot parse (a comment holding ``=``, as ``>= 0`` once did) silently."""
    import papermill

    assert sorted(papermill.inspect_notebook(str(path))) == sorted(parameters_of(path))


@pytest.mark.slow
def test_book_builds_without_warnings(built_book):
    returncode, log, html = built_book
    assert returncode == 0, log
    pages = ["book/intro.html", "book/bibliography.html", "book/performance.html",
             "book/theory.html", "book/reproduce.html"]
    pages += [f"notebooks/{p.stem}.html" for p in NOTEBOOKS]
    pages += [f"book/api/{p.stem}.html" for p in (ROOT / "book" / "api").glob("*.md")]
    for page in pages:
        assert (html / page).is_file(), page


def test_lab_times_page_matches_the_stored_notebooks(load_script):
    """book/lab_times.md (the introduction's lab table) is regenerated from the notebooks'
    papermill records by scripts/lab_times.py; a stale page fails here."""
    assert (ROOT / "book" / "lab_times.md").read_text() == load_script("lab_times").render(), \
        "run: python scripts/lab_times.py"



def test_the_executor_runs_two_chapters_at_once_and_a_reuser_after_its_source(load_script,
                                                                            monkeypatch):
    """scripts/execute_notebooks.py --jobs 2 (processes faked, each finishing after a few
    polls): never more than two at once, every chapter once, chapter 8 only after chapter 3
    has finished (it reuses chapter 3's cached comparisons) and 9 after 4; chapters 7 and 9,
    which measure time, with no other beside them; a failed chapter is counted and does not
    stop the others."""
    ex = load_script("execute_notebooks")
    by_number = {p.name[:2]: p for p in ex.NOTEBOOKS}
    assert all(k in by_number and set(v) <= set(by_number) for k, v in ex.AFTER.items())
    events, running = [], set()

    class FakeProcess:
        def __init__(self, command):
            self.name = Path(command[-1]).name[:2]
            self.polls, self.returncode = 0, None
            running.add(self.name)
            assert len(running) <= 2, running
            # a chapter that measures time runs with no other beside it
            assert len(running) == 1 or not running & set(ex.ALONE), running
            events.append(("start", self.name))

        def poll(self):
            self.polls += 1
            if self.polls < 3:
                return None
            if self.returncode is None:
                self.returncode = 1 if self.name == "05" else 0
                running.discard(self.name)
                events.append(("end", self.name))
            return self.returncode

    monkeypatch.setattr(ex.subprocess, "Popen", FakeProcess)
    monkeypatch.setattr(ex.time, "sleep", lambda s: None)
    assert ex.run_parallel(list(ex.NOTEBOOKS), 2) == 1  # chapter 5 "failed"
    started = [n for kind, n in events if kind == "start"]
    assert sorted(started) == sorted(by_number)
    for later, sources in ex.AFTER.items():
        for source in sources:
            assert events.index(("end", source)) < events.index(("start", later))
    assert ex.ready(by_number["08"], [by_number["05"]])
    assert not ex.ready(by_number["08"], [by_number["03"]])


def test_the_executor_gives_its_kernels_one_new_compilation_cache(load_script, monkeypatch,
                                                                 tmp_path):
    """As scripts/test.sh does for CI: a new, empty folder for the run's XLA programs
    (inherited by the kernels through the environment), or the one the caller set."""
    ex = load_script("execute_notebooks")
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"):
        monkeypatch.setenv(name, "")  # so that monkeypatch restores the caller's value
        monkeypatch.delenv(name)
    monkeypatch.setattr(ex.tempfile, "tempdir", str(tmp_path))
    folder = ex.use_compilation_cache()
    assert Path(folder).is_dir() and not any(Path(folder).iterdir())
    assert Path(folder).parent == tmp_path
    assert ex.os.environ["JAX_COMPILATION_CACHE_DIR"] == folder
    assert ex.os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0.2"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert ex.use_compilation_cache() == str(tmp_path / "mine")

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_chapter_opens_with_objectives_prerequisites_and_its_measured_lab_time(path, load_script):
    """The card after the title (a cell tagged ``chapter-card``): what the reader will do,
    what to know first, and the lab-time line, which scripts/lab_times.py writes from the
    notebook's own papermill duration and exercise count (a stale line fails here)."""
    lab_times = load_script("lab_times")
    cells = json.loads(path.read_text())["cells"]
    assert "chapter-card" in cells[1]["metadata"].get("tags", []), f"{path.name}: no card after the title"
    card = "".join(cells[1]["source"])
    assert "**You will** " in card and "**Prerequisites.** " in card
    expected = lab_times.card_lines()[path.stem]
    assert lab_times.stored_card_line(json.loads(path.read_text())) == expected, \
        "run: python scripts/lab_times.py"
    minutes = json.loads(path.read_text())["metadata"]["papermill"]["duration"] / 60
    assert f"Executes in {minutes:.1f} min" in expected


#: chapters whose pages are about their results: every code cell but the parameters sits
#: behind a toggle (hide-input); chapters 1-3 and 7 teach with their code, which stays in view
RESULT_CHAPTERS = ("04", "05", "06", "08", "09")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_hold_no_stray_warnings_or_reprs_and_plumbing_is_folded(path):
    """No stored output on stderr (warnings belong in the prose or nowhere) and no object
    repr such as ``<matplotlib.legend.Legend at 0x...>``; the checks cell and, in the result
    chapters, every code cell but the parameters are folded (``hide-input``)."""
    import re

    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        for out in cell.get("outputs", []):
            assert not (out["output_type"] == "stream" and out["name"] == "stderr"), \
                f"{path.name} cell {i} wrote to stderr: {''.join(out['text'])[:300]}"
            text = "".join(out.get("data", {}).get("text/plain", [])) + "".join(out.get("text", []))
            assert not re.search(r"<[\w.]+ (object )?at 0x[0-9a-f]+>", text), \
                f"{path.name} cell {i} shows a repr: {text[:200]}"
        tags = cell["metadata"].get("tags", [])
        folded = "hide-input" in tags or "remove-input" in tags
        if "exercise" in tags:  # the reader's stub and its check stay in view, as the imports
            assert not folded, f"{path.name} cell {i}: an exercise cell must not be folded"
        elif "checks" in tags or (path.name[:2] in RESULT_CHAPTERS and "parameters" not in tags):
            assert folded, f"{path.name} cell {i} should be folded (hide-input)"


#: chapters with code exercises (a stub the reader fills in, a check, a folded solution): all
EXERCISE_CHAPTERS = tuple(p.name[:2] for p in NOTEBOOKS)


@pytest.mark.parametrize("chapter", EXERCISE_CHAPTERS)
def test_code_exercises_have_a_stub_a_check_and_a_right_solution(chapter):
    """At least two exercises, each: a stub that raises NotImplementedError (stored check:
    "not yet"), and a folded worked solution whose stored check says "right" and that nbval
    re-checks (the marker on a line of its own, where nbval reads it)."""
    path = next(p for p in NOTEBOOKS if p.name.startswith(chapter))
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    text = lambda c: "".join(o.get("text", "") if isinstance(o.get("text", ""), str)
                             else "".join(o["text"]) for o in c.get("outputs", []))
    stubs = [c for c in cells if "raise NotImplementedError  # your code here" in "".join(c["source"])]
    solutions = [c for c in cells if "".join(c["source"]).startswith("# worked solution")]
    assert len(stubs) >= 2 and len(solutions) == len(stubs)
    for c in solutions:
        assert "# NBVAL_CHECK_OUTPUT" in [line.strip() for line in "".join(c["source"]).splitlines()]
        assert "hide-input" in c["metadata"].get("tags", [])
        assert text(c).startswith("right: "), text(c)
    checks = [text(c) for c in cells if text(c).startswith("not yet: ")]
    assert len(checks) == len(stubs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_code_lines_fit_the_page(path):
    """No code line over 88 characters (the rendered code block clips longer ones)."""
    long = [(i, line) for i, cell in enumerate(json.loads(path.read_text())["cells"])
            if cell["cell_type"] == "code"
            for line in "".join(cell["source"]).splitlines() if len(line) > 88]
    assert not long, f"{path.name}: {len(long)} lines over 88 characters, e.g. cell {long[0][0]}: " \
                     f"{long[0][1]!r}"
