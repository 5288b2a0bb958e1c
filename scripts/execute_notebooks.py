"""Execute the book's notebooks in place with papermill.

By default only notebooks that hold code cells never executed (or no outputs at all) are run;
``--all`` re-executes every notebook at its stored defaults, and named notebooks are
re-executed whatever their state. Each notebook is executed into a
temporary file, which replaces the original only when the run succeeds.

``--jobs N`` executes up to N notebooks at once, each in its own process (default: one per
usable core, at most 2). A chapter's work is almost all one thread (the filters' small
matrix decompositions run one after another), so two chapters at once take about half the
wall time of one after the other on two cores. A chapter's recorded duration is then about
what it takes alone only where its work is the filters' decompositions; a chapter that
trains networks, whose matrix products use every core, records longer beside another
(chapter 6's loops: 255 s beside another chapter, 170 s alone, same code and machine).
``--jobs 1`` records what each chapter takes alone (the stored notebooks' durations). A
chapter that reuses another's cached results waits for it (:data:`AFTER`), so that nothing
is computed twice; a chapter that measures time runs with no other beside it
(:data:`ALONE`). The kernels of one run share one persistent XLA compilation cache, new for
the run, as in CI (:func:`use_compilation_cache`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))

#: chapter number -> the chapters whose cached results it reuses when they ran first (chapter
#: 8 re-reads chapter 3's comparisons; chapter 9's thinning study trains chapter 4's book-scale
#: surrogate): when both are executed, it starts after they end
AFTER = {"08": ("03",), "09": ("04",)}
#: chapters that measure time (chapter 7's costs per step, chapter 9's training rate and cost
#: estimates): each runs with no other chapter beside it, so a neighbour's load does not
#: enter its numbers (run with two chapters at once, chapter 9 measured the LSTM's training
#: rate at 532 windows/s against 888 alone, on the same machine)
ALONE = ("07", "09")


def use_compilation_cache() -> str:
    """One persistent XLA compilation cache for this run's kernels, as ``scripts/test.sh``
    gives the CI's (so the stored durations are measured the way CI executes the chapters):
    a program compiled once, e.g. the cycle of one surrogate architecture and filter, is
    loaded, not compiled again, for the next case that runs it (another surrogate of that
    architecture, another observation network). New and empty for each run unless
    ``JAX_COMPILATION_CACHE_DIR`` is set; returns the folder."""
    folder = (os.environ.get("JAX_COMPILATION_CACHE_DIR")
              or tempfile.mkdtemp(prefix="scoreda-xla-"))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
    return folder


def needs_execution(path: Path) -> bool:
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    return any(c.get("execution_count") is None for c in code)


def execute(path: Path, progress: bool = True) -> None:
    import papermill

    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=path.parent)
    os.close(fd)
    try:
        papermill.execute_notebook(
            str(path), tmp, cwd=str(path.parent), kernel_name="python3", progress_bar=progress
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def default_jobs() -> int:
    """One job per usable core, at most 2 (the book's notebooks are timed on two cores)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(2, cores))


def ready(path: Path, pending: list[Path]) -> bool:
    """Whether no notebook that ``path`` waits for (:data:`AFTER`) is still to run."""
    waits = AFTER.get(path.name[:2], ())
    return not any(p.name[:2] in waits for p in pending)


def run_parallel(todo: list[Path], jobs: int) -> int:
    """Execute ``todo`` in up to ``jobs`` processes, in order, honouring :data:`AFTER`;
    returns the number of notebooks that failed (a failed one is left as it was)."""
    pending, running, failed = list(todo), {}, 0
    start = time.perf_counter()
    while pending or running:
        for path in [p for p in pending if ready(p, [q for q in pending if q != p] + list(running))]:
            if len(running) >= jobs or any(q.name[:2] in ALONE for q in running):
                break
            if path.name[:2] in ALONE and running:
                continue
            pending.remove(path)
            print(f"Executing {path.relative_to(ROOT)} ...", flush=True)
            running[path] = (subprocess.Popen(
                [sys.executable, __file__, "--jobs", "1", "--quiet", str(path)]), time.perf_counter())
        time.sleep(0.5)
        for path, (proc, began) in list(running.items()):
            if proc.poll() is not None:
                del running[path]
                state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                failed += proc.returncode != 0
                print(f"{path.relative_to(ROOT)}: {state} in "
                      f"{(time.perf_counter() - began) / 60:.1f} min", flush=True)
    print(f"{len(todo)} notebooks in {(time.perf_counter() - start) / 60:.1f} min "
          f"({jobs} at a time)", flush=True)
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--all", action="store_true", help="re-execute every notebook")
    parser.add_argument("--jobs", type=int, default=None,
                        help="notebooks executed at once (default: one per usable core, at "
                             "most 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("notebooks", nargs="*", type=Path, help="re-execute just these")
    args = parser.parse_args(argv)
    jobs = default_jobs() if args.jobs is None else args.jobs
    if jobs < 1:
        parser.error(f"--jobs must be at least 1, got {jobs}")
    if args.notebooks:
        todo = [p.resolve() for p in args.notebooks]
        missing = [str(p) for p in todo if not p.is_file()]
        if missing:
            parser.error(f"no such notebook: {', '.join(missing)}")
    else:
        todo = [p for p in NOTEBOOKS if args.all or needs_execution(p)]
    if not todo:
        print("All notebooks are stored executed; nothing to run.")
        return 0
    use_compilation_cache()
    if jobs > 1 and len(todo) > 1:
        return 1 if run_parallel(todo, jobs) else 0
    for path in todo:
        if not args.quiet:
            print(f"Executing {path.relative_to(ROOT)} ...", flush=True)
        execute(path, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
