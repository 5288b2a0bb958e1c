"""Experiment helpers: the exact 2-D posterior and the twin builder."""

import jax
import numpy as np
import pytest

from scoreda.experiments import toy2d, twin


def test_grid_posterior_is_symmetric_bimodal_and_keeps_the_unobserved_prior():
    prob = toy2d.Bimodal(prior_mean=(0.0, 0.5), y=1.0, obs_std=0.1)
    (g1, g2), p = prob.grid_posterior()
    p1, p2 = p.sum(1), p.sum(0)
    # two modes near +-1, equal mass by symmetry of the prior in x1
    assert p1[g1 > 0].sum() == pytest.approx(0.5, abs=1e-6)
    assert abs(abs(g1[np.argmax(p1)]) - 1.0) < 0.05
    # x2 is untouched: N(0.5, 1)
    assert (g2 * p2).sum() == pytest.approx(0.5, abs=1e-6)
    assert ((g2 - 0.5) ** 2 * p2).sum() == pytest.approx(1.0, abs=2e-3)  # grid cut at 4 sd: -0.1 %


def test_wasserstein_of_exact_samples_is_small_and_of_shifted_ones_is_the_shift():
    g = np.linspace(-6, 6, 2001)
    dens = np.exp(-0.5 * g**2)
    z = np.asarray(jax.random.normal(jax.random.key(0), (20_000,)))
    assert toy2d.wasserstein1_to_marginal(z, g, dens) < 0.02
    assert toy2d.wasserstein1_to_marginal(z + 0.5, g, dens) == pytest.approx(0.5, abs=0.02)


def test_twin_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="burn_in"):
        twin.TwinConfig(n_cycles=10, burn_in=10)
    with pytest.raises(ValueError, match="obs must be one of"):
        twin.TwinConfig(obs="square")
    with pytest.raises(ValueError, match="d must be an integer >= 4"):
        twin.TwinConfig(d=3)
    for fraction in (0.0, 1.5, 0.01):  # 0.01 of 40 components observes none
        with pytest.raises(ValueError, match="observed_fraction"):
            twin.TwinConfig(observed_fraction=fraction)


@pytest.mark.slow
def test_partially_observed_twin_draws_a_new_half_each_cycle_and_keeps_full_twins_keys():
    full = twin.TwinConfig(d=10, n_cycles=50, burn_in=1)
    half = twin.TwinConfig(d=10, n_cycles=50, burn_in=1, observed_fraction=0.5)
    mask = np.asarray(twin.make_twin(half).observations.mask)
    assert np.all(mask.sum(axis=1) == 5)
    assert len({tuple(row) for row in mask}) > 40  # a new subset nearly every cycle
    # the truth is the same twin; the full twin's observations and cache key are unchanged
    np.testing.assert_array_equal(twin.make_twin(half).truth, twin.make_twin(full).truth)
    assert "observed_fraction" not in twin.case(full).cache_key
    assert "observed_fraction" in twin.case(half).cache_key


def test_twin_truth_follows_the_model_between_cycles():
    cfg = twin.TwinConfig(d=10, dt=0.01, steps_per_cycle=5, n_cycles=6, burn_in=1)
    built = twin.make_twin(cfg)
    nxt = built.model(built.truth[2], None)
    np.testing.assert_allclose(nxt, built.truth[3], rtol=1e-5, atol=1e-5)
    assert built.truth.shape == (6, 10) and built.ensemble0.shape == (20, 10)


@pytest.mark.slow
def test_rollout_truth_respects_the_window_and_observed_count():
    from scoreda.experiments import kdv as kdv_exp
    from scoreda.experiments import lorenz96 as l96_exp

    cfg = l96_exp.DAConfig(observation="partial", n_observed=5, n_steps=60)
    truth = l96_exp.make_truth(cfg, 0)
    assert truth.states.shape == (61, 20)
    observed = np.asarray(truth.observations.observed)
    assert not observed[:20].any() and observed[20:35].all()
    assert (np.asarray(truth.observations.mask)[20:35].sum(1) == 5).all()
    with pytest.raises(ValueError, match="n_observed must be <= d = 20"):
        l96_exp.make_truth(l96_exp.DAConfig(observation="partial", n_observed=21, n_steps=60), 0)
    k_truth = kdv_exp.make_truth(kdv_exp.DAConfig(n_steps=10), 0)
    assert k_truth.states.shape == (11, 100)
    assert not np.asarray(k_truth.observations.observed)[:5].any()


