r"""Scores of estimates and ensembles against the truth.

Shapes: an ensemble is ``(..., N, d)`` (members, then components), an estimate or a truth
``(..., d)``. Every score averages over components and keeps the leading axes (e.g. time).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks


def _check_truth(truth, state_shape, what: str) -> None:
    """``truth`` must end in the state's ``(d,)`` and broadcast against ``state_shape``
    without enlarging it (a ``(T, 1)`` against ``(T,)`` would silently score ``T x T`` pairs),
    and, when concrete, be finite."""
    t_shape = jnp.shape(truth)
    if not state_shape:
        raise ValueError(f"the {what} must have a last (state) axis, got a scalar")
    try:
        joined = np.broadcast_shapes(tuple(state_shape), t_shape)
    except ValueError:
        joined = None
    if not t_shape or t_shape[-1] != state_shape[-1] or joined != tuple(state_shape):
        raise ValueError(f"truth of shape {t_shape} does not match the {what} of shape "
                         f"{tuple(state_shape)}: it must have the same last (state) axis and "
                         "broadcast against the leading axes without enlarging them")
    _checks.finite("truth", truth)


def rmse(estimate: jax.Array, truth: jax.Array) -> jax.Array:
    r"""Root-mean-square error over components, :math:`\sqrt{\frac1d\sum_i (\hat x_i - x_i)^2}`; ``(...)``."""
    _check_truth(truth, jnp.shape(estimate), "estimate")
    return jnp.sqrt(jnp.mean((estimate - truth) ** 2, axis=-1))


def spread(ensemble: jax.Array) -> jax.Array:
    r"""Ensemble spread :math:`\sqrt{\frac1d\sum_i \mathrm{var}_j(x_{ji})}` (variance with N - 1); ``(...)``.

    For a calibrated ensemble it matches the RMSE of the ensemble mean on average (up to a
    factor :math:`\sqrt{(N+1)/N}`).
    """
    return jnp.sqrt(jnp.mean(jnp.var(ensemble, axis=-2, ddof=1), axis=-1))


def crps(ensemble: jax.Array, truth: jax.Array) -> jax.Array:
    r"""Continuous ranked probability score of the ensemble's empirical distribution, averaged over components.

    :math:`\mathrm{CRPS} = E|X - y| - \tfrac12 E|X - X'|`, with the second term from the
    sorted members in :math:`O(N \log N)`:
    :math:`E|X - X'| = \frac{2}{N^2}\sum_{k=1}^N (2k - N - 1) x_{(k)}`. Lower is better; for a
    Gaussian forecast it tends to :math:`\sigma[z(2\Phi(z) - 1) + 2\varphi(z) - 1/\sqrt\pi]`.
    """
    _check_truth(truth, ensemble.shape[:-2] + ensemble.shape[-1:], "ensemble (members dropped)")
    n = ensemble.shape[-2]
    term1 = jnp.mean(jnp.abs(ensemble - truth[..., None, :]), axis=-2)
    ordered = jnp.sort(ensemble, axis=-2)
    weights = (2.0 * jnp.arange(1, n + 1) - n - 1).reshape((n, 1))
    term2 = jnp.sum(weights * ordered, axis=-2) / float(n) ** 2  # = E|X - X'| / 2
    return jnp.mean(term1 - term2, axis=-1)


def rank_histogram(ensemble: jax.Array, truth: jax.Array) -> jax.Array:
    """Counts of the truth's rank among the members, over every component and leading index.

    Returns an integer array of length ``N + 1``: entry ``r`` counts the cases where exactly
    ``r`` members lie below the truth. Flat for a calibrated ensemble, U-shaped for an
    under-dispersive one.
    """
    _check_truth(truth, ensemble.shape[:-2] + ensemble.shape[-1:], "ensemble (members dropped)")
    n = ensemble.shape[-2]
    ranks = jnp.sum(ensemble < truth[..., None, :], axis=-2).ravel()
    return jnp.bincount(ranks, length=n + 1)
