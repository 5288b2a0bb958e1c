r"""The cycling driver: forecast with any model, analyse with any filter, score every step.

Two small contracts join the layers:

* a **forecast model** ``model(member, key, *model_args) -> next_state`` for one member
  (``model_args`` default to none): ``member`` is a
  state ``(d,)`` (e.g. the truth's integrator) or a history window ``(W, d)`` (e.g. a neural
  surrogate fed its last ``W`` states); it is vmapped over the ensemble. With a window the
  driver shifts it by one and appends the new state, and the analysis replaces the newest
  entry, so the surrogate is fed the analysis at the next step (as in the paper).
* a **filter** ``filter(key, ensemble, y, obs_std, mask=mask) -> analysis`` on ``(N, d)``;
  bind a filter's own parameters with :func:`functools.partial`, e.g.
  ``partial(kalman.etkf, obs="identity", inflation=1.02)``.

Step ``n = 0`` is the time of the initial ensemble (analysed if observed); every later step
is a forecast from the previous one, analysed where the schedule says so. The loop runs
under ``lax.scan`` in chunks; between chunks the driver shows progress and checks for
divergence, so a diverging filter stops with a report (step and RMSE), not NaNs.
"""

from __future__ import annotations

import functools
import warnings
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from scoreda import _checks, metrics
from scoreda.observe import Observations


class FilterDivergence(RuntimeError):
    """Raised when the ensemble mean's RMSE exceeds the bound or stops being finite."""

    def __init__(self, step: int, rmse: float, bound: float):
        self.step, self.rmse, self.bound = step, rmse, bound
        super().__init__(
            f"the filter diverged at step {step}: RMSE {rmse:.4g} "
            f"({'not finite' if not np.isfinite(rmse) else f'above the bound {bound:g}'})"
        )


class ForecastDivergence(FilterDivergence):
    """A :class:`FilterDivergence` whose culprit is the forecast model: in one forecast, before
    any analysis, the members left the finite numbers, or jumped past the bound with an RMSE
    more than twice the last analysis's. (A forecast that drifts past the bound gradually,
    as a chaotic model does when the filter lets the ensemble stray, is the filter's
    divergence.)"""

    def __init__(self, step: int, rmse: float, bound: float, previous: float):
        self.step, self.rmse, self.bound, self.previous = step, rmse, bound, previous
        RuntimeError.__init__(
            self, f"the forecast model diverged at step {step}: the forecast's RMSE is "
            f"{rmse:.4g} ({'not finite' if not np.isfinite(rmse) else f'above the bound {bound:g}'}) "
            f"before any analysis, from members whose RMSE was {previous:.4g} at step {step - 1}; "
            "the model (its time step, its inputs), not the filter, blew up")


class LostTrack(UserWarning):
    """Warned by :func:`cycle` when the analysis stayed finite but ended farther from the
    truth than the climate's spread: the filter follows no better than climatology would."""


class CycleResult(NamedTuple):
    """What a cycle produced, step by step (``T`` steps, state size ``d``, ``N`` members).

    Fields:
      forecast_mean, analysis_mean: ensemble means before and after the analysis, ``(T, d)``;
        equal at unobserved steps.
      forecast_spread, analysis_spread: ensemble spread (:func:`scoreda.metrics.spread`), ``(T,)``.
      forecast_rmse, analysis_rmse: RMSE of those means against the truth, ``(T,)``.
      observed: True where an analysis was made, ``(T,)``.
      diverged_step: first step whose RMSE was above the bound or not finite; -1 if none.
        That step keeps its offending values; the entries after it are NaN.
      final_members: the members after the last completed step, ``(N, d)`` or ``(N, W, d)``.
      analysis_variance: per-component ensemble variance after the analysis (``N - 1``),
        ``(T, d)``; e.g. to weight analyses as training targets.
    """

    forecast_mean: np.ndarray
    analysis_mean: np.ndarray
    forecast_spread: np.ndarray
    analysis_spread: np.ndarray
    forecast_rmse: np.ndarray
    analysis_rmse: np.ndarray
    observed: np.ndarray
    diverged_step: int
    final_members: np.ndarray
    analysis_variance: np.ndarray

    def late_rmse(self, last: float = 0.5) -> float:
        """Mean analysis RMSE over the last ``last`` fraction of the steps (NaN steps skipped);
        ``0 < last <= 1``."""
        if not 0.0 < last <= 1.0:
            raise ValueError(f"last must lie in (0, 1], got {last!r}")
        n = len(self.analysis_rmse)
        tail = self.analysis_rmse[n - max(1, int(round(last * n))):]
        return float(np.nanmean(tail)) if np.any(np.isfinite(tail)) else float("nan")

    def lost_track(self, climate_std: float, last: float = 0.5) -> bool:
        r"""True when :meth:`late_rmse` exceeds ``climate_std``, the climatological standard
        deviation of one component: the climatological mean alone would score about
        ``climate_std``, so an analysis worse than that no longer tracks the truth (it need
        not have diverged: Lorenz-96 stays bounded, ending near
        :math:`\sqrt2 \times` ``climate_std`` for an unrelated state)."""
        _checks.positive("climate_std", climate_std)
        return not self.late_rmse(last) <= climate_std


