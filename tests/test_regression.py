"""EnSF-LR's second step against exact Gaussian conditioning.

If the observed components' analysis is an exact Kalman draw (perturbed observations), the
localised regression must complete it to a draw of the joint Kalman posterior; with a very
large radius the taper is 1 and the check is exact up to Monte-Carlo error.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda.filters import ensf, localisation, regression


@pytest.mark.slow
def test_regression_completes_an_exact_observed_update_to_the_joint_posterior(x64):
    rng = np.random.default_rng(0)
    d, n = 6, 20000
    root = rng.normal(size=(d, d))
    ens = rng.multivariate_normal(rng.normal(size=d), root @ root.T / d + 0.3 * np.eye(d), size=n)
    mask = np.array([True, False, True, True, False, False])
    y, sigma = 2.0 * rng.normal(size=d), 0.5
    mean, cov = ens.mean(0), np.cov(ens.T)
    h = np.eye(d)[mask]
    s = h @ cov @ h.T + sigma**2 * np.eye(mask.sum())
    gain = cov @ h.T @ np.linalg.inv(s)
    mean_a, cov_a = mean + gain @ (y[mask] - h @ mean), cov - gain @ h @ cov
    # an exact perturbed-observation update of the observed block only
    perturbed = y[mask] + sigma * rng.normal(size=(n, mask.sum()))
    observed = ens.copy()
    observed[:, mask] += (perturbed - ens[:, mask]) @ np.linalg.solve(s, cov[np.ix_(mask, mask)])
    out = np.asarray(regression.spread_increments(ens, observed, mask, radius=1e6))
    np.testing.assert_array_equal(out[:, mask], observed[:, mask])
    var = np.diag(cov_a)
    assert np.all(np.abs(out.mean(0) - mean_a) < 4.5 * np.sqrt(var / n))
    assert np.all(np.abs(np.cov(out.T) - cov_a) < 4.5 * np.sqrt((np.outer(var, var) + cov_a**2) / n))


@pytest.mark.slow
def test_ensf_lr_is_ensf_where_observed_and_local_elsewhere():
    key = jax.random.key(1)
    d = 40
    ens = jax.random.normal(key, (20, d)) + 2.0
    y = jnp.zeros(d)
    mask = jnp.arange(d) < 10  # components 0..9 observed
    knobs = dict(n_steps=50, eps_b=0.02)
    plain = np.asarray(ensf.analysis(key, ens, y, 0.5, mask=mask, **knobs))
    lr = np.asarray(regression.analysis(key, ens, y, 0.5, mask=mask, radius=2.0, **knobs))
    np.testing.assert_array_equal(lr[:, :10], plain[:, :10])
    # the taper vanishes beyond 3.64 * radius = 7.3: component 9 + 8 = 17 .. 40 - 8 = 32 untouched
    np.testing.assert_array_equal(lr[:, 17:33], plain[:, 17:33])
    assert np.max(np.abs(lr[:, 10:12] - plain[:, 10:12])) > 1e-3  # neighbours do move
    everything = np.ones(d, bool)
    np.testing.assert_array_equal(
        np.asarray(regression.analysis(key, ens, y, 0.5, mask=everything, radius=2.0, **knobs)),
        np.asarray(ensf.analysis(key, ens, y, 0.5, mask=everything, **knobs)))
    with pytest.raises(ValueError, match="radius must be"):
        regression.spread_increments(ens, ens, mask, radius=-1.0)


@pytest.mark.slow
def test_a_traced_radius_gives_the_local_regression():
    key = jax.random.key(2)
    ens = jax.random.normal(key, (12, 30)) + jnp.sin(jnp.arange(30.0))
    moved = ens + jnp.where(jnp.arange(30) % 3 == 0, 0.5, 0.0)
    mask = jnp.arange(30) % 3 == 0
    local = regression.spread_increments(ens, moved, mask, radius=3.0)
    traced = jax.jit(lambda r: regression.spread_increments(ens, moved, mask, radius=r))(3.0)
    np.testing.assert_allclose(np.asarray(traced), np.asarray(local), atol=2e-5)


@pytest.mark.slow
def test_ring_neighbourhoods_from_offsets_equal_the_distance_matrix_ones():
    # the offset path (no (d, d) array) and the general path agree as sets with their tapers
    for d, radius in ((60, 2.0), (60, 3.3)):
        fast = regression.neighbourhoods(d, radius)
        general = regression.neighbourhoods(d, radius, distances=localisation.periodic_distances(d))
        for i in (0, 17, d - 1):
            weight_fast = dict(zip(fast[0][i].tolist(), fast[1][i].tolist()))
            weight_general = {j: w for j, w in zip(general[0][i].tolist(), general[1][i].tolist()) if w > 0}
            assert {j: w for j, w in weight_fast.items() if w > 0} == pytest.approx(weight_general)
