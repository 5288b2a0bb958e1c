r"""Localisation: the Gaspari-Cohn taper, distances between state components, and the
neighbourhoods a local analysis solves over. Shared by the LETKF
(:mod:`scoreda.filters.kalman`), the IEnKF, EnSF-G and EnSF-LR.

The localisation radius follows DAPPER's convention: the taper's half-width is
``c = GC_RADIUS_SCALE * radius``, so that the taper is about :math:`e^{-1/2}` at distance
``radius`` and exactly zero from ``2c`` on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks


#: DAPPER's scaling of the localisation radius: GC half-width c = 1.82 * radius, so the
#: taper is about exp(-1/2) at distance = radius and zero beyond 2c.
GC_RADIUS_SCALE = 1.82


def gaspari_cohn(r: jax.Array) -> jax.Array:
    r"""Gaspari & Cohn (1999, eq. 4.10) compactly supported taper of ``r = distance / c``.

    1 at 0, a fifth-order piecewise rational function, exactly 0 for :math:`r \ge 2`.
    """
    r = jnp.abs(r)
    inner = ((((-0.25 * r + 0.5) * r + 0.625) * r - 5.0 / 3.0) * r) * r + 1.0
    r_safe = jnp.where(r > 0, r, 1.0)
    outer = (((((r / 12.0 - 0.5) * r + 0.625) * r + 5.0 / 3.0) * r - 5.0) * r + 4.0
             - 2.0 / (3.0 * r_safe))
    return jnp.maximum(jnp.where(r <= 1.0, inner, jnp.where(r < 2.0, outer, 0.0)), 0.0)


def periodic_distances(d: int) -> np.ndarray:
    """Index distances on a ring of ``d`` points, ``min(|i - l|, d - |i - l|)``, shape ``(d, d)``."""
    i = np.arange(d)
    diff = np.abs(i[:, None] - i[None, :])
    return np.minimum(diff, d - diff).astype(np.float32)


def component_distances(d: int, distances=None):
    """The ``(d, d)`` distances between components: the periodic index distance by default,
    else ``distances`` (numpy when concrete, left traced otherwise), its shape checked."""
    if distances is None:
        return periodic_distances(d)
    if _checks.is_concrete(distances):
        distances = np.asarray(distances)
    if jnp.shape(distances) != (d, d):
        raise ValueError(f"distances must have shape (d, d) = ({d}, {d}), got {jnp.shape(distances)}")
    if _checks.is_concrete(distances) and (np.any(np.isnan(distances)) or np.any(distances < 0)):
        raise ValueError("distances must be >= 0 everywhere (inf: never interacting), "
                         "with no NaN")
    return distances


def ring_neighbourhoods(d: int, cutoff: float) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`local_neighbourhoods` of the default ring (periodic index distance) built from
    index offsets, without the ``(d, d)`` distance matrix (``d = 10^6`` is fine): component
    ``i`` sees ``i + o (mod d)`` for every offset ``|o| < cutoff``, in the order of ``o``.
    Returns indices and distances, both ``(d, L)``, or None when the offsets would wrap
    around the ring (``d <= L``), where the distance matrix is small anyway."""
    half = int(np.ceil(cutoff)) - 1  # the offsets with |o| < cutoff
    if d <= 2 * half + 1:
        return None
    offsets = np.arange(-half, half + 1)
    near = (np.arange(d)[:, None] + offsets[None, :]) % d
    return near.astype(np.int32), np.broadcast_to(np.abs(offsets).astype(np.float64), near.shape)


def local_neighbourhoods(distances: np.ndarray, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """For each state component the observations closer than ``cutoff``: indices ``(d, L)``
    and their distances ``(d, L)``, ``L`` the largest count over the components; shorter
    rows are padded with ``-1`` distances (to be given zero weight)."""
    distances = np.asarray(distances, np.float64)
    within = distances < cutoff
    n_local = max(int(within.sum(axis=1).max()), 1)
    order = np.argsort(np.where(within, distances, np.inf), axis=1, kind="stable")[:, :n_local]
    near = np.take_along_axis(distances, order, axis=1)
    near = np.where(np.take_along_axis(within, order, axis=1), near, -1.0)
    return order.astype(np.int32), near