@pytest.mark.slow
def test_spin_up_starts_the_test_trajectory_later_on_the_same_path():
    """A spun-up truth is the tail of the longer trajectory from the same draw, and after the
    Lorenz-96 transient (~500 steps of 0.004 from the uniform start in [7, 9]) it has the
    attractor's mean square (18.7 at F = 8) instead of the start's (~64)."""
    from scoreda.experiments import lorenz96 as l96_exp

    long = l96_exp.make_truth(l96_exp.DAConfig(n_steps=160), 3).states
    late = l96_exp.make_truth(l96_exp.DAConfig(n_steps=100, spin_up=60), 3)
    np.testing.assert_allclose(late.states, long[60:], rtol=1e-6, atol=1e-5)
    assert not np.asarray(late.observations.observed)[:20].any()  # schedule from the window
    settled = [float(np.mean(np.asarray(
        l96_exp.make_truth(l96_exp.DAConfig(n_steps=25, spin_up=1000), s).states) ** 2))
        for s in range(8)]
    assert abs(np.mean(settled) - 18.7) < 3.0
    start = np.asarray(l96_exp.make_truth(l96_exp.DAConfig(n_steps=25), 0).states[0])
    assert 7.0 <= start.min() and start.max() <= 9.0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="spin_up must be an integer >= 0"):
            l96_exp.DAConfig(spin_up=bad)


@pytest.mark.slow
def test_true_model_rows_follow_the_truth():
    from scoreda.experiments import kdv as kdv_exp

    truth = kdv_exp.make_truth(kdv_exp.DAConfig(n_steps=8), 1).states
    model, args, predict = kdv_exp.true_model()
    np.testing.assert_allclose(model(truth[:5], None), truth[5], atol=1e-4)
    np.testing.assert_allclose(predict(truth[None, :5])[0], truth[5], atol=1e-4)


def test_paper_methods_are_the_papers_settings_and_the_tuned_baselines():
    """Chapters 4 and 5's methods: the authors' EnKF has model error sqrt(0.1^2 + SSP MSE)
    (Tang et al. 2026) and fills unobserved components; the authors' EnSF is their code's
    setting; a Kalman filter gets a radius axis only where it localises; every tuned method
    (EnSF too) is offered the model error and widens alike; and the cost estimate prices
    exactly these methods."""
    from scoreda.experiments import cost, rollout

    grids = dict(eps_b_grid=(0.01, 0.05), inflation_grid=(1.0, 1.1), radius_grid=(4.0, 8.0),
                 model_error_grid=(0.0, 0.1, 0.2))
    methods = rollout.paper_methods(0.0525, ensf_steps=50, kalman=("EnKF", "LETKF", "IEnKF"),
                                    with_authors=True, widen=2, **grids)
    assert [m.label for m in methods] == ["EnSF", "EnSF (authors' setting)", "EnKF (paper)",
                                          "EnKF", "LETKF", "IEnKF"]
    tuned_ensf, authors, paper_enkf, enkf, letkf, ienkf = methods
    assert paper_enkf.knobs == {"init_std": 10.0, "model_error": pytest.approx(0.25)}  # sqrt(0.01 + 0.0525)
    assert paper_enkf.wrap is rollout.fill_device and paper_enkf.grid == {}
    assert authors.knobs == rollout.AUTHORS_ENSF and authors.knobs["n_steps"] == 500
    assert tuned_ensf.knobs == {"n_steps": 50} and tuned_ensf.widen == 2
    assert tuned_ensf.grid == {"eps_b": (0.01, 0.05), "model_error": (0.0, 0.1, 0.2)}
    assert list(enkf.grid) == ["inflation", "model_error"]
    assert list(letkf.grid) == list(ienkf.grid) == ["inflation", "radius", "model_error"]
    assert enkf.widen == letkf.widen == 2
    assert [m.label for m in rollout.paper_methods(0.0, ensf_steps=50, **grids)] == [
        "EnSF", "EnKF (paper)", "LETKF"]
    with pytest.raises(ValueError, match="ssp_mse"):
        rollout.paper_methods(-1.0, ensf_steps=50, **grids)
    with pytest.raises(ValueError, match="twice"):
        rollout.paper_methods(0.0, ensf_steps=50, kalman=("LETKF", "LETKF"), **grids)
    # the estimate's view: LETKF priced at its largest radius, one compiled group per radius
    assert cost.method_work(letkf) == cost.MethodWork("LETKF", (("radius", 8.0),), 12, 2)
    assert cost.method_work(enkf) == cost.MethodWork("EnKF", (), 6, 1)
    assert cost.method_work(paper_enkf) == cost.MethodWork("EnKF", (), 0, 1)
    assert cost.method_work(authors) == cost.MethodWork(
        "EnSF", (("n_steps", 500), ("integrator", "euler")), 0, 1)
    assert cost.method_work(tuned_ensf) == cost.MethodWork(
        "EnSF", (("n_steps", 50), ("integrator", "exponential")), 6, 1)


def test_a_forecast_that_blew_up_is_not_valid():
    """valid_steps counts the steps before the normalised RMSE first exceeds the threshold;
    a NaN or infinite forecast ends the valid time there, it does not extend it."""
    from scoreda.surrogates import evaluate

    truth = np.zeros((3, 4, 2))
    forecast = truth.copy()
    forecast[0, 2:] = 1.0           # error 1 > 0.5 from step 2
    forecast[1, 1:] = np.nan        # blew up at step 1
    forecast[2, 3] = np.inf         # blew up at step 3
    np.testing.assert_array_equal(evaluate.valid_steps(forecast, truth, 1.0), [2, 1, 3])
    np.testing.assert_array_equal(evaluate.valid_steps(truth, truth, 1.0), [4, 4, 4])
