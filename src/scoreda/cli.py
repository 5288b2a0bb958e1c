r"""The ``scoreda`` command line: list the book's experiments, run one with your parameters,
or reproduce them all at paper scale.

::

    scoreda list                                   # notebooks, their parameters and defaults
    scoreda run 06 -p n_iterations 6 -p seed 3     # -> runs/06_hybrid_training/
    scoreda run 04 --scale paper --name paper-04   # -> runs/paper-04/
    scoreda reproduce --scale paper                # every notebook -> runs/paper/<notebook>/

A run executes the notebook through papermill (with a progress bar) into its own folder,
which holds the executed notebook, ``run.json`` (the parameters, the package, JAX and Python
versions, start and end time, status: ``running``, ``completed``, ``interrupted`` by Ctrl-C
or SIGTERM, or ``failed`` with the error; a run where most glued numbers are NaN is
``failed``, and a completed one lists its NaN numbers as ``nan_results``) and
``results.json`` (every number the notebook glued into its prose, NaN as ``null``, with the
same configuration and versions, and under ``about`` the sentence of the book that shows each
number and the unit printed after it). Parameters are checked before anything runs: against
the notebook's ``parameters`` cell (unknown names, values of the wrong type, negative sizes,
zero where the comment does not say ``0 or more``, strings and list items outside the listed
choices) and against the relations its ``checks`` cell states (``burn_in`` that leaves nothing
to score, tuning seeds among the reported ones), which this command executes first, in
plain Python, on the parameters given. An existing run folder is never overwritten without
``--force``; ``--force`` also removes the old run's ``results.json``; ``--resume`` reruns an
unfinished one with its recorded parameters and refuses others (trained surrogates,
finished outer iterations and comparisons come from the cache, so their work is not
repeated). ``--name`` is a folder name inside the runs folder, never a path. A notebook is
named by its number (``04``), stem, file name, path or a part of its name that only it has.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from scoreda.chapters import (find_notebook, notebooks, parameters, parse_value, scale_overrides,
                              effective_parameters, title, validate)
from scoreda.runs import read_record, run_notebook


def _list(args) -> int:
    for path in notebooks():
        print(f"{path.stem}: {title(path)}")
        for param in parameters(path).values():
            comment = f"  # {param.comment}" if param.comment else ""
            print(f"    {param.name} = {param.default!r}{comment}")
    return 0



def _overrides(pairs) -> dict[str, Any]:
    return {name: parse_value(value) for name, value in (pairs or [])}



def _run(args) -> int:
    path = find_notebook(args.notebook)
    overrides = _overrides(args.parameter)
    if args.scale:
        if "scale" in overrides:
            raise SystemExit(f"scoreda: give the scale once: -p scale {overrides['scale']!r} "
                             f"and --scale {args.scale!r} both set it")
        overrides["scale"] = args.scale
    validate(path, overrides)  # refuse before touching the folder
    if args.name is not None and (not args.name or Path(args.name).name != args.name
                                  or args.name in (".", "..")):
        raise SystemExit(f"scoreda: --name must be a plain folder name inside {args.runs}/, "
                         f"got {args.name!r}")
    folder = Path(args.runs) / (args.name or path.stem)
    run_notebook(path, overrides, folder, force=args.force, resume=args.resume)
    print(f"scoreda: {path.stem} done: {folder}")
    return 0



def _minutes(seconds: float) -> str:
    if seconds < 600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 60:,.0f} min" if seconds < 5400 else f"{seconds / 3600:,.1f} h"



def _dry_run(chosen: list[Path], scale: str, estimate: bool = True) -> int:
    """Print what each notebook would run at ``scale``: its parameters that the scale changes
    (from the notebook's ``if scale == ...`` block), and, where the chapter has an estimator
    (:mod:`scoreda.experiments.cost`), its stages priced by a short calibration here."""
    from scoreda.experiments import cost

    total = 0.0
    for path in chosen:
        defaults = {name: p.default for name, p in parameters(path).items()}
        changed = scale_overrides(path, scale)
        print(f"{path.stem}: {title(path)}")
        if not changed:
            print(f"    the same sizes at scale {scale!r}")
        for name, value in changed.items():
            before = defaults.get(name, "(computed)")
            print(f"    {name}: {before!r} -> {value!r}")
        stages = cost.estimate(path.stem, effective_parameters(path, scale)) if estimate else None
        if stages:
            print("    estimated on this machine (empty cache; compilation not counted; close calls "
                  "at most):")
            for stage in stages:
                print(f"      {stage.name:26s} {_minutes(stage.seconds):>9s}  {stage.detail}")
            chapter = sum(s.seconds for s in stages)
            total += chapter
            print(f"      {'in all':26s} {_minutes(chapter):>9s}")
    print("dry run: nothing was executed"
          + (f"; the estimated chapters take {_minutes(total)} here" if total else ""))
    return 0



def _reproduce(args) -> int:
    if args.no_estimate and not args.dry_run:
        raise SystemExit("scoreda: --no-estimate only applies with --dry-run (nothing was run)")
    if args.dry_run and (args.force or args.resume):
        raise SystemExit(f"scoreda: --dry-run runs nothing, so --{'force' if args.force else 'resume'} "
                         "has nothing to act on; drop one of them")
    chosen = [find_notebook(n) for n in args.notebooks] if args.notebooks else notebooks()
    repeated = sorted({p.stem for i, p in enumerate(chosen) if p in chosen[:i]})
    if repeated:
        raise SystemExit(f"scoreda: {', '.join(repeated)} named more than once")
    for path in chosen:
        validate(path, {"scale": args.scale})
    if args.dry_run:
        return _dry_run(chosen, args.scale, estimate=not args.no_estimate)
    for path in chosen:
        folder = Path(args.runs) / args.scale / path.stem
        if args.resume and (folder / "run.json").exists() and \
                read_record(folder / "run.json")["status"] == "completed":
            print(f"scoreda: {path.stem} already complete in {folder}")
            continue
        resume = args.resume and (folder / "run.json").exists()
        run_notebook(path, {"scale": args.scale}, folder, force=args.force, resume=resume)
        print(f"scoreda: {path.stem} done: {folder}")
    return 0



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="scoreda", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the notebooks and their parameters").set_defaults(func=_list)

    run = sub.add_parser("run", help="execute one notebook with your parameters")
    run.add_argument("notebook", help="file name, stem or number (e.g. 06)")
    run.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"),
                     help="override a parameter (a Python literal, or a string)")
    run.add_argument("--scale", choices=["book", "paper"], help="shorthand for -p scale VALUE")
    run.add_argument("--name", help="run folder name (default: the notebook's stem)")
    run.set_defaults(func=_run)

    reproduce = sub.add_parser("reproduce", help="run every notebook at one scale")
    reproduce.add_argument("--scale", choices=["book", "paper"], default="paper")
    reproduce.add_argument("notebooks", nargs="*", help="only these (default: all)")
    reproduce.add_argument("--dry-run", action="store_true",
                           help="print each notebook's sizes at this scale and the estimated "
                           "time of chapters 4 and 5 (a short calibration, kept per machine in the "
                           "cache unless the machine was busy); run nothing")
    reproduce.add_argument("--no-estimate", action="store_true",
                           help="with --dry-run: sizes only, no calibration")
    reproduce.set_defaults(func=_reproduce)

    for command in (run, reproduce):
        command.add_argument("--runs", default="runs", help="parent folder of the run folders")
        exclusive = command.add_mutually_exclusive_group()
        exclusive.add_argument("--force", action="store_true", help="overwrite an existing run")
        exclusive.add_argument("--resume", action="store_true", help="finish an interrupted run")
    return parser



def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
