r"""A two-dimensional filtering problem with a bimodal posterior, solvable on a grid.

Prior :math:`x \sim N(\mu, I_2)`; one observation of :math:`x_1^2` with noise
:math:`\sigma`, the second component unobserved:

.. math::

    p(x \mid y) \propto N(x; \mu, I)\, N(y; x_1^2, \sigma^2).

For :math:`y > 0` and small :math:`\sigma` the posterior has two modes near
:math:`x_1 = \pm\sqrt{y}`, while :math:`x_2` keeps its prior :math:`N(\mu_2, 1)`. A Kalman
filter cannot represent it (its update is a single Gaussian); the reference is the exact
density on a fine grid.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Bimodal:
    """The problem's settings: prior mean, observed value of x1^2, its noise."""

    prior_mean: tuple[float, float] = (0.0, 0.5)
    y: float = 1.0
    obs_std: float = 0.2

    def operator(self, x):
        """:math:`h(x) = (x_1^2, x_2)`; only the first entry is observed (see ``mask``)."""
        return jnp.stack([x[0] ** 2, x[1]])

    @property
    def mask(self):
        return jnp.array([True, False])

    @property
    def observation(self):
        return jnp.array([self.y, 0.0])

    def prior_ensemble(self, key, n):
        """``n`` draws from the prior, shape ``(n, 2)``."""
        return jnp.asarray(self.prior_mean) + jax.random.normal(key, (n, 2))

    def grid_posterior(self, half_width=4.0, n=801):
        """Exact posterior on an ``n x n`` grid: ``(grid, density)``, density summing to 1."""
        g = np.linspace(-half_width, half_width, n)
        x1, x2 = np.meshgrid(g + self.prior_mean[0], g + self.prior_mean[1], indexing="ij")
        logp = (-0.5 * ((x1 - self.prior_mean[0]) ** 2 + (x2 - self.prior_mean[1]) ** 2)
                - 0.5 * (x1**2 - self.y) ** 2 / self.obs_std**2)
        p = np.exp(logp - logp.max())
        return (g + self.prior_mean[0], g + self.prior_mean[1]), p / p.sum()


def wasserstein1_to_marginal(samples, grid, marginal) -> float:
    """1-Wasserstein distance between 1-D ``samples`` and a density on ``grid`` (quantile coupling)."""
    s = np.sort(np.asarray(samples, np.float64))
    q = (np.arange(s.size) + 0.5) / s.size
    cdf = np.cumsum(marginal) / np.sum(marginal)
    return float(np.mean(np.abs(s - np.interp(q, cdf, grid))))
