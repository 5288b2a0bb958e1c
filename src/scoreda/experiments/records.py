"""The committed records of long runs (``scoreda run`` / ``scoreda reproduce`` folders), and
the numbers the stored, executed chapters glued: what "The paper's numbers beside ours"
sets side by side.

A record folder holds ``run.json`` (parameters, the effective parameters after the scale's
changes, versions and commit, machine, command, start and end, earlier interrupted
attempts) and ``results.json`` (every value the notebook glued). :func:`load` reads every
record folder under a directory; :func:`check` says what makes a record unusable.

Records of experiments that no chapter runs at paper scale as a whole (a sweep over
dimensions, say) live in the folder :data:`SWEEPS` beside them, one JSON file each, written
and read by their own module (e.g. :mod:`scoreda.experiments.ensf_reference`); :func:`load`
leaves that folder alone.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, NamedTuple


#: the folder, beside the chapters' record folders, of records kept by their own modules
SWEEPS = "sweeps"


class Record(NamedTuple):
    """One finished run: its folder, ``run.json`` and ``results.json``."""

    folder: Path
    run: dict
    results: dict

    @property
    def chapter(self) -> str:
        """The notebook's two-digit prefix (``"05"``)."""
        return self.run["notebook"][:2]

    @property
    def values(self) -> dict[str, Any]:
        """The glued values; a NaN (``null`` in ``results.json``) as ``float("nan")``."""
        return {k: float("nan") if v is None else v for k, v in self.results["values"].items()}

    def wall_seconds(self) -> float:
        """Seconds from start to end, summed over this attempt and any earlier interrupted
        ones (a resumed run reuses their finished work, so its cost is the sum). An attempt
        killed without a word (no end recorded) is not counted: see :meth:`summary`."""
        attempts = self.run.get("earlier_attempts", []) + [self.run]
        return sum(elapsed_seconds(a["started"], a["ended"]) for a in attempts
                   if "started" in a and "ended" in a)

    def summary(self) -> dict[str, Any]:
        """What a reader needs to trust the record: command, commit, machine, dates, time."""
        machine = self.run.get("machine", {})
        return {"notebook": self.run["notebook"], "command": self.run.get("command", ""),
                "commit": self.run["versions"].get("commit", "?"),
                "scoreda": self.run["versions"]["scoreda"], "jax": self.run["versions"]["jax"],
                "machine": f"{machine.get('processor', '?')}, {machine.get('cores_available', '?')} "
                           f"cores, {machine.get('memory_gib', '?')} GiB, {', '.join(machine.get('devices', []))}",
                "started": self.run["started"], "ended": self.run["ended"],
                "attempts": 1 + len(self.run.get("earlier_attempts", [])),
                "attempts_without_end": sum("ended" not in a for a in self.run.get("earlier_attempts", [])),
                "hours": self.wall_seconds() / 3600}


def elapsed_seconds(start: str, end: str) -> float:
    """Seconds from ``start`` to ``end``, two ISO 8601 times as a record stores them
    (``"2026-12-07T21:52:00+00:00"``)."""
    return (_dt.datetime.fromisoformat(end) - _dt.datetime.fromisoformat(start)).total_seconds()


