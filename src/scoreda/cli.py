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
or SIGTERM, or ``failed`` with the error) and ``results.json`` (every number the notebook
glued into its prose, with the same configuration and versions). Parameters are checked
against the notebook's ``parameters`` cell before anything runs: unknown names, values of
the wrong type, negative sizes and strings outside the listed choices are refused with the
allowed names. An existing run folder is never overwritten without ``--force``;
``--force`` also removes the old run's ``results.json``; ``--resume`` reruns an unfinished
one with its recorded parameters and refuses others (trained surrogates, finished outer
iterations and comparisons come from the cache, so their work is not repeated).
``--name`` is a folder name inside the runs folder, never a path.
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import json
import math
import os
import platform
import re
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

import scoreda


class Parameter(NamedTuple):
    """One assignment of a notebook's ``parameters`` cell and its trailing comment."""

    name: str
    default: Any
    comment: str

    def may_be_zero(self) -> bool:
        """Whether 0 is an allowed value of a number: a default of 0, ``seed``, or a comment
        that says ``>= 0`` (``spin_up = 500  # steps before ..., >= 0``); other sizes must be > 0."""
        return self.default == 0 or self.name == "seed" or ">= 0" in self.comment

    def choices(self) -> tuple[str, ...] | None:
        """For a string: the default and every quoted word in its comment (double quotes may
        hold spaces: ``"noisy data"``). For a list of strings: the allowed elements, its
        default's and the quoted ones in its comment."""
        quoted = [a or b for a, b in re.findall(r"\"([^\"]+)\"|'([A-Za-z0-9_\-]+)'", self.comment)]
        if isinstance(self.default, str):
            return tuple(dict.fromkeys([self.default, *quoted]))
        if isinstance(self.default, list) and self.default and all(
                isinstance(v, str) for v in self.default):
            return tuple(dict.fromkeys([*self.default, *quoted]))
        return None


def notebooks_dir() -> Path:
    """The book's notebooks: ``$SCOREDA_NOTEBOOKS``, else the repository of this package,
    else ``./notebooks``."""
    if os.environ.get("SCOREDA_NOTEBOOKS"):
        return Path(os.environ["SCOREDA_NOTEBOOKS"])
    repository = Path(__file__).resolve().parents[2] / "notebooks"
    return repository if repository.is_dir() else Path.cwd() / "notebooks"


def notebooks() -> list[Path]:
    return sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb"))


def find_notebook(name: str) -> Path:
    """A notebook by its file name, stem, number prefix (``"06"``) or path
    (``notebooks/06_hybrid_training.ipynb``, what tab completion gives)."""
    name = Path(name).name if ("/" in name or name.endswith(".ipynb")) else name
    candidates = [p for p in notebooks() if name in (p.name, p.stem) or p.stem.startswith(f"{name}_")]
    if len(candidates) != 1:
        known = ", ".join(p.stem for p in notebooks())
        raise SystemExit(f"scoreda: no single notebook matches {name!r}; known: {known}")
    return candidates[0]


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def title(path: Path) -> str:
    for cell in _cells(path):
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return path.stem


def _local_kernel_manager():
    """A kernel manager that talks to the kernel over local IPC sockets, not TCP: the run
    stays on this machine (ipykernel >= 7 warns about unencrypted TCP on every start)."""
    from jupyter_client.manager import AsyncKernelManager

    class LocalKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            # socket files "<ip>-<port>", removed by the manager when the kernel stops
            self.ip = os.path.join(tempfile.gettempdir(), f"scoreda-kernel-{os.getpid()}")

    return LocalKernelManager


def parameters(path: Path) -> dict[str, Parameter]:
    """The assignments of the cell tagged ``parameters`` (literal values only)."""
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"{path.name}: expected one cell tagged 'parameters', found {len(tagged)}")
    source = "".join(tagged[0]["source"])
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            line = lines[node.lineno - 1]
            comment = line.split("#", 1)[1].strip() if "#" in line else ""
            name = node.targets[0].id
            found[name] = Parameter(name, ast.literal_eval(node.value), comment)
    return found


def scale_overrides(path: Path, scale: str = "paper") -> dict[str, Any]:
    """What ``scale`` changes in the notebook: the literal assignments (tuple unpacking
    included) under its ``if scale == "paper":`` block, read from the source, not executed.
    Empty for a notebook whose sizes do not depend on the scale."""
    found = {}
    for cell in _cells(path):
        if cell["cell_type"] != "code":
            continue
        try:
            tree = ast.parse("".join(cell["source"]))
        except SyntaxError:  # IPython magics: not a scale block
            continue
        for node in tree.body:
            test = node.test if isinstance(node, ast.If) else None
            if not (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                    and test.left.id == "scale" and isinstance(test.ops[0], ast.Eq)
                    and isinstance(test.comparators[0], ast.Constant)
                    and test.comparators[0].value == scale):
                continue
            for stmt in node.body:
                if not isinstance(stmt, ast.Assign):
                    continue
                target, value = stmt.targets[0], stmt.value
                if isinstance(target, ast.Name):
                    found[target.id] = ast.literal_eval(value)
                elif isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
                    for t, v in zip(target.elts, value.elts):
                        found[t.id] = ast.literal_eval(v)
    return found


