r"""The package's on-disk cache: where it lives, how an entry is keyed, held and written.

Every cache of the package (trained surrogates, the harness's tunings and evaluations, the
hybrid loop's rounds, cost estimates and run records) goes through this room:

* :func:`cache_dir` is ``$SCOREDA_CACHE`` (default ``~/.cache/scoreda``);
* :func:`config_key` hashes configurations (dataclasses, JSON-able values) and the package
  version; :func:`tree_digest` hashes a pytree's arrays;
* :func:`entry_lock` holds an entry exclusively (an OS lock: a second process waits);
  :func:`claim_entry` creates an entry for a configuration or checks that it holds it;
* :func:`write_atomic`, :func:`write_json`, :func:`write_npz` write a file so that a reader
  sees the old file or the whole new one, never a part; :func:`read_json` reads one back and
  raises :class:`DamagedEntry` (naming the file) when it cannot;
* a damaged entry is never trusted: :func:`set_aside` moves it to ``<entry>.damaged`` and
  the caller computes it again, with a :class:`CacheWarning` naming what was wrong.

Entries hold JSON, ``.npz`` arrays and orbax checkpoints, never pickles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no entry locks
    fcntl = None

import jax
import jax.numpy as jnp
import numpy as np

import scoreda

__all__ = ["CacheMismatch", "CacheWarning", "DamagedEntry", "brief", "cache_dir",
           "claim_entry", "config_key", "entry_lock", "read_json", "set_aside", "tree_digest",
           "write_atomic", "write_json", "write_npz"]


class CacheMismatch(RuntimeError):
    """A cache entry exists under the key but holds a different configuration."""


class DamagedEntry(RuntimeError):
    """A cache entry whose files cannot be trusted; the message names the entry and what is
    wrong. :func:`scoreda.surrogates.train.train` sets such an entry aside and trains it again."""

    def __init__(self, entry: Path, problem: str):
        super().__init__(f"cache entry {entry}: {problem}")
        self.entry, self.problem = entry, problem


class CacheWarning(UserWarning):
    """A damaged cache entry (or a part of it) was found, set aside and is computed again."""


_log = logging.getLogger(__name__)
LOCK_FILE = ".lock"


def cache_dir() -> Path:
    """The cache's root: ``$SCOREDA_CACHE``, or ``~/.cache/scoreda`` when it is unset."""
    return Path(os.environ.get("SCOREDA_CACHE", Path.home() / ".cache" / "scoreda"))


def config_key(*configs, **extra) -> tuple[str, dict]:
    """A stable hash of dataclass configurations, JSON-able ``extra`` entries and the package
    version; returns the hash and the dict that was hashed."""
    described = {type(c).__name__: _described(c) for c in configs} | extra
    described["scoreda_version"] = scoreda.__version__
    text = json.dumps(described, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20], described


def _described(obj):
    """``dataclasses.asdict``, nested configurations included, without the fields that the
    configuration's class lists in ``KEY_OMITS_AT_DEFAULT`` (a ``ClassVar`` dict: field ->
    default) while they hold that default: a field added after entries were cached leaves
    their keys as they were."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        omit = getattr(type(obj), "KEY_OMITS_AT_DEFAULT", {})
        return {f.name: _described(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not (f.name in omit and getattr(obj, f.name) == omit[f.name])}
    if isinstance(obj, (list, tuple)):
        return [_described(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _described(v) for k, v in obj.items()}
    return obj


def tree_digest(tree) -> str:
    """A hash of a pytree's arrays (typed PRNG keys by their raw data)."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(tree):
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)  # a typed PRNG key: hash its raw data
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:20]


_HELD = threading.local()  # the entries this thread holds (the lock is not re-entrant)


@contextlib.contextmanager
def entry_lock(path: Path):
    """Hold the cache entry ``path`` exclusively: an OS lock (``flock``) on ``path/.lock``,
    released when the block ends or the process dies. A second holder (another process or
    thread) waits, and says so in a log line naming the entry. The lock is not re-entrant:
    asking again for an entry this thread holds raises ``RuntimeError`` instead of waiting
    for ever. Without ``fcntl`` (not POSIX), or in a cache that cannot be written (a
    read-only copy), there is no lock."""
    path = Path(path).absolute()
    held = _HELD.__dict__.setdefault("paths", set())
    if path in held:
        raise RuntimeError(f"the cache entry {path} is already held by this thread "
                           "(entry_lock is not re-entrant)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        handle = open(path / LOCK_FILE, "a") if fcntl is not None else None
    except OSError as err:
        _log.warning("no lock for the cache entry %s (%s): reading it unlocked", path, err)
        handle = None
    held.add(path)
    try:
        if handle is None:
            yield
            return
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                _log.warning("waiting for the cache entry %s: another process is working on it",
                             path)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        held.discard(path)


def read_json(entry: Path, name: str):
    """The JSON file ``entry/name``, None when absent; :class:`DamagedEntry` (naming the file)
    when it cannot be read."""
    file = entry / name
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError is a ValueError
        # (an OSError, e.g. no permission, is not damage: it propagates)
        raise DamagedEntry(entry, f"{name} is not valid JSON ({brief(err)})") from err


def claim_entry(path: Path, described: dict, what: str = "cache entry") -> None:
    """Create the cache entry ``path`` for the configuration ``described``, or check that an
    existing one holds exactly it (:class:`CacheMismatch` otherwise; :class:`DamagedEntry`
    when its ``config.json`` is unreadable)."""
    path.mkdir(parents=True, exist_ok=True)
    stored = read_json(path, "config.json")
    if stored is None:
        write_json(path / "config.json", described)
    elif stored != json.loads(json.dumps(described, sort_keys=True)):
        raise CacheMismatch(f"{what} {path} holds another configuration; remove it")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file (mkstemp gives 0600)


def write_atomic(path: Path, write) -> None:
    """``write(binary file)`` into a uniquely named temporary file in ``path``'s folder,
    flushed to disk, then renamed over ``path``: a reader sees the old file or the whole new
    one, never a part. The file gets the usual permissions (umask), not mkstemp's 0600."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload) -> None:
    """Write JSON atomically (a temporary file flushed to disk, then renamed over ``path``)."""
    text = json.dumps(payload, indent=1, sort_keys=True).encode()
    write_atomic(path, lambda handle: handle.write(text))


def write_npz(path: Path, arrays: dict) -> None:
    """Write numpy arrays as one ``.npz`` atomically, as :func:`write_json` does."""
    write_atomic(path, lambda handle: np.savez(handle, **arrays))


def brief(err: Exception) -> str:
    """The error's type and the start of its message (tensorstore's run to pages)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def set_aside(path: Path) -> Path:
    """Move the entry's files (not its lock) to ``<path>.damaged``, replacing an older one."""
    aside = path.with_name(path.name + ".damaged")
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    for child in path.iterdir():
        if child.name != LOCK_FILE:
            child.rename(aside / child.name)
    return aside