class StepInputs(NamedTuple):
    """The scan's inputs at one step (a leading time axis ``T``, and a trial axis ``B``
    before it in :func:`cycle_batch`): the step index, the step's PRNG key, the true state
    ``(d,)``, the observation ``y (d,)`` and its ``mask (d,)``, whether the step is analysed,
    and whether it forecasts (every step but the first). A field is None where another
    argument carries it (the schedule shared by the trials of a batch)."""

    step: jax.Array | None
    key: jax.Array | None
    truth: jax.Array | None
    y: jax.Array | None
    mask: jax.Array | None
    observed: jax.Array | None
    forecast: jax.Array | None


def _current(members):
    return members[:, -1] if members.ndim == 3 else members


def _replace_current(members, state):
    return members.at[:, -1].set(state) if members.ndim == 3 else state


def _stats(members, truth_n, *, variance=False, ensemble_scores=False):
    """Scores of the current members against the truth at one step (a dict of arrays)."""
    x = _current(members).astype(truth_n.dtype)
    mean = x.mean(axis=0)
    stats = {"mean": mean, "spread": metrics.spread(x), "rmse": metrics.rmse(mean, truth_n)}
    if variance:
        stats["variance"] = jnp.var(x, axis=0, ddof=1)
    if ensemble_scores:
        stats["crps"] = metrics.crps(x, truth_n)
        stats["ranks"] = metrics.rank_histogram(x, truth_n)
    return stats


def _nan_like(stats):
    return {k: (jnp.zeros_like(v) if k == "ranks" else jnp.full_like(v, jnp.nan))
            for k, v in stats.items()}


@functools.lru_cache(maxsize=64)
def _make_step(model, filter_fn, bound, store_states=True, ensemble_scores=False):
    """The scan over one chunk of steps, ``chunk(carry, xs, obs_std, model_args,
    filter_kwargs)`` (not jitted; see :func:`_compiled`). Members are stored in their own
    dtype and computed on in (at least) float32. ``filter_kwargs`` (a dict of arrays) reach
    the filter as keyword arguments: traced, so filters that differ only in them share one
    compilation (and can be vmapped over)."""

    def compute(members):
        return members.astype(jnp.promote_types(members.dtype, jnp.float32))

    def analyse(members, key, y, mask, obs_std, filter_kwargs):
        analysis = filter_fn(key, compute(_current(members)), y, obs_std, mask=mask,
                             **filter_kwargs)
        return _replace_current(members, analysis.astype(members.dtype))

    def forecast(members, key, model_args):
        keys = jax.random.split(key, members.shape[0])
        nxt = jax.vmap(lambda m, k: model(m, k, *model_args))(compute(members), keys)
        nxt = nxt.astype(members.dtype)
        if members.ndim == 3:
            return jnp.concatenate([members[:, 1:], nxt[:, None]], axis=1)
        return nxt

    def keep(names, stats):
        return {k: v for k, v in stats.items() if k in names}

    f_names = ("mean", "spread", "rmse") if store_states else ("spread", "rmse")
    a_names = f_names + (("variance",) if store_states else ())
    a_names += ("crps", "ranks") if ensemble_scores else ()

    def step(carry, inputs, obs_std, model_args, filter_kwargs):
        members, diverged = carry
        n, truth_n = inputs.step, inputs.truth
        k_model, k_filter = jax.random.split(inputs.key)

        def advance(members):
            members = jax.lax.cond(inputs.forecast, forecast, lambda m, *_: m, members, k_model,
                                   model_args)
            f_stats = _stats(members, truth_n)
            members = jax.lax.cond(inputs.observed, analyse, lambda m, *_: m, members, k_filter,
                                   inputs.y, inputs.mask, obs_std, filter_kwargs)
            a_stats = _stats(members, truth_n, variance=True, ensemble_scores=ensemble_scores)
            return members, keep(f_names, f_stats), keep(a_names, a_stats)

        def frozen(members):
            a_stats = _stats(members, truth_n, variance=True, ensemble_scores=ensemble_scores)
            return members, _nan_like(keep(f_names, a_stats)), _nan_like(keep(a_names, a_stats))

        new_members, f_stats, a_stats = jax.lax.cond(diverged >= 0, frozen, advance, members)
        f_rmse, a_rmse = f_stats["rmse"], a_stats["rmse"]
        bad = (diverged < 0) & ~(jnp.isfinite(a_rmse) & jnp.isfinite(f_rmse) & (a_rmse <= bound))
        members = jnp.where(bad, members, new_members)  # keep the last finite members
        diverged = jnp.where(bad, n.astype(diverged.dtype), diverged)  # int32 (int64 steps under x64)
        return (members, diverged), (f_stats, a_stats)

    def step_chunk(carry, xs, obs_std, model_args, filter_kwargs):
        return jax.lax.scan(lambda c, x: step(c, x, obs_std, model_args, filter_kwargs), carry, xs)

    return step_chunk


