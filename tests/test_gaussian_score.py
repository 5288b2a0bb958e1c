"""EnSF-G against the exact Kalman posterior (linear observation, Gaussian prior ensemble).

With a linear ``h`` every step of EnSF-G is exact, so its analysis is the Kalman posterior of
the ensemble's own (tapered) mean and covariance: the deterministic flow reproduces it up to
its time discretisation (Heun, shrinking as the steps grow), the ancestral sampler up to
Monte-Carlo error (stated per test).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda.filters import gaussian_score, localisation


def kalman_posterior(ens, y, sigma, mask, taper=None):
    """Kalman analysis mean and covariance of the ensemble's mean and (tapered) covariance."""
    ens = np.asarray(ens, np.float64)
    m = np.asarray(mask)
    mean, cov = ens.mean(0), np.cov(ens.T)
    if taper is not None:
        cov = cov * taper
    h = np.eye(len(mean))[m]
    gain = cov @ h.T @ np.linalg.inv(h @ cov @ h.T + sigma**2 * np.eye(h.shape[0]))
    return mean + gain @ (np.asarray(y)[m] - h @ mean), cov - gain @ h @ cov


@pytest.fixture
def gaussian_prior(x64):
    rng = np.random.default_rng(0)
    d, n = 5, 4000
    root = rng.normal(size=(d, d))
    cov = root @ root.T / d + 0.5 * np.eye(d)
    ens = rng.multivariate_normal(rng.normal(size=d), cov, size=n)
    y = 2.0 * rng.normal(size=d)
    mask = np.array([True, False, True, True, False])
    return ens, y, 0.5, mask


def test_flow_is_the_kalman_posterior_and_converges_with_the_steps(gaussian_prior):
    ens, y, sigma, mask = gaussian_prior
    mean_a, cov_a = kalman_posterior(ens, y, sigma, mask)
    errors = {}
    for k in (10, 40):
        xa = np.asarray(gaussian_score.analysis(jax.random.key(1), ens, y, sigma, mask=mask,
                                                radius=np.inf, n_steps=k, sampler="flow"))
        # the flow moves each member deterministically: the sample mean is exact up to the
        # start's eps_a mismatch (1e-4 x |m - m_a|), the covariance up to the discretisation
        assert np.max(np.abs(xa.mean(0) - mean_a)) < 2e-3
        errors[k] = np.max(np.abs(np.cov(xa.T) - cov_a)) / np.max(np.abs(cov_a))
    assert errors[40] < 0.01  # measured 0.3 %
    assert errors[40] < errors[10] / 5  # measured 0.24 -> 0.003


def test_ancestral_sampler_draws_the_kalman_posterior(x64):
    rng = np.random.default_rng(3)
    d, n = 4, 20000
    root = rng.normal(size=(d, d))
    ens = rng.multivariate_normal(np.ones(d), root @ root.T / d + 0.3 * np.eye(d), size=n)
    y, sigma, mask = np.array([1.5, 0.0, -1.0, 0.0]), 0.4, np.array([True, False, True, False])
    mean_a, cov_a = kalman_posterior(ens, y, sigma, mask)
    xa = np.asarray(gaussian_score.analysis(jax.random.key(2), ens, y, sigma, mask=mask,
                                            radius=np.inf, n_steps=5, sampler="ancestral"))
    # fresh draws: Monte-Carlo standard errors of the sample mean and covariance
    se_mean = np.sqrt(np.diag(cov_a) / n)
    assert np.all(np.abs(xa.mean(0) - mean_a) < 4.5 * se_mean)
    var = np.diag(cov_a)
    se_cov = np.sqrt((np.outer(var, var) + cov_a**2) / n)
    assert np.all(np.abs(np.cov(xa.T) - cov_a) < 4.5 * se_cov)


def test_localisation_tapers_the_prior_covariance(x64):
    # on a ring of 12 with radius 1 the analysis is the Kalman update of rho o P, whose
    # far-away covariances are zero: a distant unobserved component does not move
    rng = np.random.default_rng(5)
    d, n = 12, 3000
    ens = rng.normal(size=(n, d)) @ (np.eye(d) + 0.8 * rng.normal(size=(d, d))) + 1.0
    mask = np.zeros(d, bool)
    mask[[0, 1, 2]] = True
    y = np.full(d, -2.0)
    radius = 1.0
    taper = np.asarray(localisation.gaspari_cohn(localisation.periodic_distances(d) / (1.82 * radius)))
    mean_a, cov_a = kalman_posterior(ens, y, 0.3, mask, taper)
    xa = np.asarray(gaussian_score.analysis(jax.random.key(0), ens, y, 0.3, mask=mask,
                                            radius=radius, n_steps=40))
    assert np.max(np.abs(xa.mean(0) - mean_a)) < 5e-3
    far = 7  # 5 from the nearest observed component: the taper is 0 beyond 3.64
    assert abs(xa[:, far].mean() - ens[:, far].mean()) < 1e-3


@pytest.mark.slow
def test_float32_and_a_callable_operator():
    key = jax.random.key(0)
    ens = jax.random.normal(key, (16, 10)) + 1.0
    y = jnp.linspace(-1.0, 1.0, 10)
    mask = jnp.arange(10) % 2 == 0
    by_name = gaussian_score.analysis(key, ens, y, 0.1, obs="arctan", mask=mask)
    by_callable = gaussian_score.analysis(key, ens, y, 0.1, obs=jnp.arctan, mask=mask)
    assert by_name.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(by_callable), np.asarray(by_name), atol=2e-4)


def test_unobserved_entries_are_ignored_and_bad_input_refused():
    key = jax.random.key(4)
    ens = jax.random.normal(key, (12, 8)) + 1.0
    mask = jnp.arange(8) % 3 == 0
    y = jnp.linspace(-1.0, 1.0, 8)
    clean = gaussian_score.analysis(key, ens, jnp.where(mask, y, 0.0), 0.5, mask=mask)
    poisoned = gaussian_score.analysis(key, ens, jnp.where(mask, y, jnp.nan), 0.5, mask=mask)
    np.testing.assert_array_equal(np.asarray(poisoned), np.asarray(clean))
    for bad, match in (({"sampler": "ode"}, "sampler must be"), ({"radius": 0.0}, "radius must be"),
                       ({"n_steps": 0}, "n_steps must be"), ({"eps_b": 1.0}, "eps_b must lie"),
                       ({"inflation": -1.0}, "inflation must be")):
        with pytest.raises(ValueError, match=match):
            gaussian_score.analysis(key, ens, y, 0.5, mask=mask, **bad)
