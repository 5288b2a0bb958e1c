"""KdV against its analytic soliton, its conservation laws and soliton collisions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda.systems import kdv

L, T = 50.0, 500.0


def test_soliton_is_the_analytic_profile_with_amplitude_c_over_2():
    x = kdv.grid(L, 100)
    u = kdv.soliton(x, 0.8, 25.0, L)
    assert float(u.max()) == pytest.approx(0.4, rel=1e-6)
    # periodic wrap: a soliton centred near the right edge also shows on the left
    wrapped = kdv.soliton(x, 1.0, 49.5, L)
    assert float(wrapped[0]) > 0.4


@pytest.mark.slow
@pytest.mark.parametrize("c", [0.5, 1.0])
def test_single_soliton_travels_at_speed_c_for_ten_periods(c, x64):
    # 500 time units: a c = 1 soliton crosses the domain 10 times. The profile must match
    # the exact travelling sech^2 to 1e-4 (amplitude c / 2 = 0.25..0.5): ETDRK4 at
    # dt = 0.01 is fourth order, the measured error is about 1e-6.
    x = kdv.grid(L, 100)
    u0 = kdv.soliton(x, c, 20.0, L).astype(jnp.float64)
    u = kdv.solve(u0, L, 0.01, 50_000, 50_000)[-1]
    exact = kdv.soliton(x, c, 20.0 + c * T, L)
    assert float(jnp.max(jnp.abs(u - exact))) < 1e-4


@pytest.mark.slow
def test_single_soliton_float32_stays_close():
    # The default precision: the complex64 propagator exp(i k^3 dt) is off by about one
    # rounding unit, and that error repeats in each of the 50,000 steps, so it grows
    # linearly: measured 3.3e-3 after T = 500 (amplitude 0.5), bound 5e-3. Use float64
    # (as the test above) when that matters.
    x = kdv.grid(L, 100)
    u = kdv.solve(kdv.soliton(x, 1.0, 20.0, L), L, 0.01, 50_000, 50_000)[-1]
    exact = kdv.soliton(x, 1.0, 20.0 + T, L)
    assert float(jnp.max(jnp.abs(u - exact))) < 5e-3


def test_invariants_of_a_soliton_are_the_analytic_ones(x64):
    # For u = c/2 sech^2(sqrt(c)/2 x): mass 2 sqrt(c), momentum (2/3) c^{3/2},
    # energy (1/2)(2/15) c^{5/2} - (4/15) c^{5/2} = -(1/5) c^{5/2}; the grid sums are
    # spectrally accurate (1e-6).
    c = 0.7
    u = kdv.soliton(kdv.grid(L, 100), c, 25.0, L).astype(jnp.float64)
    inv = kdv.invariants(u, L)
    assert float(inv.mass) == pytest.approx(2 * np.sqrt(c), rel=1e-6)
    assert float(inv.momentum) == pytest.approx(2 / 3 * c**1.5, rel=1e-6)
    assert float(inv.energy) == pytest.approx(-1 / 5 * c**2.5, rel=1e-6)


@pytest.mark.slow
def test_conservation_over_t500_for_the_paper_data(x64):
    # 30 random two-soliton initial conditions of the paper, T = 500, 100 points.
    # Mass is conserved to rounding (the k = 0 mode never changes). Momentum and energy:
    # relative drift below 1e-4 in float64 (measured worst case 2e-5) and below 1e-3 in
    # float32 (measured 3e-4; rounding dominates there).
    ic = kdv.two_soliton_initial_condition(jax.random.key(0), (30,))
    for dtype, bound in ((jnp.float64, 1e-4), (jnp.float32, 1e-3)):
        u = kdv.solve(ic.u0.astype(dtype))
        assert u.shape == (30, 1001, 100) and u.dtype == dtype
        inv = kdv.invariants(u, L)
        drift = lambda q: float(jnp.max(jnp.abs(q - q[:, :1]) / jnp.abs(q[:, :1])))
        assert drift(inv.mass) < 1e-5
        assert drift(inv.momentum) < bound, (dtype, drift(inv.momentum))
        assert drift(inv.energy) < 2 * bound, (dtype, drift(inv.energy))


def test_two_solitons_leave_their_collision_with_unchanged_speeds(x64):
    # c = 1 at x = 10 overtakes c = 0.5 at x = 30; they interact around t = 20..45.
    # Speeds measured from peak tracks over t = 55..85 equal 1 and 0.5 to 1e-4 relative,
    # heights stay c / 2, and the positions show the known phase shift (fast one ahead).
    x = kdv.grid(L, 100)
    u0 = (kdv.soliton(x, 1.0, 10.0, L) + kdv.soliton(x, 0.5, 30.0, L)).astype(jnp.float64)
    u = kdv.solve(u0, L, 0.01, 9_000, 50)  # snapshots every 0.5 up to t = 90
    pos, height = kdv.soliton_peaks(u, L)
    i0, i1 = 110, 170  # t = 55 and t = 85
    speeds = ((pos[i1] - pos[i0]) % L) / (0.5 * (i1 - i0))
    np.testing.assert_allclose(speeds, [1.0, 0.5], rtol=1e-4)
    np.testing.assert_allclose(height[i0:i1].mean(0), [0.5, 0.25], rtol=1e-3)
    # Analytic phase shifts (e.g. Drazin & Johnson 1989), with kappa_i = sqrt(c_i) / 2:
    # fast soliton +ln((k1 + k2) / (k1 - k2)) / k1, slow one -ln(...) / k2.
    k1, k2 = 0.5, np.sqrt(0.5) / 2
    log_ratio = np.log((k1 + k2) / (k1 - k2))
    t0 = 0.5 * i0
    shift_fast = (pos[i0, 0] - (10.0 + 1.0 * t0) + L / 2) % L - L / 2
    shift_slow = (pos[i0, 1] - (30.0 + 0.5 * t0) + L / 2) % L - L / 2
    np.testing.assert_allclose([shift_fast, shift_slow], [log_ratio / k1, -log_ratio / k2], atol=0.05)
    np.testing.assert_allclose(kdv.collision_phase_shifts(1.0, 0.5), [log_ratio / k1, -log_ratio / k2])


@pytest.mark.slow
def test_solve_is_batched_and_vmappable():
    ic = kdv.two_soliton_initial_condition(jax.random.key(1), (2,))
    a = kdv.solve(ic.u0, L, 0.05, 100, 10)
    b = jax.vmap(lambda u: kdv.solve(u, L, 0.05, 100, 10))(ic.u0)
    assert a.shape == (2, 11, 100)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_two_soliton_parameters_are_in_the_paper_ranges():
    ic = kdv.two_soliton_initial_condition(jax.random.key(2), (500,))
    assert float(ic.speeds.min()) >= 0.5 and float(ic.speeds.max()) <= 1.0
    assert float(ic.centres.min()) >= 0.0 and float(ic.centres.max()) < L
    assert ic.u0.shape == (500, 100)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(u0=jnp.ones(99)), "n_points must be an even integer"),
        (dict(u0=jnp.ones(6)), "u0 must have a last"),
        (dict(u0=jnp.ones(100), dt=0.0), "dt must be a finite number > 0"),
        (dict(u0=jnp.ones(100), length=-1.0), "length must be"),
        (dict(u0=jnp.ones(100).at[0].set(jnp.inf)), "u0 must be finite"),
        (dict(u0=jnp.ones(100), n_steps=15, save_every=10), "multiple of save_every"),
    ],
)
def test_bad_input_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kdv.solve(**kwargs)


def test_propagator_matches_solve():
    ic = kdv.two_soliton_initial_condition(jax.random.key(3))
    step = kdv.propagator(L, 100, 0.01, 50)
    np.testing.assert_allclose(step(ic.u0), kdv.solve(ic.u0, L, 0.01, 50, 50)[-1], atol=1e-6)
