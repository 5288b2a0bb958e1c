"""Shared fixtures. float64 is switched on only inside tests that ask for it."""

import jax
import pytest


@pytest.fixture
def x64():
    """Run the test with 64-bit floats enabled, then restore the default (float32)."""
    with jax.enable_x64(True):
        yield


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The book built once per session with warnings as errors: ``(returncode, log, html dir)``."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    jb = shutil.which("jupyter-book", path=str(Path(sys.executable).parent))
    if jb is None:
        pytest.skip("jupyter-book is not installed (install the [book] extra)")
    root = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("book")
    result = subprocess.run(
        [jb, "build", str(root), "--path-output", str(out), "--all", "-W", "-n", "--keep-going"],
        capture_output=True, text=True, timeout=900,
    )
    return result.returncode, result.stdout[-4000:] + result.stderr[-4000:], out / "_build" / "html"
