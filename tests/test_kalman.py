"""Kalman-family filters against the exact Kalman update of the ensemble's own statistics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda.filters import kalman, localisation


def kalman_update(ens, y, sigma, mask):
    """Exact Kalman analysis mean and covariance for the ensemble's mean and covariance (numpy)."""
    ens = np.asarray(ens, np.float64)
    m = np.asarray(mask)
    x_mean = ens.mean(0)
    p = np.atleast_2d(np.cov(ens.T, ddof=1))
    h = np.eye(ens.shape[1])[m]  # observe the masked components
    r = sigma**2 * np.eye(h.shape[0])
    k = p @ h.T @ np.linalg.inv(h @ p @ h.T + r)
    return x_mean + k @ (np.asarray(y)[m] - h @ x_mean), (np.eye(len(x_mean)) - k @ h) @ p


@pytest.fixture
def gaussian_case(x64):
    key = jax.random.key(0)
    k1, k2, k3 = jax.random.split(key, 3)
    d = 6
    ens = jax.random.normal(k1, (10, d), jnp.float64) @ jax.random.normal(k2, (d, d), jnp.float64) + 2.0
    y = jax.random.normal(k3, (d,), jnp.float64)
    mask = jnp.array([True, True, False, True, False, True])
    return ens, y, 0.7, mask


def test_etkf_is_the_kalman_update_of_the_ensemble_statistics(gaussian_case):
    ens, y, sigma, mask = gaussian_case
    mean, cov = kalman_update(ens, y, sigma, mask)
    a = np.asarray(kalman.etkf(None, ens, y, sigma, mask=mask))
    np.testing.assert_allclose(a.mean(0), mean, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.cov(a.T, ddof=1), cov, rtol=1e-9, atol=1e-10)


def test_etkf_inflation_scales_the_analysis_anomalies(gaussian_case):
    ens, y, sigma, mask = gaussian_case
    a1 = np.asarray(kalman.etkf(None, ens, y, sigma, mask=mask))
    a2 = np.asarray(kalman.etkf(None, ens, y, sigma, mask=mask, inflation=1.1))
    np.testing.assert_allclose(a2 - a2.mean(0), 1.1 * (a1 - a1.mean(0)), rtol=1e-10, atol=1e-10)


def test_letkf_without_localisation_is_the_etkf(gaussian_case):
    ens, y, sigma, mask = gaussian_case
    far = kalman.letkf(None, ens, y, sigma, mask=mask, radius=1e6)
    np.testing.assert_allclose(far, kalman.etkf(None, ens, y, sigma, mask=mask), rtol=1e-8, atol=1e-8)


