"""The harness's cache: one method's tuning and evaluation of one case as JSON files, and
the finished runs of an unfinished stage as ``.npz`` files, written atomically and keyed by
what they compute; a damaged or unfitting entry is named, removed and computed again."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from scoreda import _digest, assimilate, cache
from scoreda.experiments.compare.model import (Case, Method, MethodResult, Tuning, _canonical,
                                               _jsonable)
from scoreda.experiments.compare.tuning import check_tuning


class _Store:
    """One method's cached tuning and evaluation of one case: one JSON file each, written
    atomically (a reader sees a whole file or none). A file that cannot be read back is
    reported by a :class:`~scoreda.cache.CacheWarning` naming it, removed and
    computed again, never trusted; so is a file whose contents do not fit the method (a
    chosen point off its grid, evaluated knobs other than the chosen ones).

    The key holds the case's label and :meth:`Case.identity`, the method's description and
    :meth:`Method.identity`, the seeds, and a digest of the package's code
    (:func:`scoreda._digest.package_digest`): a change of any of them is a new entry."""

    def __init__(self, case: Case, method: Method, tuning_seeds, evaluation_seeds,
                 case_identity: str, method_identity: str):
        self._write, self._warning = cache.write_json, cache.CacheWarning
        self._write_npz = cache.write_npz
        self.method = method
        described = {"case": case.cache_key, "case_identity": case_identity,
                     "burn_in": case.burn_in, "init_std": case.init_std,
                     "divergence_bound": case.divergence_bound, "method": method.describe(),
                     "method_identity": method_identity, "version": _version(),
                     "code": _digest.package_digest()}
        key_tune = _key(described | {"seeds": list(tuning_seeds)})
        key_eval = _key(described | {"tuning": key_tune, "seeds": list(evaluation_seeds)})
        root = cache.cache_dir() / "compare"
        self.tuning_path = root / f"tune-{key_tune}.json"
        self.result_path = root / f"eval-{key_eval}.json"
        self.tuning_runs = _Runs(root / f"tune-{key_tune}.runs", self._write_npz, self._warning)
        self.result_runs = _Runs(root / f"eval-{key_eval}.runs", self._write_npz, self._warning)
        self.n_trials = len(evaluation_seeds)
        root.mkdir(parents=True, exist_ok=True)

    def _load(self, path, build):
        """``build`` applied to the file's JSON; None when the file is absent or damaged."""
        return _read_or_discard(path, lambda p: build(json.loads(p.read_text())), self._warning,
                                "damaged comparison cache entry {path} ({error}); removed, computing it again",
                                (ValueError, KeyError, TypeError, UnicodeDecodeError))  # incl. JSONDecodeError

    def load_tuning(self):
        def build(d):
            given = self.method.tuning_grid()  # its knobs in the method's order
            grid = {k: tuple(d["grid"][k]) for k in given} if set(d["grid"]) == set(given) \
                else {k: tuple(v) for k, v in d["grid"].items()}
            tuning = Tuning(d["points"], np.asarray(d["scores"], float), dict(d["chosen"]),
                            np.asarray(d["diverged"], int), grid)
            n_points = len(tuning.points)
            if tuning.scores.shape != (n_points,) or tuning.diverged.shape != (n_points,):
                raise ValueError(f"{n_points} points, {tuning.scores.size} scores and "
                                 f"{tuning.diverged.size} divergence counts")
            check_tuning(self.method, tuning)
            return tuning

        return self._load(self.tuning_path, build)

    def save_tuning(self, tuning: Tuning):
        self._write(self.tuning_path, tuning_json(tuning))

    def load_result(self):
        def build(d):
            arr = lambda k, dtype=float: np.asarray(d[k], dtype)
            result = MethodResult(dict(d["knobs"]), arr("rmse"), arr("spread"), arr("crps"),
                                  arr("rmse_curve"), arr("rank_counts", np.int64),
                                  arr("diverged_step", np.int64))
            per_trial = (result.rmse, result.spread, result.crps, result.diverged_step)
            if any(a.shape != (self.n_trials,) for a in per_trial):
                raise ValueError(f"per-trial arrays of shapes {[a.shape for a in per_trial]} "
                                 f"for {self.n_trials} trials")
            return result

        return self._load(self.result_path, build)

    def check_result(self, result: MethodResult, tuning: Tuning) -> MethodResult | None:
        """``result`` when it was evaluated with ``tuning``'s chosen knobs; otherwise the
        entry is named in a warning, removed and None returned (computed again)."""
        if _canonical(result.knobs) == _canonical(tuning.chosen):
            return result
        warnings.warn(self._warning(
            f"comparison cache entry {self.result_path} was evaluated with knobs "
            f"{result.knobs}, not the tuned {tuning.chosen}; removed, computing it again"),
            stacklevel=3)
        self.result_path.unlink(missing_ok=True)
        return None

    def save_result(self, result: MethodResult):
        self._write(self.result_path, result_json(result))


