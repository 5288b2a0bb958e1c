"""What a comparison is made of: a :class:`Case` (how to make trial ``seed``, the forecast
model, the scoring window), a :class:`Method` (a filter of the registry with fixed knobs and
a tuning grid), and what the harness gives back per method: its :class:`Tuning` and its
:class:`MethodResult` on the evaluation trials."""

from __future__ import annotations

import dataclasses
import itertools
import json
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks, _digest, observe
from scoreda.filters import registry


class Trial(NamedTuple):
    """One trial of a case (the same for every method).

    Fields:
      truth: true states over the cycle, ``(T, d)``; ``truth[0]`` is the initial time.
      observations: :class:`scoreda.observe.Observations` at those steps, ``(T, d)``.
      center: what the initial ensemble is centred on, ``(d,)`` or a history window ``(W, d)``.
      noise: standard-normal draws ``(N,) + center.shape``; a method's initial ensemble is
        ``center + init_std * noise``.
    """

    truth: jax.Array
    observations: observe.Observations
    center: jax.Array
    noise: jax.Array


@dataclasses.dataclass(frozen=True)
class Case:
    """One comparison setting: how trials are made and the forecast model they are cycled with.

    Fields:
      name: for tables and messages.
      make_trial: ``seed -> Trial``; deterministic in the seed.
      model: forecast model ``(member, key, *model_args) -> next`` (see
        :mod:`scoreda.assimilate`); additive model error is added by the harness.
      obs: the observation operator's name (or a callable) given to every filter.
      model_args: arrays shared by all trials (e.g. a surrogate's parameters).
      burn_in: steps left out of every time average (the filters' spin-up).
      init_std: default spread of the initial ensemble (a method may tune its own).
      climate_std: the climatological standard deviation of one component: a trial whose
        time-averaged RMSE exceeds it has lost track (counted in the table's "lost track"
        column; a diverged trial in tuning scores at least this).
      divergence_bound: an RMSE above it at any step (or a non-finite one) is a divergence.
      cache_key: a readable label of what ``make_trial`` and ``model`` depend on (system,
        sizes, surrogate's cache entry); None disables caching. The cache is keyed by it
        *and* by :meth:`identity`, a digest of what the case computes, so two cases with
        one label but different functions or arrays never share an entry.
    """

    name: str
    make_trial: Callable[[int], Trial]
    model: Callable
    obs: str | Callable
    model_args: tuple = ()
    burn_in: int = 0
    init_std: float = 1.0
    climate_std: float | None = None
    divergence_bound: float = 1000.0
    cache_key: str | None = None

    def __post_init__(self):
        if not isinstance(self.name, str):
            raise ValueError(f"name must be a string, got {self.name!r}")
        for field in ("make_trial", "model"):
            if not callable(getattr(self, field)):
                raise ValueError(f"{self.name}: {field} must be callable, got "
                                 f"{type(getattr(self, field)).__name__}")
        if not isinstance(self.model_args, tuple):
            raise ValueError(f"{self.name}: model_args must be a tuple, got "
                             f"{type(self.model_args).__name__}")
        _checks.integer("burn_in", self.burn_in, 0)
        _checks.non_negative("init_std", self.init_std)
        _checks.positive("divergence_bound", self.divergence_bound)
        if self.climate_std is not None:
            _checks.positive("climate_std", self.climate_std)
        if self.cache_key is not None and not isinstance(self.cache_key, str):
            raise ValueError(f"{self.name}: cache_key must be a string or None, got "
                             f"{self.cache_key!r}")
        observe.operator(self.obs)

    def identity(self) -> str:
        """A digest of what the case computes: its trial maker, model, observation operator
        and model arguments by content (:func:`scoreda._digest.digest`), its label and
        settings. Raises :class:`scoreda._digest.Unkeyable` for a part that cannot be
        digested."""
        return _digest.digest(
            {"cache_key": self.cache_key, "make_trial": self.make_trial, "model": self.model,
             "obs": self.obs, "model_args": self.model_args, "burn_in": self.burn_in,
             "init_std": self.init_std, "divergence_bound": self.divergence_bound},
            f"case {self.name!r}")

    def check_trial(self, trial: Trial) -> None:
        """Raise ``ValueError`` when the averages of ``trial`` would be empty (``burn_in`` at
        or beyond its number of steps) or the trial is not a :class:`Trial`."""
        if not isinstance(trial, Trial):
            raise ValueError(f"{self.name}: make_trial must return a compare.Trial, got "
                             f"{type(trial).__name__}")
        n_steps = jnp.shape(trial.truth)[0] if jnp.ndim(trial.truth) == 2 else None
        if n_steps is None:
            raise ValueError(f"{self.name}: a trial's truth must have shape (T, d), got "
                             f"{jnp.shape(trial.truth)}")
        if self.burn_in >= n_steps:
            raise ValueError(f"{self.name}: burn_in ({self.burn_in}) must be smaller than the "
                             f"trial's {n_steps} steps, or nothing is left to average")