def test_letkf_with_a_tiny_radius_uses_only_the_local_observation(gaussian_case):
    # radius -> 0: component i sees only its own observation, so it receives the scalar
    # Kalman update of its own ensemble (variance p_ii, observation noise sigma^2).
    ens, y, sigma, mask = gaussian_case
    a = np.asarray(kalman.letkf(None, ens, y, sigma, mask=mask, radius=0.2))  # GC support 2 * 1.82 * 0.2 < 1
    e = np.asarray(ens)
    for i in range(e.shape[1]):
        mean_i, cov_i = kalman_update(e[:, i:i + 1], np.asarray(y)[i:i + 1], sigma, np.asarray(mask)[i:i + 1])
        assert a[:, i].mean() == pytest.approx(mean_i[0], rel=1e-9, abs=1e-9)
        assert a[:, i].var(ddof=1) == pytest.approx(cov_i[0, 0], rel=1e-9, abs=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("geometry", ["ring", "irregular"])
def test_letkf_local_neighbourhoods_give_the_fully_tapered_analysis(geometry, x64):
    # A concrete radius lets each component's problem hold only the observations inside the
    # taper's support; the others carry zero weight, so the analysis is the same as with
    # every observation tapered (the path taken when the radius is traced).
    d, n = 30, 12
    key = jax.random.key(3)
    ens = 2.0 + jax.random.normal(key, (n, d), jnp.float64)
    y = jnp.arctan(jax.random.normal(jax.random.key(4), (d,), jnp.float64))
    mask = jax.random.uniform(jax.random.key(5), (d,)) < 0.6
    if geometry == "ring":
        distances = None
    else:  # points at random positions on a line: rows have different neighbour counts
        x = np.sort(np.random.default_rng(0).uniform(0, 40, d))
        distances = np.abs(x[:, None] - x[None, :])
    neighbours, near = localisation.local_neighbourhoods(
        localisation.periodic_distances(d) if distances is None else distances, 2 * localisation.GC_RADIUS_SCALE * 2.0)
    assert neighbours.shape[1] < d  # the local problems really are smaller
    local = kalman.letkf(None, ens, y, 0.1, obs="arctan", mask=mask, radius=2.0, distances=distances)
    traced = jax.jit(lambda r: kalman.letkf(None, ens, y, 0.1, obs="arctan", mask=mask, radius=r,
                                            distances=distances))(2.0)
    np.testing.assert_allclose(local, traced, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
def test_letkf_on_a_large_ring_never_forms_the_distance_matrix():
    # d = 200,000: a (d, d) float32 distance matrix would take 160 GB. The ring's
    # neighbourhoods come from index offsets instead; with no observation (mask all False)
    # the analysis is the forecast, and the fully observed block at the end moves.
    d, n = 200_000, 6
    ens = jax.random.normal(jax.random.key(0), (n, d))
    neighbours, near = localisation.ring_neighbourhoods(d, 2 * localisation.GC_RADIUS_SCALE * 2.0)
    assert neighbours.shape == (d, 15) and near[0, 7] == 0.0 and near[0, 0] == 7.0
    assert neighbours[0, 0] == d - 7 and neighbours[-1, -1] == 6  # wrapped around the ring
    mask = jnp.arange(d) >= d - 100
    out = kalman.letkf(None, ens, jnp.zeros(d), 1.0, mask=mask, radius=2.0)
    far = slice(100, d // 2)  # more than 2c = 7.28 from every observation, also round the ring
    np.testing.assert_allclose(out[:, far], ens[:, far], atol=1e-5)
    assert float(jnp.max(jnp.abs(out[:, -50:] - ens[:, -50:]))) > 0.1


@pytest.mark.slow
def test_enkf_mean_is_exact_and_covariance_right_in_expectation(gaussian_case):
    # Centred perturbations: the analysis mean is exactly the Kalman mean (linear h).
    # The analysis covariance equals (I - KH)P in expectation: averaged over 4000 draws the
    # relative error is a few per cent (Monte Carlo), so 10 % is a safe bound.
    ens, y, sigma, mask = gaussian_case
    mean, cov = kalman_update(ens, y, sigma, mask)
    keys = jax.random.split(jax.random.key(1), 4000)
    draws = np.asarray(jax.vmap(lambda k: kalman.enkf(k, ens, y, sigma, mask=mask))(keys))
    np.testing.assert_allclose(draws.mean(1), np.broadcast_to(mean, (4000, len(mean))), atol=1e-9)
    avg_cov = np.mean([np.cov(a.T, ddof=1) for a in draws], axis=0)
    scale = np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    np.testing.assert_allclose(avg_cov / scale, cov / scale, atol=0.1)


def test_nonlinear_operator_is_applied_to_members():
    # With h = arctan the ETKF equals the linear ETKF run on the transformed ensemble's
    # statistics: check against the explicit formulas (gain from cov(x, h(x))).
    ens = jax.random.normal(jax.random.key(2), (30, 4)) + 1.0
    y = jnp.arctan(jnp.ones(4))
    a = np.asarray(kalman.etkf(None, ens, y, 0.1, obs="arctan"), np.float64)
    e = np.asarray(ens, np.float64)
    he = np.arctan(e)
    pxy = (e - e.mean(0)).T @ (he - he.mean(0)) / 29
    pyy = (he - he.mean(0)).T @ (he - he.mean(0)) / 29
    k = pxy @ np.linalg.inv(pyy + 0.01 * np.eye(4))
    np.testing.assert_allclose(a.mean(0), e.mean(0) + k @ (np.asarray(y) - he.mean(0)), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_gaspari_cohn_known_values():
    r = jnp.array([0.0, 1.0, 2.0, 3.0, 0.5])
    g = np.asarray(localisation.gaspari_cohn(r))
    np.testing.assert_allclose(g[:4], [1.0, 5 / 24, 0.0, 0.0], atol=1e-6)
    # continuity at r = 1 and monotone decay
    left, right = localisation.gaspari_cohn(jnp.array([1 - 1e-4, 1 + 1e-4]))
    assert abs(float(left - right)) < 1e-3
    grid = np.asarray(localisation.gaspari_cohn(jnp.linspace(0, 2, 201)))
    assert np.all(np.diff(grid) <= 1e-6)  # float32 cancellation near r = 2


@pytest.mark.parametrize("fn", [kalman.enkf, kalman.etkf, kalman.letkf])
def test_bad_input_is_refused(fn):
    with pytest.raises(ValueError, match="ensemble must have shape"):
        fn(jax.random.key(0), jnp.ones((1, 4)), jnp.zeros(4), 1.0)
    with pytest.raises(ValueError, match="obs_std must be"):
        fn(jax.random.key(0), jnp.ones((3, 4)), jnp.zeros(4), -1.0)
    with pytest.raises(ValueError, match="inflation must be"):
        fn(jax.random.key(0), jnp.ones((3, 4)), jnp.zeros(4), 1.0, inflation=0.0)
    with pytest.raises(ValueError, match="y must have shape"):
        fn(jax.random.key(0), jnp.ones((3, 4)), jnp.zeros(5), 1.0)


@pytest.mark.parametrize("fn", [kalman.etkf, kalman.enkf, kalman.letkf])
def test_unobserved_entries_of_y_are_ignored_even_when_nan(fn):
    # values where the mask is False must not reach the analysis: NaN there gives exactly
    # the analysis with zeros there; a NaN at an observed entry is refused
    key = jax.random.key(4)
    ens = jax.random.normal(key, (12, 8)) + 1.0
    mask = jnp.arange(8) % 3 == 0
    y = jnp.linspace(-1.0, 1.0, 8)
    clean = fn(key, ens, jnp.where(mask, y, 0.0), 0.5, mask=mask)
    poisoned = fn(key, ens, jnp.where(mask, y, jnp.nan), 0.5, mask=mask)
    np.testing.assert_array_equal(np.asarray(poisoned), np.asarray(clean))
    with pytest.raises(ValueError, match="y must be finite at every observed"):
        fn(key, ens, y.at[0].set(jnp.nan), 0.5, mask=mask)


def test_etkf_float32_with_tiny_obs_std_is_the_kalman_update():
    # M = (N-1) I + Y R^-1 Y^T spans eight orders of magnitude at obs_std = 1e-4: float32
    # rounding must not produce NaN, and the analysis mean must still be the Kalman mean
    # (within float32 accuracy relative to the prior spread)
    key = jax.random.key(5)
    ens = jax.random.normal(key, (10, 40)) + 2.0
    y = jnp.full(40, 2.0)
    mask = jnp.arange(40) < 6  # fewer observations than members: the update is well defined
    a = np.asarray(kalman.etkf(None, ens, y, 1e-4, mask=mask))
    assert np.all(np.isfinite(a))
    mean, _ = kalman_update(np.asarray(ens, np.float64), y, 1e-4, np.asarray(mask))
    np.testing.assert_allclose(a.mean(0), mean, atol=2e-3)