class _Runs:
    """The finished runs of one unfinished stage (a method's tuning or evaluation on one
    case): ``<stage>.runs/<digest of point and trial>.npz``, each a :class:`BatchResult`
    row. A file that cannot be read back is named in a warning, removed and run again."""

    def __init__(self, folder: Path, write_npz: Callable, warning: type):
        self.folder, self._write_npz, self._warning = folder, write_npz, warning

    def _path(self, point: Mapping, seed: int) -> Path:
        return self.folder / f"{_key({'point': _jsonable(point), 'seed': int(seed)})}.npz"

    def load(self, point: Mapping, seed: int) -> assimilate.BatchResult | None:
        def read(path):
            with np.load(path) as stored:
                return assimilate.BatchResult(**{f: stored[f] for f in assimilate.BatchResult._fields})

        return _read_or_discard(self._path(point, seed), read, self._warning,
                                "damaged comparison run {path} ({error}); removed, running it again",
                                (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile))

    def save(self, point: Mapping, seed: int, row: assimilate.BatchResult) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._write_npz(self._path(point, seed), row._asdict())

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _read_or_discard(path: Path, read: Callable, warning: type, message: str, errors: tuple):
    """``read(path)``; None when the file is absent, or damaged (``read`` raised one of
    ``errors``): then ``message`` (with ``{path}`` and ``{error}``) is warned as ``warning``
    and the file removed."""
    if not path.exists():
        return None
    try:
        return read(path)
    except errors as err:
        warnings.warn(message.format(path=path, error=f"{type(err).__name__}: {err}"), warning,
                      stacklevel=5)
        path.unlink(missing_ok=True)
        return None


def _floats(a):
    return [None if not np.isfinite(v) else float(v) for v in np.asarray(a, float).ravel()]


def tuning_json(t: Tuning) -> dict:
    """A :class:`Tuning` as JSON (an infinite score as ``"inf"``), as the cache and the
    records store it; :meth:`_Store.load_tuning` and ``Comparison.from_record`` read it."""
    return {"points": _jsonable(t.points), "scores": [float(s) if np.isfinite(s) else "inf" for s in t.scores],
            "chosen": _jsonable(t.chosen),
            "diverged": None if t.diverged is None else [int(v) for v in t.diverged],
            "grid": None if t.grid is None else _jsonable(t.grid)}


def result_json(r: MethodResult) -> dict:
    """A :class:`MethodResult` as JSON (NaN as ``null``), as the cache and the records
    store it."""
    return {"knobs": _jsonable(r.knobs), "rmse": _floats(r.rmse), "spread": _floats(r.spread),
            "crps": _floats(r.crps), "rmse_curve": _floats(r.rmse_curve),
            "rank_counts": [int(c) for c in r.rank_counts],
            "diverged_step": [int(s) for s in r.diverged_step]}


def _key(described: dict) -> str:
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _version() -> str:
    import scoreda

    return scoreda.__version__
