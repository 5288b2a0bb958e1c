"""Shared fixtures. float64 is switched on only inside tests that ask for it.

Tests that take about 4 s or more on two cores carry ``@pytest.mark.slow``, and so does
every notebook that nbval re-executes: ``pytest -m "not slow"`` is the quick developer run,
``scripts/test.sh`` runs everything."""

import jax
import pytest


def pytest_collection_modifyitems(config, items):
    """A notebook re-executed by nbval (an item of an ``.ipynb`` file) is slow."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def x64():
    """Run the test with 64-bit floats enabled, then restore the default (float32)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def load_script():
    """``load_script("lab_times")``: the repository's ``scripts/lab_times.py`` as a module
    (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The book built once per test run with warnings as errors: ``(returncode, log, html dir)``.

    Under pytest-xdist every worker has its own session; the first to ask builds the book in
    the run's shared temporary folder while holding a file lock, the others wait and reuse
    that build."""
    import fcntl
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb is None:
        pytest.skip("jupyter-book is not installed (install the [book] extra)")
    root = Path(__file__).resolve().parent.parent
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # this run's folder
    out, record = shared / "built-book", shared / "built-book.json"
    with open(shared / "built-book.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not record.exists():
            result = subprocess.run(
                [jb, "build", str(root), "--path-output", str(out), "--all", "-W", "-n",
                 "--keep-going"], capture_output=True, text=True, timeout=900)
            record.write_text(json.dumps(
                [result.returncode, result.stdout[-4000:] + result.stderr[-4000:]]))
        returncode, log = json.loads(record.read_text())
    return returncode, log, out / "_build" / "html"


@pytest.fixture
def compilations():
    """Count XLA compilations by function name: ``with compilations() as count: ...`` then
    ``count["batched"]`` is how many times ``jit(batched)`` was compiled inside the block
    (from JAX's own compile log)."""
    import collections
    import contextlib
    import logging
    import re

    @contextlib.contextmanager
    def counting():
        counts = collections.Counter()

        class Handler(logging.Handler):
            def emit(self, record):
                found = re.match(r"Finished XLA compilation of jit\((.*)\) in", record.getMessage())
                if found:
                    counts[found.group(1)] += 1

        handler, logger = Handler(level=logging.DEBUG), logging.getLogger("jax")
        logger.addHandler(handler)
        try:
            with jax.log_compiles(True):
                yield counts
        finally:
            logger.removeHandler(handler)

    return counting
