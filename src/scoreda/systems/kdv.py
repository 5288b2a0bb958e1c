r"""Korteweg-de Vries equation on a periodic domain, solved pseudo-spectrally with ETDRK4.

.. math::

    u_t = -6\,u\,u_x - u_{xxx}, \qquad x \in [0, L) \text{ periodic}.

Analytic one-soliton solution (speed :math:`c > 0`, amplitude :math:`c/2`):

.. math::

    u(x, t) = \frac{c}{2}\,\mathrm{sech}^2\!\Big(\frac{\sqrt{c}}{2}(x - x_0 - c t)\Big).

Conserved quantities (exactly, for the PDE; spectrally accurate sums on the grid):
mass :math:`M = \int u\,dx`, momentum :math:`P = \int u^2\,dx`, energy
:math:`E = \int (\tfrac12 u_x^2 - u^3)\,dx`. Two solitons pass through each other and leave
the collision with their speeds and shapes unchanged, shifted in position only.

Method: Fourier in space (``rfft``), :math:`\hat u_t = i k^3 \hat u - 3 i k\,\widehat{u^2}`;
the stiff dispersive term :math:`i k^3` is integrated exactly by the exponential time
differencing fourth-order Runge-Kutta scheme of Cox & Matthews (2002), with the
coefficients computed by the contour integrals of Kassam & Trefethen (2005); the quadratic
term is dealiased by Orszag's 2/3 rule. Grids are even (the Nyquist mode of an odd
derivative is set to zero).

Why a solver of our own: exponax 0.2.0's ``KortewegDeVries`` stepper was evaluated first on
the single soliton above (L = 50, 100 points, its ETDRK order 2 and 4, dt from 0.01 to 0.25).
Without hyper-diffusion it returns NaN before T = 50 at every setting tried; with its default
hyper-diffusion (0.01) the soliton decays, off by 0.34 (of amplitude 0.5) at T = 50. The
inviscid equation over T = 500 is what the paper's data need.

Good values (the paper's set-up): ``L = 50``, 100 points, ``dt = 0.01`` saved every 50 steps
(output every 0.5 time units up to ``T = 500``). Overlapping initial solitons merge into
waves up to twice as tall (speed about 2), which is what limits the step: at ``dt = 0.05``
the momentum of the worst of 30 paper initial conditions drifts by 6 % over ``T = 500``, at
``dt = 0.01`` by 2e-5 in float64 and 3e-4 in float32 (rounding, not truncation, then
dominates). ``tests/test_kdv.py`` holds the bounds.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks

#: The paper's domain length, grid size and speed range of the initial solitons.
LENGTH = 50.0
N_POINTS = 100
SPEED_RANGE = (0.5, 1.0)
MIN_POINTS = 8


def grid(length: float = LENGTH, n_points: int = N_POINTS) -> jax.Array:
    """Grid points ``x_j = j L / n``, ``j = 0..n-1`` (the right end is the left one), shape ``(n,)``."""
    check_grid(length, n_points)
    return jnp.arange(n_points) * (length / n_points)


def wavenumbers(length: float, n_points: int) -> np.ndarray:
    """Angular wavenumbers of ``rfft`` on the grid, ``k = 2 pi m / L``, shape ``(n // 2 + 1,)``."""
    return 2.0 * np.pi * np.fft.rfftfreq(n_points, d=length / n_points)


def soliton(x: jax.Array, c, x0, length: float | None = None) -> jax.Array:
    r"""One soliton :math:`\frac{c}{2}\mathrm{sech}^2(\frac{\sqrt c}{2}(x - x_0))`.

    With ``length`` given, the distance ``x - x0`` is wrapped to the nearest periodic image in
    ``[-L/2, L/2)``, so the soliton lives on the periodic domain. ``c`` and ``x0`` broadcast
    against ``x``.
    """
    xi = x - x0
    if length is not None:
        xi = (xi + 0.5 * length) % length - 0.5 * length
    return 0.5 * c / jnp.cosh(0.5 * jnp.sqrt(c) * xi) ** 2


class TwoSolitons(NamedTuple):
    """Random two-soliton initial conditions.

    Fields:
      u0: initial profiles, shape ``(*shape, n_points)``.
      speeds: soliton speeds ``c1, c2``, shape ``(*shape, 2)``.
      centres: soliton centres ``a1 L, a2 L`` in ``[0, L)``, shape ``(*shape, 2)``.
    """

    u0: jax.Array
    speeds: jax.Array
    centres: jax.Array


def two_soliton_initial_condition(
    key: jax.Array,
    shape: tuple[int, ...] = (),
    *,
    length: float = LENGTH,
    n_points: int = N_POINTS,
    speed_range: tuple[float, float] = SPEED_RANGE,
) -> TwoSolitons:
    r"""The paper's initial conditions: :math:`u_0 = s(x - a_1 L; c_1) + s(x - a_2 L; c_2)`.

    :math:`c_i \sim U(c_{\min}, c_{\max})` (the paper: ``(0.5, 1.0)``), :math:`a_i \sim U(0, 1)`.
    """
    check_grid(length, n_points)
    lo, hi = speed_range
    if not 0 < lo <= hi:
        raise ValueError(f"speed_range must satisfy 0 < low <= high, got {speed_range}")
    k_speed, k_pos = jax.random.split(key)
    speeds = jax.random.uniform(k_speed, tuple(shape) + (2,), minval=lo, maxval=hi)
    centres = length * jax.random.uniform(k_pos, tuple(shape) + (2,))
    x = grid(length, n_points)
    u0 = sum(
        soliton(x, speeds[..., i, None], centres[..., i, None], length) for i in range(2)
    )
    return TwoSolitons(u0, speeds, centres)


class ETDRK4Coefficients(NamedTuple):
    """Per-mode constants of ETDRK4 for :math:`\\hat u_t = \\Lambda \\hat u + \\hat N(\\hat u)`.

    All fields have shape ``(n // 2 + 1,)``: ``E = exp(h Lambda)``, ``E2 = exp(h Lambda / 2)``,
    ``Q, f1, f2, f3`` the Kassam-Trefethen weights, ``nonlinear`` the factor ``-3 i k`` with
    the 2/3-rule mask applied.
    """

    E: jax.Array
    E2: jax.Array
    Q: jax.Array
    f1: jax.Array
    f2: jax.Array
    f3: jax.Array
    nonlinear: jax.Array


def etdrk4_coefficients(
    length: float, n_points: int, dt: float, n_contour: int = 64
) -> ETDRK4Coefficients:
    r"""ETDRK4 constants for KdV, computed in complex128 NumPy by contour integrals (Kassam & Trefethen 2005).

    The phi-functions, e.g. :math:`(e^{z} - 1)/z`, suffer cancellation for small
    :math:`|z|`; averaging them over ``n_contour`` points on a unit circle around each
    :math:`z = h\Lambda` evaluates them to machine precision for every mode.
    """
    k = wavenumbers(length, n_points)
    k_odd = k.copy()
    if n_points % 2 == 0:
        k_odd[-1] = 0.0  # Nyquist mode of odd derivatives
    lam = 1j * k_odd**3  # -(ik)^3
    z = dt * lam
    # Full circle: the eigenvalues are imaginary, so no real-part symmetry can be used.
    roots = np.exp(2j * np.pi * (np.arange(1, n_contour + 1) - 0.5) / n_contour)
    r = z[:, None] + roots[None, :]
    er = np.exp(r)
    q = dt * np.mean((np.exp(r / 2) - 1) / r, axis=1)
    f1 = dt * np.mean((-4 - r + er * (4 - 3 * r + r**2)) / r**3, axis=1)
    f2 = dt * np.mean((2 + r + er * (r - 2)) / r**3, axis=1)
    f3 = dt * np.mean((-4 - 3 * r - r**2 + er * (4 - r)) / r**3, axis=1)
    dealias = np.abs(k) <= (2.0 / 3.0) * np.abs(k).max()
    nonlinear = -3j * k_odd * dealias
    return ETDRK4Coefficients(np.exp(z), np.exp(z / 2), q, f1, f2, f3, nonlinear)


def _etdrk4_step(v, coef: ETDRK4Coefficients, n_points: int):
    """Advance the spectrum ``v`` (``(..., n//2+1)``) by one ETDRK4 step."""

    def nonlin(w):
        u = jnp.fft.irfft(w, n=n_points)
        return coef.nonlinear * jnp.fft.rfft(u * u)

    nv = nonlin(v)
    a = coef.E2 * v + coef.Q * nv
    na = nonlin(a)
    b = coef.E2 * v + coef.Q * na
    nb = nonlin(b)
    c = coef.E2 * a + coef.Q * (2 * nb - nv)
    nc = nonlin(c)
    return coef.E * v + coef.f1 * nv + 2 * coef.f2 * (na + nb) + coef.f3 * nc


@partial(jax.jit, static_argnames=("n_points", "n_saves", "save_every"))
def _solve(u0, coef, n_points, n_saves, save_every):
    def block(v, _):
        v = jax.lax.fori_loop(0, save_every, lambda _, w: _etdrk4_step(w, coef, n_points), v)
        return v, jnp.fft.irfft(v, n=n_points)

    v0 = jnp.fft.rfft(u0)
    _, saved = jax.lax.scan(block, v0, None, length=n_saves)
    states = jnp.concatenate([u0[None], saved.astype(u0.dtype)], axis=0)
    return jnp.moveaxis(states, 0, -2)  # (..., n_saves + 1, n_points)


def solve(
    u0: jax.Array,
    length: float = LENGTH,
    dt: float = 0.01,
    n_steps: int = 50_000,
    save_every: int = 50,
) -> jax.Array:
    """Integrate KdV from ``u0`` with ETDRK4 and return the saved snapshots.

    Args:
      u0: initial profile(s) on the grid :func:`grid`, shape ``(..., n_points)``; a leading
        batch axis solves many initial conditions in one vectorised call.
      length: domain length L > 0.
      dt: ETDRK4 step > 0 (the output spacing is ``dt * save_every``).
      n_steps: number of steps, a multiple of ``save_every``.
      save_every: keep every ``save_every``-th state.

    Returns:
      snapshots of shape ``(..., n_steps // save_every + 1, n_points)``; index 0 is ``u0``.
      The defaults reproduce the paper's data: output every 0.5 up to T = 500 (1001 snapshots).

    Precision follows ``u0``: float32 by default, float64 when given float64 with x64 enabled.

    Raises:
      FloatingPointError: the solution left the finite numbers (a step too large for the
        waves' speeds); checked when called outside ``jit``.
    """
    n_points = _checks.state_dim("u0", u0, MIN_POINTS)
    check_grid(length, n_points)
    _checks.positive("dt", dt)
    _checks.integer("n_steps", n_steps, 0)
    _checks.integer("save_every", save_every, 1)
    if n_steps % save_every:
        raise ValueError(f"n_steps ({n_steps}) must be a multiple of save_every ({save_every})")
    _checks.finite("u0", u0)
    u0 = jnp.asarray(u0, dtype=jnp.result_type(u0, jnp.float32))
    cdtype = jnp.complex128 if u0.dtype == jnp.float64 else jnp.complex64
    coef = ETDRK4Coefficients(
        *(jnp.asarray(c, cdtype) for c in etdrk4_coefficients(length, n_points, float(dt)))
    )
    states = _solve(u0, coef, n_points, n_steps // save_every, save_every)
    _checks.integration_finite(
        "the KdV solve", states,
        f"dt = {dt} is too large for the tallest wave on this grid (the paper's dt = 0.01 is "
        "stable for its initial conditions)")
    return states


class Invariants(NamedTuple):
    """Conserved quantities of KdV, each of shape ``u.shape[:-1]``."""

    mass: jax.Array
    momentum: jax.Array
    energy: jax.Array


def invariants(u: jax.Array, length: float = LENGTH) -> Invariants:
    r"""Mass :math:`\int u`, momentum :math:`\int u^2` and energy :math:`\int(\frac12 u_x^2 - u^3)`.

    Integrals are grid sums times ``dx`` (spectrally accurate for periodic functions);
    :math:`u_x` is the spectral derivative. ``u`` has shape ``(..., n_points)``.
    """
    n_points = _checks.state_dim("u", u, MIN_POINTS)
    check_grid(length, n_points)
    dx = length / n_points
    k = jnp.asarray(wavenumbers(length, n_points))
    if n_points % 2 == 0:
        k = k.at[-1].set(0.0)
    ux = jnp.fft.irfft(1j * k * jnp.fft.rfft(u), n=n_points)
    return Invariants(
        mass=dx * jnp.sum(u, axis=-1),
        momentum=dx * jnp.sum(u**2, axis=-1),
        energy=dx * jnp.sum(0.5 * ux**2 - u**3, axis=-1),
    )


def check_grid(length, n_points) -> None:
    """Refuse a non-positive ``length`` or an ``n_points`` that is odd or below the minimum."""
    _checks.positive("length", length)
    n = _checks.integer("n_points", n_points, MIN_POINTS)
    if n % 2:
        raise ValueError(
            f"n_points must be an even integer >= {MIN_POINTS} (the real FFT grid's Nyquist "
            f"mode is handled for even sizes only), got {n_points}"
        )


def soliton_peaks(u, length: float = LENGTH, n_peaks: int = 2, upsample: int = 32):
    """Positions and heights of the ``n_peaks`` tallest local maxima of periodic profiles.

    The profile is interpolated spectrally (zero-padding its spectrum ``upsample`` times),
    then each maximum is refined by a parabola through its three neighbours, so positions are
    accurate far below the grid spacing. Heights are ``c / 2`` for a soliton of speed ``c``.

    Args:
      u: profiles on the grid :func:`grid`, shape ``(..., n_points)``.
    Returns:
      ``(positions, heights)``, NumPy arrays of shape ``(..., n_peaks)``, positions in
      ``[0, L)``, sorted by decreasing height (NaN where fewer maxima exist).
    """
    u = np.asarray(u, dtype=np.float64)
    n_points = u.shape[-1]
    check_grid(length, n_points)
    _checks.integer("n_peaks", n_peaks, 1)
    _checks.integer("upsample", upsample, 1)
    m = n_points * upsample
    spec = np.fft.rfft(u, axis=-1)
    padded = np.zeros(u.shape[:-1] + (m // 2 + 1,), dtype=complex)
    padded[..., : spec.shape[-1]] = spec
    if n_points % 2 == 0:
        padded[..., n_points // 2] *= 0.5  # split the Nyquist mode between +-k
    fine = np.fft.irfft(padded, n=m, axis=-1) * upsample
    left, right = np.roll(fine, 1, axis=-1), np.roll(fine, -1, axis=-1)
    is_peak = (fine > left) & (fine >= right)
    flat_fine = fine.reshape(-1, m)
    flat_peak = is_peak.reshape(-1, m)
    positions = np.full((flat_fine.shape[0], n_peaks), np.nan)
    heights = np.full((flat_fine.shape[0], n_peaks), np.nan)
    dx_fine = length / m
    for row, (f, p) in enumerate(zip(flat_fine, flat_peak)):
        idx = np.flatnonzero(p)
        idx = idx[np.argsort(f[idx])[::-1][:n_peaks]]
        fl, fc, fr = f[(idx - 1) % m], f[idx], f[(idx + 1) % m]
        denom = fl - 2 * fc + fr
        shift = np.where(denom != 0, 0.5 * (fl - fr) / np.where(denom != 0, denom, 1), 0.0)
        positions[row, : idx.size] = ((idx + shift) * dx_fine) % length
        heights[row, : idx.size] = fc - 0.25 * (fl - fr) * shift
    shape = u.shape[:-1] + (n_peaks,)
    return positions.reshape(shape), heights.reshape(shape)


def collision_phase_shifts(c_fast, c_slow):
    r"""Position shifts of two solitons after they collide (exact, for u_t = -6uu_x - u_xxx).

    With :math:`\kappa_i = \sqrt{c_i}/2` and :math:`\ell = \ln\frac{\kappa_1 + \kappa_2}{\kappa_1 - \kappa_2}`,
    the fast soliton ends :math:`\ell/\kappa_1` ahead of where it would be alone and the slow
    one :math:`\ell/\kappa_2` behind (Drazin & Johnson 1989, ch. 5). Requires ``c_fast > c_slow > 0``.
    Returns ``(shift_fast, shift_slow)``, the second negative.
    """
    if not c_fast > c_slow > 0:
        raise ValueError(f"need c_fast > c_slow > 0, got c_fast={c_fast}, c_slow={c_slow}")
    k1, k2 = np.sqrt(c_fast) / 2, np.sqrt(c_slow) / 2
    log_ratio = np.log((k1 + k2) / (k1 - k2))
    return log_ratio / k1, -log_ratio / k2


def propagator(length: float = LENGTH, n_points: int = N_POINTS, dt: float = 0.01,
               n_steps: int = 50):
    """A jit-able map ``u (..., n_points) -> u`` after ``n_steps`` ETDRK4 steps of ``dt``.

    With the defaults it advances one of the paper's snapshots (0.5 time units); used as the
    exact forecast model of the KdV experiment. float32.
    """
    check_grid(length, n_points)
    _checks.positive("dt", dt)
    _checks.integer("n_steps", n_steps, 1)
    coef = ETDRK4Coefficients(
        *(jnp.asarray(c, jnp.complex64) for c in etdrk4_coefficients(length, n_points, float(dt)))
    )

    def advance(u):
        v = jax.lax.fori_loop(0, n_steps, lambda _, w: _etdrk4_step(w, coef, n_points),
                              jnp.fft.rfft(u))
        return jnp.fft.irfft(v, n=n_points).astype(u.dtype)

    return advance
