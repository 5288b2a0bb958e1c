"""Surrogate rollouts corrected by data assimilation: the machinery of the paper's two
experiments (Tang et al. 2026), independent of the system.

A :class:`System` says how to make true trajectories and how the truth steps; a window
surrogate obeys the forecast contract ``(history (W, d), key, *model_args) -> next (d,)``.
A test trajectory (:func:`make_truth`) is observed as ``arctan`` of the state with noise
``obs_std`` in the paper's cycle of 15 observed and 5 forecast-only steps, of every
component or of ``n_observed`` drawn anew each step. :func:`case` turns a forecast model and
an observation network into a case of the comparison harness
(:mod:`scoreda.experiments.compare`), which cycles an ensemble of rollouts, each corrected
at every observed step and the analysis fed back as the surrogate's newest input, for every
filter; :func:`fill_device` is the authors' treatment of unobserved components for their
EnKF; :func:`true_model` gives the exact model as the reference row; :func:`paper_methods`
the methods both experiments compare (the authors' settings among them).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks, observe
from scoreda.experiments import compare

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
    """The observation network and ensemble of a case (the paper's values as defaults);
    the filters' knobs belong to the comparison's methods."""

    observation: str = "full"  # "full" or "partial"
    n_observed: int = 5  # components observed per step when partial
    obs_std: float = 0.01
    n_members: int = 100
    n_steps: int = 2500  # length of the test trajectory; DA runs from step W (the window)
    init_std: float = 1.0  # initial ensemble: truth (and history) + N(0, init_std^2)
    spin_up: int = 0  # true steps discarded before the test trajectory starts (0: the paper's)

    def __post_init__(self):
        if self.observation not in ("full", "partial"):
            raise ValueError(f"observation must be 'full' or 'partial', got {self.observation!r}")
        _checks.integer("n_observed", self.n_observed, 1)
        _checks.positive("obs_std", self.obs_std)
        _checks.integer("n_members", self.n_members, 2)
        _checks.integer("n_steps", self.n_steps, 3)
        _checks.non_negative("init_std", self.init_std)
        _checks.integer("spin_up", self.spin_up, 0)


class Truth(NamedTuple):
    """A test trajectory ``states (n_steps + 1, d)`` and its observations (schedule from step W)."""

    states: jax.Array
    observations: observe.Observations


def make_truth(system: System, config: DAConfig, seed: int) -> Truth:
    """A test trajectory of ``system`` and its arctan observations.

    The trajectory is ``system.make_states`` run for ``spin_up + n_steps`` steps with its
    first ``spin_up`` steps dropped: ``states (n_steps + 1, d)`` start where the system has
    had ``spin_up`` steps to leave its initial distribution (for Lorenz-96, the uniform
    start in [7, 9] and the transient that follows it)."""
    if config.observation == "partial" and config.n_observed > system.d:
        raise ValueError(f"n_observed must be <= d = {system.d}, got {config.n_observed}")
    if config.n_steps <= system.window + 1:
        raise ValueError(f"n_steps must exceed the window {system.window} + 1, got {config.n_steps}")
    k_x, k_obs, k_mask = jax.random.split(jax.random.key(10_000 + seed), 3)
    states = system.make_states(k_x, config.spin_up + config.n_steps)[config.spin_up:]
    n = states.shape[0]
    schedule = observe.cycle_schedule(n, 15, 5, start=system.window)
    if config.observation == "full":
        mask = None
    else:
        mask = observe.random_masks(k_mask, n, system.d, config.n_observed)
    return Truth(states, observe.observe(k_obs, states, "arctan", config.obs_std, mask=mask,
                                         schedule=schedule))


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


@functools.lru_cache(maxsize=8)
def true_model(system: System):
    """The exact model as ``(forecast model, model_args, batched predictor)`` (reference rows)."""

    def model(history, key):
        del key
        return system.true_step(history[-1])

    def predict(histories):
        return jax.vmap(system.true_step)(histories[:, -1])

    return model, (), predict


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
    ``truth[:W] + init_std * noise``. ``model_key`` must
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


#: the authors' EnSF (their code's setting, Tang et al. 2026): Euler-Maruyama in 500 steps
#: from the standard normal, eps_a = 1, eps_b = 0 and a kernel variance of 0.0946
AUTHORS_ENSF = {"eps_a": 1.0, "eps_b": 0.0, "kernel_var": 0.0946, "n_steps": 500,
                "integrator": "euler", "start": "standard"}


def paper_methods(ssp_mse: float, *, ensf_steps: int, eps_b_grid, inflation_grid, radius_grid,
                  model_error_grid, kalman=("LETKF",), with_authors: bool = False,
                  widen: int = compare.Method.widen) -> list[compare.Method]:
    r"""The methods of the paper's experiments (chapters 4 and 5), in the order of their
    tables:

    * ``"EnSF"``: the score filter with ``ensf_steps`` steps of the exponential integrator,
      tuned over ``eps_b_grid`` x ``model_error_grid`` (the cycle knob every tuned method
      is offered; EnSF has no multiplicative inflation, and ``eps_b`` is its additive one);
    * ``"EnSF (authors' setting)"`` (when ``with_authors``): :data:`AUTHORS_ENSF`, fixed;
    * ``"EnKF (paper)"``: the authors' EnKF, fixed: initial spread 10, model error
      :math:`\sqrt{0.1^2 + \mathrm{SSP\ MSE}}` (``ssp_mse``, the surrogate's single-step mean
      squared error) and the unobserved components filled with the forecast mean
      (:func:`fill_device`);
    * one tuned method per name of ``kalman`` (registry names, e.g. ``"EnKF"``,
      ``"LETKF"``, ``"IEnKF"``, ``"LETKF-tan"``), over ``inflation_grid`` x
      ``model_error_grid``, and ``radius_grid`` where the filter localises.

    Every tuned method may widen its grid ``widen`` times (default: the harness's).
    """
    from scoreda.filters import registry

    _checks.non_negative("ssp_mse", ssp_mse)
    if len(set(kalman)) != len(kalman):
        raise ValueError(f"kalman names a filter twice: {list(kalman)}")
    methods = [compare.Method("EnSF", "EnSF", knobs={"n_steps": ensf_steps},
                              grid={"eps_b": eps_b_grid, "model_error": model_error_grid},
                              widen=widen)]
    if with_authors:
        methods.append(compare.Method("EnSF (authors' setting)", "EnSF", grid={},
                                      knobs=dict(AUTHORS_ENSF)))
    methods.append(compare.Method(
        "EnKF (paper)", "EnKF", grid={}, wrap=fill_device,
        knobs={"init_std": 10.0, "model_error": float(np.sqrt(0.1**2 + ssp_mse))}))
    for name in kalman:
        grid = {"inflation": inflation_grid}
        if "radius" in registry.get(name).knobs:
            grid["radius"] = radius_grid
        grid["model_error"] = model_error_grid
        methods.append(compare.Method(name, name, grid=grid, widen=widen))
    return methods
