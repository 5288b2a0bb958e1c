r"""The comparison harness: tune every method per case on hidden trials, evaluate on many.

A comparison in this package is *fair* and *powered*:

* **common random numbers**: in a trial every method sees the same truth, the same
  observations, the same standard-normal draws of its initial ensemble (scaled by its own
  ``init_std``) and the same cycle key;
* **tuned per case**: each method is tuned on *tuning trials* whose seeds are disjoint from
  the *evaluation trials*, over the product of its grid; the grid and every point's score
  are part of the result;
* **powered**: on the evaluation trials each method's time-averaged RMSE (mean with a
  bootstrap interval), its spread/RMSE, CRPS and rank histogram, its diverged trials and the
  trials where it lost track (RMSE above the case's ``climate_std``), all counted, never
  dropped; the difference to a reference method is the Hodges–Lehmann estimate of the *paired*
  difference over every trial with its Wilcoxon signed-rank 95% interval and p-value, a
  diverged trial counting as a loss (:mod:`scoreda.experiments.statistics`: rank statistics,
  which heavy-tailed RMSEs need); :func:`~scoreda.experiments.statistics.holm` corrects a
  chapter's verdicts together;
* **tuned to an interior optimum**: a grid point's score is the mean RMSE over the tuning
  trials with a diverged trial counted as the worst (never ``inf`` for the whole point), and
  a numeric axis whose chosen value sits at an edge of its grid is widened along the line
  through the chosen point, one value beyond the edge per round, for up to ``Method.widen``
  rounds (the final grid and every point scored are the tuning's); scores within
  ``Method.tie_rtol`` (1%) of the lowest are tied, and a tie goes to fewer divergences, the
  given grid and the interior (:func:`choose`), so float noise neither picks an edge nor
  widens towards one.

Trials run side by side in one compiled, vmapped scan
(:func:`scoreda.assimilate.cycle_batch`), and so do the float-valued points of a grid (the
knobs enter as traced arrays); string- and integer-valued knobs (integrator, number of
pseudo-time steps) select code and are looped over.

A :class:`Case` says how to make trial ``seed`` (:class:`Trial`) and what the forecast
model is; a :class:`Method` names a filter of :data:`scoreda.filters.FILTERS` with fixed
knobs and a grid. :func:`compare` runs both stages for a list of methods and returns a
:class:`Comparison`, whose :meth:`Comparison.table` is a Markdown table and
:meth:`Comparison.verdict` a sentence computed from the numbers. Results are cached as JSON
under ``$SCOREDA_CACHE/compare/``, one file per method and stage, so an interrupted
comparison resumes. The key is what the run computes: the case's label and a digest of its
trial maker, model, operator and arrays (:meth:`Case.identity`), the method's description and
a digest of its filter and ``wrap`` (:meth:`Method.identity`), the seeds, and a digest of the
package's code; a case or method that cannot be digested is refused for caching, and a
stored tuning that does not fit its method's grid is named and tuned again.

Everything is checked when built: seeds are distinct integers, every knob value (fixed or
on a grid) passes its filter's own check, a knob is fixed or tuned but not both.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from scoreda import _checks, _digest, assimilate, observe
from scoreda.experiments.statistics import Difference, Family, holm, mean_interval, paired_difference
from scoreda.filters import registry

__all__ = ["Trial", "Case", "Method", "Tuning", "MethodResult", "Difference", "Family",
           "Comparison", "paired_difference", "mean_interval", "holm", "trajectory",
           "make_trials", "grid_points", "tuning_scores", "tied", "choose", "search", "tune",
           "evaluate", "compare",
           "check_tuning"]


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
        apart, else their difference), unless the filter's checks refuse or warn about it
        (deflation) or it crosses zero. One new point per edge axis and round, not a new
        slice of the product grid. 0: the grid as given. Default 1: each round is a
        compilation and a batch of runs per method and case, and the book's chapters must
        execute in half an hour on two cores; a choice still at an edge is marked † and
        the grid is printed.
      tie_rtol: tuning scores within this fraction of the lowest are *tied* (default 0.01:
        a 1% difference in mean tuning RMSE is far below what three tuning trials resolve,
        and the initial spread of a filter that forgets it scores within 0.001%). Among
        tied points the choice is the one with the fewest diverged tuning trials, then one
        of the given grid over a widened one, then the fewest axes at an edge of the grid,
        then the lowest score (:func:`choose`). So float noise neither picks an edge nor
        chases it outwards by widening. 0: the lowest score, as before 0.4.

    Every knob value (fixed, and each grid point) passes the filter's own checks when the
    method is built.
    """

    label: str
    filter: str
    knobs: Mapping = dataclasses.field(default_factory=dict)
    grid: Mapping | None = None
    wrap: Callable | None = None
    widen: int = 1
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
        if (isinstance(self.tie_rtol, bool) or not isinstance(self.tie_rtol, (int, float, np.number))
                or not 0.0 <= float(self.tie_rtol) < 1.0):
            raise ValueError(f"{self.label}: tie_rtol must be a number in [0, 1), got "
                             f"{self.tie_rtol!r}")
        object.__setattr__(self, "tie_rtol", float(self.tie_rtol))
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

    def outlier_ratio(self) -> float:
        """Share of truths outside the ensemble (rank 0 or N) over its calibrated value
        ``2/(N + 1)``: 1 calibrated, above 1 over-confident, below 1 over-dispersive."""
        total = self.rank_counts.sum()
        if total == 0:
            return float("nan")
        n_bins = self.rank_counts.shape[0]
        return float((self.rank_counts[0] + self.rank_counts[-1]) / total / (2.0 / n_bins))


