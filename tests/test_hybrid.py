"""DA inside training (scoreda.experiments.hybrid) and what it needs: the periodic convolutional
surrogate, weighted targets, warm starts, valid times, and a resumable loop."""

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scoreda.experiments import hybrid
from scoreda.surrogates import conv, data, train
from scoreda.systems import lorenz96 as l96


def test_circular_conv_is_the_periodic_stencil_sum():
    layer = conv.CircularConv(3, 2, 5, rngs=nnx.Rngs(0))
    h = np.asarray(jax.random.normal(jax.random.key(1), (2, 7, 3)))
    w = np.asarray(layer.linear.kernel[...]).reshape(5, 3, 2)  # (shift, in, out)
    b = np.asarray(layer.linear.bias[...])
    expected = np.zeros((2, 7, 2)) + b
    for i in range(7):
        for j, s in enumerate(range(-2, 3)):
            expected[:, i] += h[:, (i + s) % 7] @ w[j]
    np.testing.assert_allclose(layer(jnp.asarray(h)), expected, rtol=1e-5, atol=1e-5)


def test_conv_surrogate_commutes_with_cyclic_shifts_and_starts_as_persistence():
    model = conv.create(conv.ConvConfig(d=12, window=2))
    x = 3 * jax.random.normal(jax.random.key(0), (4, 2, 12)) + 2
    np.testing.assert_array_equal(model(x), x[:, -1])  # persistence before training
    trained = train.train(data.Lorenz96Data(n_trajectories=4, n_steps=100, dt=0.05, d=12),
                          conv.ConvConfig(d=12, window=2),
                          train.TrainConfig(epochs=1, batch_size=32, samples_per_epoch=256),
                          cache=False, progress=False).model
    np.testing.assert_allclose(jnp.roll(trained(x), 5, axis=-1), trained(jnp.roll(x, 5, axis=-1)),
                               atol=1e-5)
    with pytest.raises(ValueError, match="channels must be even"):
        conv.ConvConfig(channels=5)


@pytest.mark.slow
def test_zero_weights_hide_corrupted_targets():
    """Half of the target entries are wrong by a large offset; weighting them zero recovers
    the fit to clean data, weighting all equally does not."""
    cfg = data.Lorenz96Data(n_trajectories=8, n_steps=300, dt=0.05, d=16)
    clean = data.make(cfg)
    bad = jax.random.bernoulli(jax.random.key(3), 0.5, clean.targets.shape)
    corrupted = jnp.where(bad, clean.targets + 5.0, clean.targets)
    model_cfg = conv.ConvConfig(d=16, channels=16, layers=2)
    tc = train.TrainConfig(epochs=6, batch_size=64, samples_per_epoch=4096, learning_rate=3e-3)
    errors = {}
    for name, weights in {"weighted": (~bad).astype(jnp.float32), "unweighted": None}.items():
        trajectories = data.Trajectories(clean.inputs, corrupted, weights)
        model = train.train(cfg, model_cfg, tc, trajectories=trajectories, cache=False,
                            progress=False).model
        x = clean.inputs[:, :-1].reshape(-1, 1, 16)
        errors[name] = float(jnp.sqrt(jnp.mean((model(x) - clean.inputs[:, 1:].reshape(-1, 16)) ** 2)))
    assert errors["weighted"] < 0.3 < 2.0 < errors["unweighted"], errors


@pytest.mark.slow
def test_warm_start_begins_at_the_given_model_and_is_keyed_by_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    cfg = data.Lorenz96Data(n_trajectories=3, n_steps=100, dt=0.05, d=8)
    model_cfg = conv.ConvConfig(d=8, channels=8, layers=1)
    tc = train.TrainConfig(epochs=1, batch_size=16, samples_per_epoch=64)
    first = train.train(cfg, model_cfg, tc, progress=False)
    frozen = train.TrainConfig(epochs=1, batch_size=16, samples_per_epoch=64, learning_rate=1e-30)
    warm = train.train(cfg, model_cfg, frozen, initial_model=first.model, progress=False)
    x = jax.random.normal(jax.random.key(0), (5, 1, 8)) * 3
    np.testing.assert_allclose(warm.model(x), first.model(x), rtol=1e-6)
    cold = train.train(cfg, model_cfg, frozen, progress=False)
    assert warm.path != cold.path
    assert not np.allclose(cold.model(x), first.model(x))
    with pytest.raises(ValueError, match="architecture"):
        train.train(cfg, conv.ConvConfig(d=8, channels=4, layers=1), tc,
                    initial_model=first.model, progress=False)


def test_interpolation_in_time_is_exact_on_linear_signals():
    t = np.arange(10.0)
    values = np.stack([2 * t + 1, -t], axis=1)
    mask = np.zeros((10, 2), bool)
    mask[[1, 4, 8], 0] = True
    mask[[0, 9], 1] = True
    filled = hybrid.interpolate_in_time(np.where(mask, values, 0.0), mask)
    np.testing.assert_allclose(filled[1:9, 0], values[1:9, 0])
    assert filled[0, 0] == values[1, 0] and filled[9, 0] == values[8, 0]  # constant at the ends
    np.testing.assert_allclose(filled[:, 1], values[:, 1])
    with pytest.raises(ValueError, match="never observed"):
        hybrid.interpolate_in_time(values, np.zeros((10, 2), bool))


