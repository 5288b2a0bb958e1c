"""Surrogate rollouts corrected by data assimilation: the machinery of the paper's two
experiments (Tang et al. 2026), independent of the system.

A :class:`System` says how to make true trajectories and how the truth steps; a window
surrogate obeys the forecast contract ``(history (W, d), key, *model_args) -> next (d,)``.
For each test trajectory the experiment computes four RMSE curves over the DA window:

* SSP: the surrogate fed the true previous ``W`` states (its one-step error);
* LTP: the surrogate fed its own predictions (free rollout);
* filtered rollouts: an ensemble of rollouts corrected at every observed step (EnSF, the
  EnKF as the authors ran it, an EnKF with inflation), the analysis fed back as the
  surrogate's newest input.

Observations are ``arctan`` of the state with noise ``obs_std`` in the paper's cycle of 15
observed and 5 forecast-only steps, of every component or of ``n_observed`` drawn anew each
step.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks, assimilate, metrics, observe
from scoreda.experiments import compare
from scoreda.filters import ensf, kalman
from scoreda.surrogates import evaluate

class System(NamedTuple):
    """What the generic experiment needs to know of a system.

    Fields:
      name: for messages.
      d: state size.
      window: the surrogates' history length W; the DA window starts at step W.
      make_states: ``(key, n_steps) -> (n_steps + 1, d)`` a test trajectory.
      true_step: ``state (d,) -> next state (d,)``, the exact model between two states.
    """

    name: str
    d: int
    window: int
    make_states: Callable
    true_step: Callable


@dataclasses.dataclass(frozen=True)
class DAConfig:
    """The data-assimilation part of a case (the paper's values as defaults)."""

    observation: str = "full"  # "full" or "partial"
    n_observed: int = 5  # components observed per step when partial
    obs_std: float = 0.01
    n_members: int = 100
    n_steps: int = 2500  # length of the test trajectory; DA runs from step W (the window)
    init_std: float = 1.0  # EnSF's initial ensemble: truth (and history) + N(0, init_std^2)
    # EnSF
    ensf_steps: int = 500
    eps_a: float = 0.5
    eps_b: float = 0.025
    kernel_var: float = 0.0
    prior: str = "paired"
    integrator: str = "euler"
    start: str = "standard"
    # EnKF as the authors ran it: model error Q = (0.1^2 + SSP MSE) I added to each forecast,
    # initial ensemble covariance P0 = 100 I; a second EnKF with tuned inflation and no Q.
    enkf_p0: float = 100.0
    enkf_model_error: float = 0.1
    enkf_inflation: float = 1.1
    fill_unobserved: bool = True  # the authors' device for the EnKF under partial observation

    def __post_init__(self):
        if self.observation not in ("full", "partial"):
            raise ValueError(f"observation must be 'full' or 'partial', got {self.observation!r}")
        _checks.integer("n_observed", self.n_observed, 1)
        _checks.positive("obs_std", self.obs_std)
        _checks.integer("n_members", self.n_members, 2)
        _checks.integer("n_steps", self.n_steps, 3)
        _checks.integer("ensf_steps", self.ensf_steps, 1)


class Truth(NamedTuple):
    """A test trajectory ``states (n_steps + 1, d)`` and its observations (schedule from step W)."""

    states: jax.Array
    observations: observe.Observations


def make_truth(system: System, config: DAConfig, seed: int) -> Truth:
    """A test trajectory of ``system`` and its arctan observations."""
    if config.n_observed > system.d:
        raise ValueError(f"n_observed must be <= d = {system.d}, got {config.n_observed}")
    if config.n_steps <= system.window + 1:
        raise ValueError(f"n_steps must exceed the window {system.window} + 1, got {config.n_steps}")
    k_x, k_obs, k_mask = jax.random.split(jax.random.key(10_000 + seed), 3)
    states = system.make_states(k_x, config.n_steps)
    n = states.shape[0]
    schedule = observe.cycle_schedule(n, 15, 5, start=system.window)
    if config.observation == "full":
        mask = None
    else:
        mask = observe.random_masks(k_mask, n, system.d, config.n_observed)
    return Truth(states, observe.observe(k_obs, states, "arctan", config.obs_std, mask=mask,
                                         schedule=schedule))


#: kept here for the notebooks and :mod:`scoreda.hybrid`; defined in :mod:`scoreda.assimilate`
with_model_error = assimilate.with_model_error


def fill_unobserved_with_mean(filter_fn: Callable, obs: str | Callable) -> Callable:
    """The authors' device for the EnKF under partial observation: every unobserved entry of
    ``y`` is replaced by ``h`` of the ensemble mean and treated as observed."""
    h = observe.operator(obs)

    def filled(key, ensemble, y, obs_std, mask=None, **knobs):
        if mask is None:
            return filter_fn(key, ensemble, y, obs_std, **knobs)
        y = jnp.where(mask, y, h(ensemble.mean(axis=0)))
        return filter_fn(key, ensemble, y, obs_std, mask=None, **knobs)

    return filled


def initial_histories(key, truth_states, n_members, std, window_length):
    """Members' first windows: the true first ``W`` states plus N(0, std^2) noise, ``(N, W, d)``."""
    window = truth_states[:window_length]
    return window + std * jax.random.normal(key, (n_members,) + window.shape, window.dtype)


class CaseResult(NamedTuple):
    """RMSE curves over the DA window (steps ``W..n_steps``), each ``(n_trials, T)``."""

    ssp: np.ndarray
    ltp: np.ndarray
    filters: dict  # name -> (n_trials, T) analysis RMSE (NaN after a divergence)
    spreads: dict  # name -> (n_trials, T) analysis spread
    diverged: dict  # name -> list of diverged steps (-1: none) per trial
    ssp_mse: float  # the surrogate's SSP MSE on the trials (used in the EnKF's Q)


@functools.lru_cache(maxsize=32)
def filters_for(config: DAConfig) -> dict[str, tuple[Callable, float, bool]]:
    """The filters of a case: name -> (filter, initial ensemble std, whether the model error
    Q is added). Cached, so cases with one configuration share compilations."""
    ensf_fn = partial(ensf.analysis, obs="arctan", prior=config.prior, kernel_var=config.kernel_var,
                      eps_a=config.eps_a, eps_b=config.eps_b, n_steps=config.ensf_steps,
                      integrator=config.integrator, start=config.start)
    enkf_paper = partial(kalman.enkf, obs="arctan")
    enkf_tuned = partial(kalman.enkf, obs="arctan", inflation=config.enkf_inflation)
    if config.observation == "partial" and config.fill_unobserved:
        enkf_paper = fill_unobserved_with_mean(enkf_paper, "arctan")
        enkf_tuned = fill_unobserved_with_mean(enkf_tuned, "arctan")
    return {
        "EnSF": (ensf_fn, config.init_std, False),
        "EnKF (paper)": (enkf_paper, float(np.sqrt(config.enkf_p0)), True),
        "EnKF (inflated)": (enkf_tuned, config.init_std, False),
    }


def run_case(system: System, model_fn: Callable, model_args: tuple, predict: Callable,
             config: DAConfig, trials, *, progress: bool = False,
             ssp_mse: float | None = None) -> CaseResult:
    r"""SSP, LTP and the filtered rollouts of one surrogate over the given trial seeds.

    ``model_fn(history (W, d), key, *model_args) -> next`` is the forecast model;
    ``predict``: batched ``(B, W, d) -> (B, d)``, the same surrogate, for SSP and LTP.
    The EnKF "as the paper ran it" adds model error with
    :math:`Q = (0.1^2 + \mathrm{MSE_{SSP}}) I` (``ssp_mse`` defaults to the trials' SSP MSE).
    """
    w = system.window
    truths = [make_truth(system, config, seed) for seed in trials]
    ssp, ltp = [], []
    for truth in truths:
        target = truth.states[w:]
        ssp.append(np.asarray(metrics.rmse(evaluate.single_step(predict, truth.states, w), target)))
        roll = evaluate.long_term(predict, truth.states[:w], target.shape[0])
        ltp.append(np.asarray(metrics.rmse(roll, target)))
    if ssp_mse is None:
        ssp_mse = float(np.mean(np.square(ssp)))
    curves, spreads, diverged = {}, {}, {}
    for name in filters_for(config):
        curves[name], spreads[name], diverged[name] = [], [], []
        for seed, truth in zip(trials, truths):
            result = run_filter(system, model_fn, model_args, name, config, seed, ssp_mse=ssp_mse,
                                truth=truth, progress=progress)
            curves[name].append(result.analysis_rmse[1:])
            spreads[name].append(result.analysis_spread[1:])
            diverged[name].append(result.diverged_step)
    stack = lambda d: {k: np.stack(v) for k, v in d.items()}
    return CaseResult(np.stack(ssp), np.stack(ltp), stack(curves), stack(spreads), diverged, ssp_mse)


def run_filter(system: System, model_fn: Callable, model_args: tuple, name: str,
               config: DAConfig, seed: int, *, ssp_mse: float = 0.0, truth: Truth | None = None,
               progress: bool = False) -> assimilate.CycleResult:
    """One filtered rollout: the filter ``name`` of :func:`filters_for` over the test trajectory
    of ``seed``. The result's step 0 is step ``W - 1`` of the trajectory (the newest state of
    the initial windows); the DA window is steps 1 onwards."""
    filters = filters_for(config)
    if name not in filters:
        raise ValueError(f"name must be one of {sorted(filters)}, got {name!r}")
    filt, init_std, add_q = filters[name]
    w = system.window
    truth = make_truth(system, config, seed) if truth is None else truth
    q_std = float(np.sqrt(config.enkf_model_error**2 + ssp_mse)) if add_q else 0.0
    k_init, k_cycle = jax.random.split(jax.random.key(20_000 + seed))
    ens0 = initial_histories(k_init, truth.states, config.n_members, init_std, w)
    obs = jax.tree.map(lambda a: a[w - 1:] if jnp.ndim(a) else a, truth.observations)
    return assimilate.cycle(k_cycle, with_model_error(model_fn), filt, truth.states[w - 1:],
                            obs, ens0, divergence_bound=1000.0, on_divergence="report",
                            progress=progress, model_args=tuple(model_args) + (jnp.float32(q_std),))


@functools.lru_cache(maxsize=8)
def true_model(system: System):
    """The exact model as ``(forecast model, model_args, batched predictor)`` (reference rows)."""

    def model(history, key):
        del key
        return system.true_step(history[-1])

    def predict(histories):
        return jax.vmap(system.true_step)(histories[:, -1])

    return model, (), predict


def time_average(curves: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over trials of the time-averaged RMSE (NaN if any diverged)."""
    per_trial = np.mean(curves, axis=-1)
    return float(np.mean(per_trial)), float(np.std(per_trial))


def fill_device(filter_fn: Callable, obs: str | Callable) -> Callable:
    """:func:`fill_unobserved_with_mean` as a comparison method's ``wrap`` (the authors' EnKF
    under partial observation; a no-op under full observation)."""
    return fill_unobserved_with_mean(filter_fn, obs)


def case(system: System, model_fn: Callable, model_args: tuple, config: DAConfig, *,
         name: str, model_key: str, burn_in: int = 0,
         climate_std: float | None = None) -> compare.Case:
    """One surrogate (or the true model) and one observation network as a comparison case.

    Trial ``seed`` is the test trajectory of :func:`make_truth` (its arctan observations in
    the 15-on / 5-off cycle); the cycle starts at step ``W - 1`` with history windows
    ``truth[:W] + init_std * noise``, exactly as :func:`run_filter`. ``model_key`` must
    identify the forecast model (e.g. the surrogate's cache entry) for the result cache;
    ``burn_in`` steps of the DA window are left out of the averages.
    """
    w = system.window

    def make_trial(seed: int) -> compare.Trial:
        truth = make_truth(system, config, int(seed))
        obs = jax.tree.map(lambda a: a[w - 1:] if jnp.ndim(a) else a, truth.observations)
        noise = jax.random.normal(jax.random.key(20_000 + int(seed)),
                                  (config.n_members, w, system.d), truth.states.dtype)
        return compare.Trial(truth.states[w - 1:], obs, truth.states[:w], noise)

    described = {k: v for k, v in dataclasses.asdict(config).items()
                 if k in ("observation", "n_observed", "obs_std", "n_members", "n_steps")}
    key = f"rollout {system.name} {model_key} " + json.dumps(described, sort_keys=True)
    return compare.Case(name, make_trial, model_fn, "arctan", model_args=tuple(model_args),
                        burn_in=burn_in, init_std=config.init_std, climate_std=climate_std,
                        cache_key=key)