@dataclasses.dataclass
class Comparison:
    """The outcome of :func:`compare` on one case.

    Fields:
      case: the case's name.
      reference: label of the method the differences are taken against.
      methods: label -> :class:`Method`.
      tunings: label -> :class:`Tuning`.
      results: label -> :class:`MethodResult` on the evaluation trials.
      tuning_seeds, evaluation_seeds: the trials' seeds (disjoint).
      climate_std: the case's climatological standard deviation (None: unknown); a trial
        whose time-averaged RMSE exceeds it has lost track.
    """

    case: str
    reference: str
    methods: dict
    tunings: dict
    results: dict
    tuning_seeds: tuple
    evaluation_seeds: tuple
    climate_std: float | None = None

    def difference(self, label: str, reference: str | None = None) -> Difference:
        """Paired RMSE difference ``label - reference`` (default: the comparison's reference)
        over every evaluation trial: Hodges–Lehmann estimate, Wilcoxon interval and p-value
        (:func:`scoreda.experiments.statistics.paired_difference`; a diverged trial is a loss)."""
        ref = self.reference if reference is None else reference
        return paired_difference(self.results[label].rmse, self.results[ref].rmse)

    def n_lost(self, label: str) -> int:
        """Evaluation trials where ``label`` ran to the end with a time-averaged RMSE above
        ``climate_std`` (0 when the climate is unknown)."""
        if self.climate_std is None:
            return 0
        rmse = self.results[label].rmse
        return int(np.sum(np.isfinite(rmse) & (rmse > self.climate_std)))

    def best(self) -> str:
        """The label with the lowest mean RMSE among methods with no diverged trial."""
        ok = {k: np.mean(r.rmse) for k, r in self.results.items() if r.n_diverged == 0}
        return min(ok, key=ok.get) if ok else ""

    def best_of(self, labels: Sequence[str]) -> str:
        """Of ``labels``, the one with the lowest mean RMSE over every evaluation trial, a
        diverged trial counted as the worst (:func:`tuning_scores`, fewer divergences first
        among equal scores): e.g. the best of the tuned Kalman filters, the reference of a
        verdict. A method that diverged in most trials is not chosen for its survivors."""
        labels = list(labels)
        if not labels:
            raise ValueError("best_of needs at least one label")
        rmse = np.stack([self.results[k].rmse for k in labels])
        scores = tuning_scores(rmse, self.climate_std)
        diverged = np.sum(~np.isfinite(rmse), axis=1)
        return labels[int(np.lexsort((diverged, scores))[0])]

    def relative(self, label: str, reference: str | None = None) -> tuple[float, float, float]:
        """``label`` against ``reference`` (default: :meth:`best`) on the reference's scale:
        ``(ratio, low, high) = 1 + (estimate, low, high of label - reference) / mean RMSE of
        the reference`` (over its trials that ran); NaNs when fewer than 2 trials."""
        ref = self.best() if reference is None else reference
        if ref == "":
            raise ValueError(f"{self.case}: every method diverged in some trial, so there is no "
                             "best method to be relative to; name one with reference=")
        diff = self.difference(label, ref)
        ran = np.isfinite(self.results[ref].rmse)
        if diff.n < 2 or not ran.any():
            return (float("nan"),) * 3
        scale = float(np.mean(self.results[ref].rmse[ran]))
        return tuple(1.0 + v / scale for v in (diff.estimate, diff.low, diff.high))

    def outcome(self, label: str, reference: str | None = None) -> str:
        """The verdict in one word, from the paired interval: ``"better"`` or ``"worse"``
        (interval excludes 0; ``label`` against ``reference``), ``"no significant
        difference"``, or ``"not comparable"`` (fewer than 2 trials)."""
        diff = self.difference(label, reference)
        if diff.n < 2:
            return "not comparable"
        if not diff.significant:
            return "no significant difference"
        return "better" if diff.estimate < 0 else "worse"

    def verdict(self, label: str, reference: str | None = None, digits: int = 3) -> str:
        """A sentence computed from the numbers: the paired difference with its interval and
        what it means, e.g. ``"EnSF minus LETKF: -0.120 [-0.180, -0.060] (EnSF better)"``."""
        ref = self.reference if reference is None else reference
        diff = self.difference(label, ref)
        head = f"{label} minus {ref}: "
        if diff.n < 2:
            return head + f"not comparable ({diff.n} trials)"
        numbers = f"{_signed(diff.estimate, digits)} [{_signed(diff.low, digits)}, " \
                  f"{_signed(diff.high, digits)}]"
        if not diff.significant:
            meaning = "no significant difference"
        else:
            meaning = f"{label if diff.estimate < 0 else ref} better"
        extra = (f"; {diff.n_diverged} of {diff.n} trials where one of them diverged, counted "
                 "as its loss") if diff.n_diverged else ""
        return head + numbers + f" ({meaning}{extra})"

    def p_values(self, labels: Sequence[str] | None = None,
                 reference: str | None = None) -> dict:
        """label -> two-sided Wilcoxon p-value of ``label - reference`` (every label but the
        reference by default), for :func:`scoreda.experiments.statistics.holm`."""
        ref = self.reference if reference is None else reference
        labels = [k for k in self.results if k != ref] if labels is None else list(labels)
        return {k: self.difference(k, ref).p for k in labels}

    def table(self, digits: int = 3, knobs: bool = True) -> str:
        """A Markdown table: one row per method (mean RMSE over the trials that ran with its
        bootstrap 95% interval, the paired difference to the reference with its Wilcoxon 95%
        interval, spread/RMSE, CRPS, rank outliers, diverged and lost-track trials, tuned
        knobs), and a note saying how the numbers are computed."""
        n = len(self.evaluation_seeds)
        f = f"{{:.{digits}f}}"
        lost_column = self.climate_std is not None
        head = (["method", "RMSE [95% CI]", f"minus {self.reference} [95% CI]", "spread / RMSE",
                 "CRPS", "rank outliers ×", "diverged"] + (["lost track"] if lost_column else [])
                + (["knobs"] if knobs else []))
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for label, r in self.results.items():
            ok = np.isfinite(r.rmse)
            mean, low, high = mean_interval(r.rmse)
            if ok.sum() >= 2:
                rmse = f"{f.format(mean)} [{f.format(low)}, {f.format(high)}]"
            elif ok.sum() == 1:
                rmse = f.format(mean)
            else:
                rmse = "—"
            if label == self.reference:
                diff = "reference"
            else:
                d = self.difference(label)
                diff = "—" if d.n < 2 else (f"{_signed(d.estimate, digits)} [{_signed(d.low, digits)}, "
                                            f"{_signed(d.high, digits)}]")
            ratio = np.nanmean(r.spread) / np.nanmean(r.rmse) if ok.any() else float("nan")
            crps = np.nanmean(r.crps) if ok.any() else float("nan")
            outliers = r.outlier_ratio()
            row = [label, rmse, diff, "—" if not ok.any() else f"{ratio:.2f}",
                   "—" if not ok.any() else f.format(crps),
                   "—" if not np.isfinite(outliers) else f"{outliers:.1f}", f"{r.n_diverged}/{n}"]
            if lost_column:
                row.append(f"{self.n_lost(label)}/{n}")
            if knobs:
                row.append(self._knobs_cell(label, r))
            lines.append("| " + " | ".join(row) + " |")
        notes = [f"RMSE: mean over the trials that ran, bootstrap 95% interval; minus "
                 f"{self.reference}: Hodges–Lehmann estimate over all {n} paired trials with the "
                 "Wilcoxon signed-rank 95% interval, a diverged trial counted as a loss."]
        if lost_column:
            notes.append(f"Lost track: RMSE above the climate's standard deviation "
                         f"{self.climate_std:.3g}.")
        if knobs and any("†" in line for line in lines[2:]):
            notes.append("† at the edge of its tuning grid (after widening).")
        if knobs and any("‡" in line for line in lines[2:]):
            notes.append("‡ every point of its grid diverged on the tuning trials; the one that "
                         "survived longest is shown.")
        return "\n".join(lines) + "\n\n" + " ".join(notes)

    def _knobs_cell(self, label: str, r: MethodResult) -> str:
        tuning = self.tunings[label]
        grid = tuning.grid if tuning.grid is not None else self.methods[label].tuning_grid()
        edge = lambda k, v: len(grid[k]) > 1 and v in (min(grid[k]), max(grid[k]))
        n_tuning = len(self.tuning_seeds)
        failed = (bool(tuning.points) and tuning.diverged is not None
                  and bool(np.all(np.asarray(tuning.diverged) >= n_tuning)))
        cell = ", ".join(f"{k} {_short(v)}" + (" †" if edge(k, v) else "")
                         for k, v in r.knobs.items() if k in grid) or "fixed"
        return cell + (" ‡" if failed else "")

    def tuning_table(self, label: str, digits: int = 3) -> str:
        """The tuning grid of ``label`` as a Markdown table (one row per point scored, the
        widened ones included), with each point's diverged tuning trials."""
        tuning = self.tunings[label]
        if not tuning.points:
            return f"{label}: not tuned (fixed setting)"
        names = list(tuning.points[0])
        n_tuning = len(self.tuning_seeds)
        diverged = (np.zeros(len(tuning.points), int) if tuning.diverged is None
                    else np.asarray(tuning.diverged, int))
        lines = ["| " + " | ".join(names) + " | tuning RMSE | diverged |",
                 "|" + "---|" * (len(names) + 2)]
        order = sorted(range(len(tuning.points)),
                       key=lambda i: tuple(_sort_key(tuning.points[i][k]) for k in names))
        method = self.methods[label]
        is_tied = tied(method, tuning.scores)
        for i in order:
            point, score = tuning.points[i], tuning.scores[i]
            s = "—" if not np.isfinite(score) else f"{score:.{digits}f}"
            mark = (" ◀" if all(tuning.chosen.get(k) == v for k, v in point.items())
                    else " =" if is_tied[i] else "")
            lines.append("| " + " | ".join(_short(point[k]) for k in names)
                         + f" | {s}{mark} | {diverged[i]}/{n_tuning} |")
        method_grid = method.tuning_grid()
        added = {k: [v for v in vals if v not in method_grid.get(k, ())]
                 for k, vals in (tuning.grid or {}).items()}
        added = {k: v for k, v in added.items() if v}
        note = ("\n\nWidened beyond the given grid: "
                + "; ".join(f"{k} {', '.join(_short(v) for v in vals)}" for k, vals in added.items())
                + ".") if added else ""
        if int(is_tied.sum()) > 1:
            note += (f"\n\n= tied with the lowest score (within {method.tie_rtol:.0%}); a tie "
                     "goes to fewer divergences, the given grid, then the interior.")
        return "\n".join(lines) + note

    @classmethod
    def from_record(cls, record: Mapping) -> "Comparison":
        """The comparison that :meth:`record` wrote (read back from JSON): tables, verdicts
        and intervals as the original's. A method's ``wrap`` is not stored, so a method that
        had one comes back without it (its numbers are the stored ones)."""
        try:
            # a record from before 0.4 has no tie_rtol: it chose the lowest score (0)
            methods = {label: Method(d["label"], d["filter"], d["knobs"], d["grid"],
                                     widen=d["widen"], tie_rtol=d.get("tie_rtol", 0.0))
                       for label, d in record["methods"].items()}
            tunings = {label: Tuning(d["points"], np.asarray(d["scores"], float),
                                     dict(d["chosen"]),
                                     None if d["diverged"] is None else np.asarray(d["diverged"], int),
                                     None if d["grid"] is None
                                     else {k: tuple(v) for k, v in d["grid"].items()})
                       for label, d in record["tunings"].items()}
            arr = lambda d, k, dtype=float: np.asarray(d[k], dtype)
            results = {label: MethodResult(dict(d["knobs"]), arr(d, "rmse"), arr(d, "spread"),
                                           arr(d, "crps"), arr(d, "rmse_curve"),
                                           arr(d, "rank_counts", np.int64),
                                           arr(d, "diverged_step", np.int64))
                       for label, d in record["results"].items()}
        except (KeyError, TypeError) as err:
            raise ValueError(f"not a comparison record: {type(err).__name__}: {err}") from None
        if not set(methods) == set(tunings) == set(results):
            raise ValueError(f"a comparison record names methods {sorted(methods)}, tunings "
                             f"{sorted(tunings)} and results {sorted(results)}: they must agree")
        if record["reference"] not in methods:
            raise ValueError(f"the record's reference {record['reference']!r} is not one of its "
                             f"methods {sorted(methods)}")
        return cls(record["case"], record["reference"], methods, tunings, results,
                   tuple(record["tuning_seeds"]), tuple(record["evaluation_seeds"]),
                   record.get("climate_std"))

    def record(self) -> dict:
        """Every number as JSON-able lists (for ``results.json`` and the book's records);
        :meth:`from_record` reads it back."""
        return {
            "case": self.case, "reference": self.reference,
            "tuning_seeds": list(self.tuning_seeds), "evaluation_seeds": list(self.evaluation_seeds),
            "climate_std": self.climate_std,
            "methods": {k: m.describe() for k, m in self.methods.items()},
            "tunings": {k: _tuning_json(t) for k, t in self.tunings.items()},
            "results": {k: _result_json(r) for k, r in self.results.items()},
        }