@functools.lru_cache(maxsize=64)
def _compiled(model, filter_fn, bound, store_states=True, ensemble_scores=False,
              n_shared_args=None, shared_schedule=False):
    """The jitted chunk; with ``n_shared_args`` (an int) vmapped over a leading trial axis of
    the carry, the inputs, ``obs_std``, the filter's keyword arrays and every model argument
    after the first ``n_shared_args`` (which are shared by all trials).

    With ``shared_schedule`` the step index, the observed flags and the forecast flags are
    one ``(T,)`` sequence for all trials (``xs_shared``, the other fields of ``xs`` None),
    so the analysis stays a real conditional under ``vmap`` and runs only at observed steps
    (a batched predicate would turn it into a select that runs the filter at every step)."""
    chunk = _make_step(model, filter_fn, bound, store_states, ensemble_scores)
    if n_shared_args is None:
        return jax.jit(chunk)

    def batched(carry, xs, xs_shared, obs_std, shared_args, trial_args, filter_kwargs):
        def one(carry, xs, obs_std, trial_args, filter_kwargs):
            if shared_schedule:
                xs = xs._replace(step=xs_shared.step, observed=xs_shared.observed,
                                 forecast=xs_shared.forecast)
            return chunk(carry, xs, obs_std, tuple(shared_args) + tuple(trial_args), filter_kwargs)

        return jax.vmap(one)(carry, xs, obs_std, trial_args, filter_kwargs)

    return jax.jit(batched)


