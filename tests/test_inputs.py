"""Bad inputs are refused early and by name; nothing is accepted silently.

Each case was once accepted silently or crashed deep inside JAX (a probe of 160 bad
inputs); the test pins the refusal and the words that name the culprit.
"""

import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda import _checks, assimilate, metrics, observe
from scoreda.filters import ensf, gaussian_score, kalman, localisation, regression
from scoreda.systems import kdv
from scoreda.systems import lorenz96 as l96

KEY = jax.random.key(0)
D, N, T = 8, 10, 10
STEP = assimilate.deterministic(partial(l96.step, dt=0.05, forcing=8.0))
ETKF = partial(kalman.etkf, inflation=1.0)


@pytest.fixture(scope="module")
def twin():
    truth = l96.trajectory(l96.initial_states(KEY, D), T - 1, 0.05)
    obs = observe.observe(jax.random.key(1), truth, "identity", 1.0)
    ens0 = truth[0] + jax.random.normal(jax.random.key(2), (N, D))
    return truth, obs, ens0


def _refused(match, fn, error=ValueError):
    with pytest.raises(error, match=match):
        fn()


# ---- observations, metrics -------------------------------------------------------------------


def test_fixed_mask_refuses_float_indices():
    _refused("indices must be integers", lambda: observe.fixed_mask(8, [1.7, 2.2]))
    np.testing.assert_array_equal(np.flatnonzero(observe.fixed_mask(8, np.array([1, 2]))), [1, 2])


def test_float_masks_are_refused_where_they_would_become_all_true(twin):
    truth, _, ens0 = twin
    half = jnp.full(D, 0.5)
    _refused("mask must be a boolean", lambda: observe.observe(KEY, truth, mask=half))
    _refused("mask must be a boolean", lambda: kalman.etkf(KEY, ens0, truth[0], 1.0, mask=half))
    _refused("mask must be a boolean", lambda: ensf.analysis(KEY, ens0, truth[0], 1.0, mask=half))
    _refused("mask must be a boolean",
             lambda: regression.spread_increments(ens0, ens0, half))


def test_scores_refuse_a_truth_that_would_broadcast_into_more_pairs():
    _refused("does not match the estimate", lambda: metrics.rmse(jnp.ones((8, 1)), jnp.ones(8)))
    _refused("does not match the estimate", lambda: metrics.rmse(jnp.ones(8), jnp.ones((8, 1))))
    _refused("does not match the ensemble",
             lambda: metrics.crps(jnp.ones((5, 3, 4)), jnp.ones((2, 4))))
    # a single truth against a time series of estimates is a genuine broadcast: accepted
    np.testing.assert_allclose(metrics.rmse(jnp.zeros((3, 4)), jnp.full(4, 2.0)), [2.0] * 3)


def test_rank_histogram_refuses_a_nan_truth():
    _refused("truth must be finite", lambda: metrics.rank_histogram(jnp.ones((3, 4)),
                                                                    jnp.full(4, jnp.nan)))


# ---- filters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [kalman.etkf, kalman.enkf, kalman.letkf, gaussian_score.analysis])
def test_inflation_below_one_is_said_aloud_and_non_positive_refused(twin, fn):
    truth, _, ens0 = twin
    with pytest.warns(_checks.Deflation, match="inflation 0.5 < 1 shrinks"):
        fn(KEY, ens0, truth[0], 1.0, inflation=0.5)
    _refused("inflation must be a finite number > 0",
             lambda: fn(KEY, ens0, truth[0], 1.0, inflation=0.0))


def test_letkf_refuses_nan_or_negative_distances_and_takes_inf_as_never(twin):
    truth, _, ens0 = twin
    for bad in (jnp.full((D, D), jnp.nan), -jnp.ones((D, D))):
        _refused("distances must be >= 0 everywhere",
                 lambda: kalman.letkf(KEY, ens0, truth[0], 1.0, distances=bad))
    # two blocks that never interact: the analysis of one ignores the other's observations
    ring = localisation.periodic_distances(D)
    blocks = np.where((np.arange(D)[:, None] < 4) == (np.arange(D)[None, :] < 4), ring, np.inf)
    mask = jnp.arange(D) >= 4  # only the second block is observed
    out = kalman.letkf(KEY, ens0, truth[0], 1.0, mask=mask, distances=blocks)
    np.testing.assert_allclose(out[:, :4], ens0[:, :4], atol=1e-5)
    assert float(jnp.max(jnp.abs(out[:, 4:] - ens0[:, 4:]))) > 0.1


