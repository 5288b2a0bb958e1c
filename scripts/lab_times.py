"""Write book/lab_times.md: how long each chapter took to execute (papermill's record in
the stored notebook) and which chapters fit a 90-minute lab on a laptop CPU.

The stored notebooks are executed by ``scripts/execute_notebooks.py --all`` with an empty
cache, on two CPU cores, so the times include training the surrogates. A chapter joins the
lab when it executes in at most 4 minutes (a student can rerun it with other parameters
and still read and do the exercises). tests/test_notebooks.py checks that the page matches
the notebooks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "book" / "lab_times.md"
LAB_LIMIT_MIN = 4.0


def durations() -> list[tuple[str, str, float]]:
    rows = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = json.loads(path.read_text())
        title = next(line[2:].strip() for c in nb["cells"] if c["cell_type"] == "markdown"
                     for line in "".join(c["source"]).splitlines() if line.startswith("# "))
        rows.append((path.stem, title, nb["metadata"]["papermill"]["duration"] / 60))
    return rows


def render() -> str:
    rows = durations()
    lab = [r for r in rows if r[2] <= LAB_LIMIT_MIN]
    lines = ["| chapter | executes in (min) | in the 90-minute lab |", "|---|---|---|"]
    lines += [f"| {{doc}}`{title} <../notebooks/{stem}>` | {minutes:.1f} | "
              f"{'yes' if minutes <= LAB_LIMIT_MIN else 'no (run it beforehand)'} |"
              for stem, title, minutes in rows]
    total = sum(r[2] for r in lab)
    lines += ["", f"The lab chapters execute in {total:.1f} minutes together; all "
                  f"{len(rows)} chapters in {sum(r[2] for r in rows):.1f} minutes."]
    return "\n".join(lines) + "\n"


def main() -> int:
    OUT.write_text(render())
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
