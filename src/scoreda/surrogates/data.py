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
        _checks.non_negative("target_noise_std", self.target_noise_std)


#: The paper's three training-data scenarios (Tang et al. 2026, experiment 1).
SCENARIOS = {
    "SA": dict(n_trajectories=1500),  # sufficient and accurate
    "IA": dict(n_trajectories=100),  # insufficient and accurate
    "SI": dict(n_trajectories=1500, target_noise_std=0.2),  # sufficient and inaccurate
}


def scenario(name: str, **overrides) -> Lorenz96Data:
    """The :class:`Lorenz96Data` of scenario ``"SA"``, ``"IA"`` or ``"SI"``, with overrides."""
    if name not in SCENARIOS:
        raise ValueError(f"scenario must be one of {sorted(SCENARIOS)}, got {name!r}")
    return Lorenz96Data(**(SCENARIOS[name] | overrides))


class Trajectories(NamedTuple):
    """Training trajectories: ``inputs`` exact states and ``targets`` (possibly noisy), both
    ``(n_trajectories, n_steps + 1, d)``."""

    inputs: jax.Array
    targets: jax.Array


def make_lorenz96(config: Lorenz96Data) -> Trajectories:
    """Generate the trajectories of ``config`` (deterministic in ``config.seed``)."""
    k_data, k_noise = jax.random.split(jax.random.key(config.seed))
    states = l96.dataset(k_data, config.n_trajectories, config.n_steps, config.dt, config.d,
                         config.forcing)
    if config.target_noise_std == 0:
        return Trajectories(states, states)
    noise = config.target_noise_std * jax.random.normal(k_noise, states.shape, states.dtype)
    return Trajectories(states, states + noise)


def window_starts(n_trajectories: int, n_times: int, window: int) -> jax.Array:
    """All (trajectory, first index) pairs of windows of length ``window`` plus one target,
    shape ``(n_trajectories * (n_times - window), 2)``."""
    if n_times <= window:
        raise ValueError(f"trajectories of {n_times} states are too short for window {window}")
    t = jnp.arange(n_times - window)
    i = jnp.arange(n_trajectories)
    return jnp.stack(jnp.broadcast_arrays(i[:, None], t[None, :]), axis=-1).reshape(-1, 2)


def gather_windows(data: Trajectories, starts: jax.Array, window: int):
    """Cut windows and targets: ``starts (B, 2)`` -> inputs ``(B, window, d)``, targets ``(B, d)``."""

    def one(start):
        i, t = start[0], start[1]
        x = jax.lax.dynamic_slice_in_dim(data.inputs[i], t, window, axis=0)
        return x, data.targets[i, t + window]

    return jax.vmap(one)(starts)