def cycle(
    key: jax.Array,
    model: Callable,
    filter: Callable,
    truth: jax.Array,
    observations: Observations,
    ensemble0: jax.Array,
    *,
    schedule: jax.Array | None = None,
    divergence_bound: float = 1000.0,
    on_divergence: str = "raise",
    chunk: int = 250,
    progress: bool = False,
    model_args: tuple = (),
    filter_kwargs: dict | None = None,
    store_states: bool = True,
    climate_std: float | None = None,
) -> CycleResult:
    """Run forecast-analysis cycles over a true trajectory and its observations.

    Args:
      key: PRNG key (split for the model and the filter at every step).
      model: forecast model ``(member, key) -> next_state`` (see the module docstring).
      filter: ``(key, ensemble, y, obs_std, mask=mask) -> analysis``.
      truth: true states ``(T, d)``; ``truth[0]`` is the time of ``ensemble0``.
      observations: :class:`scoreda.observe.Observations` with ``values``/``mask`` ``(T, d)``.
      ensemble0: initial members, ``(N, d)`` or history windows ``(N, W, d)``.
      schedule: steps to analyse ``(T,)``; default ``observations.observed``.
      divergence_bound: an RMSE above this (or a non-finite one) counts as divergence.
      on_divergence: ``"raise"`` (:class:`FilterDivergence`) or ``"report"`` (return the
        result with ``diverged_step`` set and NaN from that step on).
      chunk: at most this many steps per compiled ``lax.scan`` segment (progress and
        divergence are checked between segments). ``T`` is cut into equal segments, the
        last padded with idle steps, so that one compilation serves them all.
      progress: show a tqdm progress bar.
      model_args: extra arrays passed to the model as ``model(member, key, *model_args)``
        (e.g. a surrogate's parameters). They enter the compiled loop as arguments, so
        models that differ only in them share one compilation.
      filter_kwargs: arrays passed to the filter as keyword arguments (e.g.
        ``{"inflation": jnp.float32(1.1)}``); like ``model_args`` they are traced, so filters
        that differ only in them share one compilation.
      store_states: keep the per-step means and variances ``(T, d)``; with False those
        fields are None and only the scalar curves are kept (for huge ``d``).
      climate_std: the climatological standard deviation of one component (about 3.6 for
        Lorenz-96 at F = 8); when given, a :class:`LostTrack` warning is issued if the mean
        analysis RMSE over the second half exceeds it (see :meth:`CycleResult.lost_track`).
        A run that lost track is bounded, so ``divergence_bound`` does not see it.

    Raises:
      ValueError, TypeError: the inputs break the contract (named: the data, the model's or
        the filter's output shape, the key); checked before anything is compiled.
      FilterDivergence: with ``on_divergence="raise"``, when the RMSE passed the bound
        (:class:`ForecastDivergence`, a subclass, when the forecast itself passed it before
        any analysis at that step: the model blew up).

    Members are stored in ``ensemble0``'s floating dtype (e.g. ``bfloat16`` to halve the
    memory of a huge ensemble) and promoted to at least float32 for the model and the filter.
    """
    _checks.prng_key("key", key)
    truth = jnp.asarray(truth)
    if truth.ndim != 2:
        raise ValueError(f"truth must have shape (T, d), got {truth.shape}")
    _check_observations_type(observations)
    n_steps, d = truth.shape
    ensemble0 = jnp.asarray(ensemble0)
    if not jnp.issubdtype(ensemble0.dtype, jnp.floating):
        ensemble0 = ensemble0.astype(jnp.float32)
    compute_dtype = jnp.promote_types(ensemble0.dtype, jnp.float32)
    if ensemble0.ndim not in (2, 3) or ensemble0.shape[-1] != d:
        raise ValueError(
            f"ensemble0 must have shape (N, d) or (N, W, d) with d = {d}, got {ensemble0.shape}"
        )
    if observations.values.shape != (n_steps, d) or observations.mask.shape != (n_steps, d):
        raise ValueError(
            f"observations must have values and mask of shape (T, d) = {(n_steps, d)}, "
            f"got {observations.values.shape} and {observations.mask.shape}"
        )
    _check_data(truth, observations, batched=False)
    schedule = observations.observed if schedule is None else jnp.asarray(schedule, bool)
    if schedule.shape != (n_steps,):
        raise ValueError(f"schedule must have shape (T,) = ({n_steps},), got {schedule.shape}")
    if on_divergence not in ("raise", "report"):
        raise ValueError(f"on_divergence must be 'raise' or 'report', got {on_divergence!r}")
    _checks.positive("divergence_bound", divergence_bound)
    if climate_std is not None:
        _checks.positive("climate_std", climate_std)
    chunk = _checks.integer("chunk", chunk, 1)
    _checks.finite("ensemble0", ensemble0)
    filter_kwargs = dict(filter_kwargs or {})
    _check_callables(key, model, filter, ensemble0[0], compute_dtype, ensemble0.shape[0],
                     truth[0].astype(compute_dtype), observations.mask[0], tuple(model_args),
                     [(jnp.asarray(observations.std, compute_dtype), filter_kwargs)])

    step_chunk = _compiled(model, filter, float(divergence_bound), bool(store_states))
    obs_std = jnp.asarray(observations.std, compute_dtype)
    # the padded steps neither forecast nor observe: the members stay as they are, so the
    # final ensemble is the last real step's
    carry, f_stats, a_stats = _run_chunks(
        lambda carry, xs: step_chunk(carry, xs, obs_std, tuple(model_args), filter_kwargs),
        (ensemble0, jnp.asarray(-1, dtype=jnp.int32)),
        _inputs(key, truth, observations, schedule, compute_dtype), n_steps, chunk,
        batched=False, desc="cycling", progress=progress)
    f_rmse, a_rmse = f_stats["rmse"], a_stats["rmse"]
    diverged = int(carry[1])
    diverged = -1 if diverged >= n_steps else diverged  # idle padding cannot diverge; a guard
    result = CycleResult(f_stats.get("mean"), a_stats.get("mean"), f_stats["spread"],
                         a_stats["spread"], f_rmse, a_rmse, np.asarray(schedule), diverged,
                         np.asarray(carry[0]), a_stats.get("variance"))
    if diverged >= 0 and on_divergence == "raise":
        # the diverged step keeps the offending values; the steps after it are NaN
        forecast_bad = not (np.isfinite(f_rmse[diverged]) and f_rmse[diverged] <= divergence_bound)
        before = a_rmse[diverged - 1] if diverged > 0 else np.nan
        blown_up = not np.isfinite(f_rmse[diverged]) or f_rmse[diverged] > 2.0 * before
        if forecast_bad and diverged > 0 and blown_up:  # one forecast left the bound: the model
            raise ForecastDivergence(diverged, float(f_rmse[diverged]), divergence_bound,
                                     float(before))
        offending = f_rmse[diverged] if forecast_bad else a_rmse[diverged]
        raise FilterDivergence(diverged, float(offending), divergence_bound)
    if climate_std is not None and diverged < 0 and result.lost_track(climate_std):
        warnings.warn(LostTrack(
            f"the filter lost track: its mean analysis RMSE over the second half, "
            f"{result.late_rmse():.3g}, exceeds the climate's standard deviation {climate_std:g}"),
            stacklevel=2)
    return result


