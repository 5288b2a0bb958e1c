"""Running a comparison: every (grid point, trial) pair of a method through one compiled,
vmapped cycle (:func:`scoreda.assimilate.cycle_batch`), the tuning and evaluation stages
(:func:`tune`, :func:`evaluate`) and :func:`compare`, which runs both for a list of methods,
cached and resumable (``compare.store``)."""

from __future__ import annotations

import collections
import dataclasses
import itertools
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from scoreda import _checks, _digest, assimilate
from scoreda.experiments.compare.model import Case, Method, MethodResult, Trial, Tuning, _plain
from scoreda.experiments.compare.report import Comparison
from scoreda.experiments.compare.store import _Runs, _Store
from scoreda.experiments.compare.tuning import search
from scoreda.filters import registry


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
            evaluation_seeds: Sequence[int], close_call_seeds: Sequence[int] = (),
            reference: str | None = None, cache: bool = True,
            progress: bool = True) -> Comparison:
    """Tune each method on ``tuning_seeds``, evaluate it on ``evaluation_seeds``; where a
    method's difference to the reference is then a close call, evaluate every method on
    ``close_call_seeds`` too.

    The seed sets must be disjoint. ``reference`` (default: the first method) is what
    the table's paired differences are taken against. A close call is an interval whose
    distance from 0 is under its half-width
    (:attr:`~scoreda.experiments.statistics.Difference.close_call`): more trials could move
    that verdict, so, with ``close_call_seeds``, every method (the same trials for all) runs
    on them as well and the comparison holds both sets (``Comparison.close_calls`` names the
    methods that asked for it; the table says so). With ``cache`` and a
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
    close_call_seeds = _checks.seeds("close_call_seeds", close_call_seeds, 0)
    for (name_a, a), (name_b, b) in itertools.combinations(
            (("tuning", tuning_seeds), ("evaluation", evaluation_seeds),
             ("close-call", close_call_seeds)), 2):
        if set(a) & set(b):
            raise ValueError(f"{name_a} and {name_b} seeds must be disjoint; both hold "
                             f"{sorted(set(a) & set(b))}")
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

    def store_for(method, seeds):
        return (_Store(case, method, tuning_seeds, seeds, identities[0],
                       identities[1][method.label]) if identities else None)

    tune_trials = _LazyTrials(case, tuning_seeds)
    eval_trials = _LazyTrials(case, evaluation_seeds)
    tunings, results = {}, {}
    bar = tqdm(methods, desc=f"{case.name}", unit="method", disable=not progress)
    for method in bar:
        bar.set_postfix_str(method.label)
        store = store_for(method, evaluation_seeds)
        tuning = store.load_tuning() if store else None
        if tuning is not None:
            store.tuning_runs.clear()  # runs left by a crash between storing and clearing
        if tuning is None:
            tuning = tune(case, method, tuning_seeds,
                          trials=tune_trials.get() if method.tuning_grid() else None,
                          progress=progress,
                          batch_size=len(evaluation_seeds), finished=store and store.tuning_runs)
            if store:
                store.save_tuning(tuning)
                store.tuning_runs.clear()
        tunings[method.label] = tuning
        results[method.label] = _evaluated(case, method, tuning, eval_trials, store, progress)
    done = Comparison(case.name, reference, {m.label: m for m in methods}, tunings, results,
                      tuning_seeds, evaluation_seeds, case.climate_std)
    calls = tuple(done.close_call_labels()) if close_call_seeds else ()
    if not calls:
        return done
    more_trials = _LazyTrials(case, close_call_seeds)
    extended = {}
    for method in methods:
        more = _evaluated(case, method, tunings[method.label], more_trials,
                          store_for(method, close_call_seeds), progress)
        extended[method.label] = results[method.label].joined(more)
    return dataclasses.replace(done, results=extended,
                               evaluation_seeds=evaluation_seeds + close_call_seeds,
                               close_calls=calls, close_call_seeds=close_call_seeds)


class _LazyTrials:
    """The trials of ``seeds``, made the first time they are needed (never, when every
    method's evaluation comes from the cache)."""

    def __init__(self, case: Case, seeds: tuple):
        self.case, self.seeds, self._trials = case, seeds, None

    def get(self) -> list:
        if self._trials is None:
            self._trials = make_trials(self.case, self.seeds)
        return self._trials


def _evaluated(case: Case, method: Method, tuning: Tuning, trials: _LazyTrials, store,
               progress: bool) -> MethodResult:
    """``method`` at its chosen knobs on the trials' seeds: from the cache where it holds
    them, else evaluated (its finished runs kept until the whole result is stored)."""
    result = store.load_result() if store else None
    if result is not None:
        result = store.check_result(result, tuning)
    if result is not None:
        store.result_runs.clear()
        return result
    result = evaluate(case, method, tuning.chosen, trials.seeds, trials=trials.get(),
                      progress=progress, finished=store and store.result_runs)
    if store:
        store.save_result(result)
        store.result_runs.clear()
    return result
