r"""EnSF-LR: EnSF on the observed components, then a localised regression onto the others.

The paired EnSF (:mod:`scoreda.filters.ensf`) moves a component only through its own
observation: an unobserved component leaves the analysis where the forecast put it (plus the
diffusion's noise). An ensemble Kalman filter would move it through its covariance with the
observed neighbours. EnSF-LR adds that second step, as in Anderson's (2003) two-step view of
ensemble filters (an update in observation space, then a linear regression onto the state):

1. :math:`x^{s}_j` = the paired EnSF analysis of member :math:`j` (any ``h`` EnSF takes);
   its increments on the observed set :math:`O` are :math:`\delta_j = x^s_{j,O} - x_{j,O}`.
2. For every unobserved component :math:`i`, with :math:`O_i` the observed components within
   the Gaspari-Cohn support of :math:`i` (distance < :math:`3.64\,r`),

   .. math::

       x^a_{j,i} = x^s_{j,i} + \big(\rho \circ \hat B\big)_{i, O_i}
                   \big(\rho \circ \hat B\big)_{O_i O_i}^{-1}\, \delta_{j, O_i},

   :math:`\hat B` the forecast ensemble's sample covariance and :math:`\rho` the taper
   between the components involved (which also keeps the local matrix invertible when
   :math:`|O_i| \ge N`). Observed components keep the EnSF analysis.

Step 2 is Gaussian conditioning: :math:`E[x_U \mid x_O] = m_U + B_{UO}B_{OO}^{-1}(x_O - m_O)`.
If step 1 were an exact Kalman draw for :math:`x_O` (a perturbed-observation update), step 2
would complete it to an exact draw of the joint Kalman posterior (tested in
``tests/test_regression.py`` with that input); the EnSF observed-space update is not exact,
so neither is EnSF-LR.

**Cost.** Step 2 solves one ``(L, L)`` system per component (``L`` the neighbourhood's
size), :math:`O(d (N L^2 + L^3))`, independent of the number of pseudo-time steps; against
the paired EnSF's :math:`O(N d K)` it adds little at any :math:`d` (``benchmarks/``).
"""

from __future__ import annotations

import inspect
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks
from scoreda.device import full_precision
from scoreda.filters import ensf, localisation

#: relative ridge on the local observed covariance (keeps float32 Cholesky factors finite)
_RIDGE = 1e-5


def neighbourhoods(d: int, radius: float, distances=None):
    """Each component's neighbours within the taper's support and the taper among them.

    Returns ``(near, taper_to_i, taper_among)``: ``near (d, L)`` indices (padding repeats
    index ``i`` with zero taper), ``taper_to_i (d, L)`` the Gaspari-Cohn weight between
    ``i`` and each neighbour, ``taper_among`` between neighbours, ``(d, L, L)`` or, on the
    default ring, one ``(L, L)`` shared by all components (numpy arrays). On the ring the
    neighbours are found from index offsets, so no ``(d, d)`` array is formed (``d = 10^6``
    is fine).
    """
    scale = localisation.GC_RADIUS_SCALE * float(radius)
    cutoff = 2.0 * scale

    def gc(r):  # evaluated now, also when called while a cycle is being traced
        with jax.ensure_compile_time_eval():
            return np.asarray(localisation.gaspari_cohn(jnp.asarray(r / scale)))

    ring = localisation.ring_neighbourhoods(d, cutoff) if distances is None else None
    if ring is not None:  # from index offsets: no (d, d) array
        near, offset_dist = ring
        taper_to_i = gc(offset_dist[0])  # the same offsets for every component
        offsets = np.arange(near.shape[1]) - (near.shape[1] - 1) // 2  # -half .. half
        between = np.abs(offsets[:, None] - offsets[None, :])
        taper_among = gc(np.minimum(between, d - between).astype(np.float64))
        return (near, np.broadcast_to(taper_to_i, near.shape).astype(np.float32),
                taper_among.astype(np.float32))
    distances = np.asarray(localisation.component_distances(d, distances), np.float64)
    near, near_dist = localisation.local_neighbourhoods(distances, cutoff)
    valid = near_dist >= 0
    near = np.where(valid, near, np.arange(d)[:, None])
    taper_to_i = np.where(valid, gc(np.where(valid, near_dist, 0.0)), 0.0)
    among = distances[near[:, :, None], near[:, None, :]]
    taper_among = gc(among) * valid[:, :, None] * valid[:, None, :]
    return near.astype(np.int32), taper_to_i.astype(np.float32), taper_among.astype(np.float32)