def _check_observations_type(observations) -> None:
    if not isinstance(observations, Observations):
        raise TypeError(f"observations must be a scoreda.observe.Observations (values, mask, "
                        f"observed, std), got {type(observations).__name__}")


def _check_data(truth, observations, batched: bool) -> None:
    """The data's contract (shapes already checked): at least one step, a scalar (or
    per-cycle) ``std`` > 0, a boolean mask, and finite truth and observed values (concrete
    arrays only). A NaN there would otherwise surface as "the filter diverged"."""
    if truth.shape[-2] == 0:
        raise ValueError(f"truth must have at least one step, got shape {truth.shape}")
    std = observations.std
    if jnp.ndim(std) > (1 if batched else 0):
        raise ValueError("observations.std must be one number (the same noise on every "
                         f"component{', or one per cycle' if batched else ''}), got shape "
                         f"{jnp.shape(std)}")
    if _checks.is_concrete(std) and not np.all((np.asarray(std) > 0) & np.isfinite(std)):
        raise ValueError(f"observations.std must be finite and > 0, got {np.asarray(std)!r}")
    _checks.boolean_mask("observations.mask", observations.mask)
    for name, values, where in (("truth", truth, None),
                                ("observations.values", observations.values, observations.mask)):
        if not (_checks.is_concrete(values) and _checks.is_concrete(where)):
            continue
        if _checks.all_finite(values, where):  # reduced where the data live; located on failure
            continue
        bad = ~np.isfinite(np.asarray(values))
        if where is not None:
            bad &= np.asarray(where, bool)
        if bad.any():
            index = tuple(int(i[0]) for i in np.nonzero(bad))
            raise ValueError(f"{name} is not finite at index {index} (step {index[-2]}, "
                             f"component {index[-1]}){' where observed' if where is not None else ''}")


def _reraised(exc: Exception, message: str) -> Exception:
    """``exc``'s own type with ``message`` (so a caller catching ``ValueError`` still does),
    or a ``TypeError`` when that type cannot be built from one message."""
    try:
        return type(exc)(f"{message}: {type(exc).__name__}: {exc}")
    except Exception:
        return TypeError(f"{message}: {type(exc).__name__}: {exc}")


def _check_callables(key, model, filter_fn, member0, truth_dtype, n_members, y0, mask0,
                     model_args, filter_settings) -> None:
    """Trace ``model`` and ``filter`` on abstract states (no computation) and check what they
    return, so a wrong contract is named here instead of deep inside ``lax.scan``.

    ``filter_settings``: ``(obs_std, filter_kwargs)`` pairs. Concrete ones are closed over,
    not traced, so the filter's own checks of its values (``obs_std > 0``, a knob's range)
    run here, as they do not inside the compiled loop."""
    d = member0.shape[-1]
    key_spec = jax.eval_shape(lambda k: k, key)
    member = jax.ShapeDtypeStruct(member0.shape, truth_dtype)
    try:
        out = jax.eval_shape(lambda m, k, *a: model(m, k, *a), member, key_spec, *model_args)
    except Exception as exc:
        raise _reraised(exc, f"model(member, key, *model_args) failed on a member of shape "
                             f"{member0.shape}") from exc
    if getattr(out, "shape", None) != (d,):
        hint = (" With history windows (N, W, d) the model maps a window (W, d) to the next "
                "state (d,)." if member0.ndim == 2 else "")
        raise ValueError(f"model must return the next state of shape ({d},) for a member of "
                         f"shape {member0.shape}, got {getattr(out, 'shape', type(out).__name__)}."
                         + hint)
    ensemble = jax.ShapeDtypeStruct((n_members, d), truth_dtype)
    for obs_std, kwargs in filter_settings:
        concrete = _checks.is_concrete(obs_std) and all(
            _checks.is_concrete(v) for v in jax.tree.leaves(kwargs))
        if concrete:  # as numpy: inside the trace below, jnp operations on them are staged
            obs_std, kwargs = np.asarray(obs_std), jax.tree.map(np.asarray, kwargs)
        try:
            with warnings.catch_warnings():  # a tuned grid may hold a deflation: said elsewhere
                warnings.simplefilter("ignore", _checks.Deflation)
                if concrete:  # the values closed over: the filter checks them
                    out = jax.eval_shape(
                        lambda k, e, y, m: filter_fn(k, e, y, obs_std, mask=m, **kwargs),
                        key_spec, ensemble, y0, mask0)
                else:
                    out = jax.eval_shape(
                        lambda k, e, y, s, m, kw: filter_fn(k, e, y, s, mask=m, **kw),
                        key_spec, ensemble, y0, obs_std, mask0, kwargs)
        except Exception as exc:
            raise _reraised(exc, f"filter(key, ensemble, y, obs_std, mask=mask, **filter_kwargs) "
                                 f"failed on an ensemble of shape {(n_members, d)}") from exc
        if getattr(out, "shape", None) != (n_members, d):
            raise ValueError(f"filter must return the analysis ensemble of shape "
                             f"{(n_members, d)}, got {getattr(out, 'shape', type(out).__name__)}")


