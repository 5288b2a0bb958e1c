"""CONTRIBUTING.md's three recipes, each followed once: a toy filter registered and tuned by
the harness, a toy system whose truth the exact model and a registry filter track, and a
toy chapter run by the command line's machinery in a temporary tree."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda import chapters, runs
from scoreda.experiments import compare, rollout, twin
from scoreda.filters import registry
from scoreda.surrogates import data, evaluate, lstm, train


# --- recipe 1: a filter ---------------------------------------------------------------------

def nudge(key, ensemble, y, obs_std, *, obs, mask=None, gain=0.5):
    """Every member moved a fraction ``gain`` of the way to the observation, where observed
    (identity ``h`` only): x_a = x_f + gain (y - x_f). Shapes: ensemble (N, d), y (d,)."""
    del key, obs_std
    if obs != "identity":
        raise ValueError(f"nudge observes the state itself; got obs={obs!r}")
    observed = jnp.ones(ensemble.shape[-1], bool) if mask is None else mask
    return jnp.where(observed, ensemble + gain * (y - ensemble), ensemble)


def _check_nudge(gain):
    if not 0.0 <= float(gain) <= 1.0:
        raise ValueError(f"gain must be in [0, 1], got {gain}")


@pytest.mark.slow
def test_recipe_a_filter_in_one_file_and_a_registry_row(monkeypatch):
    """Registered like the package's own filters, the toy is tuned by the harness over its
    grid and compared with the ETKF on the same twins. On a fully observed linear twin a
    nudge keeps the error below the observation noise (std 1) but, blind to the forecast's
    uncertainty, above the tuned ETKF's: the ranking the theory predicts."""
    monkeypatch.setitem(registry.FILTERS, "Nudge", registry.FilterSpec(
        nudge, {"gain": 0.5}, {"gain": (0.3, 0.5, 0.7)}, "nudging towards the observation",
        check=_check_nudge))
    with pytest.raises(ValueError, match="gain must be in"):
        registry.get("Nudge").check_knobs({"gain": 1.5})
    config = twin.TwinConfig(d=40, n_members=20, n_cycles=80, burn_in=30, obs="identity",
                             obs_std=1.0, dt=0.05)
    methods = [compare.Method("ETKF", "ETKF", grid={"inflation": (1.02, 1.05, 1.1)}),
               compare.Method("Nudge", "Nudge", grid={"gain": (0.1, 0.3, 0.5)})]
    result = compare.compare(twin.case(config, "recipe twin"), methods, tuning_seeds=[101],
                             evaluation_seeds=[0, 1, 2], cache=False, progress=False)
    etkf, toy = result.results["ETKF"].mean_rmse, result.results["Nudge"].mean_rmse
    print(f"ETKF {etkf:.3f}, nudge {toy:.3f} (gain {result.results['Nudge'].knobs['gain']})")
    assert etkf < toy < 1.0, (etkf, toy)


# --- recipe 2: a system ---------------------------------------------------------------------

ANGLE = 0.1  # radians per step of the toy rotation


def _rotate(x):
    """Two planes, each rotated by ANGLE: x (4,) -> x (4,); the norm of each pair is kept."""
    c, s = jnp.cos(ANGLE), jnp.sin(ANGLE)
    pairs = x.reshape(2, 2)
    return jnp.stack([c * pairs[:, 0] - s * pairs[:, 1], s * pairs[:, 0] + c * pairs[:, 1]],
                     axis=1).reshape(4)


def _states(key, n_steps):
    """A test trajectory: a standard-normal start and n_steps rotations, (n_steps + 1, 4)."""
    x0 = jax.random.normal(key, (4,))
    _, later = jax.lax.scan(lambda x, _: (_rotate(x), _rotate(x)), x0, None, length=n_steps)
    return jnp.concatenate([x0[None], later])


@pytest.mark.slow
def test_recipe_a_system_as_a_case_of_the_harness():
    """A rotation in two planes, declared as ``rollout.System``, observed through arctan with
    noise 0.01 in the paper's 15-on / 5-off cycle: the exact model with the ETKF keeps the
    analysis error near the observation noise seen through arctan's slope, while the
    initial ensemble's error (std 1) would persist without the observations."""
    system = rollout.System("rotation", d=4, window=2, make_states=_states, true_step=_rotate)
    truth = rollout.make_truth(system, rollout.DAConfig(n_steps=30, n_members=10), 0)
    assert truth.states.shape == (31, 4)
    norms = np.linalg.norm(np.asarray(truth.states).reshape(31, 2, 2), axis=2)
    np.testing.assert_allclose(norms, norms[:1].repeat(31, 0), rtol=1e-5)  # rotations keep norms
    model, args, _ = rollout.true_model(system)
    case = rollout.case(system, model, args, rollout.DAConfig(n_steps=60, n_members=10),
                        name="rotation", model_key="exact rotation", burn_in=20)
    result = compare.compare(case, [compare.Method("ETKF", "ETKF", grid={"inflation": (1.0, 1.05)})],
                             tuning_seeds=[99], evaluation_seeds=[0, 1], cache=False, progress=False)
    print(f"rotation: ETKF {result.results['ETKF'].mean_rmse:.4f}")
    assert result.results["ETKF"].mean_rmse < 0.1


@dataclasses.dataclass(frozen=True)
class RotationData:
    """The toy system's training set, declared as a data configuration: its fields key the
    training cache and ``make()`` builds the trajectories (recipe 2, step 3)."""

    n_trajectories: int = 64
    n_steps: int = 40
    d: int = 4
    seed: int = 0

    def make(self):
        keys = jax.random.split(jax.random.key(self.seed), self.n_trajectories)
        states = jax.vmap(lambda k: _states(k, self.n_steps))(keys)
        return data.Trajectories(states, states)