@dataclasses.dataclass(frozen=True)
class Method:
    """A filter of :data:`scoreda.filters.FILTERS` with fixed knobs and a tuning grid.

    Fields:
      label: the row's name in tables.
      filter: the registry name (``"EnKF"``, ``"ETKF"``, ``"LETKF"``, ``"EnSF"``, ...).
      knobs: fixed knobs (override the registry's defaults), including the cycle knobs
        ``model_error`` (additive forecast noise std, default 0) and ``init_std``.
      grid: candidate values per knob, tuned over their product; None takes the registry's
        grid for the knobs not fixed in ``knobs``, ``{}`` tunes nothing (e.g. a paper's own
        setting). A knob is either fixed or tuned, not both.
      wrap: optional ``(filter_fn, obs) -> filter_fn`` applied to the bound analysis (e.g. the
        authors' fill-unobserved device). The cache knows it by its content
        (:func:`scoreda._digest.digest`), so a lambda or a function redefined in a notebook
        is its own method, never another's.
      widen: at most this many rounds of grid widening (:func:`search`): while the chosen
        value of a float-valued axis with two or more values sits at an edge, the point one
        step beyond that edge *along the line through the chosen point* is scored (the step:
        the edge's ratio to its neighbour when the values are positive and at least 1.5
        apart, else their difference; a step the filter's checks refuse or warn about, such
        as eps_b at 1, is halved towards the edge, :func:`step_beyond`). One new point per
        edge axis and round, not a new slice of the product grid, and rounds stop as soon as
        the choice is interior, so a method tuned to the inside of its grid pays nothing.
        An edge with no admissible value beyond it (an additive knob at 0, inflation 1: no
        deflation) is a bound of the knob's range, marked ⊥ in tables; a choice still at
        another edge after the last round is marked † and the grid is printed. Default 4:
        the limit that keeps a runaway axis (a knob that only helps as it vanishes) from
        widening for ever; 0: the grid as given.
      tie_rtol: tuning scores within this fraction of the lowest are *tied* (default 0.01:
        a 1% difference in mean tuning RMSE is far below what three tuning trials resolve,
        and the initial spread of a filter that forgets it scores within 0.001%). Among
        tied points the choice is the one with the fewest diverged tuning trials, then one
        of the given grid over a widened one, then the fewest axes at an edge of the grid,
        then the lowest score (:func:`choose`). So float noise does not pick an edge where
        an interior point ties, and a widened value is taken only if it beats the grid by
        more than the tolerance (on an axis of two values, both edges, a tie still costs
        one widening round). 0: only exact ties (the strict rule of 0.3, which broke an
        exact tie towards the earlier point).

    Every knob value (fixed, and each grid point) passes the filter's own checks when the
    method is built.
    """

    label: str
    filter: str
    knobs: Mapping = dataclasses.field(default_factory=dict)
    grid: Mapping | None = None
    wrap: Callable | None = None
    widen: int = 4
    tie_rtol: float = 0.01

    def __post_init__(self):
        if not isinstance(self.label, str) or not self.label:
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")
        spec = registry.get(self.filter)
        if not isinstance(self.knobs, Mapping):
            raise ValueError(f"{self.label}: knobs must be a mapping of knob names to values, "
                             f"got {type(self.knobs).__name__}")
        if self.grid is not None and not isinstance(self.grid, Mapping):
            raise ValueError(f"{self.label}: grid must be a mapping of knob names to candidate "
                             f"values, or None, got {type(self.grid).__name__}")
        if self.wrap is not None and not callable(self.wrap):
            raise ValueError(f"{self.label}: wrap must be callable, got {self.wrap!r}")
        _checks.integer("widen", self.widen, 0)
        tie_rtol = _plain(self.tie_rtol)
        if (isinstance(tie_rtol, bool) or not isinstance(tie_rtol, (int, float))
                or not 0.0 <= tie_rtol < 1.0):
            raise ValueError(f"{self.label}: tie_rtol must be a real number in [0, 1), got "
                             f"{self.tie_rtol!r}")
        object.__setattr__(self, "tie_rtol", float(tie_rtol) + 0.0)  # -0.0 is 0.0
        # frozen copies, numbers as Python numbers: a generator grid is read once, and a
        # caller's later change to its dict does not change the method
        object.__setattr__(self, "knobs", {k: _plain(v) for k, v in self.knobs.items()})
        allowed = set(spec.knobs) | set(registry.CYCLE_KNOBS)
        for what, names in (("knobs", self.knobs), ("grid", self.grid or {})):
            unknown = set(names) - allowed
            if unknown:
                raise ValueError(f"{self.label}: unknown {what} {sorted(unknown)}; "
                                 f"{self.filter} has {sorted(allowed)}")
        both = sorted(set(self.knobs) & set(self.grid or {}))
        if both:
            raise ValueError(f"{self.label}: {both} both fixed in knobs and tuned in grid "
                             f"(knobs {[self.knobs[k] for k in both]}, grid "
                             f"{[self.grid[k] for k in both]}); keep one")
        for name, values in (self.grid or {}).items():
            if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
                raise ValueError(f"{self.label}: grid[{name!r}] must be a sequence of candidate "
                                 f"values, got {values!r}")
        frozen = {}
        for name, values in (self.grid or {}).items():
            values = [_plain(v) for v in values]
            if len(values) == 0:
                raise ValueError(f"{self.label}: grid[{name!r}] is empty")
            repeated = [v for i, v in enumerate(values) if v in values[:i]]
            if repeated:
                raise ValueError(f"{self.label}: grid[{name!r}] repeats {repeated[0]!r}")
            frozen[name] = tuple(values)
        if self.grid is not None:
            object.__setattr__(self, "grid", frozen)
        for point in grid_points(self):
            try:
                spec.check_knobs(point)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{self.label} ({self.filter}): {err}") from None

    def tuning_grid(self) -> dict:
        """The grid actually tuned over: ``grid``, or the registry's for the knobs not fixed
        in ``knobs`` when ``grid`` is None."""
        grid = ({k: v for k, v in registry.get(self.filter).grid.items() if k not in self.knobs}
                if self.grid is None else self.grid)
        return {k: tuple(v) for k, v in grid.items()}

    def describe(self) -> dict:
        """A JSON-able, readable description (for records and tables)."""
        return {"label": self.label, "filter": self.filter, "knobs": _jsonable(self.knobs),
                "grid": _jsonable(self.tuning_grid()), "widen": int(self.widen),
                "tie_rtol": self.tie_rtol,
                "wrap": None if self.wrap is None else _qualname(self.wrap)}

    def identity(self) -> str:
        """A digest of what the method computes: its description, the registry entry's
        analysis and defaults, and ``wrap`` by content (:func:`scoreda._digest.digest`)."""
        spec = registry.get(self.filter)
        return _digest.digest({"method": self.describe(), "analysis": spec.analysis,
                               "defaults": dict(spec.knobs), "wrap": self.wrap},
                              f"method {self.label!r}")