def parse_value(text: str) -> Any:
    """A Python literal (``3``, ``0.5``, ``[1, 2]``, ``'x'``), else the text as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def check_value(param: Parameter, value: Any) -> Any:
    """The value if it has the default's type and an allowed range, else ``ValueError``."""
    default = param.default
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{param.name} must be True or False, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{param.name} must be a number like {default!r}, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise ValueError(f"{param.name} must be an integer like {default!r}, got {value!r}")
        if not math.isfinite(value) or value < 0 or (value == 0 and not param.may_be_zero()):
            bound = ">= 0" if param.may_be_zero() else "> 0"
            raise ValueError(f"{param.name} must be a finite number {bound}, got {value!r}")
        return float(value) if isinstance(default, float) else value
    if isinstance(default, str):
        choices = param.choices()
        if not isinstance(value, str) or (len(choices) > 1 and value not in choices):
            raise ValueError(f"{param.name} must be one of {list(choices)}, got {value!r}")
        return value
    if isinstance(default, (list, dict, tuple)):
        if type(value) is not type(default):
            raise ValueError(f"{param.name} must be a {type(default).__name__} like {default!r}, got {value!r}")
        if isinstance(default, dict):
            if set(value) != set(default):
                raise ValueError(f"{param.name} must have the keys {sorted(default)}, got {sorted(value)}")
            for key, v in value.items():
                check_value(Parameter(f"{param.name}[{key!r}]", default[key], ""), v)
            return value
        _check_elements(param, list(value))
        return value
    return value


def _check_elements(param: Parameter, values: list) -> None:
    """The elements of a list parameter: of its default's element type (integers or numbers,
    finite and >= 0; strings among :meth:`Parameter.choices`), none repeated."""
    default = list(param.default)
    repeated = sorted({repr(v) for i, v in enumerate(values) if v in values[:i]})
    if repeated:
        raise ValueError(f"{param.name} repeats {', '.join(repeated)}")
    if not default:
        return
    if all(isinstance(v, str) for v in default):
        choices = param.choices()
        bad = [v for v in values if not isinstance(v, str) or v not in choices]
        if bad:
            raise ValueError(f"{param.name} may hold only {list(choices)}, got {bad[0]!r}")
        return
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in default):
        integers = all(isinstance(v, int) for v in default)
        for v in values:  # >= 0: a grid may hold 0 (no model error), the notebook checks more
            kind = "integer" if integers else "number"
            ok_type = (isinstance(v, int) if integers else isinstance(v, (int, float))) \
                and not isinstance(v, bool)
            if not ok_type or not math.isfinite(v) or v < 0:
                raise ValueError(f"{param.name} must hold finite {kind}s >= 0 like "
                                 f"{default!r}, got {v!r}")


