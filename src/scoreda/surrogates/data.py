r"""Training data for window surrogates: trajectories, and (window -> next state) samples.

A surrogate with window :math:`W` learns :math:`(x_{n-W}, \dots, x_{n-1}) \mapsto x_n`.
Windows are never materialised for a whole data set (the paper's SA set would need 6 GB):
:func:`gather_windows` cuts a minibatch out of the stored trajectories by index, under jit.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from scoreda import _checks
from scoreda.systems import kdv
from scoreda.systems import lorenz96 as l96


@dataclasses.dataclass(frozen=True)
class Lorenz96Data:
    """How a Lorenz-96 training set is made (the paper: d = 20, dt = 0.004, 2500 steps,
    initial states uniform in [7, 9]).

    ``target_noise_std`` adds fixed Gaussian noise to the states used as *targets* only (the
    paper's "sufficient but inaccurate" scenario); inputs stay exact.
    """

    n_trajectories: int = 1500
    n_steps: int = 2500
    dt: float = 0.004
    d: int = 20
    forcing: float = 8.0
    target_noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self):
        _checks.integer("n_trajectories", self.n_trajectories, 1)
        _checks.integer("n_steps", self.n_steps, 1)
        _checks.positive("dt", self.dt)
        _checks.integer("d", self.d, l96.MIN_DIM)
        _checks.finite_scalar("forcing", self.forcing)
        _checks.non_negative("target_noise_std", self.target_noise_std)

    def make(self) -> "Trajectories":
        """The training set (:func:`make_lorenz96`)."""
        return make_lorenz96(self)


#: The paper's three training-data scenarios (Tang et al. 2026, experiment 1).
SCENARIOS = {
    "SA": dict(n_trajectories=1500),  # sufficient and accurate
    "IA": dict(n_trajectories=100),  # insufficient and accurate
    "SI": dict(n_trajectories=1500, target_noise_std=0.2),  # sufficient and inaccurate
}


def scenario(name: str, **overrides) -> Lorenz96Data:
    """The :class:`Lorenz96Data` of scenario ``"SA"``, ``"IA"`` or ``"SI"``, with overrides
    (an override of None keeps the scenario's value)."""
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {sorted(SCENARIOS)}, got {name!r}")
    return Lorenz96Data(**(SCENARIOS[name] | _given(overrides)))


def _given(overrides: dict) -> dict:
    return {k: v for k, v in overrides.items() if v is not None}


class Trajectories(NamedTuple):
    """Training trajectories: ``inputs`` exact states and ``targets`` (possibly noisy), both
    ``(n_trajectories, n_steps + 1, d)``; optional ``weights`` of the same shape weight each
    target entry in the loss (None: all one)."""

    inputs: jax.Array
    targets: jax.Array
    weights: jax.Array | None = None


def make_lorenz96(config: Lorenz96Data) -> Trajectories:
    """Generate the trajectories of ``config`` (deterministic in ``config.seed``)."""
    k_data, k_noise = jax.random.split(jax.random.key(config.seed))
    states = l96.dataset(k_data, config.n_trajectories, config.n_steps, config.dt, config.d,
                         config.forcing)
    return _with_target_noise(k_noise, states, config.target_noise_std)


def _with_target_noise(key, states, std) -> Trajectories:
    """Exact inputs; targets with fixed additive Gaussian noise of standard deviation ``std``."""
    if std == 0:
        return Trajectories(states, states)
    return Trajectories(states, states + std * jax.random.normal(key, states.shape, states.dtype))


@dataclasses.dataclass(frozen=True)
class KdVData:
    """How a KdV training set is made (the paper: 30 two-soliton initial conditions, L = 50,
    100 points, snapshots every 0.5 up to T = 500, solutions multiplied by ``scale`` = 10).

    The ETDRK4 step is ``dt``; snapshots are kept every ``save_every`` steps.
    ``target_noise_std`` (in scaled units) corrupts the targets only ("noisy data").
    """

    n_trajectories: int = 30
    n_points: int = 100
    length: float = 50.0
    dt: float = 0.01
    save_every: int = 50
    n_steps: int = 1000  # snapshots after the initial one
    scale: float = 10.0
    target_noise_std: float = 0.0
    seed: int = 0

    def __post_init__(self):
        _checks.integer("n_trajectories", self.n_trajectories, 1)
        _checks.integer("n_steps", self.n_steps, 1)
        _checks.integer("save_every", self.save_every, 1)
        _checks.positive("scale", self.scale)
        _checks.non_negative("target_noise_std", self.target_noise_std)
        _checks.positive("dt", self.dt)
        kdv.check_grid(self.length, self.n_points)  # refuse an odd grid now, not after training

    @property
    def d(self) -> int:
        return self.n_points

    def make(self) -> "Trajectories":
        """The training set (:func:`make_kdv`)."""
        return make_kdv(self)


#: The KdV cases of the paper's experiment 2 (sizes of this project's choosing, stated in the book).
KDV_SCENARIOS = {
    "standard": dict(n_trajectories=30),
    "insufficient": dict(n_trajectories=5),
    "noisy": dict(n_trajectories=30, target_noise_std=0.5),
}


def kdv_scenario(name: str, **overrides) -> KdVData:
    """The :class:`KdVData` of ``"standard"``, ``"insufficient"`` or ``"noisy"``, with overrides
    (an override of None keeps the scenario's value)."""
    if name not in KDV_SCENARIOS:
        raise ValueError(f"scenario must be one of {sorted(KDV_SCENARIOS)}, got {name!r}")
    return KdVData(**(KDV_SCENARIOS[name] | _given(overrides)))


def kdv_states(key, config: KdVData, n_trajectories: int | None = None) -> jax.Array:
    """Scaled KdV snapshots from random two-soliton initial conditions, ``(n, n_steps + 1, d)``."""
    n = config.n_trajectories if n_trajectories is None else n_trajectories
    ic = kdv.two_soliton_initial_condition(key, (n,), length=config.length, n_points=config.n_points)
    u = kdv.solve(ic.u0, config.length, config.dt, config.n_steps * config.save_every, config.save_every)
    return config.scale * u


def make_kdv(config: KdVData) -> Trajectories:
    """Generate the trajectories of ``config`` (deterministic in ``config.seed``)."""
    k_data, k_noise = jax.random.split(jax.random.key(config.seed))
    return _with_target_noise(k_noise, kdv_states(k_data, config), config.target_noise_std)


def make(config) -> Trajectories:
    """The trajectories a data configuration describes: ``config.make()``.

    The protocol of a data configuration (:class:`Lorenz96Data`, :class:`KdVData`, or one of
    a new system, wherever it is defined): a frozen dataclass whose fields say everything
    the data depend on (they key the training cache), with ``d`` and a ``make()`` that
    returns :class:`Trajectories` ``(n_trajectories, T, d)``."""
    maker = getattr(config, "make", None)
    if not callable(maker):
        raise TypeError(f"no data generator for {type(config).__name__}: a data "
                        "configuration has a make() method that returns Trajectories")
    return maker()


def window_starts(n_trajectories: int, n_times: int, window: int) -> jax.Array:
    """All (trajectory, first index) pairs of windows of length ``window`` plus one target,
    shape ``(n_trajectories * (n_times - window), 2)``."""
    if n_times <= window:
        raise ValueError(f"trajectories of {n_times} states are too short for window {window}")
    t = jnp.arange(n_times - window)
    i = jnp.arange(n_trajectories)
    return jnp.stack(jnp.broadcast_arrays(i[:, None], t[None, :]), axis=-1).reshape(-1, 2)


def gather_windows(data: Trajectories, starts: jax.Array, window: int):
    """Cut windows, targets and target weights: ``starts (B, 2)`` -> inputs ``(B, window, d)``,
    targets ``(B, d)``, weights ``(B, d)`` (ones when ``data.weights`` is None)."""

    def one(start):
        i, t = start[0], start[1]
        x = jax.lax.dynamic_slice_in_dim(data.inputs[i], t, window, axis=0)
        y = data.targets[i, t + window]
        w = jnp.ones_like(y) if data.weights is None else data.weights[i, t + window]
        return x, y, w

    return jax.vmap(one)(starts)
