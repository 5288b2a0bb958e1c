"""Surrogates: the LSTM against a hand-written reference, training, the cache and resuming,
SSP/LTP against a perfect model."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scoreda import cache as cache_lib
from scoreda.surrogates import data, evaluate, lstm, train
from scoreda.systems import lorenz96 as l96


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "cache"))


def reference_lstm(x, w_in, b_in, w_rec):
    """Plain NumPy LSTM over (T, F) with gates ordered i, f, g, o."""
    sig = lambda v: 1 / (1 + np.exp(-v))
    h = np.zeros(w_rec.shape[0])
    c = np.zeros_like(h)
    out = []
    for x_t in x:
        z = x_t @ w_in + b_in + h @ w_rec
        i, f, g, o = np.split(z, 4)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        out.append(h)
    return np.array(out)


@pytest.mark.slow
def test_lstm_layer_matches_the_textbook_recurrence():
    layer = lstm.LSTMLayer(3, 5, rngs=nnx.Rngs(0))
    layer.input_proj.bias[...] = jax.random.normal(jax.random.key(1), (20,))
    x = jax.random.normal(jax.random.key(2), (2, 7, 3))
    got = np.asarray(layer(x))
    w_in = np.asarray(layer.input_proj.kernel[...], np.float64)
    b_in = np.asarray(layer.input_proj.bias[...], np.float64)
    w_rec = np.asarray(layer.recurrent_proj.kernel[...], np.float64)
    for b in range(2):
        np.testing.assert_allclose(got[b], reference_lstm(np.asarray(x[b], np.float64), w_in, b_in, w_rec),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_well_posed_surrogate_starts_as_persistence_and_checks_its_input():
    model = lstm.create(lstm.LSTMConfig(d=6, window=4, hidden=8, layers=2, well_posed=True))
    hist = jax.random.normal(jax.random.key(0), (3, 4, 6))
    np.testing.assert_allclose(model(hist), hist[:, -1], atol=1e-6)
    with pytest.raises(ValueError, match=r"history must end in \(window, d\) = \(4, 6\)"):
        model(jnp.zeros((3, 5, 6)))
    with pytest.raises(ValueError, match=r"\(4, 6\)"):
        model(jnp.zeros((3, 4, 7)))


def test_windows_pair_each_history_with_the_next_state():
    traj = data.Trajectories(jnp.arange(2 * 6 * 1.0).reshape(2, 6, 1), jnp.arange(2 * 6 * 1.0).reshape(2, 6, 1))
    starts = data.window_starts(2, 6, 3)
    assert starts.shape == (6, 2)
    x, y, w = data.gather_windows(traj, starts, 3)
    np.testing.assert_array_equal(x[4, :, 0], [7, 8, 9])
    np.testing.assert_array_equal(y[4], [10])
    np.testing.assert_array_equal(w, 1.0)
    weighted = traj._replace(weights=10 * traj.targets)
    np.testing.assert_array_equal(data.gather_windows(weighted, starts, 3)[2][4], [100])
    with pytest.raises(ValueError, match="too short"):
        data.window_starts(2, 3, 3)


@pytest.mark.slow
def test_si_scenario_adds_noise_to_targets_only():
    traj = data.make_lorenz96(data.scenario("SI", n_trajectories=20, n_steps=50))
    noise = np.asarray(traj.targets - traj.inputs)
    assert abs(noise.std() - 0.2) < 0.01
    clean = data.make_lorenz96(data.scenario("SA", n_trajectories=20, n_steps=50))
    np.testing.assert_array_equal(traj.inputs, clean.inputs)
    with pytest.raises(ValueError, match="scenario must be one of"):
        data.scenario("XX")


SMALL_DATA = data.Lorenz96Data(n_trajectories=12, n_steps=300)
SMALL_MODEL = lstm.LSTMConfig(d=20, window=20, hidden=16, layers=1, well_posed=True)
SMALL_TRAIN = train.TrainConfig(epochs=4, batch_size=64, samples_per_epoch=8192, val_samples=512,
                                learning_rate=3e-3)


@pytest.mark.slow
def test_training_improves_on_persistence_and_the_cache_returns_the_same_model():
    first = train.train(SMALL_DATA, SMALL_MODEL, SMALL_TRAIN, progress=False)
    assert not first.loaded and len(first.history) == 4
    # single-step error on an unseen trajectory, against persistence on the same steps
    test = data.make_lorenz96(data.Lorenz96Data(n_trajectories=1, n_steps=300, seed=7)).inputs[0]
    ssp = evaluate.single_step(train.as_function(first.model), test, 20)
    ssp_mse = float(jnp.mean((ssp - test[20:]) ** 2))
    persistence = float(jnp.mean((test[19:-1] - test[20:]) ** 2))
    # Measured: 0.51 of persistence on this trajectory (0.39 and 0.28 on seeds 8 and 9);
    # persistence itself is 0.022. The upper bound 0.7 is about 1.4 times the measured
    # ratio. The lower one: four short epochs of a 16-unit LSTM cannot be near-perfect;
    # an error below a tenth of persistence's would point to the target leaking into the
    # input window.
    assert 0.1 * persistence < ssp_mse < 0.7 * persistence, (ssp_mse, persistence)
    traj = data.make_lorenz96(SMALL_DATA).inputs
    again = train.train(SMALL_DATA, SMALL_MODEL, SMALL_TRAIN, progress=False)
    assert again.loaded and again.history == first.history
    hist = traj[0, :20]
    np.testing.assert_array_equal(again.model(hist), first.model(hist))


@pytest.mark.slow
def test_trainings_of_one_setting_share_one_compilation(compilations, monkeypatch):
    monkeypatch.setattr(train, "_STEPS", {})  # nothing kept from other tests
    config = dataclasses.replace(SMALL_TRAIN, epochs=1)
    with compilations() as first:
        trained = train.train(SMALL_DATA, SMALL_MODEL, config, progress=False, cache=False)
    assert first["run_batches"] >= 1 and first["evaluate"] == 1, first
    # a second training and a warm-started retraining (same statistics): nothing compiled,
    # and the reused program gives bit for bit the parameters of the freshly compiled one
    with compilations() as again:
        second = train.train(SMALL_DATA, SMALL_MODEL, config, progress=False, cache=False)
        train.train(SMALL_DATA, SMALL_MODEL, config, progress=False, cache=False,
                    initial_model=trained.model)
    assert again["run_batches"] == 0 and again["evaluate"] == 0, again
    for a, b in zip(jax.tree.leaves(nnx.state(trained.model)), jax.tree.leaves(nnx.state(second.model))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_result(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "a"))
    whole = train.train(SMALL_DATA, SMALL_MODEL, SMALL_TRAIN, progress=False)
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "b"))
    part = train.train(SMALL_DATA, SMALL_MODEL, SMALL_TRAIN, progress=False, stop_after=2)
    assert len(part.history) == 2 and not (part.path / "done.json").exists()
    resumed = train.train(SMALL_DATA, SMALL_MODEL, SMALL_TRAIN, progress=False)
    assert not resumed.loaded and len(resumed.history) == 4
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in whole.history], rel=1e-5)


@pytest.mark.slow
def test_a_cache_entry_of_another_configuration_is_refused():
    result = train.train(SMALL_DATA, SMALL_MODEL, SMALL_TRAIN, progress=False)
    config_file = result.path / "config.json"
    stored = json.loads(config_file.read_text())
    stored["TrainConfig"]["epochs"] = 99
    config_file.write_text(json.dumps(stored))
    with pytest.raises(cache_lib.CacheMismatch, match="holds another configuration"):
        train.train(SMALL_DATA, SMALL_MODEL, SMALL_TRAIN, progress=False)


def test_a_surrogate_for_another_dimension_is_refused():
    with pytest.raises(ValueError, match=r"surrogate's d \(8\) differs from the data's d \(20\)"):
        train.train(SMALL_DATA, lstm.LSTMConfig(d=8), SMALL_TRAIN, progress=False)


@pytest.mark.slow
def test_ssp_and_ltp_of_a_perfect_model_are_exact():
    traj = l96.trajectory(l96.initial_states(jax.random.key(0), 10), 60, 0.004)
    perfect = lambda hist: l96.step(hist[:, -1], 0.004)
    ssp = evaluate.single_step(perfect, traj, 5)
    np.testing.assert_allclose(ssp, traj[5:], atol=1e-5)
    ltp = evaluate.long_term(perfect, traj[:5], 56)
    np.testing.assert_allclose(ltp, traj[5:], atol=1e-4)


@pytest.mark.slow
def test_deeponet_is_periodic_and_can_be_queried_off_the_grid():
    from scoreda.surrogates import deeponet

    cfg = deeponet.DeepONetConfig(d=16, length=8.0, window=3, hidden=8, basis=6, trunk_width=8,
                                  fourier_modes=4)
    model = deeponet.create(cfg)
    hist = jax.random.normal(jax.random.key(0), (2, 3, 16))
    on_grid = model(hist)
    assert on_grid.shape == (2, 16)
    np.testing.assert_allclose(model.query(hist, jnp.arange(16) * 0.5), on_grid, atol=1e-6)
    # periodic basis: x and x + L give the same prediction
    x = jnp.array([0.3, 2.7, 7.9])
    np.testing.assert_allclose(model.query(hist, x), model.query(hist, x + 8.0), atol=1e-5)
    with pytest.raises(ValueError, match=r"history must end in \(window, d\) = \(3, 16\)"):
        model(jnp.zeros((2, 4, 16)))


@pytest.mark.slow
def test_kdv_training_data_is_scaled_and_noisy_targets_only():
    cfg = data.kdv_scenario("noisy", n_trajectories=2, n_steps=4)
    traj = data.make(cfg)
    assert traj.inputs.shape == (2, 5, 100)
    # two solitons of speed 0.5..1 have height c/2 <= 0.5 (up to 1 where they overlap), x10
    assert 2.0 < float(traj.inputs[:, 0].max()) <= 10.5
    noise = np.asarray(traj.targets - traj.inputs)
    assert abs(noise.std() - 0.5) < 0.05
    with pytest.raises(ValueError, match="scenario must be one of"):
        data.kdv_scenario("big")


@pytest.mark.slow
def test_training_loop_takes_a_deeponet_on_kdv_data():
    from scoreda.surrogates import deeponet

    data_cfg = data.KdVData(n_trajectories=3, n_steps=40)
    model_cfg = deeponet.DeepONetConfig(window=5, hidden=16, basis=8, trunk_width=16, fourier_modes=4)
    result = train.train(data_cfg, model_cfg, train.TrainConfig(epochs=2, batch_size=32, samples_per_epoch=256,
                                                               val_samples=64), progress=False)
    assert len(result.history) == 2 and isinstance(result.model, deeponet.DeepONetSurrogate)
    # It learns: measured validation loss 1.066 after the first epoch, 0.896 after the second;
    # on an unseen trajectory its single-step error is 0.87 against 1.44 for a flat zero
    # field, a ratio of 0.60 (0.54 with training seed 1). The bound 0.85 is about 1.4 times
    # that. (It is still far behind persistence, 0.028: two epochs of 256 samples.)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"], result.history
    test = data.make(data.KdVData(n_trajectories=1, n_steps=40, seed=5)).inputs[0]
    ssp = evaluate.single_step(train.as_function(result.model), test, 5)
    mse = float(jnp.mean((ssp - test[5:]) ** 2))
    flat = float(jnp.mean(test[5:] ** 2))
    assert mse < 0.85 * flat, (mse, flat)


@pytest.mark.parametrize("field, value, message", [
    ("n_points", 101, "n_points must be an even integer"),
    ("length", -50.0, "length must be a finite number > 0"),
    ("dt", 0.0, "dt must be a finite number > 0"),
])
def test_kdv_data_configuration_is_checked_when_built(field, value, message):
    with pytest.raises(ValueError, match=message):
        data.KdVData(**{field: value})