def _extreme_settings(obs_std, filter_kwargs) -> list:
    """The filter settings of a batch worth checking: the first cycle's, and the smallest and
    the largest value of ``obs_std`` and of every keyword array (leading axis ``B``)."""
    pick = lambda reduce: (reduce(obs_std, axis=0),
                           {k: reduce(v, axis=0) for k, v in filter_kwargs.items()})
    first = (obs_std[0], {k: v[0] for k, v in filter_kwargs.items()})
    if not all(_checks.is_concrete(a) for a in [obs_std, *filter_kwargs.values()]):
        return [first]
    return [first, pick(jnp.min), pick(jnp.max)]


def _inputs(key, truth, observations, schedule, compute_dtype) -> StepInputs:
    """The scan's inputs of ``T`` steps (:class:`StepInputs`)."""
    n_steps = truth.shape[0]
    return StepInputs(jnp.arange(n_steps), jax.random.split(key, n_steps),
                      truth.astype(compute_dtype), observations.values.astype(compute_dtype),
                      observations.mask, schedule, jnp.arange(n_steps) > 0)


def _even_chunks(n_steps: int, chunk: int) -> tuple[int, int]:
    """Chunk length and padded step count: ``ceil(T / chunk)`` chunks of equal length
    covering ``T`` steps (300 steps with ``chunk=250``: two of 150, not 250 and 50)."""
    n_chunks = -(-n_steps // chunk)
    length = -(-n_steps // n_chunks)
    return length, n_chunks * length


def _pad_steps(xs: StepInputs, n_pad: int) -> StepInputs:
    """:func:`_inputs` of ``T`` steps extended by ``n_pad`` idle steps that neither forecast
    nor observe (the last truth and key repeated, step indices continued): the members leave
    them unchanged, and their outputs are dropped."""
    if n_pad == 0:
        return xs
    repeat = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], n_pad, axis=0)])
    zeros = lambda a: jnp.concatenate([a, jnp.zeros((n_pad,) + a.shape[1:], a.dtype)])
    return StepInputs(
        jnp.concatenate([xs.step, xs.step[-1] + 1 + jnp.arange(n_pad, dtype=xs.step.dtype)]),
        repeat(xs.key), repeat(xs.truth), zeros(xs.y), zeros(xs.mask), zeros(xs.observed),
        zeros(xs.forecast))


def _run_chunks(run_chunk, carry, xs_all: StepInputs, n_steps: int, chunk: int, *,
                batched: bool, desc: str, progress: bool):
    """The driver shared by :func:`cycle` and :func:`cycle_batch`: the ``T`` steps of
    ``xs_all`` (time on axis 1 when ``batched``, else 0) cut into equal chunks, the last
    padded with idle steps (:func:`_pad_steps`: one compiled scan length, not two), each run
    by ``run_chunk(carry, xs) -> (carry, (forecast stats, analysis stats))`` with a progress
    bar; stops once every cycle has diverged (``carry[1] >= 0``). Returns the last carry and
    the stats of the ``T`` real steps (NaN, ranks 0, for steps not run)."""
    length, n_padded = _even_chunks(n_steps, chunk)
    pad = functools.partial(_pad_steps, n_pad=n_padded - n_steps)
    xs_all = jax.vmap(pad)(xs_all) if batched else pad(xs_all)
    axis = 1 if batched else 0
    outputs = []
    bar = tqdm(total=n_steps, desc=desc, unit="step", disable=not progress)
    for start in range(0, n_padded, length):
        window = (slice(None),) * axis + (slice(start, start + length),)
        carry, out = run_chunk(carry, jax.tree.map(lambda a: a[window], xs_all))
        outputs.append(out)
        bar.update(min(length, n_steps - start))
        if bool(jnp.all(carry[1] >= 0)):
            break
    bar.close()
    real = (slice(None),) * axis + (slice(None, n_steps),)
    f_stats, a_stats = ({k: v[real] for k, v in stats.items()}
                        for stats in _concatenate(outputs, n_padded, axis=axis))
    return carry, f_stats, a_stats


