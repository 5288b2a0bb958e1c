"""Execute the book's notebooks in place with papermill.

By default only notebooks that hold code cells never executed (or no outputs at all) are run;
``--all`` re-executes every notebook at its stored defaults, and named notebooks are
re-executed whatever their state. Each notebook is executed into a
temporary file, which replaces the original only when the run succeeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def needs_execution(path: Path) -> bool:
    cells = json.loads(path.read_text())["cells"]
    code = [c for c in cells if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    return any(c.get("execution_count") is None for c in code)


def execute(path: Path) -> None:
    import papermill

    fd, tmp = tempfile.mkstemp(suffix=".ipynb", dir=path.parent)
    os.close(fd)
    try:
        papermill.execute_notebook(
            str(path), tmp, cwd=str(path.parent), kernel_name="python3", progress_bar=True
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--all", action="store_true", help="re-execute every notebook")
    parser.add_argument("notebooks", nargs="*", type=Path, help="re-execute just these")
    args = parser.parse_args(argv)
    if args.notebooks:
        todo = [p.resolve() for p in args.notebooks]
    else:
        todo = [p for p in NOTEBOOKS if args.all or needs_execution(p)]
    if not todo:
        print("All notebooks are stored executed; nothing to run.")
    for path in todo:
        print(f"Executing {path.relative_to(ROOT)} ...", flush=True)
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
