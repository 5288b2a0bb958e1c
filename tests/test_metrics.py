"""Scores on cases with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from scoreda import metrics


def test_rmse_and_spread_simple_values():
    truth = jnp.zeros((2, 4))
    est = jnp.array([[1.0, -1.0, 1.0, -1.0], [2.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(metrics.rmse(est, truth), [1.0, 1.0])
    ens = jnp.array([[0.0, 2.0], [2.0, 0.0]])  # each component: variance (ddof=1) 2
    assert float(metrics.spread(ens)) == pytest.approx(np.sqrt(2.0))


def test_crps_matches_the_gaussian_closed_form():
    # Gneiting & Raftery (2007): CRPS(N(0, s^2), y) = s [z (2 Phi(z) - 1) + 2 phi(z) - 1/sqrt(pi)].
    s, y = 1.5, 0.7
    ens = s * jax.random.normal(jax.random.key(0), (200_000, 1))
    z = y / s
    exact = s * (z * (2 * stats.norm.cdf(z) - 1) + 2 * stats.norm.pdf(z) - 1 / np.sqrt(np.pi))
    assert float(metrics.crps(ens, jnp.array([y]))) == pytest.approx(exact, rel=5e-3)


def test_crps_of_a_single_member_is_the_absolute_error():
    ens = jnp.array([[1.0, 2.0]])
    assert float(metrics.crps(ens, jnp.array([0.0, 0.0]))) == pytest.approx(1.5)


def test_crps_brute_force_pairs():
    ens = jax.random.normal(jax.random.key(1), (7, 3))
    y = jnp.array([0.1, -0.5, 2.0])
    e = np.asarray(ens, np.float64)
    brute = np.mean(np.abs(e - np.asarray(y)).mean(0) - 0.5 * np.abs(e[:, None] - e[None]).mean((0, 1)))
    assert float(metrics.crps(ens, y)) == pytest.approx(brute, rel=1e-5)


@pytest.mark.slow
def test_rank_histogram_is_flat_for_a_calibrated_ensemble():
    key1, key2 = jax.random.split(jax.random.key(2))
    ens = jax.random.normal(key1, (2000, 9, 10))
    truth = jax.random.normal(key2, (2000, 10))
    counts = np.asarray(metrics.rank_histogram(ens, truth))
    assert counts.sum() == 20_000 and counts.size == 10
    assert stats.chisquare(counts).pvalue > 1e-3
    # an under-dispersive ensemble gives a U shape
    u = np.asarray(metrics.rank_histogram(0.3 * ens, truth))
    assert u[0] + u[-1] > 0.5 * u.sum()