def test_ensf_refuses_an_obs_std_whose_precision_overflows(twin):
    truth, _, ens0 = twin
    _refused("too small for float32", lambda: ensf.analysis(KEY, ens0, truth[0], 1e-19))
    # the smallest accepted value gives a finite analysis
    assert np.all(np.isfinite(ensf.analysis(KEY, ens0, truth[0], 1e-15)))


def test_ensf_runs_a_float32_ensemble_under_x64_with_float64_observations(twin, x64):
    truth, _, ens0 = twin
    out = ensf.analysis(KEY, ens0.astype(jnp.float32), truth[0].astype(jnp.float64),
                        jnp.float64(0.5), n_steps=20)
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out))


# ---- systems ---------------------------------------------------------------------------------


def test_lorenz96_refuses_nan_forcing_and_reports_a_blow_up():
    x0 = l96.initial_states(KEY, D)
    _refused("forcing must be a finite number", lambda: l96.trajectory(x0, 3, 0.05, forcing=np.nan))
    _refused("blew up.*dt = 1.0", lambda: l96.trajectory(x0, 200, 1.0), FloatingPointError)
    assert np.all(np.isfinite(l96.trajectory(x0, 200, 0.05)))


def test_kdv_reports_a_blow_up():
    u0 = kdv.two_soliton_initial_condition(KEY).u0
    _refused("KdV solve blew up.*dt = 0.5",
             lambda: kdv.solve(u0, dt=0.5, n_steps=200, save_every=50), FloatingPointError)


# ---- the cycling driver's contract ------------------------------------------------------------


def _cycle(twin, **change):
    truth, obs, ens0 = twin
    args = dict(key=KEY, model=STEP, filter=ETKF, truth=truth, observations=obs, ensemble0=ens0)
    args.update(change)
    return assimilate.cycle(**args)


@pytest.mark.parametrize("change, error, match", [
    (lambda t, o, e: {"observations": o._replace(std=jnp.float32(-1.0))}, ValueError,
     "observations.std must be finite and > 0"),
    (lambda t, o, e: {"observations": o._replace(std=jnp.ones(D))}, ValueError,
     "observations.std must be one number"),
    (lambda t, o, e: {"truth": t[:0], "observations": o._replace(
        values=o.values[:0], mask=o.mask[:0], observed=o.observed[:0])}, ValueError,
     "at least one step"),
    (lambda t, o, e: {"model": lambda m, key: m[:4]}, ValueError,
     r"model must return the next state of shape \(8,\)"),
    (lambda t, o, e: {"ensemble0": jnp.stack([e] * 3, axis=1)}, ValueError,
     "maps a window"),
    (lambda t, o, e: {"observations": tuple(o)}, TypeError, "must be a scoreda.observe.Observations"),
    (lambda t, o, e: {"key": 0}, ValueError, "key must be one PRNG key"),
    (lambda t, o, e: {"truth": t.at[3, 5].set(jnp.nan)}, ValueError,
     r"truth is not finite at index \(3, 5\)"),
    (lambda t, o, e: {"observations": o._replace(values=o.values.at[3, 2].set(jnp.nan))},
     ValueError, r"observations.values is not finite at index \(3, 2\).*where observed"),
    (lambda t, o, e: {"filter": lambda key, ens, y, s: ens}, TypeError,
     "filter\\(key, ensemble, y, obs_std, mask=mask"),
    (lambda t, o, e: {"filter": lambda key, ens, y, s, mask=None: ens[:2]}, ValueError,
     r"filter must return the analysis ensemble of shape \(10, 8\)"),
    (lambda t, o, e: {"observations": o._replace(mask=o.mask.astype(jnp.float32))}, ValueError,
     "observations.mask must be a boolean"),
])
def test_cycle_names_what_breaks_its_contract(twin, change, error, match):
    _refused(match, lambda: _cycle(twin, **change(*twin)), error)


def test_cycle_runs_the_filters_own_value_checks_before_compiling(twin):
    truth, obs, ens0 = twin
    _refused("obs_std=1e-19 is too small for float32", lambda: _cycle(
        twin, filter=partial(ensf.analysis, n_steps=5), observations=obs._replace(
            std=jnp.float32(1e-19))))
    _refused("inflation must be a finite number > 0", lambda: _cycle(
        twin, filter=kalman.etkf, filter_kwargs={"inflation": jnp.float32(0.0)}))
    batch = lambda a: jnp.stack([a, a, a])
    inflations = jnp.array([1.0, 1.1, 0.0], jnp.float32)  # one bad cycle of three
    _refused("inflation must be a finite number > 0", lambda: assimilate.cycle_batch(
        KEY, STEP, kalman.etkf, batch(truth), jax.tree.map(batch, obs), batch(ens0),
        filter_kwargs={"inflation": inflations}))


