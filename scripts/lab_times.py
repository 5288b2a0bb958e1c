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


def together_minutes() -> float | None:
    """Minutes from the first chapter's start to the last one's end, when the stored
    notebooks were executed in one session (``execute_notebooks.py --all``, two chapters at
    a time on two cores): the span is then at most the sum of their durations. None when
    some chapter was executed on its own at another time."""
    import datetime as dt

    spans = []
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        meta = json.loads(path.read_text())["metadata"]["papermill"]
        spans.append((dt.datetime.fromisoformat(meta["start_time"]),
                      dt.datetime.fromisoformat(meta["end_time"]), meta["duration"]))
    span = (max(e for _, e, _ in spans) - min(s for s, _, _ in spans)).total_seconds()
    return span / 60 if span <= sum(d for _, _, d in spans) else None


def render() -> str:
    rows = durations()
    lab = [r for r in rows if r[2] <= LAB_LIMIT_MIN]
    lines = ["| chapter | executes in (min) | in the 90-minute lab |", "|---|---|---|"]
    lines += [f"| {{doc}}`{title} <../notebooks/{stem}>` | {minutes:.1f} | "
              f"{'yes' if minutes <= LAB_LIMIT_MIN else 'no (run it beforehand)'} |"
              for stem, title, minutes in rows]
    total = sum(r[2] for r in lab)
    lines += ["", f"The lab chapters execute in {total:.1f} minutes together; all "
                  f"{len(rows)} chapters in {sum(r[2] for r in rows):.1f} minutes one after "
                  "the other."]
    span = together_minutes()
    if span is not None:
        lines[-1] += (f" Executed two at a time (`scripts/execute_notebooks.py --all`, a "
                      f"chapter's work is almost all one thread), they took {span:.1f} "
                      "minutes from the first start to the last end.")
    return "\n".join(lines) + "\n"


#: the line of each chapter's "at a glance" card (the cell tagged ``chapter-card``) that
#: this script writes
CARD_PREFIX = "**Lab time.**"


def card_line(stem: str, minutes: float, n_exercises: int) -> str:
    """The card's lab-time line: the measured execution time and what it means for a lab."""
    when = (f"Executes in {minutes:.1f} min at its defaults (two CPU cores, empty cache): "
            "rerun it in the lab with your own parameters."
            if minutes <= LAB_LIMIT_MIN else
            f"Executes in {minutes:.1f} min at its defaults (two CPU cores, empty cache), too "
            f"long for a lab: run it beforehand (`scoreda run {stem[:2]}`) or read its stored "
            "results; the code exercises run on their own in seconds.")
    return (f"{CARD_PREFIX} {when} {n_exercises} code exercises (\"Your turn\"); all chapters' "
            "times: {doc}`the lab table <../book/intro>`.")


def exercises_in(nb: dict) -> int:
    """Code exercises: stubs the reader fills in."""
    return sum("raise NotImplementedError  # your code here" in "".join(c["source"])
               for c in nb["cells"] if c["cell_type"] == "code")


def card_lines() -> dict[str, str]:
    """Each notebook's expected lab-time line, by stem."""
    out = {}
    for stem, _, minutes in durations():
        nb = json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())
        out[stem] = card_line(stem, minutes, exercises_in(nb))
    return out


def stored_card_line(nb: dict) -> str | None:
    """The lab-time line of the notebook's card (None without a card or line)."""
    for c in nb["cells"]:
        if "chapter-card" in c["metadata"].get("tags", []):
            for line in "".join(c["source"]).splitlines():
                if line.startswith(CARD_PREFIX):
                    return line
    return None


def write_cards() -> None:
    """Rewrite the lab-time line of every chapter's card (markdown only: outputs untouched)."""
    for stem, line in card_lines().items():
        path = ROOT / "notebooks" / f"{stem}.ipynb"
        nb = json.loads(path.read_text())
        card = next(c for c in nb["cells"] if "chapter-card" in c["metadata"].get("tags", []))
        lines = "".join(card["source"]).split("\n")
        lines = [line if old.startswith(CARD_PREFIX) else old for old in lines]
        text = "\n".join(lines)
        card["source"] = [l + "\n" for l in text.split("\n")[:-1]] + [text.split("\n")[-1]]
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True))


def main() -> int:
    OUT.write_text(render())
    write_cards()
    print(OUT.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