@jax.jit
def _regress(forecast, analysis, mask, near, taper_to_i, taper_among):
    n_members, d = forecast.shape
    dtype = forecast.dtype
    anom = forecast - forecast.mean(axis=0)
    maskf = mask.astype(dtype)
    increment = (analysis - forecast) * maskf  # observed increments only

    def one(i):
        nb = near[i]
        m_nb = maskf[nb] * (taper_to_i[i] > 0)
        a_nb = anom[:, nb]  # (N, L)
        cov_nb = taper_among[i] * (a_nb.T @ a_nb) / (n_members - 1)
        cov_nb = cov_nb * m_nb[:, None] * m_nb[None, :]
        scale = jnp.maximum(jnp.trace(cov_nb) / jnp.maximum(m_nb.sum(), 1.0), 1e-30)
        cov_nb = cov_nb + jnp.diag(jnp.where(m_nb > 0, _RIDGE * scale, 1.0))
        cross = taper_to_i[i] * m_nb * (anom[:, i] @ a_nb) / (n_members - 1)  # (L,)
        gain = jax.scipy.linalg.cho_solve((jnp.linalg.cholesky(cov_nb), True), cross)
        return increment[:, nb] @ gain  # (N,)

    spread = jax.vmap(one, out_axes=1)(jnp.arange(d))
    return jnp.where(mask, analysis, analysis + spread)


def spread_increments(forecast, analysis, mask, *, radius=4.0, distances=None) -> jax.Array:
    """Step 2 alone: carry the observed components' increments ``analysis - forecast`` to the
    unobserved ones by localised regression on the forecast covariance.

    ``forecast``, ``analysis``: ``(N, d)``; ``mask``: bool ``(d,)``. Observed components of
    ``analysis`` are returned unchanged, unobserved ones get the regressed increment.

    A concrete ``radius`` gives each component only the neighbours within the taper's
    support, ``(L, L)`` problems; a traced one (a knob tuned inside one compiled cycle) uses
    all ``d`` components with the taper computed at run time, the same regression on
    ``(d, d)`` problems.
    """
    forecast = jnp.asarray(forecast)
    analysis = jnp.asarray(analysis, forecast.dtype)
    if forecast.ndim != 2 or forecast.shape[0] < 2 or analysis.shape != forecast.shape:
        raise ValueError(f"forecast and analysis must both have shape (N, d) with N >= 2, got "
                         f"{forecast.shape} and {analysis.shape}")
    d = forecast.shape[1]
    _checks.positive("radius", radius)
    if jnp.shape(mask) != (d,):
        raise ValueError(f"mask must have shape (d,) = ({d},), got {jnp.shape(mask)}")
    _checks.boolean_mask("mask", mask)
    mask = jnp.asarray(mask, bool)
    dtype = forecast.dtype
    if _checks.is_concrete(radius):
        near, to_i, among = neighbourhoods(d, float(radius), distances)
        near, to_i = jnp.asarray(near), jnp.asarray(to_i, dtype)
        among = jnp.broadcast_to(jnp.asarray(among, dtype), (d,) + among.shape[-2:])
    else:
        dist = jnp.asarray(localisation.component_distances(d, distances), dtype)
        taper = localisation.gaspari_cohn(dist / (localisation.GC_RADIUS_SCALE * radius))
        near = jnp.broadcast_to(jnp.arange(d), (d, d))
        to_i, among = taper, jnp.broadcast_to(taper, (d, d, d))
    return _regress(forecast, analysis, mask, near, to_i, among)


@full_precision
def analysis(key, ensemble, y, obs_std, *, obs: str | Callable = "identity", mask=None,
             radius=4.0, distances=None, **ensf_knobs) -> jax.Array:
    """EnSF-LR analysis: :func:`scoreda.filters.ensf.analysis` with ``ensf_knobs``, then
    :func:`spread_increments` with ``radius`` (the regression's localisation, DAPPER's
    convention). Shapes and the other arguments as for EnSF."""
    if jnp.ndim(ensemble) == 2 and jnp.shape(ensemble)[0] < 2:
        raise ValueError(f"EnSF-LR needs N >= 2 members (its regression uses the ensemble's "
                         f"covariance), got ensemble of shape {jnp.shape(ensemble)}")
    check_knobs(radius=radius, **ensf_knobs)
    if distances is not None and jnp.ndim(ensemble) == 2:  # checked before the EnSF run
        localisation.component_distances(jnp.shape(ensemble)[1], distances)
    x_s = ensf.analysis(key, ensemble, y, obs_std, obs=obs, mask=mask, **ensf_knobs)
    if mask is None:  # everything observed: nothing to regress onto
        return x_s
    return spread_increments(jnp.asarray(ensemble, x_s.dtype), x_s, mask, radius=radius,
                             distances=distances)


def check_knobs(*, radius=4.0, **ensf_knobs) -> None:
    """The regression's localisation ``radius`` > 0 and EnSF's knobs
    (:func:`scoreda.filters.ensf.check_knobs`)."""
    _checks.positive("radius", radius)
    ensf_knobs = dict(ensf_knobs)
    if not isinstance(ensf_knobs.pop("report_clipping", False), bool):
        raise ValueError("report_clipping must be True or False")
    unknown = set(ensf_knobs) - set(inspect.signature(ensf.check_knobs).parameters)
    if unknown:
        raise TypeError(f"EnSF-LR got unknown knobs {sorted(unknown)}")
    ensf.check_knobs(**ensf_knobs)