@pytest.mark.slow
def test_recipe_a_system_trains_a_surrogate_from_its_own_data_configuration():
    """Step 3 of the recipe needs no change to the package: the toy's data configuration,
    defined here, and an LSTM configuration train a window surrogate through the package's
    one training loop, which then forecasts better than persistence (whose one-step error
    is |x| 2 sin(ANGLE / 2)) and serves as the forecast model of a harness case."""
    config = RotationData()
    surrogate = train.train(config, lstm.LSTMConfig(d=4, window=2, hidden=16, layers=1),
                            train.TrainConfig(epochs=12, batch_size=64, samples_per_epoch=2048,
                                              learning_rate=1e-2, patience=12),
                            cache=False, progress=False)
    truth = _states(jax.random.key(99), 30)[None]
    learned = evaluate.one_step_rmse(train.as_function(surrogate.model), truth, 2)
    persistence = evaluate.one_step_rmse(lambda h: h[:, -1], truth, 2)
    print(f"rotation surrogate: one-step RMSE {learned:.4f}, persistence {persistence:.4f}")
    assert learned < 0.5 * persistence, (learned, persistence)
    system = rollout.System("rotation", d=4, window=2, make_states=_states, true_step=_rotate)
    fn, args = train.forecast_model(surrogate.model)
    case = rollout.case(system, fn, args, rollout.DAConfig(n_steps=40, n_members=10),
                        name="rotation, learned", model_key="rotation lstm", burn_in=10)
    result = compare.compare(case, [compare.Method("ETKF", "ETKF", grid={"inflation": (1.0, 1.1)})],
                             tuning_seeds=[99], evaluation_seeds=[0, 1], cache=False,
                             progress=False)
    assert np.isfinite(result.results["ETKF"].mean_rmse)
    with pytest.raises(TypeError, match="make\\(\\) method"):
        data.make(object())


# --- recipe 3: a chapter --------------------------------------------------------------------

def _cell(kind, source, tags=()):
    cell = {"cell_type": kind, "id": f"toy-{abs(hash(source)) % 10**8}",
            "metadata": {"tags": list(tags)}, "source": source}
    if kind == "code":
        cell |= {"execution_count": None, "outputs": []}
    return cell


TOY_CHAPTER = {
    "nbformat": 4, "nbformat_minor": 5,
    "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    "cells": [
        _cell("markdown", "# A toy chapter\n"),
        _cell("code", "n_samples = 1000             # draws of the mean\n"
                      "burn_in = 10                 # draws left out, 0 or more\n"
                      "seed = 0\n"
                      'scale = "book"               # "paper": ten times the draws\n', ["parameters"]),
        _cell("code", 'if scale not in ("book", "paper"):\n'
                      '    raise ValueError(f"scale must be \'book\' or \'paper\', got {scale!r}")\n'
                      'if scale == "paper":\n'
                      "    n_samples = 10000\n"
                      "if not burn_in < n_samples:\n"
                      '    raise ValueError(f"burn_in ({burn_in}) must be below n_samples ({n_samples})")\n',
              ["checks", "hide-input"]),
        _cell("code", "import numpy as np\n"
                      "from myst_nb import glue\n"
                      "draws = np.random.default_rng(seed).normal(size=n_samples)[burn_in:]\n"
                      'glue("mean_abs", float(np.mean(np.abs(draws))), display=False)\n'),
        _cell("markdown", "The mean absolute draw is {glue:text}`mean_abs:.3f`, against "
                          "the exact $\\sqrt{2/\\pi} = 0.798$.\n"),
    ],
}


def test_recipe_a_chapter_declared_checked_and_run(tmp_path, monkeypatch):
    """The toy chapter is found, its parameters and paper-scale block are read without
    running it, a bad relation is refused by its checks cell, and a run folder holds its
    glued number with the sentence that shows it; the number is the half-normal mean
    sqrt(2/pi) within 4 standard errors."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    (folder / "01_toy.ipynb").write_text(json.dumps(TOY_CHAPTER))
    monkeypatch.setenv("SCOREDA_NOTEBOOKS", str(folder))
    path = chapters.find_notebook("toy")
    assert chapters.title(path) == "A toy chapter"
    assert set(chapters.parameters(path)) == {"n_samples", "burn_in", "seed", "scale"}
    assert chapters.scale_overrides(path) == {"n_samples": 10000}
    assert chapters.validate(path, {"burn_in": 0}) == {"burn_in": 0}  # "0 or more" in its comment
    with pytest.raises(SystemExit, match=r"burn_in \(1000\) must be below n_samples \(1000\)"):
        chapters.validate(path, {"burn_in": 1000})
    run = runs.run_notebook(path, {"n_samples": 4000}, tmp_path / "runs" / "toy", progress=False)
    record = json.loads((run / "run.json").read_text())
    results = json.loads((run / "results.json").read_text())
    assert record["status"] == "completed" and record["effective_parameters"]["n_samples"] == 4000
    value = results["values"]["mean_abs"]
    assert abs(value - np.sqrt(2 / np.pi)) < 4 * np.sqrt(1 - 2 / np.pi) / np.sqrt(3990)
    about = results["about"]["mean_abs"]
    assert about["unit"] is None and about["shown"]
    assert about["description"].startswith("The mean absolute draw is {value}")