def _concatenate(outputs, n_steps, axis):
    """Join the chunks' outputs along the time ``axis`` and pad unrun steps (NaN; 0 ranks)."""
    joined = jax.tree.map(lambda *parts: np.concatenate([np.asarray(p) for p in parts], axis=axis),
                          *outputs)
    done = joined[0]["rmse"].shape[axis]
    if done == n_steps:
        return joined

    def pad(name, a):
        shape = list(a.shape)
        shape[axis] = n_steps - done
        fill = np.zeros(shape, a.dtype) if name == "ranks" else np.full(shape, np.nan, a.dtype)
        return np.concatenate([a, fill], axis=axis)

    return tuple({k: pad(k, v) for k, v in stats.items()} for stats in joined)


class BatchResult(NamedTuple):
    """Scalar curves of ``B`` cycles run side by side (trials or knob settings), ``T`` steps.

    Fields:
      forecast_rmse, analysis_rmse, forecast_spread, analysis_spread: ``(B, T)`` as in
        :class:`CycleResult` (NaN from the step after a divergence).
      analysis_crps: CRPS of the analysis ensemble (:func:`scoreda.metrics.crps`), ``(B, T)``.
      rank_counts: rank histogram of the truth among the analysis members at each step,
        summed over components, ``(B, T, N + 1)`` (zero after a divergence).
      observed: analysed steps, ``(B, T)``.
      diverged_step: first diverged step per cycle, -1 if none, ``(B,)``.
    """

    forecast_rmse: np.ndarray
    analysis_rmse: np.ndarray
    forecast_spread: np.ndarray
    analysis_spread: np.ndarray
    analysis_crps: np.ndarray
    rank_counts: np.ndarray
    observed: np.ndarray
    diverged_step: np.ndarray