def check(folder: Path) -> list[str]:
    """The reasons ``folder`` is not a usable record (empty when it is)."""
    problems = []
    for name in ("run.json", "results.json"):
        if not (folder / name).is_file():
            problems.append(f"{folder}: no {name}")
    if problems:
        return problems
    loaded = {}
    for name in ("run.json", "results.json"):
        try:
            loaded[name] = json.loads((folder / name).read_text())
        except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
            problems.append(f"{folder / name}: not readable JSON ({type(err).__name__}: {err})")
            continue
        if not isinstance(loaded[name], dict):
            problems.append(f"{folder / name}: holds a {type(loaded[name]).__name__}, not an object")
    if problems:
        return problems
    run, results = loaded["run.json"], loaded["results.json"]
    if run.get("status") != "completed":
        problems.append(f"{folder}: run status {run.get('status')!r}, not 'completed'")
    for key in ("notebook", "parameters", "versions"):
        if run.get(key) != results.get(key):
            problems.append(f"{folder}: run.json and results.json differ in {key}")
    for key in ("notebook", "parameters", "versions", "effective_parameters", "machine",
                "command", "started", "ended"):
        if key not in run:
            problems.append(f"{folder}: run.json has no {key}")
    versions = run.get("versions")
    if "versions" in run and not (isinstance(versions, dict)
                                  and all(k in versions for k in ("scoreda", "jax"))):
        problems.append(f"{folder}: run.json's versions must name scoreda and jax, got {versions!r}")
    earlier = run.get("earlier_attempts", [])
    if not (isinstance(earlier, list) and all(isinstance(a, dict) for a in earlier)):
        problems.append(f"{folder}: run.json's earlier_attempts must be a list of objects "
                        f"(started, ended, status), got {earlier!r}")
        earlier = []
    attempts = earlier + [run]
    for i, attempt in enumerate(attempts):
        which = "run.json" if attempt is run else f"run.json's earlier attempt {i + 1}"
        times = {}
        for key in ("started", "ended"):
            if key in attempt:
                try:
                    times[key] = _dt.datetime.fromisoformat(attempt[key])
                except (TypeError, ValueError):
                    problems.append(f"{folder}: {which} has a {key} time that is not ISO 8601: "
                                    f"{attempt[key]!r}")
        if len(times) == 2 and (times["ended"].tzinfo is None) != (times["started"].tzinfo is None):
            problems.append(f"{folder}: {which} mixes times with and without a time zone")
        elif len(times) == 2 and times["ended"] < times["started"]:
            problems.append(f"{folder}: {which} ends ({attempt['ended']}) before it starts "
                            f"({attempt['started']})")
    if not results.get("values"):
        problems.append(f"{folder}: results.json holds no values")
    return problems


def load(directory: Path | str) -> dict[str, Record]:
    """Every record folder under ``directory`` (but :data:`SWEEPS`), by chapter prefix; a
    folder that :func:`check` refuses raises ``ValueError`` naming what is wrong."""
    found = {}
    for folder in sorted(p for p in Path(directory).iterdir() if p.is_dir() and p.name != SWEEPS):
        problems = check(folder)
        if problems:
            raise ValueError("; ".join(problems))
        record = Record(folder, *(json.loads((folder / n).read_text())
                                  for n in ("run.json", "results.json")))
        if record.chapter in found:
            raise ValueError(f"two records of chapter {record.chapter}: {found[record.chapter].folder.name} "
                             f"and {folder.name}; keep one")
        found[record.chapter] = record
    return found


def read_sweep(path, kinds: tuple[str, ...], what: str) -> dict:
    """The sweep record (a JSON object) at ``path``, with an empty object under each of
    ``kinds`` it lacks; none there: one of empty ``kinds``. A file that is not such a record
    raises ``ValueError`` naming ``what`` it should have been."""
    path = Path(path)
    if not path.is_file():
        return {kind: {} for kind in kinds}
    record = json.loads(path.read_text())
    if not isinstance(record, dict) or not set(kinds[:2]) <= set(record):
        raise ValueError(f"{path}: not a record of {what} (no {' and '.join(kinds[:2])})")
    for kind in kinds:
        record.setdefault(kind, {})
    return record


def write_sweep(path, record: dict) -> None:
    """Write a sweep record at ``path`` atomically (:func:`scoreda.cache.write_json`)."""
    from scoreda import cache

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    cache.write_json(Path(path), record)


def refuse_another(record: dict, path, kind: str, key: str, settings: dict) -> None:
    """Raise ``ValueError`` if ``record`` (read from ``path``) holds under ``kind`` an entry
    ``key`` whose ``settings`` differ: never overwrite one experiment's numbers with
    another's under the same name."""
    entry = record.get(kind, {}).get(key)
    settings = json.loads(json.dumps(settings))  # as stored: tuples as lists
    if entry is None:
        return
    differ = []
    for name, value in settings.items():
        stored = entry.get(name)
        if isinstance(value, dict) and isinstance(stored, dict):
            differ += [f"{name}.{k}" for k in sorted(set(value) | set(stored))
                       if value.get(k) != stored.get(k)]
        elif stored != value:
            differ.append(name)
    if differ:
        raise ValueError(f"{path}: {kind} entry {key!r} was run with other settings "
                         f"({', '.join(differ)} differ; a setting absent from the entry, such "
                         "as a method's tie_rtol before 0.4.0, differs too); remove it from the "
                         "record to run this one")


def book_values(notebook: Path | str) -> dict[str, Any]:
    """The values a stored, executed notebook glued (the book's numbers at its defaults)."""
    from scoreda.glued import glued_values

    return glued_values(json.loads(Path(notebook).read_text()))