class Tuning(NamedTuple):
    """A method's tuning.

    Fields:
      points: one dict of the tuned knobs per point scored: the product grid, then the widened
        points in the order they were scored.
      scores: each point's mean time-averaged RMSE over the tuning trials, a diverged trial
        counted as the worst (:func:`tuning_scores`).
      chosen: the chosen knobs (fixed and tuned): among the points tied with the lowest
        score (``Method.tie_rtol``), fewer divergences first, then the given grid, then the
        interior (:func:`choose`).
      diverged: diverged tuning trials per point, ``(P,)`` (None: not recorded).
      grid: the grid finally tuned over (the method's, widened where the choice sat at an
        edge); None: the method's grid.
    """

    points: list
    scores: np.ndarray
    chosen: dict
    diverged: np.ndarray | None = None
    grid: dict | None = None


class MethodResult(NamedTuple):
    """A method evaluated on the evaluation trials (``n`` trials, ``N`` members).

    Fields:
      knobs: the knobs it ran with (fixed and tuned).
      rmse, spread, crps: per-trial time averages after the burn-in, ``(n,)`` (NaN when
        the trial diverged).
      rmse_curve: mean over the trials that did not diverge of the analysis RMSE, ``(T,)``.
      rank_counts: rank histogram of the truth among the analysis members over every
        component, scored step and non-diverged trial, ``(N + 1,)``.
      diverged_step: per trial, -1 if none, ``(n,)``.
    """

    knobs: dict
    rmse: np.ndarray
    spread: np.ndarray
    crps: np.ndarray
    rmse_curve: np.ndarray
    rank_counts: np.ndarray
    diverged_step: np.ndarray

    @property
    def n_diverged(self) -> int:
        return int(np.sum(self.diverged_step >= 0))

    @property
    def mean_rmse(self) -> float:
        """Mean of ``rmse`` over the trials that did not diverge; NaN, without a warning,
        when every trial diverged (the tables count those trials as losses)."""
        finite = self.rmse[np.isfinite(self.rmse)]
        return float(finite.mean()) if finite.size else float("nan")

    @property
    def spread_ratio(self) -> float:
        """Mean spread over mean RMSE on the trials that did not diverge (1 calibrated, below 1
        over-confident); NaN when every trial diverged."""
        ok = np.isfinite(self.rmse) & np.isfinite(self.spread)
        return float(self.spread[ok].mean() / self.rmse[ok].mean()) if ok.any() else float("nan")

    def joined(self, more: "MethodResult") -> "MethodResult":
        """This evaluation and ``more`` (the same knobs on other trials) as one evaluation of
        ``n + m`` trials: per-trial arrays concatenated (these trials first), rank counts
        summed, the RMSE curve the mean over the trials of both that did not diverge."""
        if not isinstance(more, MethodResult):
            raise ValueError(f"can only join another MethodResult, got {type(more).__name__}")
        if _canonical(self.knobs) != _canonical(more.knobs):
            raise ValueError(f"cannot join evaluations with different knobs: {self.knobs} and "
                             f"{more.knobs}")
        if self.rmse_curve.shape != more.rmse_curve.shape:
            raise ValueError(f"cannot join evaluations of {self.rmse_curve.shape[0]} and "
                             f"{more.rmse_curve.shape[0]} cycles")
        ran = [int(np.sum(r.diverged_step < 0)) for r in (self, more)]
        if sum(ran) == 0:
            curve = np.full_like(self.rmse_curve, np.nan)
        else:
            curve = sum(n * np.nan_to_num(r.rmse_curve) for n, r in zip(ran, (self, more))
                        if n) / sum(ran)
        return MethodResult(dict(self.knobs), *(np.concatenate([a, b]) for a, b in
                                                ((self.rmse, more.rmse), (self.spread, more.spread),
                                                 (self.crps, more.crps))),
                            curve, self.rank_counts + more.rank_counts,
                            np.concatenate([self.diverged_step, more.diverged_step]))

    def outlier_ratio(self) -> float:
        """Share of truths outside the ensemble (rank 0 or N) over its calibrated value
        ``2/(N + 1)``: 1 calibrated, above 1 over-confident, below 1 over-dispersive."""
        total = self.rank_counts.sum()
        if total == 0:
            return float("nan")
        n_bins = self.rank_counts.shape[0]
        return float((self.rank_counts[0] + self.rank_counts[-1]) / total / (2.0 / n_bins))


def grid_points(method: Method, grid: Mapping | None = None) -> list[dict]:
    """Every point of the method's tuning grid (or of ``grid``), its fixed knobs merged in."""
    grid = method.tuning_grid() if grid is None else grid
    names = list(grid)
    return [dict(method.knobs) | dict(zip(names, combo))
            for combo in itertools.product(*(grid[k] for k in names))]


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return _plain(obj)


def _plain(value):
    """A NumPy or JAX scalar (0-d array) as the Python number it holds; anything else as is."""
    if isinstance(value, (np.generic, np.ndarray, jax.Array)) and np.ndim(value) == 0:
        return np.asarray(value).item()
    return value


def _canonical(obj) -> str:
    """A JSON text of ``obj`` that a JSON round trip keeps (tuples as lists, sorted keys)."""
    return json.dumps(_jsonable(obj), sort_keys=True, default=str)


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