def _signed(value: float, digits: int) -> str:
    if np.isnan(value):
        return "—"
    return f"{value:+.{digits}f}" if np.isfinite(value) else ("+∞" if value > 0 else "−∞")


def _sort_key(value):
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else (1, 0, str(value))


# ---------------------------------------------------------------------------------------
# running a method on a batch of trials


#: bound analyses by (filter, operator, static knobs, wrap), the callables by *identity*: one
#: object per setting, so every grid point and trial shares one compilation, and two lambdas
#: (or a function redefined in a notebook) are two settings, never one. Kept for the latest
#: :data:`_BOUND_LIMIT` settings (each entry holds its operator and wrap, so an identity is
#: never reused while it is a key).
_BOUND_FILTERS: "collections.OrderedDict" = collections.OrderedDict()
_BOUND_LIMIT = 64


def _bound_filter(method: Method, obs, static: dict) -> Callable:
    """The method's analysis with ``obs`` and its static knobs bound (see :data:`_BOUND_FILTERS`)."""
    spec = registry.get(method.filter)  # by identity too: a replaced registry entry is new
    key = (method.filter, id(spec), ("callable", id(obs)) if callable(obs) else obs,
           tuple(sorted((k, repr(v)) for k, v in static.items())),
           None if method.wrap is None else id(method.wrap))
    if key in _BOUND_FILTERS:
        _BOUND_FILTERS.move_to_end(key)
        return _BOUND_FILTERS[key][0]
    fn = spec.bind(obs=obs, **static)
    if method.wrap is not None:
        fn = method.wrap(fn, obs)
        if not callable(fn):
            raise ValueError(f"{method.label}: wrap(filter_fn, obs) must return the wrapped "
                             f"analysis (a callable), got {type(fn).__name__}")
    _BOUND_FILTERS[key] = (fn, obs, method.wrap, spec)
    while len(_BOUND_FILTERS) > _BOUND_LIMIT:
        _BOUND_FILTERS.popitem(last=False)
    return fn


