"""The transformed-observation LETKF: tan inverts arctan, the delta-method noise makes a saturated
observation count for what it is worth (the exact posterior of a one-dimensional problem, by
quadrature), and observations beyond arctan's range are dropped."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda.filters import kalman, transformed

KEY = jax.random.key(0)


def exact_posterior_mean(prior_mean, prior_std, y, sigma):
    x = np.linspace(prior_mean - 8 * prior_std, prior_mean + 8 * prior_std, 400_001)
    log_w = -0.5 * ((x - prior_mean) / prior_std) ** 2 - 0.5 * ((np.arctan(x) - y) / sigma) ** 2
    w = np.exp(log_w - log_w.max())
    return float(np.sum(w * x) / np.sum(w)), float(np.sqrt(np.sum(w * x * x) / np.sum(w)
                                                            - (np.sum(w * x) / np.sum(w)) ** 2))


@pytest.mark.slow
def test_a_saturated_observation_gives_the_exact_posterior(x64):
    # prior N(3, 1) (arctan bends over it), y = arctan(3.2) + 0.0005, sigma = 0.001: the
    # delta method is accurate (sigma (1 + x^2) |x| = 0.036), so the transformed update lands
    # on the exact posterior mean, which one secant update (the LETKF's) misses by far
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 1))
    x = 3.0 + (x - x.mean()) / x.std(ddof=1)
    y, sigma = np.arctan(3.2) + 0.0005, 0.001
    mean, std = exact_posterior_mean(3.0, 1.0, y, sigma)
    tan = transformed.letkf_tan(KEY, jnp.asarray(x), jnp.array([y]), sigma, radius=1.0)
    secant = kalman.letkf(KEY, jnp.asarray(x), jnp.array([y]), sigma, obs="arctan", radius=1.0)
    assert abs(float(tan.mean()) - mean) < 0.1 * std, (float(tan.mean()), mean, std)
    assert abs(float(tan.std(ddof=1)) / std - 1) < 0.05
    assert abs(float(secant.mean()) - mean) > 10 * std


@pytest.mark.slow
def test_observations_past_arctans_range_are_dropped():
    z, std, usable = transformed.tan_observations(jnp.array([0.5, 1.56, -1.6, 0.0]), 0.01,
                                                  mask=jnp.array([True, True, True, False]))
    assert usable.tolist() == [True, False, False, False]
    assert float(z[0]) == pytest.approx(np.tan(0.5), rel=1e-6)
    assert float(std[0]) == pytest.approx(0.01 * (1 + np.tan(0.5) ** 2), rel=1e-6)
    # nothing usable: the forecast comes back unchanged
    ens = jax.random.normal(KEY, (10, 4))
    out = transformed.letkf_tan(KEY, ens, jnp.full(4, 1.6), 0.01)
    np.testing.assert_array_equal(out, ens)


def test_it_refuses_another_operator():
    ens = jax.random.normal(KEY, (10, 4))
    with pytest.raises(ValueError, match="inverts obs='arctan'"):
        transformed.letkf_tan(KEY, ens, jnp.zeros(4), 0.01, obs="identity")
    with pytest.raises(ValueError, match="obs_std"):
        transformed.letkf_tan(KEY, ens, jnp.zeros(4), -0.01)


def test_per_component_noise_in_the_kalman_filters():
    # one standard deviation per component: the ETKF mean is the exact Kalman mean
    ens = jax.random.normal(KEY, (20, 6))
    y = jnp.arange(6.0) / 6
    std = jnp.array([0.5, 1.0, 2.0, 0.5, 1.0, 2.0])
    out = kalman.etkf(KEY, ens, y, std)
    # against the exact Kalman update of the mean (N-1 normalised sample covariance)
    mean, anom = ens.mean(0), ens - ens.mean(0)
    b = anom.T @ anom / 19
    gain = b @ jnp.linalg.inv(b + jnp.diag(std**2))
    np.testing.assert_allclose(out.mean(0), mean + gain @ (y - mean), atol=2e-5)
    with pytest.raises(ValueError, match="one per component"):
        kalman.etkf(KEY, ens, y, jnp.ones(5))
    with pytest.raises(ValueError, match="every component"):
        kalman.etkf(KEY, ens, y, jnp.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]))
