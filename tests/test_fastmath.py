"""The fast arctan and the counter-based Gaussian noise keep the filter's statistics."""

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from scoreda.filters import _fastmath as fm


def test_arctan_is_accurate_to_float32_rounding():
    # Max error against float64 arctan, in units of the float32 spacing at the true value:
    # measured 1.8, XLA's own float32 arctan has 5.3 on the same points.
    x = np.concatenate([
        np.linspace(-4, 4, 200_001), np.geomspace(1e-30, 1e30, 200_001),
        -np.geomspace(1e-30, 1e30, 20_001), [0.0, 1.0, -1.0, np.inf, -np.inf],
    ]).astype(np.float32)
    got = np.asarray(fm.arctan(jnp.asarray(x))).astype(np.float64)
    ref = np.arctan(x.astype(np.float64))
    ulps = np.abs(got - ref) / np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 2.0, ulps.max()
    assert np.signbit(np.asarray(fm.arctan(jnp.asarray(-0.0)))), "arctan(-0) must be -0"
    assert np.isnan(np.asarray(fm.arctan(jnp.asarray(np.nan))))


def draws(seed=0, step=0, rows=400, cols=10_000):
    s = fm.seed_words(jax.random.key(seed))
    return np.asarray(fm.normal(fm.row_keys(s, step, jnp.arange(rows)), fm.column_hash(s, jnp.arange(cols)))).astype(np.float64)


def test_noise_moments_and_distribution():
    z = draws().ravel()  # 4 million draws
    n = z.size
    # Standard errors: mean 1/sqrt(n), variance sqrt(2/n), skewness sqrt(6/n), kurtosis sqrt(24/n).
    assert abs(z.mean()) < 5 / np.sqrt(n)
    assert abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(stats.skew(z)) < 5 * np.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 5 * np.sqrt(24 / n)
    # Kolmogorov-Smirnov against N(0, 1): the p-value of a correct generator is uniform.
    assert stats.kstest(z[:1_000_000], "norm").pvalue > 1e-4
    assert np.isfinite(z).all() and np.abs(z).max() < 5.5


def test_noise_is_independent_across_members_components_steps_and_seeds():
    a = draws(step=0)
    b = draws(step=1)
    c = draws(seed=1, step=0)
    bound = 5 / np.sqrt(a.size)  # correlation of independent draws: standard error 1/sqrt(n)
    pairs = {
        "next component": (a[:, 1:].ravel(), a[:, :-1].ravel()),
        "next member": (a[1:].ravel(), a[:-1].ravel()),
        "next step": (a.ravel(), b.ravel()),
        "other seed": (a.ravel(), c.ravel()),
        "squares, next component": (a[:, 1:].ravel() ** 2, a[:, :-1].ravel() ** 2),
    }
    for name, (u, v) in pairs.items():
        r = np.corrcoef(u, v)[0, 1]
        assert abs(r) < bound, (name, r)


def test_noise_depends_only_on_global_indices():
    s = fm.seed_words(jax.random.key(3))
    full = fm.normal(fm.row_keys(s, 7, jnp.arange(5)), fm.column_hash(s, jnp.arange(100)))
    part = fm.normal(fm.row_keys(s, 7, jnp.arange(2, 4)), fm.column_hash(s, jnp.arange(40, 60)))
    np.testing.assert_array_equal(full[2:4, 40:60], part)
