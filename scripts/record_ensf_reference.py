"""Record the EnSF paper's Lorenz-96 experiment (``scoreda.experiments.ensf_reference``)
at dimensions beyond the book's, resumably, one stage at a time.

    python scripts/record_ensf_reference.py            # every stage, in order
    python scripts/record_ensf_reference.py --list     # the stages and what is recorded
    python scripts/record_ensf_reference.py --only final-d1000-s0.05 compare-d1000-s0.05

A stage is the reference's EnSF on 10 seeds ("final-...": the reported final RMSE) or a
tuned comparison through the harness ("compare-..."). Each finished seed (and each
comparison) is written to the record at once; an interrupted run resumes where it stopped
(comparisons from the harness's cache, ``$SCOREDA_CACHE``). The record holds the machine,
versions and times of every attempt. Chapter 8 reads it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from scoreda import _digest
from scoreda.experiments import ensf_reference as er

RECORD = Path(__file__).resolve().parents[1] / "book" / "paper_scale" / "sweeps" / "ensf_reference.json"
SEEDS = range(10)
TUNING_SEEDS = (101, 102, 103)
#: the method tuned at d = 100 and run at the large dimension (the reference's LETKF)
TRANSFERRED = "LETKF"


def stages() -> dict:
    """Stage name -> (kind, config), cheapest first: the comparison at d = 10^4 (about
    1.5 h of LETKF runs on two CPU cores) comes last."""
    d3, d4 = 1000, 10_000
    out = {f"final-d{d3}-s{s:g}": ("final", er.ReferenceConfig(d=d3, obs_std=s))
           for s in (0.05, 0.03, 0.1)}
    out[f"compare-d{d3}-s0.05"] = ("compare", er.ReferenceConfig(d=d3))
    out[f"transfer-d100-d{d3}-s0.05"] = ("transfer", er.ReferenceConfig(d=d3))
    out.update({f"final-d{d4}-s{s:g}": ("final", er.ReferenceConfig(d=d4, obs_std=s))
                for s in (0.05, 0.03, 0.1)})
    out[f"compare-d{d4}-s0.05"] = ("compare", er.ReferenceConfig(d=d4))
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="these stages (default: all, in order)")
    parser.add_argument("--list", action="store_true", help="list the stages and stop")
    parser.add_argument("--record", type=Path, default=RECORD)
    args = parser.parse_args(argv)
    _digest.package_digest()  # the code as it is now: later edits do not enter this run
    table = stages()
    record = er.read_record(args.record)
    if args.list:
        for name, (kind, config) in table.items():
            key = er.stage_name(config)
            if kind == "final":
                state = f"seeds done {len(record['stages'].get(key, {}).get('seeds', []))}"
            elif kind == "compare":
                state = "done" if key in record["comparisons"] else "not run"
            else:
                moved = er.transfer_name(config, TRANSFERRED)
                state = "done" if moved in record.get("transfers", {}) else "not run"
            print(f"{name:28s} {kind:8s} {state}")
        return
    unknown = set(args.only or ()) - set(table)
    if unknown:
        parser.error(f"unknown stages {sorted(unknown)}; choose among {list(table)}")
    for name in args.only or table:
        kind, config = table[name]
        print(f"stage {name}", flush=True)
        if kind == "final":
            stage = er.record_final_rmse(args.record, config, SEEDS)
            print(f"  final RMSE per seed: {[round(v, 4) if v is not None else v for v in stage['final']]}")
        elif kind == "transfer":  # the LETKF tuned at d = 100 (as the reference did), run at 1000
            letkf = next(m for m in er.comparison_methods() if m.label == TRANSFERRED)
            entry = er.record_transfer(args.record, er.ReferenceConfig(d=100), config, letkf,
                                       tuning_seeds=TUNING_SEEDS, evaluation_seeds=SEEDS)
            print(f"  tuned at d = 100: {entry['tuning']['chosen']}; RMSE at d = {config.d}: "
                  f"{entry['result']['rmse']}")
        else:
            comparison = er.record_comparison(args.record, config, er.comparison_methods(),
                                              tuning_seeds=TUNING_SEEDS, evaluation_seeds=SEEDS)
            print(comparison.table())


if __name__ == "__main__":
    main()