def validate(path: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    """Check overrides against the notebook's parameters; a ``SystemExit`` lists what is allowed."""
    known = parameters(path)
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise SystemExit(f"scoreda: {path.stem} has no parameter {', '.join(unknown)}; "
                         f"allowed: {', '.join(known)}")
    try:
        return {name: check_value(known[name], value) for name, value in overrides.items()}
    except ValueError as error:
        raise SystemExit(f"scoreda: {error}") from None


def versions() -> dict[str, str]:
    import jax

    found = {"scoreda": scoreda.__version__, "jax": jax.__version__,
             "python": platform.python_version(), "platform": platform.platform()}
    commit = _git_commit()
    if commit:
        found["commit"] = commit
    return found


def _git_commit() -> str | None:
    """The repository's commit the package runs from (``+`` if its tracked files differ)."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        # changed tracked files, or new files where the code and the chapters live
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=all",
                                "--", ":/src", ":/notebooks", ":/pyproject.toml"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+" if dirty else "")


def machine() -> dict[str, Any]:
    """The machine a run ran on: processor, cores JAX may use, memory, JAX's devices."""
    import jax

    found = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
             "devices": [str(d) for d in jax.devices()]}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                found["processor"] = line.split(":", 1)[1].strip()
                break
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        found["memory_gib"] = round(pages * size / 2**30, 1)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        found["cores_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    return found


def glued_values(executed: dict) -> dict[str, Any]:
    """Every value the notebook glued (``myst_nb.glue``), by name."""
    values = {}
    for cell in executed["cells"]:
        for output in cell.get("outputs", []):
            record = output.get("metadata", {}).get("scrapbook")
            if record:  # Markdown (a verdict) as its text, anything else as its plain text
                data, prefix = output["data"], record["mime_prefix"]
                markdown = data.get(prefix + "text/markdown")
                text = data.get(prefix + "text/plain")
                values[record["name"]] = ("".join(markdown) if markdown
                                          else parse_value("".join(text)) if text else None)
    return values


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _write(path: Path, payload) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def run_notebook(path: Path, overrides: dict[str, Any], folder: Path, *, force: bool = False,
                 resume: bool = False, progress: bool = True) -> Path:
    """Execute ``path`` with ``overrides`` into ``folder`` (see the module docstring)."""
    record_file = folder / "run.json"
    if resume:
        if not record_file.exists():
            raise SystemExit(f"scoreda: nothing to resume in {folder}")
        record = read_record(record_file)
        if record["status"] == "completed":
            raise SystemExit(f"scoreda: {folder} is complete; use --force to run it again")
        changed = {k: v for k, v in overrides.items() if record["parameters"].get(k) != v}
        if changed:
            raise SystemExit(f"scoreda: --resume finishes the run with its own parameters; "
                             f"{sorted(changed)} differ from them (drop -p, or start a new run "
                             "with --force or --name)")
        overrides = record["parameters"]
    elif folder.exists() and any(folder.iterdir()) and not force:
        raise SystemExit(f"scoreda: {folder} exists; use --force to overwrite it or --resume to "
                         "finish an interrupted run")
    overrides = validate(path, overrides)
    import papermill

    folder.mkdir(parents=True, exist_ok=True)
    if not resume:  # a forced rerun must not leave the old run's results beside the new record
        (folder / "results.json").unlink(missing_ok=True)
    output = folder / path.name
    record = {"notebook": path.name, "parameters": overrides,
              "effective_parameters": effective_parameters(path, overrides.get("scale", "book"))
              | overrides,
              "versions": versions(), "machine": machine(), "command": _command(),
              "started": _now(), "status": "running"}
    if resume:  # the earlier attempts' times, so that the record says what the run cost
        previous = read_record(record_file)
        record["earlier_attempts"] = previous.get("earlier_attempts", []) + [
            {k: previous[k] for k in ("started", "ended", "status") if k in previous}
            | {"commit": previous.get("versions", {}).get("commit")}]
    _write(record_file, record)
    restore = _sigterm_as_interrupt()
    try:
        local = {"kernel_manager_class": _local_kernel_manager()} if os.name == "posix" else {}
        # a paper-scale run echoes the notebook's own output (stage bars) as it comes
        echo = ({"stdout_file": sys.stdout, "stderr_file": sys.stderr}
                if progress and overrides.get("scale") == "paper" else {})
        papermill.execute_notebook(str(path), str(output), parameters=overrides,
                                   cwd=str(path.parent), kernel_name="python3",
                                   progress_bar=progress, **local, **echo)
    except KeyboardInterrupt:
        _write(record_file, record | {"status": "interrupted", "ended": _now()})
        raise
    except BaseException as error:
        _write(record_file, record | {"status": "failed", "ended": _now(),
                                      "error": f"{type(error).__name__}: {str(error)[-4000:]}"})
        raise
    finally:
        restore()
    record |= {"status": "completed", "ended": _now()}
    _write(record_file, record)
    executed = json.loads(output.read_text())
    _write(folder / "results.json", {"notebook": path.name, "parameters": overrides,
                                     "versions": record["versions"],
                                     "values": glued_values(executed)})
    return folder


def read_record(path: Path) -> dict:
    """A run's ``run.json``, or ``SystemExit`` naming the file when it cannot be read back
    (truncated by a crash, edited by hand) or lacks what a resume needs."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise SystemExit(f"scoreda: {path} cannot be read ({type(err).__name__}: {err}); "
                         "start the run again with --force") from None
    missing = [k for k in ("status", "parameters") if not isinstance(record, dict) or k not in record]
    if missing:
        raise SystemExit(f"scoreda: {path} has no {', '.join(missing)}; start the run again "
                         "with --force")
    return record


def _command() -> str:
    """The command line of this process, as typed (``scoreda ...``)."""
    import shlex

    return " ".join(["scoreda"] + [shlex.quote(a) for a in sys.argv[1:]]) \
        if Path(sys.argv[0]).name == "scoreda" else " ".join(shlex.quote(a) for a in sys.argv)


def _sigterm_as_interrupt():
    """While a notebook runs, SIGTERM (a job scheduler's stop) interrupts it like Ctrl-C, so
    that run.json says "interrupted" and ``--resume`` can finish it. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum, frame):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


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


def effective_parameters(path: Path, scale: str = "book") -> dict[str, Any]:
    """Every parameter of the notebook at ``scale``: its defaults with the scale's changes
    (and ``scale`` itself, for a notebook that has it)."""
    found = {name: p.default for name, p in parameters(path).items()}
    return found | scale_overrides(path, scale) | ({"scale": scale} if "scale" in found else {})


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
            print("    estimated on this machine (empty cache; compilation not counted):")
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
                           "time of chapters 4 and 5 (a calibration of about a minute); run nothing")
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