def cycle_batch(
    key: jax.Array,
    model: Callable,
    filter: Callable,
    truth: jax.Array,
    observations: Observations,
    ensemble0: jax.Array,
    *,
    model_args: tuple = (),
    trial_model_args: tuple = (),
    filter_kwargs: dict | None = None,
    divergence_bound: float = 1000.0,
    chunk: int = 250,
    progress: bool = False,
) -> BatchResult:
    """Run ``B`` independent cycles in one compiled, vmapped scan (e.g. trials, or one trial
    under several filter settings). Same contracts as :func:`cycle`, with a leading axis
    ``B`` on every per-cycle input:

    Args:
      key: one PRNG key (folded with the cycle's index) or ``B`` keys, shape ``(B,)``.
      truth: ``(B, T, d)``.
      observations: :class:`scoreda.observe.Observations` with ``values``/``mask``
        ``(B, T, d)``, ``observed`` ``(B, T)`` and ``std`` scalar or ``(B,)``.
      ensemble0: ``(B, N, d)`` or ``(B, N, W, d)``.
      model_args: model arguments shared by all cycles (e.g. a surrogate's parameters).
      trial_model_args: model arguments with a leading ``B`` axis, passed after
        ``model_args`` (e.g. an additive model-error std per cycle).
      filter_kwargs: filter keyword arrays, each with a leading ``B`` axis (e.g. one inflation
        per cycle).

    Divergence is per cycle (its later steps are NaN); the loop stops early once every cycle
    has diverged. Only scalar curves are kept (no ``(T, d)`` states).
    """
    truth = jnp.asarray(truth)
    if truth.ndim != 3:
        raise ValueError(f"truth must have shape (B, T, d), got {truth.shape}")
    _check_observations_type(observations)
    n_batch, n_steps, d = truth.shape
    ensemble0 = jnp.asarray(ensemble0)
    if ensemble0.ndim not in (3, 4) or ensemble0.shape[0] != n_batch or ensemble0.shape[-1] != d:
        raise ValueError(f"ensemble0 must have shape (B, N, d) or (B, N, W, d) with B = {n_batch}, "
                         f"d = {d}, got {ensemble0.shape}")
    if not jnp.issubdtype(ensemble0.dtype, jnp.floating):
        ensemble0 = ensemble0.astype(jnp.float32)
    compute_dtype = jnp.promote_types(ensemble0.dtype, jnp.float32)
    if observations.values.shape != truth.shape or observations.mask.shape != truth.shape:
        raise ValueError(f"observations must have values and mask of shape (B, T, d) = "
                         f"{truth.shape}, got {observations.values.shape} and "
                         f"{observations.mask.shape}")
    if jnp.shape(observations.observed) != (n_batch, n_steps):
        raise ValueError(f"observations.observed must have shape (B, T) = {(n_batch, n_steps)}, "
                         f"got {jnp.shape(observations.observed)}")
    _check_data(truth, observations, batched=True)
    obs_std = jnp.broadcast_to(jnp.asarray(observations.std, compute_dtype), (n_batch,))
    _checks.positive("divergence_bound", divergence_bound)
    chunk = _checks.integer("chunk", chunk, 1)
    _checks.finite("ensemble0", ensemble0)
    filter_kwargs = {k: jnp.asarray(v) for k, v in (filter_kwargs or {}).items()}
    trial_model_args = tuple(jnp.asarray(a) for a in trial_model_args)
    for name, value in list(filter_kwargs.items()) + [
            (f"trial_model_args[{i}]", a) for i, a in enumerate(trial_model_args)]:
        if value.ndim == 0 or value.shape[0] != n_batch:
            raise ValueError(f"{name} must have a leading axis of size B = {n_batch}, got shape "
                             f"{value.shape}")
    keys = jnp.asarray(key)
    if keys.shape == () or keys.shape == (2,) and keys.dtype == jnp.uint32:
        _checks.prng_key("key", key)
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_batch))
    else:
        if keys.shape[:1] != (n_batch,):
            raise ValueError(f"key must be one PRNG key or B = {n_batch} of them, got shape "
                             f"{keys.shape}")
        _checks.prng_key("key[0]", keys[0])
    _check_callables(keys[0], model, filter, ensemble0[0, 0], compute_dtype, ensemble0.shape[1],
                     truth[0, 0].astype(compute_dtype), observations.mask[0, 0],
                     tuple(model_args) + tuple(a[0] for a in trial_model_args),
                     _extreme_settings(obs_std, filter_kwargs))

    observed = np.asarray(observations.observed)
    shared = bool(np.all(observed == observed[:1]))
    step_chunk = _compiled(model, filter, float(divergence_bound), False, True,
                           n_shared_args=len(model_args), shared_schedule=shared)
    xs_all = jax.vmap(lambda k, t, o: _inputs(k, t, o, o.observed, compute_dtype))(
        keys, truth, observations._replace(std=obs_std))

    def run_chunk(carry, xs):
        xs_shared = None
        if shared:  # one schedule for all: (step, observed, forecast) unbatched
            xs_shared = StepInputs(xs.step[0], None, None, None, None, xs.observed[0],
                                   xs.forecast[0])
            xs = xs._replace(step=None, observed=None, forecast=None)
        return step_chunk(carry, xs, xs_shared, obs_std, tuple(model_args), trial_model_args,
                          filter_kwargs)

    carry, f_stats, a_stats = _run_chunks(
        run_chunk, (ensemble0, jnp.full((n_batch,), -1, dtype=jnp.int32)), xs_all, n_steps,
        chunk, batched=True, desc=f"cycling {n_batch} runs", progress=progress)
    diverged = np.asarray(carry[1])
    diverged = np.where(diverged >= n_steps, -1, diverged)  # only in the padding: not a divergence
    return BatchResult(f_stats["rmse"], a_stats["rmse"], f_stats["spread"], a_stats["spread"],
                       a_stats["crps"], a_stats["ranks"], np.asarray(observations.observed),
                       diverged)


@functools.lru_cache(maxsize=32)
def with_model_error(model: Callable) -> Callable:
    """``model`` followed by additive Gaussian model error: the returned forecast model takes
    the error's standard deviation as its last extra argument,
    ``noisy(member, key, *model_args, std)`` (``std = 0`` adds nothing). Cached, so one model
    gives one wrapped function (and one compilation of the cycle)."""

    def noisy(member, key, *args):
        *model_args, std = args
        k_model, k_noise = jax.random.split(key)
        nxt = model(member, k_model, *model_args)
        return nxt + jnp.asarray(std, nxt.dtype) * jax.random.normal(k_noise, nxt.shape, nxt.dtype)

    return noisy


def deterministic(step_fn: Callable) -> Callable:
    """Turn a deterministic map ``state -> next_state`` into a forecast model ``(state, key) -> next``."""

    def model(member, key):
        del key
        return step_fn(member)

    model.__wrapped__ = step_fn
    return model
