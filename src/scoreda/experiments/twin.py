"""Lorenz-96 twin experiments: a true run, its observations, a filter cycling on the true model.

A *twin experiment* uses the same model for the truth and the forecasts, so that only the
filter is tested; it can also give the forecast model another forcing (model error) or
change the truth's forcing mid-run (a shock the forecast model does not know of).
:class:`TwinConfig` holds every setting; :func:`make_twin` builds the truth, observations,
initial ensemble and forecast model from it; :func:`score` runs one filter; :func:`case`
makes the twin a case of the comparison harness, which tunes and evaluates filters on
trials that differ (:mod:`scoreda.experiments.compare`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from functools import partial
from typing import Callable, NamedTuple

import jax
import numpy as np

from scoreda import _checks, assimilate, observe
from scoreda.experiments import compare
from scoreda.systems import lorenz96 as l96


@dataclasses.dataclass(frozen=True)
class TwinConfig:
    """Settings of a Lorenz-96 twin experiment.

    The defaults are DAPPER's "Sakov 2008" benchmark: d = 40, F = 8, RK4 dt = 0.05, every
    component observed every step with unit noise.
    """

    d: int = 40
    forcing: float = 8.0
    dt: float = 0.05
    steps_per_cycle: int = 1  # model steps between two analyses
    n_cycles: int = 500
    burn_in: int = 100  # cycles left out of the time averages
    obs: str = "identity"
    obs_std: float = 1.0
    observed_fraction: float = 1.0  # < 1: that fraction of the components, drawn anew each cycle
    n_members: int = 20
    init_std: float = 1.0  # initial ensemble: truth + N(0, init_std^2)
    spinup_steps: int = 1000  # steps of dt = 0.05 that put the truth on the attractor
    seed: int = 0
    model_forcing: float | None = None  # the forecast model's F (None: ``forcing``)
    shock_forcing: float | None = None  # the truth's F from ``shock_cycle`` on (None: none)
    shock_cycle: int | None = None  # None: the middle of the scored cycles

    def __post_init__(self):
        _checks.integer("d", self.d, l96.MIN_DIM)
        _checks.positive("dt", self.dt)
        _checks.finite_scalar("forcing", self.forcing)
        _checks.integer("steps_per_cycle", self.steps_per_cycle, 1)
        _checks.integer("n_cycles", self.n_cycles, 2)
        _checks.integer("burn_in", self.burn_in, 0)
        if self.burn_in >= self.n_cycles:
            raise ValueError(f"burn_in ({self.burn_in}) must be < n_cycles ({self.n_cycles})")
        observe.operator(self.obs)
        _checks.positive("obs_std", self.obs_std)
        if not 0.0 < self.observed_fraction <= 1.0 or round(self.observed_fraction * self.d) < 1:
            raise ValueError(f"observed_fraction must lie in (0, 1] and observe at least one of "
                             f"the d = {self.d} components, got {self.observed_fraction!r}")
        _checks.integer("n_members", self.n_members, 2)
        _checks.non_negative("init_std", self.init_std)
        if self.model_forcing is not None:
            _checks.finite_scalar("model_forcing", self.model_forcing)
        if self.shock_forcing is None:
            if self.shock_cycle is not None:
                raise ValueError(f"shock_cycle ({self.shock_cycle!r}) needs a shock_forcing")
        else:
            _checks.finite_scalar("shock_forcing", self.shock_forcing)
            if self.shock_cycle is not None:
                _checks.integer("shock_cycle", self.shock_cycle, 1)
                if self.shock_cycle >= self.n_cycles:
                    raise ValueError(f"shock_cycle ({self.shock_cycle}) must be < n_cycles "
                                     f"({self.n_cycles}): the shock would never happen")

    @property
    def shock_at(self) -> int | None:
        """The first cycle whose truth was advanced with ``shock_forcing`` (None: no shock)."""
        if self.shock_forcing is None:
            return None
        if self.shock_cycle is not None:
            return self.shock_cycle
        return (self.burn_in + self.n_cycles) // 2

    @property
    def forecast_forcing(self) -> float:
        """The forcing of the forecast model."""
        return self.forcing if self.model_forcing is None else self.model_forcing


class Twin(NamedTuple):
    """A built twin experiment: ``truth (T, d)``, ``observations``, ``ensemble0 (N, d)``, ``model``."""

    truth: jax.Array
    observations: observe.Observations
    ensemble0: jax.Array
    model: Callable


class TwinScore(NamedTuple):
    """Time averages after the burn-in (NaN when the filter diverged) and the full result."""

    rmse: float
    spread: float
    diverged_step: int
    result: assimilate.CycleResult


def make_twin(config: TwinConfig) -> Twin:
    """Truth, observations, initial ensemble and forecast model of ``config``."""
    k_truth, k_obs, k_ens = jax.random.split(jax.random.key(config.seed), 3)
    x0 = l96.initial_states(k_truth, config.d)
    x0 = l96.trajectory(x0, config.spinup_steps, 0.05, config.forcing,
                        save_every=max(config.spinup_steps, 1))[-1]
    every = config.steps_per_cycle
    truth = _truth(x0, config)
    mask = None
    if config.observed_fraction < 1.0:
        mask = observe.random_masks(jax.random.fold_in(k_obs, 1), config.n_cycles, config.d,
                                    round(config.observed_fraction * config.d))
    observations = observe.observe(k_obs, truth, config.obs, config.obs_std, mask=mask)
    ensemble0 = truth[0] + config.init_std * jax.random.normal(k_ens, (config.n_members, config.d))
    model = assimilate.deterministic(
        partial(_advance, n_steps=every, dt=config.dt, forcing=config.forecast_forcing))
    return Twin(truth, observations, ensemble0, model)


def _truth(x0, config: TwinConfig) -> jax.Array:
    """The true states at the ``n_cycles`` analysis times, ``(n_cycles, d)``: F =
    ``forcing``, from cycle ``shock_at`` on ``shock_forcing`` (the step into that cycle is
    the first with the new forcing)."""
    every, shock = config.steps_per_cycle, config.shock_at
    if shock is None:
        return l96.trajectory(x0, (config.n_cycles - 1) * every, config.dt, config.forcing,
                              save_every=every)
    before = l96.trajectory(x0, (shock - 1) * every, config.dt, config.forcing,
                            save_every=every)
    after = l96.trajectory(before[-1], (config.n_cycles - shock) * every, config.dt,
                           config.shock_forcing, save_every=every)
    return jax.numpy.concatenate([before, after[1:]])


def _advance(x, *, n_steps, dt, forcing):
    return jax.lax.fori_loop(0, n_steps, lambda _, s: l96.step(s, dt, forcing), x)


def score(config: TwinConfig, filter_fn: Callable, *, twin: Twin | None = None,
          divergence_bound: float = 50.0) -> TwinScore:
    """Cycle ``filter_fn`` over the twin of ``config``; a divergence is reported, not raised."""
    twin = make_twin(config) if twin is None else twin
    result = assimilate.cycle(jax.random.key(config.seed + 1), twin.model, filter_fn, twin.truth,
                              twin.observations, twin.ensemble0,
                              divergence_bound=divergence_bound, on_divergence="report")
    late = slice(config.burn_in, None)
    if result.diverged_step >= 0:
        return TwinScore(float("nan"), float("nan"), result.diverged_step, result)
    return TwinScore(float(np.mean(result.analysis_rmse[late])),
                     float(np.mean(result.analysis_spread[late])), -1, result)


def forecast_case(key: jax.Array, config: TwinConfig, error_std: float = 1.0):
    """One analysis problem: a true state on the attractor and a forecast ensemble around it.

    The forecast is ``truth + e + config.init_std * xi_j`` with a common error
    ``e ~ N(0, error_std^2 I)``, so its mean is wrong by about ``error_std`` and its spread is
    ``init_std``. Returns ``(truth (d,), forecast (N, d), y (d,))`` with ``y`` observed through
    ``config.obs`` with noise ``config.obs_std``.
    """
    k_truth, k_err, k_ens, k_obs = jax.random.split(key, 4)
    x0 = l96.initial_states(k_truth, config.d)
    truth = l96.trajectory(x0, config.spinup_steps, 0.05, config.forcing,
                           save_every=config.spinup_steps)[-1]
    forecast = (truth + error_std * jax.random.normal(k_err, (config.d,))
                + config.init_std * jax.random.normal(k_ens, (config.n_members, config.d)))
    y = observe.add_noise(k_obs, observe.operator(config.obs)(truth), config.obs_std)
    return truth, forecast, y


#: climatological standard deviation of one Lorenz-96 component at F = 8 (chapter 1)
CLIMATE_STD_F8 = 3.6


@functools.lru_cache(maxsize=None)
def climate_std(forcing: float) -> float | None:
    """The climatological standard deviation of one Lorenz-96 component at ``forcing``:
    :data:`CLIMATE_STD_F8` at F = 8, otherwise measured (d = 40, 40,000 RK4 steps of dt =
    0.05, the first 10,000 left out; two decimals; e.g. 2.83 at F = 6, 5.06 at F = 12).
    ``None`` for a forcing under 5, where the system may not be chaotic."""
    forcing = float(forcing)
    if forcing == 8.0:
        return CLIMATE_STD_F8
    if not forcing >= 5.0:
        return None
    x0 = l96.initial_states(jax.random.key(0), 40)
    states = l96.trajectory(x0, 40_000, 0.05, forcing, save_every=10)[1000:]
    return round(float(np.std(np.asarray(states))), 2)


def case(config: TwinConfig, name: str = "Lorenz-96 twin") -> compare.Case:
    """The twin of ``config`` as a comparison case (:mod:`scoreda.experiments.compare`).

    Trial ``seed`` is :func:`make_twin` with that seed: a truth on the attractor, its
    observations, and standard-normal draws for the initial ensemble around ``truth[0]``.
    The burn-in of ``config`` (in cycles) is left out of the averages.
    """

    def make_trial(seed: int) -> compare.Trial:
        built = make_twin(dataclasses.replace(config, seed=int(seed)))
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(int(seed)), 3),
                                  (config.n_members, config.d))
        return compare.Trial(built.truth, built.observations, built.truth[0], noise)

    model = assimilate.deterministic(partial(_advance, n_steps=config.steps_per_cycle,
                                             dt=config.dt, forcing=config.forecast_forcing))
    described = {k: v for k, v in dataclasses.asdict(config).items() if k != "seed"}
    if config.observed_fraction == 1.0:  # keeps the cache keys of fully observed twins
        del described["observed_fraction"]
    for field in ("model_forcing", "shock_forcing", "shock_cycle"):
        if described[field] is None:  # and of twins without model error or a shock
            del described[field]
    if config.shock_forcing is not None:
        described["shock_cycle"] = config.shock_at
    truth_forcings = [config.forcing] + ([] if config.shock_forcing is None
                                         else [config.shock_forcing])
    climates = [climate_std(f) for f in truth_forcings]
    return compare.Case(name, make_trial, model, config.obs, burn_in=config.burn_in,
                        init_std=config.init_std,
                        climate_std=None if None in climates else max(climates),
                        divergence_bound=50.0, cache_key="twin " + json.dumps(described, sort_keys=True))