def _all_knobs(case: Case, method: Method, point: Mapping) -> tuple[dict, dict]:
    """Every knob of a run (registry defaults, cycle knobs, the method's fixed knobs, then
    ``point``, each overriding the ones before) and the static ones among them (those that
    select code: strings, integers and the filter's ``static``). So a fixed knob the caller
    does not give is kept, and one it gives is the caller's choice (e.g. a convergence
    check with other ``n_steps``)."""
    spec = registry.get(method.filter)
    point = {k: _plain(v) for k, v in point.items()}
    spec.check_knobs(dict(method.knobs) | point)
    knobs = (dict(spec.knobs) | {"model_error": 0.0, "init_std": case.init_std}
             | dict(method.knobs) | point)
    knobs.update({k: float(knobs[k]) for k in registry.CYCLE_KNOBS})
    static = {k: (float(v) if k in spec.static else v) for k, v in knobs.items()
              if _is_static(v) or k in spec.static}
    return knobs, static


def _trial_key(seed: int) -> jax.Array:
    """The cycle key of trial ``seed``: the same for every method (common random numbers)."""
    return jax.random.fold_in(jax.random.key(int(seed)), 7)


def trajectory(case: Case, method: Method, knobs: Mapping, seed: int, *,
               progress: bool = False) -> assimilate.CycleResult:
    """One trial of ``case`` cycled by ``method`` with ``knobs`` (e.g. the tuned ones of a
    :class:`MethodResult`), keeping the analysis means and variances for pictures.

    The same truth, observations, initial draws and cycle key as the batched runs of
    :func:`evaluate`, so its RMSE curve is that trial's row there (to rounding).
    """
    (seed,) = _checks.seeds("seed", [seed])
    (trial,) = make_trials(case, [seed])
    knobs, static = _all_knobs(case, method, knobs)
    filter_fn = _bound_filter(method, case.obs, static)
    dynamic = {k: jnp.float32(v) for k, v in knobs.items()
               if k not in static and k not in registry.CYCLE_KNOBS}
    return assimilate.cycle(
        _trial_key(seed), assimilate.with_model_error(case.model),
        filter_fn, trial.truth, trial.observations, trial.center[None] + knobs["init_std"] * trial.noise,
        model_args=tuple(case.model_args) + (jnp.float32(knobs["model_error"]),),
        filter_kwargs=dynamic, divergence_bound=case.divergence_bound, on_divergence="report",
        progress=progress)