def test_a_failing_model_keeps_its_exception_type_and_says_where(twin):
    def broken(member, key):
        raise ValueError("bad member")

    _refused(r"model\(member, key, \*model_args\) failed on a member of shape \(8,\).*bad member",
             lambda: _cycle(twin, model=broken))


def test_late_rmse_takes_a_fraction(twin):
    result = _cycle(twin)
    assert result.late_rmse(1.0) == pytest.approx(float(np.mean(result.analysis_rmse)))
    _refused("last must lie in", lambda: result.late_rmse(1.5))


def test_cycle_ignores_nan_where_unobserved(twin):
    truth, obs, ens0 = twin
    clean = _cycle(twin)
    holes = obs._replace(mask=obs.mask.at[3, 2].set(False))
    with_nan = holes._replace(values=holes.values.at[3, 2].set(jnp.nan))
    np.testing.assert_array_equal(_cycle(twin, observations=with_nan).analysis_rmse,
                                  _cycle(twin, observations=holes).analysis_rmse)
    assert np.all(np.isfinite(clean.analysis_rmse))


@pytest.mark.slow
def test_cycle_batch_names_what_breaks_its_contract(twin):
    truth, obs, ens0 = twin
    batch = lambda a: jnp.stack([a, a])
    obs_b = jax.tree.map(batch, obs)
    args = (STEP, ETKF, batch(truth), obs_b, batch(ens0))
    _refused("key must be one PRNG key or B = 2", lambda: assimilate.cycle_batch(
        jax.random.split(KEY, 3), *args))
    _refused(r"model must return the next state", lambda: assimilate.cycle_batch(
        KEY, lambda m, k: m[:3], *args[1:]))
    _refused(r"truth is not finite at index \(1, 4, 0\)", lambda: assimilate.cycle_batch(
        KEY, STEP, ETKF, batch(truth).at[1, 4, 0].set(jnp.inf), obs_b, batch(ens0)))
    out = assimilate.cycle_batch(KEY, *args)
    assert out.analysis_rmse.shape == (2, T) and np.all(np.isfinite(out.analysis_rmse))


def test_cycle_warns_when_the_filter_lost_track_of_a_bounded_system(twin):
    truth, obs, ens0 = twin
    # no observation reaches the ensemble: it runs free from the wrong attractor state, bounded
    # (no divergence) yet worse than the climatological mean
    far = l96.trajectory(l96.initial_states(jax.random.key(9), D), 2000, 0.05,
                         save_every=2000)[-1]
    free = ens0 - truth[0] + far
    never = jnp.zeros(T, bool)
    with pytest.warns(assimilate.LostTrack, match="lost track"):
        result = _cycle(twin, ensemble0=free, schedule=never, climate_std=1.0)
    assert result.diverged_step == -1 and result.late_rmse() > 1.0
    assert result.lost_track(1.0) and not result.lost_track(1e3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", assimilate.LostTrack)
        tracked = _cycle(twin, climate_std=3.6)  # the filter follows: no warning
    assert tracked.late_rmse() < 3.6


def test_configurations_refuse_a_nan_forcing_when_built():
    from scoreda.experiments.twin import TwinConfig
    from scoreda.surrogates.data import Lorenz96Data

    _refused("forcing must be a finite number", lambda: TwinConfig(forcing=float("nan")))
    _refused("forcing must be a finite number", lambda: Lorenz96Data(forcing=float("inf")))


def test_a_tuning_grid_with_deflation_is_checked_without_a_warning(twin):
    # the harness's grids may hold inflation < 1 (chapter 8's EnSF-G): the contract check of
    # cycle_batch must not warn for them (the cycle itself traces the knob and never does)
    truth, obs, ens0 = twin
    batch = lambda a: jnp.stack([a, a])
    with warnings.catch_warnings():
        warnings.simplefilter("error", _checks.Deflation)
        out = assimilate.cycle_batch(KEY, STEP, kalman.etkf, batch(truth), jax.tree.map(batch, obs),
                                     batch(ens0), filter_kwargs={"inflation": jnp.array([0.96, 1.0])})
    assert np.all(np.isfinite(out.analysis_rmse))
