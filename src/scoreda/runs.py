"""A chapter executed into a run folder: the executed notebook, ``run.json`` (the
parameters and the effective ones after the scale's changes, the package, JAX and Python
versions and commit, the machine, the command, start and end, status and earlier attempts)
and ``results.json`` (every glued number, NaN as ``null``, with the sentence that shows it).

Status: ``running``, ``completed``, ``interrupted`` (Ctrl-C or SIGTERM; ``--resume``
finishes it with its recorded parameters) or ``failed`` (with the error; also a run in which
most glued numbers are NaN: it computed no result). A completed run names its NaN numbers as
``nan_results``. A folder is never overwritten without ``force``; ``force`` also removes the
old ``results.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import scoreda
from scoreda import cache
from scoreda.chapters import effective_parameters, validate
from scoreda.glued import _json_number, _nan_names, describe_values, glued_values


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
    cores = usable_cores()
    if cores is not None:
        found["cores_available"] = cores
    return found


def usable_cores() -> int | None:
    """The cores this process may run on (its CPU affinity); None where the system does not
    say (not Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return None



def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")



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
    cache.write_json(record_file, record)
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
        cache.write_json(record_file, record | {"status": "interrupted", "ended": _now()})
        raise
    except BaseException as error:
        cache.write_json(record_file, record | {"status": "failed", "ended": _now(),
                                      "error": f"{type(error).__name__}: {str(error)[-4000:]}"})
        raise
    finally:
        restore()
    executed = json.loads(output.read_text())
    values = glued_values(executed)
    missing, n_numbers = _nan_names(values)
    if n_numbers and 2 * len(missing) > n_numbers:  # most of its numbers were never computed
        record |= {"status": "failed", "ended": _now(),
                   "error": f"{len(missing)} of the {n_numbers} numbers the notebook glued are "
                            f"NaN ({', '.join(missing[:12])}{', ...' if len(missing) > 12 else ''}):"
                            " the run computed no result; check its parameters"}
    else:
        record |= {"status": "completed", "ended": _now()}
        if missing:
            record["nan_results"] = missing
            print(f"scoreda: {path.stem}: {len(missing)} of {n_numbers} numbers are NaN (a method "
                  f"that diverged in every trial, or an empty average): {', '.join(missing)}",
                  file=sys.stderr)
    cache.write_json(record_file, record)
    cache.write_json(folder / "results.json", {
        "notebook": path.name, "parameters": overrides, "versions": record["versions"],
        "values": {k: _json_number(v) for k, v in values.items()},
        "about": describe_values(path, values)})
    if record["status"] == "failed":
        raise SystemExit(f"scoreda: {path.stem} failed: {record['error']} ({folder})")
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