def _is_static(value) -> bool:
    return value is None or (isinstance(value, (str, bool, int, np.integer))
                             and not isinstance(value, float))


def _run(case: Case, method: Method, trials: Sequence[Trial], seeds: Sequence[int],
         points: Sequence[dict], progress: bool, batch_size: int | None = None,
         finished: "_Runs | None" = None) -> list[assimilate.BatchResult]:
    """Cycle every (point, trial) pair; returns one :class:`BatchResult` per point whose
    batch axis runs over ``trials``.

    Runs that share their static knobs go through one compiled cycle in batches of
    ``batch_size`` runs (default: the number of trials; the last batch is padded with
    repeats), so tuning and evaluation reuse one compilation and memory stays bounded.
    With ``finished``, runs found there are loaded instead of cycled and every batch is
    saved there as soon as it is done: an interrupted stage resumes at its first unfinished
    batch. Each run's result depends only on its point and trial (its key is the trial's),
    so a resumed stage gives the numbers of an uninterrupted one.
    """
    n_trials = len(trials)
    batch_size = n_trials if batch_size is None else batch_size
    groups: dict = {}
    for i, point in enumerate(points):
        knobs, static = _all_knobs(case, method, point)
        groups.setdefault(tuple(sorted(static.items())), []).append((i, knobs))
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *trials)
    trial_keys = jnp.stack([_trial_key(seed) for seed in seeds])
    rows: dict = {}  # (point index, trial index) -> BatchResult row
    for static_items, members in groups.items():
        filter_fn = _bound_filter(method, case.obs, dict(static_items))
        dynamic = [k for k in members[0][1] if k not in dict(static_items)]
        filter_names = [k for k in dynamic if k not in registry.CYCLE_KNOBS]
        runs = []
        for i, knobs in members:
            for t in range(n_trials):
                row = finished.load(points[i], seeds[t]) if finished else None
                if row is None:
                    runs.append((i, knobs, t))
                else:
                    rows[i, t] = row
        for start in range(0, len(runs), batch_size):
            chunk = runs[start:start + batch_size]
            padded = chunk + [chunk[0]] * (batch_size - len(chunk))
            take = jnp.asarray([t for _, _, t in padded])
            batch = jax.tree.map(lambda a: a[take], stacked)
            values = {k: np.array([kn[k] for _, kn, _ in padded], np.float32) for k in dynamic}
            init_std = values["init_std"].reshape((-1,) + (1,) * (batch.noise.ndim - 1))
            ensemble0 = batch.center[:, None] + init_std * batch.noise
            out = assimilate.cycle_batch(
                trial_keys[take], assimilate.with_model_error(case.model), filter_fn, batch.truth,
                batch.observations, ensemble0, model_args=tuple(case.model_args),
                trial_model_args=(values["model_error"],),
                filter_kwargs={k: values[k] for k in filter_names},
                divergence_bound=case.divergence_bound, progress=progress)
            for j, (i, _, t) in enumerate(chunk):
                rows[i, t] = jax.tree.map(lambda a: np.asarray(a[j]), out)
                if finished:
                    finished.save(points[i], seeds[t], rows[i, t])
    return [jax.tree.map(lambda *r: np.stack(r), *[rows[i, t] for t in range(n_trials)])
            for i in range(len(points))]


def _time_averages(case: Case, out: assimilate.BatchResult):
    late = slice(case.burn_in, None)
    diverged = out.diverged_step >= 0
    nan_if = lambda a: np.where(diverged, np.nan, np.mean(a[:, late], axis=1))
    return nan_if(out.analysis_rmse), nan_if(out.analysis_spread), nan_if(out.analysis_crps)


# ---------------------------------------------------------------------------------------
# the two stages


def make_trials(case: Case, seeds: Sequence[int], trials: Sequence[Trial] | None = None) -> list:
    """The trials of ``seeds`` (made by ``case.make_trial`` unless given), each checked by
    :meth:`Case.check_trial`."""
    seeds = _checks.seeds("seeds", seeds, 1)
    trials = [case.make_trial(s) for s in seeds] if trials is None else list(trials)
    if len(trials) != len(seeds):
        raise ValueError(f"{case.name}: {len(trials)} trials for {len(seeds)} seeds")
    for trial in trials:
        case.check_trial(trial)
    return trials


def grid_points(method: Method, grid: Mapping | None = None) -> list[dict]:
    """Every point of the method's tuning grid (or of ``grid``), its fixed knobs merged in."""
    grid = method.tuning_grid() if grid is None else grid
    names = list(grid)
    return [dict(method.knobs) | dict(zip(names, combo))
            for combo in itertools.product(*(grid[k] for k in names))]


