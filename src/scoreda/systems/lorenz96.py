r"""Lorenz-96: the standard toy model of atmospheric chaos (Lorenz 1996).

.. math::

    \frac{dx_i}{dt} = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F, \qquad i = 1, \dots, d,

with periodic indices (:math:`x_{i+d} = x_i`). Every function acts on the last axis, so a
state of shape ``(d,)``, an ensemble ``(N, d)`` or any ``(..., d)`` batch works as is, and all
of them can be wrapped in ``jax.jit`` and ``jax.vmap``.

Known facts used by the tests (``d = 40, F = 8``, Lorenz & Emanuel 1998; Majda & Wang 2006):
climatological mean about 2.34, standard deviation about 3.63, leading Lyapunov exponent
about 1.68 per time unit (doubling time about 0.42). Any
``d >= 4`` is accepted (the stencil needs four distinct neighbours); the paper uses ``d = 20``.

Good values: RK4 with ``dt = 0.05`` (DAPPER's benchmark) is stable and accurate to about
1e-6 per step; the paper uses ``dt = 0.004`` (2500 steps for 10 time units); the EnSF
reference uses ``dt = 0.01``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from scoreda import _checks

#: The paper's forcing and the initial-state range (uniform per component).
FORCING = 8.0
INITIAL_RANGE = (7.0, 9.0)
MIN_DIM = 4


def tendency(x: jax.Array, forcing: float = FORCING) -> jax.Array:
    r"""The right-hand side :math:`f(x)` of Lorenz-96, shape ``(..., d)`` in and out."""
    return (jnp.roll(x, -1, axis=-1) - jnp.roll(x, 2, axis=-1)) * jnp.roll(x, 1, axis=-1) - x + forcing


def step(x: jax.Array, dt: float, forcing: float = FORCING) -> jax.Array:
    r"""One classical fourth-order Runge-Kutta step of size ``dt``; ``x`` has shape ``(..., d)``.

    .. math::

        x_{n+1} = x_n + \tfrac{dt}{6}(k_1 + 2k_2 + 2k_3 + k_4)

    Local error :math:`O(dt^5)`, global error :math:`O(dt^4)`.
    """
    k1 = tendency(x, forcing)
    k2 = tendency(x + 0.5 * dt * k1, forcing)
    k3 = tendency(x + 0.5 * dt * k2, forcing)
    k4 = tendency(x + dt * k3, forcing)
    return x + (dt / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)


def _check(x0, dt, n_steps=None, save_every=1):
    _checks.state_dim("x0", x0, MIN_DIM)
    _checks.positive("dt", dt)
    _checks.finite("x0", x0)
    if n_steps is not None:
        _checks.integer("n_steps", n_steps, 0)
        _checks.integer("save_every", save_every, 1)
        if n_steps % save_every:
            raise ValueError(
                f"n_steps ({n_steps}) must be a multiple of save_every ({save_every})"
            )


@partial(jax.jit, static_argnames=("n_steps", "save_every", "stochastic"))
def _trajectory(x0, n_steps, dt, forcing, save_every, noise_std, key, stochastic):
    def advance(x, key_step):
        x = step(x, dt, forcing)
        if stochastic:
            # Additive noise sqrt(dt) * sigma * xi after the RK4 step (Euler-Maruyama for the
            # stochastic part); the deterministic path draws no random numbers at all.
            x = x + jnp.sqrt(dt) * noise_std * jax.random.normal(key_step, x.shape, x.dtype)
        return x, None

    def block(x, key_block):
        x, _ = jax.lax.scan(advance, x, jax.random.split(key_block, save_every))
        return x, x

    _, saved = jax.lax.scan(block, x0, jax.random.split(key, n_steps // save_every))
    states = jnp.concatenate([x0[None], saved], axis=0)  # (n_saved + 1, ..., d)
    return jnp.moveaxis(states, 0, -2)  # (..., n_saved + 1, d)


def trajectory(
    x0: jax.Array,
    n_steps: int,
    dt: float,
    forcing: float = FORCING,
    *,
    save_every: int = 1,
    noise_std: float = 0.0,
    key: jax.Array | None = None,
) -> jax.Array:
    r"""Integrate ``n_steps`` RK4 steps from ``x0`` and return the saved states.

    Args:
      x0: initial state(s), shape ``(..., d)`` with ``d >= 4``; a leading batch axis
        integrates an ensemble in one call.
      n_steps: number of RK4 steps (a multiple of ``save_every``).
      dt: step size, > 0.
      forcing: the constant forcing F.
      save_every: keep every ``save_every``-th state.
      noise_std: optional additive stochastic forcing for twin experiments:
        :math:`x_{n+1} = \mathrm{RK4}(x_n) + \sqrt{dt}\,\sigma\,\xi_n`, :math:`\xi_n \sim N(0, I)`.
      key: PRNG key for the noise (required when ``noise_std > 0``).

    Returns:
      states of shape ``(..., n_steps // save_every + 1, d)``; index 0 along the time axis is
      ``x0`` itself.

    Raises:
      FloatingPointError: the integration left the finite numbers (``dt`` too large, or a
        state far off the attractor); checked when called outside ``jit``.
    """
    _check(x0, dt, n_steps, save_every)
    _checks.non_negative("noise_std", noise_std)
    stochastic = not (_checks.is_concrete(noise_std) and float(noise_std) == 0.0)
    if key is None:
        if stochastic:
            raise ValueError("key must be given when noise_std > 0")
        key = jax.random.key(0)
    _checks.finite_scalar("forcing", forcing)
    x0 = jnp.asarray(x0, dtype=jnp.result_type(x0, jnp.float32))
    states = _trajectory(x0, n_steps, dt, forcing, save_every, noise_std, key, stochastic)
    _checks.integration_finite(
        "the Lorenz-96 integration", states,
        f"RK4 with dt = {dt} is unstable for this state (dt <= 0.05 is safe at F = 8)")
    return states


def initial_states(
    key: jax.Array,
    d: int,
    shape: tuple[int, ...] = (),
    low: float = INITIAL_RANGE[0],
    high: float = INITIAL_RANGE[1],
) -> jax.Array:
    """The paper's initial states: each component uniform in ``[low, high)``, shape ``(*shape, d)``."""
    _checks.integer("d", d, MIN_DIM)
    if not low < high:
        raise ValueError(f"low must be < high, got low={low}, high={high}")
    return jax.random.uniform(key, tuple(shape) + (d,), minval=low, maxval=high)


def attractor_states(key: jax.Array, d: int, n: int, dt: float, forcing: float = FORCING,
                     spinup_time: float = 20.0) -> jax.Array:
    """``n`` states on the attractor, ``(n, d)``: :func:`initial_states` (uniform in [7, 9])
    run for ``spinup_time`` time units (``round(spinup_time / dt)`` RK4 steps of ``dt``)."""
    _checks.integer("n", n, 1)
    x0 = initial_states(key, d, (n,))
    n_spin = int(round(spinup_time / dt))
    return trajectory(x0, n_spin, dt, forcing, save_every=n_spin)[:, -1]


def dataset(
    key: jax.Array,
    n_trajectories: int,
    n_steps: int,
    dt: float,
    d: int = 20,
    forcing: float = FORCING,
) -> jax.Array:
    """Training trajectories as in the paper: initial states uniform in [7, 9], RK4.

    Returns an array of shape ``(n_trajectories, n_steps + 1, d)`` (float32). The paper's SA
    set is ``n_trajectories=1500, n_steps=2500, dt=0.004, d=20``.
    """
    _checks.integer("n_trajectories", n_trajectories, 1)
    x0 = initial_states(key, d, (n_trajectories,))
    return trajectory(x0, n_steps, dt, forcing)


@partial(jax.jit, static_argnames=("n_steps", "n_spinup"))
def _lyapunov(x0, v0, n_steps, n_spinup, dt, forcing):
    def advance(carry, _):
        x, v = carry
        x_next, v_next = jax.jvp(lambda s: step(s, dt, forcing), (x,), (v,))
        growth = jnp.linalg.norm(v_next)
        return (x_next, v_next / growth), jnp.log(growth)

    _, log_growth = jax.lax.scan(advance, (x0, v0), None, length=n_spinup + n_steps)
    return jnp.sum(log_growth[n_spinup:]) / (n_steps * dt)


def leading_lyapunov_exponent(
    x0: jax.Array,
    n_steps: int,
    dt: float,
    forcing: float = FORCING,
    *,
    n_spinup: int = 0,
    key: jax.Array | None = None,
) -> jax.Array:
    r"""Leading Lyapunov exponent by the tangent-linear model (Benettin et al. 1980).

    A tangent vector :math:`v` is carried along the trajectory by the Jacobian of the RK4
    map (``jax.jvp``) and renormalised every step;
    :math:`\lambda_1 = \frac{1}{n\,dt}\sum_n \log \lVert J_n v_n \rVert`.
    The growth over the first ``n_spinup`` steps is discarded, so that the vector has
    aligned with the leading direction first. ``x0`` has shape ``(d,)``; the result is in
    units of 1 / time.
    """
    _check(x0, dt, n_steps)
    _checks.integer("n_steps", n_steps, 1)
    _checks.integer("n_spinup", n_spinup, 0)
    if jnp.ndim(x0) != 1:
        raise ValueError(f"x0 must be a single state of shape (d,), got shape {jnp.shape(x0)}")
    key = jax.random.key(1) if key is None else key
    x0 = jnp.asarray(x0, dtype=jnp.result_type(x0, jnp.float32))
    v0 = jax.random.normal(key, x0.shape, x0.dtype)
    return _lyapunov(x0, v0 / jnp.linalg.norm(v0), n_steps, n_spinup, dt, forcing)
