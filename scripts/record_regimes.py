"""Record chapter 8's regimes that the chapter does not run (``scoreda.experiments.regimes``:
``RECORDED``), resumably, one comparison at a time.

    python scripts/record_regimes.py                  # every stage, lab tier first
    python scripts/record_regimes.py --list           # the stages and which are done
    python scripts/record_regimes.py --only "lab: linear, 8 members"

A stage is one regime at one tier ("lab": the chapter's defaults, 250 cycles and 10
evaluation twins; "paper": its paper scale, 2000 cycles and 20), every filter of the
regime tuned and evaluated by the harness. A finished stage is written to the record at
once; an interrupted one resumes from the harness's cache (``$SCOREDA_CACHE``) within a
method. The record holds the machine and versions of every stage. Chapter 8 reads it.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from scoreda import _digest
from scoreda.experiments import regimes

RECORD = Path(__file__).resolve().parents[1] / "book" / "paper_scale" / "sweeps" / "regimes.json"


def stages() -> list[str]:
    """Every stage's name, the lab tier's first (cheapest first within a tier)."""
    return [regimes.entry_name(tier, name) for tier in regimes.TIERS
            for name in regimes.RECORDED]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="these stages (default: all, in order)")
    parser.add_argument("--list", action="store_true", help="list the stages and stop")
    parser.add_argument("--record", type=Path, default=RECORD)
    args = parser.parse_args(argv)
    names = stages()
    if args.list:
        done = regimes.read_record(args.record)["comparisons"]
        for name in names:
            print(f"{name:40s} {'done' if name in done else 'not run'}")
        return
    unknown = set(args.only or ()) - set(names)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose among {names}")
    _digest.package_digest()  # the code as it is now: later edits do not enter this run
    for name in args.only or names:
        tier, regime = name.split(": ", 1)
        start = time.perf_counter()
        print(f"stage {name}", flush=True)
        comparison = regimes.record_comparison(args.record, tier, regime)
        print(comparison.table(), f"\n  {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