def tuning_scores(rmse: np.ndarray, climate_std: float | None = None) -> np.ndarray:
    r"""Each grid point's score from its per-trial time-averaged RMSEs ``rmse`` ``(P, n)``
    (NaN: diverged): the mean over the trials, a diverged trial counted at the *loss value*
    :math:`\max(\text{climate\_std}, \text{the largest RMSE of any trial that ran})`, so it
    scores worse than every trial that ran (and than climatology) without making the whole
    point ``inf``. ``inf`` only where no trial of any point ran and the climate is unknown."""
    rmse = np.asarray(rmse, float)
    ran = np.isfinite(rmse)
    largest = float(np.max(rmse[ran])) if ran.any() else 0.0
    loss = max(largest, climate_std or 0.0)
    if loss == 0.0:
        return np.full(rmse.shape[0], np.inf)
    return np.where(ran, rmse, loss).mean(axis=1)


def _widened(method: Method, grid: dict, chosen: Mapping) -> dict:
    """The axes of ``grid`` (name -> values) whose chosen value sits at an edge, each with the
    value one step beyond it (see ``Method.widen``); empty when none can be widened."""
    spec = registry.get(method.filter)
    beyond = {}
    for name, values in grid.items():
        if len(values) < 2 or not all(isinstance(v, float) for v in values):
            continue
        ordered = sorted(values)
        if chosen[name] == ordered[-1]:
            inner, edge = ordered[-2], ordered[-1]
        elif chosen[name] == ordered[0]:
            inner, edge = ordered[1], ordered[0]
        else:
            continue
        if inner > 0 and edge > 0 and max(inner, edge) / min(inner, edge) >= 1.5:
            value = edge * (edge / inner)
        else:
            value = edge + (edge - inner)
        value = float(f"{value:.6g}")
        if edge == 0.0 or (value > 0) != (edge > 0) or value in values:
            continue
        if name == "inflation" and value < 1.0 <= edge:  # no widening into deflation
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                spec.check_knobs(dict(method.knobs) | dict(chosen) | {name: value})
                if name in registry.CYCLE_KNOBS:
                    _checks.non_negative(name, value)
        except (ValueError, TypeError, Warning):
            continue
        beyond[name] = value
    return beyond


def tune(case: Case, method: Method, seeds: Sequence[int], *, progress: bool = False,
         trials: Sequence[Trial] | None = None, batch_size: int | None = None,
         finished=None) -> Tuning:
    """Score every grid point of ``method`` on the trials ``seeds`` (:func:`tuning_scores`:
    mean time-averaged RMSE, a diverged trial counted as the worst) and choose among the
    points tied with the lowest score (:func:`choose`); widen the grid along the line
    through the choice while it sits at an edge (``Method.widen``), scoring only the new
    points. If every trial of every
    point diverged, the point whose divergences came latest on average is chosen (marked ‡
    in :meth:`Comparison.table`)."""
    grid = method.tuning_grid()
    if not grid:
        return Tuning([], np.zeros(0), dict(method.knobs), np.zeros(0, int), {})
    trials = make_trials(case, seeds, trials)

    def score(points):
        for out in _run(case, method, trials, seeds, points, progress, batch_size, finished):
            steps = np.where(out.diverged_step >= 0, out.diverged_step, out.analysis_rmse.shape[1])
            yield _time_averages(case, out)[0], float(np.mean(steps))

    return search(method, score, case.climate_std)


def search(method: Method, score: Callable, climate_std: float | None = None) -> Tuning:
    """The tuning rule of :func:`tune`, for any scorer: ``score(points)`` yields, for each
    point (a dict of knobs), its per-trial time-averaged RMSEs ``(n,)`` (NaN: diverged) and
    its mean survival (steps before divergence). Scores (:func:`tuning_scores`), chooses
    among the points tied with the lowest score (:func:`choose`) and, while the choice sits
    at an edge of a
    numeric axis, scores the point one step beyond that edge along the line through the
    choice, for up to ``method.widen`` rounds."""
    grid = method.tuning_grid()
    if not grid:
        return Tuning([], np.zeros(0), dict(method.knobs), np.zeros(0, int), {})
    scored: dict = {}  # canonical point -> (time-averaged RMSEs (n,), mean survival)
    points, new = [], grid_points(method, grid)
    for round_ in range(method.widen + 1):
        points += new
        for point, (rmse, survival) in zip(new, score(new) if new else ()):
            scored[_canonical(point)] = (np.asarray(rmse, float), float(survival))
        rows = [scored[_canonical(p)] for p in points]
        rmse = np.stack([r[0] for r in rows])
        scores = tuning_scores(rmse, climate_std)
        diverged = np.sum(~np.isfinite(rmse), axis=1)
        if np.isfinite(rmse).any():
            best = choose(method, points, scores, diverged, grid)
        else:  # every trial of every point diverged: keep the one that survived longest
            best = int(np.argmax([r[1] for r in rows]))
        chosen = points[best]
        if round_ == method.widen or not np.isfinite(rmse).any():
            break
        # widen along the lines through the chosen point: one new point per edge axis
        beyond = _widened(method, grid, chosen)
        new = [dict(chosen) | {name: value} for name, value in beyond.items()]
        new = [p for p in new if _canonical(p) not in scored]
        if not new:
            break
        for name, value in beyond.items():
            grid = grid | {name: ((value,) + grid[name] if value < min(grid[name])
                                  else grid[name] + (value,))}
    # keep only the tuned names in the points (the fixed knobs are the method's)
    return Tuning([{k: p[k] for k in grid} for p in points], scores, chosen, diverged, grid)


def tied(method: Method, scores) -> np.ndarray:
    """Which ``scores`` ``(P,)`` are tied with the lowest finite one: within
    ``method.tie_rtol`` of it (relative; scores are mean RMSEs, so not negative)."""
    scores = np.asarray(scores, float)
    ok = np.isfinite(scores)
    if not ok.any():
        return np.zeros(scores.shape, bool)
    lowest = float(np.min(scores[ok]))
    return ok & (scores <= lowest + method.tie_rtol * abs(lowest))


