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


def _current(members):
    return members[:, -1] if members.ndim == 3 else members


def _replace_current(members, state):
    return members.at[:, -1].set(state) if members.ndim == 3 else state


def _stats(members, truth_n, with_variance=False):
    x = _current(members).astype(truth_n.dtype)
    mean = x.mean(axis=0)
    stats = (mean, metrics.spread(x), metrics.rmse(mean, truth_n))
    return stats + (jnp.var(x, axis=0, ddof=1),) if with_variance else stats


@functools.lru_cache(maxsize=32)
def _make_step(model, filter_fn, bound, store_states=True):
    """The jitted scan over one chunk of steps (cached, so repeated cycles compile once).
    Members are stored in their own dtype and computed on in (at least) float32."""

    def compute(members):
        return members.astype(jnp.promote_types(members.dtype, jnp.float32))

    def analyse(members, key, y, mask, obs_std):
        analysis = filter_fn(key, compute(_current(members)), y, obs_std, mask=mask)
        return _replace_current(members, analysis.astype(members.dtype))

    def forecast(members, key, model_args):
        keys = jax.random.split(key, members.shape[0])
        nxt = jax.vmap(lambda m, k: model(m, k, *model_args))(compute(members), keys)
        nxt = nxt.astype(members.dtype)
        if members.ndim == 3:
            return jnp.concatenate([members[:, 1:], nxt[:, None]], axis=1)
        return nxt

    def step(carry, inputs, obs_std, model_args):
        members, diverged = carry
        n, key, truth_n, y, mask, observed, do_forecast = inputs
        k_model, k_filter = jax.random.split(key)

        def advance(members):
            members = jax.lax.cond(do_forecast, forecast, lambda m, *_: m, members, k_model,
                                   model_args)
            f_stats = _stats(members, truth_n)
            members = jax.lax.cond(observed, analyse, lambda m, *_: m, members, k_filter, y, mask,
                                   obs_std)
            return members, f_stats, _stats(members, truth_n, with_variance=True)

        def frozen(members):
            nan_vector = jnp.full(truth_n.shape, jnp.nan, truth_n.dtype)
            nan_stats = (nan_vector, jnp.asarray(jnp.nan, truth_n.dtype),
                         jnp.asarray(jnp.nan, truth_n.dtype))
            return members, nan_stats, nan_stats + (nan_vector,)

        new_members, f_stats, a_stats = jax.lax.cond(diverged >= 0, frozen, advance, members)
        f_rmse, a_rmse = f_stats[2], a_stats[2]
        if not store_states:  # keep the scalars only (huge d)
            f_stats, a_stats = f_stats[1:], a_stats[1:3]
        bad = (diverged < 0) & ~(jnp.isfinite(a_rmse) & jnp.isfinite(f_rmse) & (a_rmse <= bound))
        members = jnp.where(bad, members, new_members)  # keep the last finite members
        diverged = jnp.where(bad, n, diverged)
        return (members, diverged), (f_stats, a_stats)

    @jax.jit
    def step_chunk(carry, xs, obs_std, model_args):
        return jax.lax.scan(lambda c, x: step(c, x, obs_std, model_args), carry, xs)

    return step_chunk


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
    store_states: bool = True,
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
      chunk: steps per compiled ``lax.scan`` segment (progress and divergence are checked
        between segments).
      progress: show a tqdm progress bar.
      model_args: extra arrays passed to the model as ``model(member, key, *model_args)``
        (e.g. a surrogate's parameters). They enter the compiled loop as arguments, so
        models that differ only in them share one compilation.
      store_states: keep the per-step means and variances ``(T, d)``; with False those
        fields are None and only the scalar curves are kept (for huge ``d``).

    Members are stored in ``ensemble0``'s floating dtype (e.g. ``bfloat16`` to halve the
    memory of a huge ensemble) and promoted to at least float32 for the model and the filter.
    """
    truth = jnp.asarray(truth)
    if truth.ndim != 2:
        raise ValueError(f"truth must have shape (T, d), got {truth.shape}")
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
    schedule = observations.observed if schedule is None else jnp.asarray(schedule, bool)
    if schedule.shape != (n_steps,):
        raise ValueError(f"schedule must have shape (T,) = ({n_steps},), got {schedule.shape}")
    if on_divergence not in ("raise", "report"):
        raise ValueError(f"on_divergence must be 'raise' or 'report', got {on_divergence!r}")
    _checks.positive("divergence_bound", divergence_bound)
    chunk = _checks.integer("chunk", chunk, 1)
    _checks.finite("ensemble0", ensemble0)

    step_chunk = _make_step(model, filter, float(divergence_bound), bool(store_states))
    keys = jax.random.split(key, n_steps)
    xs_all = (
        jnp.arange(n_steps), keys, truth.astype(compute_dtype),
        observations.values.astype(compute_dtype), observations.mask, schedule,
        jnp.arange(n_steps) > 0,
    )
    carry = (ensemble0, jnp.asarray(-1))
    outputs = []
    bar = tqdm(total=n_steps, desc="cycling", unit="step", disable=not progress)
    for start in range(0, n_steps, chunk):
        xs = jax.tree.map(lambda a: a[start:start + chunk], xs_all)
        carry, out = step_chunk(carry, xs, observations.std, tuple(model_args))
        outputs.append(out)
        bar.update(xs[0].shape[0])
        if int(carry[1]) >= 0:
            break
    bar.close()
    f_stats, a_stats = jax.tree.map(
        lambda *parts: np.concatenate([np.asarray(p) for p in parts]), *outputs
    )
    if store_states:
        (f_mean, f_spread, f_rmse), (a_mean, a_spread, a_rmse, a_var) = f_stats, a_stats
    else:
        (f_spread, f_rmse), (a_spread, a_rmse) = f_stats, a_stats
        f_mean = a_mean = a_var = None
    done = f_rmse.shape[0]
    if done < n_steps:  # stopped early: pad the unrun steps with NaN
        pad = lambda a: None if a is None else np.concatenate(
            [a, np.full((n_steps - done,) + a.shape[1:], np.nan, a.dtype)])
        f_mean, f_spread, f_rmse, a_mean, a_spread, a_rmse, a_var = map(
            pad, (f_mean, f_spread, f_rmse, a_mean, a_spread, a_rmse, a_var))
    diverged = int(carry[1])
    result = CycleResult(f_mean, a_mean, f_spread, a_spread, f_rmse, a_rmse,
                         np.asarray(schedule), diverged, np.asarray(carry[0]), a_var)
    if diverged >= 0 and on_divergence == "raise":
        # the diverged step keeps the offending values; the steps after it are NaN
        offending = f_rmse[diverged] if not np.isfinite(f_rmse[diverged]) else a_rmse[diverged]
        raise FilterDivergence(diverged, float(offending), divergence_bound)
    return result


def deterministic(step_fn: Callable) -> Callable:
    """Turn a deterministic map ``state -> next_state`` into a forecast model ``(state, key) -> next``."""

    def model(member, key):
        del key
        return step_fn(member)

    model.__wrapped__ = step_fn
    return model
