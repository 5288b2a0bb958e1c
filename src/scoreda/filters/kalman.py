r"""Ensemble Kalman filters: stochastic EnKF, ETKF and LETKF (ensemble in, ensemble out).

All three share the ensemble-space algebra of Hunt, Kostelich & Szunyogh (2007). With the
forecast ensemble :math:`X` (``(N, d)``, members first), its anomalies
:math:`A = X - \bar x`, the observed anomalies :math:`Y = h(X) - \overline{h(X)}` (the
operator is applied to each member, so nonlinear ``h`` is handled the usual way) and the
diagonal precision :math:`R^{-1} = \mathrm{diag}(m/\sigma^2)` (``m`` the observation mask:
unobserved components carry zero weight),

.. math::

    M = (N - 1) I_N + Y R^{-1} Y^\top, \qquad
    K = A^\top M^{-1} Y R^{-1} \quad (\text{the Kalman gain } P H^\top (H P H^\top + R)^{-1}).

* :func:`enkf`: stochastic (perturbed-observation) EnKF (Evensen 1994; Burgers et al. 1998):
  :math:`x_j^a = x_j + K(y + \varepsilon_j - h(x_j))`, :math:`\varepsilon_j \sim N(0, R)`,
  the perturbations centred over the members (as DAPPER does), so the analysis mean is the
  Kalman update of the ensemble mean.
* :func:`etkf`: ensemble transform (symmetric square root):
  :math:`\bar w = M^{-1} Y R^{-1}(y - \bar y)`, :math:`W = \sqrt{N - 1}\,M^{-1/2}`,
  :math:`x_j^a = \bar x + A^\top(\bar w + W_{:, j})`.
* :func:`letkf`: the ETKF solved once per state component with the precision tapered by
  the Gaspari-Cohn function of the distance to the observations (R-localisation).

Every filter ends with multiplicative inflation of the analysis anomalies by
``inflation`` (DAPPER's convention: ``infl = 1.02`` scales the anomalies by 1.02). When no
component is observed (``mask`` all False) the forecast is returned unchanged, inflation
included, as at a step without observations.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks
from scoreda.device import full_precision
from scoreda.filters.localisation import (GC_RADIUS_SCALE, component_distances, gaspari_cohn,
                                          local_neighbourhoods, ring_neighbourhoods)
from scoreda.observe import check_operator


def prepare_inputs(ensemble, y, obs_std, obs, mask):
    """Checked inputs of an ensemble analysis (``obs_std`` one number, or one per component
    ``(d,)``): the ensemble ``(N, d)`` as float, ``y`` with its
    unobserved entries zeroed, the operator ``h`` (a callable's output shape checked) and the
    diagonal precision ``mask / obs_std^2`` ``(d,)`` (zero where unobserved). Raises
    ``ValueError`` naming the bad argument, also when ``obs_std`` is so small that the
    precision overflows the ensemble's dtype."""
    ensemble = jnp.asarray(ensemble)
    if ensemble.ndim != 2 or ensemble.shape[0] < 2:
        raise ValueError(f"ensemble must have shape (N, d) with N >= 2, got {ensemble.shape}")
    d = ensemble.shape[1]
    _checks.observation_shapes(y, mask, d)
    if np.ndim(obs_std) == 1:  # one standard deviation per component
        if np.shape(obs_std) != (d,):
            raise ValueError(f"obs_std must be one number or one per component, shape ({d},), "
                             f"got shape {np.shape(obs_std)}")
        if _checks.is_concrete(obs_std) and not np.all(np.isfinite(obs_std) & (np.asarray(obs_std) > 0)):
            raise ValueError("obs_std must be finite and > 0 in every component")
    else:
        _checks.positive("obs_std", obs_std)
    _checks.finite("ensemble", ensemble)
    ensemble = jnp.asarray(ensemble, dtype=jnp.result_type(ensemble, jnp.float32))
    # the precision 1 / obs_std^2 weighs the anomalies: it must not overflow (all-NaN otherwise)
    _checks.likelihood_precision(obs_std, ensemble.dtype)
    h = check_operator(obs, d, ensemble.dtype)
    mask = jnp.ones(d, bool) if mask is None else jnp.asarray(mask, bool)
    y = _checks.masked_observation(y, mask, ensemble.dtype)
    precision = mask.astype(ensemble.dtype) / jnp.asarray(obs_std, ensemble.dtype) ** 2
    return ensemble, y, h, precision


def unless_unobserved(analysis, ensemble, precision):
    """``analysis``, or the forecast ``ensemble`` unchanged when no component is observed
    (``precision`` all zero): nothing observed, nothing to analyse (works under ``vmap``)."""
    return jnp.where(jnp.any(precision > 0), analysis, ensemble)


def check_knobs(*, inflation=1.0, radius=None, distances=None) -> None:
    """The Kalman filters' knobs: ``inflation`` > 0 (below 1 warned as
    ``scoreda._checks.Deflation``), a localisation ``radius`` > 0 (LETKF)."""
    _checks.inflation(inflation, stacklevel=4)
    if radius is not None:
        _checks.positive("radius", radius)


def _check_inflation(inflation):
    _checks.inflation(inflation, stacklevel=4)  # the warning names the caller of etkf & co.


def _anomalies(ensemble, h):
    mean = ensemble.mean(axis=0)
    hx = jax.vmap(h)(ensemble)
    hmean = hx.mean(axis=0)
    return mean, ensemble - mean, hx, hx - hmean, hmean


def _inflate(ensemble, inflation):
    mean = ensemble.mean(axis=0)
    return mean + inflation * (ensemble - mean)


def _svd(obs_anom, precision):
    r"""Thin SVD of the scaled observed anomalies :math:`S = Y R^{-1/2} = U \Sigma V^\top`.

    :math:`M = (N - 1) I + S S^\top = U((N - 1) + \Sigma^2)U^\top + (N - 1)(I - UU^\top)`,
    so every function of :math:`M` is formed from :math:`\Sigma` without ever forming
    :math:`M`, whose eigenvalues span :math:`1/\sigma^2`: with a tiny ``obs_std`` in float32
    an eigendecomposition of :math:`M` loses its small eigenvalues, this does not.
    """
    sqrt_precision = jnp.sqrt(precision)
    u, s, vt = jnp.linalg.svd(obs_anom * sqrt_precision, full_matrices=False)
    return u, s, vt, sqrt_precision


def _transform(obs_anom, precision, innovation):
    r"""Ensemble-space weights: the mean weights :math:`M^{-1} Y R^{-1} \delta`, ``(N,)``, and
    the symmetric square root :math:`\sqrt{N - 1}\, M^{-1/2}`, ``(N, N)`` (see :func:`_svd`)."""
    n = obs_anom.shape[0]
    u, s, vt, sqrt_precision = _svd(obs_anom, precision)
    eig = (n - 1.0) + s * s
    w_mean = u @ (s / eig * (vt @ (sqrt_precision * innovation)))
    w_sqrt = jnp.eye(n, dtype=obs_anom.dtype) + (u * (jnp.sqrt((n - 1.0) / eig) - 1.0)) @ u.T
    return w_mean, w_sqrt


@partial(jax.jit, static_argnames=("h",))
def _etkf(ensemble, y, precision, inflation, *, h):
    mean, anom, _, obs_anom, hmean = _anomalies(ensemble, h)
    w_mean, w_sqrt = _transform(obs_anom, precision, y - hmean)
    analysis = mean + (w_mean[None, :] + w_sqrt.T) @ anom
    return _inflate(analysis, inflation)


@partial(jax.jit, static_argnames=("h",))
def _enkf(key, ensemble, y, obs_std, precision, inflation, *, h):
    n = ensemble.shape[0]
    _, anom, hx, obs_anom, _ = _anomalies(ensemble, h)
    perturb = obs_std * jax.random.normal(key, ensemble.shape, ensemble.dtype)
    perturb = perturb - perturb.mean(axis=0)
    innovations = y + perturb - hx  # (N, d)
    u, s, vt, sqrt_precision = _svd(obs_anom, precision)
    # M^-1 Y R^-1 (innovation_j), column j for member j, (N, N)
    weights = u @ ((s / ((n - 1.0) + s * s))[:, None] * (vt @ (sqrt_precision * innovations).T))
    return _inflate(ensemble + weights.T @ anom, inflation)


@partial(jax.jit, static_argnames=("h",))
def _letkf(ensemble, y, precision, inflation, neighbours, taper, *, h):
    """``neighbours (d, L)``: the observations component ``i`` may see; ``taper (d, L)`` their
    Gaspari-Cohn weights (0 for padding). ``L = d`` with ``neighbours[i] = arange(d)`` is the
    plain R-localised ETKF; a smaller ``L`` solves the same local problems on ``N x L``
    instead of ``N x d`` matrices (the observations left out have zero weight anyway)."""
    mean, anom, _, obs_anom, hmean = _anomalies(ensemble, h)
    innovation = y - hmean

    def local(i):
        near = neighbours[i]
        w_mean, w_sqrt = _transform(obs_anom[:, near], precision[near] * taper[i], innovation[near])
        return mean[i] + (w_mean[None, :] + w_sqrt.T) @ anom[:, i]

    analysis = jax.vmap(local, out_axes=1)(jnp.arange(ensemble.shape[1]))
    return _inflate(analysis, inflation)


@full_precision
def etkf(key, ensemble, y, obs_std, *, obs: str | Callable = "identity", mask=None,
         inflation=1.0) -> jax.Array:
    """ETKF analysis (deterministic; ``key`` is accepted for the common filter signature).

    ``ensemble``: ``(N, d)``; ``y``: ``(d,)``; ``mask``: ``(d,)`` bool or None. Returns ``(N, d)``.
    """
    del key
    ensemble, y, h, precision = prepare_inputs(ensemble, y, obs_std, obs, mask)
    _check_inflation(inflation)
    return unless_unobserved(_etkf(ensemble, y, precision, inflation, h=h), ensemble, precision)


@full_precision
def enkf(key, ensemble, y, obs_std, *, obs: str | Callable = "identity", mask=None,
         inflation=1.0) -> jax.Array:
    """Stochastic (perturbed-observation) EnKF analysis. Shapes as :func:`etkf`."""
    ensemble, y, h, precision = prepare_inputs(ensemble, y, obs_std, obs, mask)
    _check_inflation(inflation)
    out = _enkf(key, ensemble, y, jnp.asarray(obs_std, ensemble.dtype), precision, inflation, h=h)
    return unless_unobserved(out, ensemble, precision)


@full_precision
def letkf(key, ensemble, y, obs_std, *, obs: str | Callable = "identity", mask=None,
          inflation=1.0, radius=4.0, distances=None) -> jax.Array:
    """LETKF analysis with Gaspari-Cohn R-localisation.

    Args:
      radius: localisation radius in DAPPER's convention (GC half-width ``1.82 * radius``;
        observations farther than ``3.64 * radius`` have no weight).
      distances: ``(d, d)`` distances between state component ``i`` and the observation of
        component ``l``; default: index distance on a periodic ring (Lorenz-96, KdV).
    Other arguments and shapes as :func:`etkf`.

    Cost: when ``radius`` and ``distances`` are concrete (not traced), component ``i``'s
    problem holds only the ``L`` observations within the taper's support, an ``N x L`` SVD
    instead of ``N x d`` (the same analysis: the others have zero weight); on the default
    ring they are found from index offsets, so memory is ``O(dL)``, not ``O(d^2)``. A
    traced radius (a knob tuned inside one compiled cycle) uses all ``d``.
    """
    del key
    ensemble, y, h, precision = prepare_inputs(ensemble, y, obs_std, obs, mask)
    _check_inflation(inflation)
    _checks.positive("radius", radius)
    d = ensemble.shape[1]
    scale = GC_RADIUS_SCALE * radius
    local = None
    if distances is None and _checks.is_concrete(radius):
        local = ring_neighbourhoods(d, 2.0 * float(scale))  # no (d, d) array on the ring
    if local is None:
        distances = component_distances(d, distances)
    if local is None and not (_checks.is_concrete(radius) and _checks.is_concrete(distances)):
        # the radius or the geometry is only known at run time: every observation, tapered
        neighbours = jnp.broadcast_to(jnp.arange(d), (d, d))
        taper = gaspari_cohn(jnp.asarray(distances, ensemble.dtype) / scale)
    else:
        # both known now: each component's problem holds only the observations within the
        # taper's support 2c (exactly the same analysis, on smaller matrices)
        neighbours, near = local or local_neighbourhoods(distances, 2.0 * float(scale))
        taper = jnp.where(near >= 0, gaspari_cohn(jnp.asarray(near, ensemble.dtype) / scale), 0.0)
    out = _letkf(ensemble, y, precision, inflation, jnp.asarray(neighbours),
                 taper.astype(ensemble.dtype), h=h)
    return unless_unobserved(out, ensemble, precision)