def choose(method: Method, points: Sequence[Mapping], scores, diverged, grid: Mapping) -> int:
    r"""The index of the chosen point among ``points`` with tuning ``scores`` ``(P,)`` and
    ``diverged`` tuning trials ``(P,)``, on the (possibly widened) ``grid``: among the points
    :func:`tied` with the lowest score, the first by

    1. fewest diverged tuning trials;
    2. fewest knobs outside the method's given grid (a widened value must *beat* the grid,
       not tie it, so widening stops where the scores flatten);
    3. fewest knobs at an edge of ``grid`` (an axis with two or more values);
    4. lowest score, then the earlier point.

    With ``method.tie_rtol`` 0 this is the lowest score, fewer divergences first."""
    scores = np.asarray(scores, float)
    given = method.tuning_grid()
    candidates = np.flatnonzero(tied(method, scores))

    def rank(i):
        point = points[i]
        widened = sum(point[k] not in given.get(k, (point[k],)) for k in grid)
        at_edge = sum(point[k] in (min(grid[k]), max(grid[k])) for k in grid
                      if len(grid[k]) > 1 and all(_is_number(v) for v in grid[k]))
        return (int(diverged[i]), widened, at_edge, float(scores[i]), int(i))

    return int(min(candidates, key=rank))


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def evaluate(case: Case, method: Method, knobs: dict, seeds: Sequence[int], *,
             progress: bool = False, trials: Sequence[Trial] | None = None,
             finished=None) -> MethodResult:
    """Run ``method`` with ``knobs`` on the evaluation trials ``seeds`` (``finished``: a
    stage's store of finished runs, as :func:`compare` keeps them; None runs everything)."""
    trials = make_trials(case, seeds, trials)
    out = _run(case, method, trials, seeds, [dict(knobs)], progress, finished=finished)[0]
    rmse, spread, crps = _time_averages(case, out)
    ok = out.diverged_step < 0
    curve = (np.mean(out.analysis_rmse[ok], axis=0) if ok.any()
             else np.full(out.analysis_rmse.shape[1], np.nan))
    ranks = out.rank_counts[ok][:, case.burn_in:].sum(axis=(0, 1))
    return MethodResult(dict(knobs), rmse, spread, crps, curve, ranks, out.diverged_step)


def compare(case: Case, methods: Sequence[Method], *, tuning_seeds: Sequence[int],
            evaluation_seeds: Sequence[int], reference: str | None = None, cache: bool = True,
            progress: bool = True) -> Comparison:
    """Tune each method on ``tuning_seeds``, evaluate it on ``evaluation_seeds``.

    The two seed sets must be disjoint. ``reference`` (default: the first method) is what
    the table's paired differences are taken against. With ``cache`` and a
    ``case.cache_key``, each method's tuning and evaluation are stored as JSON and reused,
    and until a stage is stored its finished batches of runs are kept (one ``.npz`` per run
    in a folder beside the stage's JSON, removed once the JSON is written), so an
    interrupted comparison resumes within a method, not only between methods.
    """
    if not isinstance(case, Case):
        raise ValueError(f"case must be a compare.Case, got {type(case).__name__}")
    methods = list(methods) if hasattr(methods, "__iter__") else methods
    if not isinstance(methods, list) or not methods:
        raise ValueError(f"methods must be a non-empty sequence of compare.Method, got {methods!r}")
    for m in methods:
        if not isinstance(m, Method):
            raise ValueError(f"methods must hold compare.Method objects, got {type(m).__name__}")
    tuned = any(m.tuning_grid() for m in methods)
    evaluation_seeds = _checks.seeds("evaluation_seeds", evaluation_seeds, 2)
    tuning_seeds = _checks.seeds("tuning_seeds", tuning_seeds, 1 if tuned else 0)
    if set(tuning_seeds) & set(evaluation_seeds):
        raise ValueError(f"tuning and evaluation seeds must be disjoint; both hold "
                         f"{sorted(set(tuning_seeds) & set(evaluation_seeds))}")
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ValueError(f"method labels must be unique, got {labels}")
    reference = labels[0] if reference is None else reference
    if reference not in labels:
        raise ValueError(f"reference must be one of {labels}, got {reference!r}")
    identities = None
    if cache and case.cache_key:
        try:  # keyed by what they compute, or not cached at all
            identities = case.identity(), {m.label: m.identity() for m in methods}
        except _digest.Unkeyable as err:
            raise ValueError(f"cannot cache this comparison: {err}. Pass cache=False, or build "
                             "the case and methods from functions whose closures hold numbers, "
                             "arrays, configurations and other functions") from None
    tune_trials = eval_trials = None
    tunings, results = {}, {}
    bar = tqdm(methods, desc=f"{case.name}", unit="method", disable=not progress)
    for method in bar:
        bar.set_postfix_str(method.label)
        store = (_Store(case, method, tuning_seeds, evaluation_seeds, identities[0],
                        identities[1][method.label]) if identities else None)
        tuning = store.load_tuning() if store else None
        if tuning is not None:
            store.tuning_runs.clear()  # runs left by a crash between storing and clearing
        if tuning is None:
            if method.tuning_grid() and tune_trials is None:
                tune_trials = make_trials(case, tuning_seeds)
            tuning = tune(case, method, tuning_seeds, trials=tune_trials, progress=progress,
                          batch_size=len(evaluation_seeds), finished=store and store.tuning_runs)
            if store:
                store.save_tuning(tuning)
                store.tuning_runs.clear()
        result = store.load_result() if store else None
        if result is not None:
            result = store.check_result(result, tuning)
        if result is not None:
            store.result_runs.clear()
        if result is None:
            if eval_trials is None:
                eval_trials = make_trials(case, evaluation_seeds)
            result = evaluate(case, method, tuning.chosen, evaluation_seeds, trials=eval_trials,
                              progress=progress, finished=store and store.result_runs)
            if store:
                store.save_result(result)
                store.result_runs.clear()
        tunings[method.label], results[method.label] = tuning, result
    return Comparison(case.name, reference, {m.label: m for m in methods}, tunings, results,
                      tuning_seeds, evaluation_seeds, case.climate_std)