def test_arctan_observations_are_inverted():
    x = jnp.linspace(-12, 12, 49)
    np.testing.assert_allclose(hybrid.invert(hybrid.PAPER, jnp.arctan(x)), x, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_valid_time_of_the_true_model_is_the_horizon_and_of_persistence_short():
    setting = hybrid.BRAJARD2020
    exact = lambda h: jax.vmap(lambda s: l96.step(s, setting.dt))(h[:, -1])
    times = hybrid.valid_times(exact, setting, 1, n_starts=8, horizon=3.0)
    np.testing.assert_array_equal(times, 3.0)
    persistence = hybrid.valid_times(lambda h: h[:, -1], setting, 1, n_starts=8, horizon=3.0)
    assert 0 < persistence.mean() < 0.5
    assert hybrid.one_step_rmse(exact, setting, 1, n_starts=4, n_steps=5) < 1e-5


def test_bad_settings_and_filters_are_refused():
    with pytest.raises(ValueError, match="n_observed"):
        hybrid.Setting("x", d=10, dt=0.05, obs="identity", obs_std=1.0, n_observed=11)
    with pytest.raises(ValueError, match="filter must be one of"):
        hybrid.make_filter("PF", "identity", hybrid.config_for(hybrid.PAPER))
    with pytest.raises(ValueError, match="surrogate's d"):
        hybrid.run(hybrid.PAPER, hybrid.config_for(hybrid.BRAJARD2020), "EnSF", progress=False)


def _small_loop():
    setting = hybrid.Setting("tiny", d=12, dt=0.05, obs="identity", obs_std=1.0, n_observed=6)
    tc = train.TrainConfig(epochs=2, batch_size=32, samples_per_epoch=512, patience=2)
    config = hybrid.config_for(setting, n_steps=200, n_segments=4, n_iterations=2, n_members=10,
                               surrogate=conv.ConvConfig(d=12, channels=8, layers=2),
                               initial_training=tc, retraining=tc)
    return setting, config


@pytest.mark.slow
def test_loop_resumes_an_interrupted_run_to_the_same_records(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    monkeypatch.setattr(hybrid, "scores", lambda model, setting, **kw: {
        "one_step_rmse": hybrid.one_step_rmse(train.as_function(model), setting, 1, n_starts=4,
                                              n_steps=5)})
    setting, config = _small_loop()
    full = hybrid.run(setting, config, "ETKF", progress=False)
    assert [r["iteration"] for r in full.records] == [0, 1, 2]
    assert full.analysis_rmse.shape == (3, 200)
    # interrupt after iteration 1's analysis: its scores and everything later are lost
    for name in ["iteration_1.json", "iteration_2.json", "iteration_2.npz"]:
        (full.path / name).unlink()
    resumed = hybrid.run(setting, config, "ETKF", progress=False)
    assert resumed.records == full.records
    np.testing.assert_array_equal(resumed.analysis_rmse, full.analysis_rmse)
    stored = json.loads((full.path / "iteration_2.json").read_text())
    assert stored == full.records[2]


def test_analysis_weights_have_mean_one_and_favour_confident_entries():
    _, config = _small_loop()
    var = np.tile(np.array([0.01, 1.0]), (200, 6))
    result = hybrid.assimilate.CycleResult(*[None] * len(hybrid.assimilate.CycleResult._fields))._replace(
        analysis_mean=np.ones((200, 12)), analysis_variance=var)
    traj = hybrid.analysis_trajectories(result, config, 1)
    assert traj.weights.shape == (4, 50, 12)
    np.testing.assert_allclose(float(traj.weights.mean()), 1.0, rtol=1e-6)
    ratio = float(traj.weights[0, 0, 0] / traj.weights[0, 0, 1])
    np.testing.assert_allclose(ratio, (1.0 + 0.25) / (0.01 + 0.25), rtol=1e-5)


@pytest.mark.parametrize("field, value, message", [
    ("eps_a", 5.0, "eps_a must lie in (0, 1]"),
    ("eps_b", 1.0, "eps_b must lie in [0, 1)"),
    ("inflation", 0.0, "inflation must be a finite number > 0"),
    ("radius", -1.0, "radius must be a finite number > 0"),
])
def test_loop_configuration_is_checked_when_built(field, value, message):
    # refused at construction, before any training or cache entry
    with pytest.raises(ValueError, match=re.escape(message)):
        hybrid.config_for(hybrid.PAPER, **{field: value})


def test_target_weights_are_inverse_variance_with_mean_one_and_zero_without_an_analysis():
    """v = (0, 0.75, NaN) with floor 0.25: raw weights (4, 1, 0), mean 5/3, so (2.4, 0.6, 0)."""
    w = hybrid.target_weights(np.array([0.0, 0.75, np.nan]), 0.25)
    np.testing.assert_allclose(w, [2.4, 0.6, 0.0], rtol=1e-12)
    grid = hybrid.target_weights(np.full((3, 4), 2.0), 1.0)  # equal variances: all ones
    np.testing.assert_allclose(grid, np.ones((3, 4)))
    for bad, floor, match in [([1.0, -0.1], 0.25, ">= 0"), ([np.nan, np.nan], 0.25, "all NaN"),
                              ([1.0], 0.0, "floor")]:
        with pytest.raises(ValueError, match=match):
            hybrid.target_weights(np.array(bad), floor)
