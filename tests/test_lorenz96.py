"""Lorenz-96 against known truths: RK4's order, the climate and chaos of d = 40, F = 8."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda.systems import lorenz96 as l96


def test_tendency_matches_the_equation_written_out():
    x = jnp.arange(1.0, 7.0)  # d = 6
    f = l96.tendency(x, 8.0)
    d = x.size
    expected = [(x[(i + 1) % d] - x[i - 2]) * x[i - 1] - x[i] + 8.0 for i in range(d)]
    np.testing.assert_allclose(f, expected, rtol=1e-6)


def test_fixed_point_is_stationary():
    # x_i = F for all i is an equilibrium: (F - F) F - F + F = 0.
    x = jnp.full(10, 8.0)
    np.testing.assert_array_equal(l96.step(x, 0.05), x)


@pytest.mark.slow
def test_rk4_global_error_falls_as_dt_to_the_fourth(x64):
    x0 = l96.initial_states(jax.random.key(0), 40).astype(jnp.float64)
    x0 = l96.trajectory(x0, 200, 0.05, save_every=200)[-1]  # onto the attractor
    t_end = 1.0
    reference = l96.trajectory(x0, 2048, t_end / 2048, save_every=2048)[-1]
    errors = []
    for n in (32, 64, 128):
        x = l96.trajectory(x0, n, t_end / n, save_every=n)[-1]
        errors.append(float(jnp.linalg.norm(x - reference)))
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    # Halving dt divides a fourth-order error by 2^4 = 16; allow 13..19 for the
    # pre-asymptotic constant.
    assert np.all((ratios > 13) & (ratios < 19)), (errors, ratios)


@pytest.mark.slow
def test_batch_and_vmap_agree_with_single_runs():
    x0 = l96.initial_states(jax.random.key(1), 20, (3,))
    batched = l96.trajectory(x0, 50, 0.01)
    mapped = jax.vmap(lambda x: l96.trajectory(x, 50, 0.01))(x0)
    single = l96.trajectory(x0[1], 50, 0.01)
    assert batched.shape == (3, 51, 20)
    np.testing.assert_allclose(batched, mapped, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(batched[1], single, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(batched[:, 0], x0)


def test_save_every_keeps_every_kth_state():
    x0 = l96.initial_states(jax.random.key(2), 8)
    full = l96.trajectory(x0, 20, 0.01)
    thinned = l96.trajectory(x0, 20, 0.01, save_every=5)
    np.testing.assert_allclose(thinned, full[::5], rtol=1e-6, atol=1e-6)


def test_climatology_d40_matches_lorenz_emanuel():
    # Lorenz & Emanuel (1998): mean 2.34, standard deviation 3.63 for d = 40, F = 8.
    # Time average over 5000 time units of 8 independent runs: sampling error < 0.5 %.
    x0 = l96.initial_states(jax.random.key(3), 40, (8,))
    x0 = l96.trajectory(x0, 2000, 0.05, save_every=2000)[:, -1]
    states = l96.trajectory(x0, 100_000, 0.05, save_every=10)
    mean, std = float(states.mean()), float(states.std())
    assert abs(mean - 2.34) / 2.34 < 0.03, mean
    assert abs(std - 3.63) / 3.63 < 0.03, std


def test_leading_lyapunov_exponent_d40():
    # Literature value about 1.68 per time unit for d = 40, F = 8 (e.g. Karimi & Paul 2010,
    # Majda & Wang 2006); a 3 % band covers the finite-time error of 1000 time units.
    x0 = l96.initial_states(jax.random.key(4), 40)
    lam = float(l96.leading_lyapunov_exponent(x0, 20_000, 0.05, n_spinup=2_000))
    assert abs(lam - 1.68) / 1.68 < 0.03, lam


def test_stochastic_forcing_has_the_right_variance():
    # With F = 0 and x = 0 the deterministic part is zero, so one step is pure noise
    # sqrt(dt) * sigma * xi: its variance must be dt * sigma^2 (200 x 1000 samples: 1 %).
    x0 = jnp.zeros((200, 1000))
    x1 = l96.trajectory(x0, 1, 0.04, 0.0, noise_std=0.5, key=jax.random.key(5))[:, 1]
    assert abs(float(x1.var()) / (0.04 * 0.25) - 1) < 0.02
    assert abs(float(x1.mean())) < 3 * np.sqrt(0.04 * 0.25 / x1.size)


def test_dataset_shape_and_initial_range():
    data = l96.dataset(jax.random.key(6), 5, 10, 0.004)
    assert data.shape == (5, 11, 20) and data.dtype == jnp.float32
    assert float(data[:, 0].min()) >= 7.0 and float(data[:, 0].max()) < 9.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x0=jnp.ones(3), n_steps=1, dt=0.1), "x0 must have a last"),
        (dict(x0=jnp.ones(8), n_steps=1, dt=0.0), "dt must be a finite number > 0"),
        (dict(x0=jnp.ones(8), n_steps=1, dt=-0.1), "dt must be"),
        (dict(x0=jnp.ones(8).at[2].set(jnp.nan), n_steps=1, dt=0.1), "x0 must be finite"),
        (dict(x0=jnp.ones(8), n_steps=-1, dt=0.1), "n_steps must be an integer"),
        (dict(x0=jnp.ones(8), n_steps=10, dt=0.1, save_every=3), "multiple of save_every"),
        (dict(x0=jnp.ones(8), n_steps=1, dt=0.1, noise_std=0.1), "key must be given"),
    ],
)
def test_bad_input_is_refused_with_the_parameter_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        l96.trajectory(**kwargs)


def test_initial_states_refuse_small_d():
    with pytest.raises(ValueError, match="d must be an integer >= 4"):
        l96.initial_states(jax.random.key(0), 3)