# ---------------------------------------------------------------------------------------
# cache and JSON


class _Store:
    """One method's cached tuning and evaluation of one case: one JSON file each, written
    atomically (a reader sees a whole file or none). A file that cannot be read back is
    reported by a :class:`~scoreda.surrogates.train.CacheWarning` naming it, removed and
    computed again, never trusted; so is a file whose contents do not fit the method (a
    chosen point off its grid, evaluated knobs other than the chosen ones).

    The key holds the case's label and :meth:`Case.identity`, the method's description and
    :meth:`Method.identity`, the seeds, and a digest of the package's code
    (:func:`scoreda._digest.package_digest`): a change of any of them is a new entry."""

    def __init__(self, case: Case, method: Method, tuning_seeds, evaluation_seeds,
                 case_identity: str, method_identity: str):
        from scoreda.surrogates import train  # the cache directory and atomic JSON writer

        self._write, self._warning = train.write_json, train.CacheWarning
        self._write_npz = train.write_npz
        self.method = method
        described = {"case": case.cache_key, "case_identity": case_identity,
                     "burn_in": case.burn_in, "init_std": case.init_std,
                     "divergence_bound": case.divergence_bound, "method": method.describe(),
                     "method_identity": method_identity, "version": _version(),
                     "code": _digest.package_digest()}
        key_tune = _key(described | {"seeds": list(tuning_seeds)})
        key_eval = _key(described | {"tuning": key_tune, "seeds": list(evaluation_seeds)})
        root = train.cache_dir() / "compare"
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
        self._write(self.tuning_path, _tuning_json(tuning))

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
        self._write(self.result_path, _result_json(result))


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


def _tuning_json(t: Tuning) -> dict:
    return {"points": _jsonable(t.points), "scores": [float(s) if np.isfinite(s) else "inf" for s in t.scores],
            "chosen": _jsonable(t.chosen),
            "diverged": None if t.diverged is None else [int(v) for v in t.diverged],
            "grid": None if t.grid is None else _jsonable(t.grid)}


def _result_json(r: MethodResult) -> dict:
    return {"knobs": _jsonable(r.knobs), "rmse": _floats(r.rmse), "spread": _floats(r.spread),
            "crps": _floats(r.crps), "rmse_curve": _floats(r.rmse_curve),
            "rank_counts": [int(c) for c in r.rank_counts],
            "diverged_step": [int(s) for s in r.diverged_step]}


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


def _key(described: dict) -> str:
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _canonical(obj) -> str:
    """A JSON text of ``obj`` that a JSON round trip keeps (tuples as lists, sorted keys)."""
    return json.dumps(_jsonable(obj), sort_keys=True, default=str)


def check_tuning(method: Method, tuning: Tuning) -> None:
    """Raise ``ValueError`` unless ``tuning`` fits ``method``: its grid holds the method's grid
    with at most ``method.widen`` values added per axis, its points are the method's product
    grid followed by at most ``widen`` widened points per axis (values of that grid, none
    repeated), its chosen knobs are the fixed knobs with one of those points, and that point
    has the lowest score."""
    given = method.tuning_grid()
    grid = given if tuning.grid is None else dict(tuning.grid)
    if set(grid) == set(given):  # the method's order of the knobs (a JSON file may sort them)
        grid = {k: tuple(grid[k]) for k in given}
    if set(grid) != set(given) or any(
            not set(given[k]) <= set(grid[k]) or len(grid[k]) - len(given[k]) > method.widen
            for k in given):
        raise ValueError(f"its grid {grid} is not {method.label}'s grid {given} widened by at "
                         f"most {method.widen} values per knob")
    product = [{k: p[k] for k in given} for p in grid_points(method, given)] if given else []
    stored = [_canonical(p) for p in tuning.points]
    extra = len(stored) - len(product)
    if (stored[:len(product)] != [_canonical(p) for p in product] or len(set(stored)) != len(stored)
            or extra > method.widen * len(given)
            or any(set(p) != set(grid) or any(p[k] not in grid[k] for k in grid)
                   for p in tuning.points)):
        raise ValueError(f"its points {tuning.points} are not the grid of {method.label} "
                         f"followed by at most {method.widen * len(given)} widened points")
    expected = [dict(p) for p in tuning.points]
    candidates = [_canonical(dict(method.knobs) | p) for p in expected] or [_canonical(dict(method.knobs))]
    chosen = _canonical(tuning.chosen)
    if chosen not in candidates:
        raise ValueError(f"its chosen knobs {tuning.chosen} are not a point of {method.label}'s "
                         "grid with its fixed knobs")
    scores = np.asarray(tuning.scores, float)
    if scores.size and np.isfinite(scores).any() and \
            not tied(method, scores)[candidates.index(chosen)]:
        raise ValueError(f"its chosen knobs {tuning.chosen} do not have the lowest score "
                         f"(within {method.tie_rtol:g} of it)")


def _qualname(fn) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _version() -> str:
    import scoreda

    return scoreda.__version__
