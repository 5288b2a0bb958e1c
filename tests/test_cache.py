"""The surrogate cache under damage and contention: a damaged entry is named in a warning and
trained again (or resumed from its last sound epoch) to the numbers of a fresh training; two
processes asking for one entry train it once."""

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

from scoreda import cache as cache_lib
from scoreda.surrogates import data, lstm, train

DATA = data.Lorenz96Data(n_trajectories=4, n_steps=100, d=8)
MODEL = lstm.LSTMConfig(d=8, window=5, hidden=8, layers=1, well_posed=True)
TRAIN = train.TrainConfig(epochs=3, batch_size=32, samples_per_epoch=256, val_samples=64, val_fraction=0.25)


def leaves(model):
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model))]


def assert_same_training(got, expected):
    """Same history and parameters (to float32 rounding; on CPU they are bitwise equal)."""
    assert [h["epoch"] for h in got.history] == [0, 1, 2]
    for key in ("train_loss", "val_loss"):
        np.testing.assert_allclose([h[key] for h in got.history], [h[key] for h in expected.history],
                                   rtol=1e-6, atol=0)
    for a, b in zip(leaves(got.model), leaves(expected.model), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished cache entry of a fresh training: ``(cache folder, result)``."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCOREDA_CACHE", str(root))
        result = train.train(DATA, MODEL, TRAIN, progress=False)
    assert not result.loaded and (result.path / "done.json").exists()
    return root, result


@pytest.fixture
def entry(finished, tmp_path, monkeypatch):
    """A private copy of the finished entry; returns its path."""
    root, result = finished
    shutil.copytree(root, tmp_path / "cache")
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / result.path.relative_to(root)


@pytest.mark.slow
def test_training_is_deterministic_and_a_sound_entry_loads_without_warning(finished, entry):
    fresh = train.train(DATA, MODEL, TRAIN, progress=False, cache=False)
    assert_same_training(fresh, finished[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache_lib.CacheWarning)
        loaded = train.train(DATA, MODEL, TRAIN, progress=False)
    assert loaded.loaded and loaded.path == entry
    assert_same_training(loaded, finished[1])


def truncate(file):
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def duplicate_an_epoch(entry):
    progress = json.loads((entry / "progress.json").read_text())
    progress["history"].insert(1, progress["history"][1])  # what two racing trainers left
    progress["digests"].insert(1, progress["digests"][1])
    (entry / "progress.json").write_text(json.dumps(progress))


def epoch_1_as_epoch_2(entry):
    """A readable checkpoint, but of another epoch than the history says."""
    shutil.rmtree(entry / "checkpoints" / "2")
    shutil.copytree(entry / "checkpoints" / "1", entry / "checkpoints" / "2")


def truncate_array_data(entry):
    files = [f for f in (entry / "checkpoints" / "2").rglob("*") if f.is_file() and f.parent.name == "d"]
    assert files
    for f in files:
        truncate(f)


# (how the entry is damaged, what the warning says, whether the entry is set aside and
#  trained from scratch (True) or resumed from a sound checkpoint (False))
DAMAGES = {
    "config.json truncated": (lambda e: truncate(e / "config.json"), "config.json is not valid JSON", True),
    "progress.json truncated": (lambda e: truncate(e / "progress.json"), "progress.json is not valid JSON",
                                True),
    "progress.json empty": (lambda e: (e / "progress.json").write_text(""), "progress.json is not valid JSON",
                            True),
    "done.json truncated": (lambda e: truncate(e / "done.json"), "done.json is not valid JSON", False),
    "a duplicated epoch": (duplicate_an_epoch, re.escape("epochs [0, 1, 1, 2]"), True),
    "a checkpoint of another epoch": (epoch_1_as_epoch_2, "checkpoint 2 differs from the digest", False),
    "array data truncated": (truncate_array_data, "checkpoint 2 cannot be restored", False),
    "checkpoint metadata truncated": (lambda e: truncate(e / "checkpoints" / "2" / "default" / "_METADATA"),
                                      "checkpoint 2 cannot be restored", False),
    "last checkpoint missing": (lambda e: shutil.rmtree(e / "checkpoints" / "2"),
                                "no checkpoint of epoch 2", False),
    "every checkpoint missing": (lambda e: shutil.rmtree(e / "checkpoints"), "no checkpoint of epoch 2",
                                 True),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_entry_is_named_and_trained_again_to_the_same_result(damage, finished, entry):
    spoil, problem, from_scratch = DAMAGES[damage]
    spoil(entry)
    with pytest.warns(cache_lib.CacheWarning) as caught:
        again = train.train(DATA, MODEL, TRAIN, progress=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, cache_lib.CacheWarning)]
    assert len(messages) == 1, messages
    assert f"damaged cache entry {entry}: " in messages[0] and re.search(problem, messages[0]), messages[0]
    assert ("moved it to" in messages[0]) == from_scratch
    assert (entry.with_name(entry.name + ".damaged")).exists() == from_scratch
    # done.json alone was lost: the sound checkpoint is the result, nothing is trained
    assert again.loaded == (damage == "done.json truncated")
    assert_same_training(again, finished[1])
    # the entry is whole again: one history, a marker, and it loads quietly
    stored = json.loads((entry / "progress.json").read_text())
    assert [h["epoch"] for h in stored["history"]] == [0, 1, 2] and len(stored["digests"]) == 3
    assert json.loads((entry / "done.json").read_text())["epochs_run"] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache_lib.CacheWarning)
        last = train.train(DATA, MODEL, TRAIN, progress=False)
    assert last.loaded
    assert_same_training(last, finished[1])


@pytest.mark.slow
def test_an_interruption_between_checkpoint_and_history_resumes_quietly(finished, entry):
    # the process died after checkpoint 2 was saved but before progress.json recorded it
    progress = json.loads((entry / "progress.json").read_text())
    progress["history"], progress["digests"] = progress["history"][:2], progress["digests"][:2]
    (entry / "progress.json").write_text(json.dumps(progress))
    (entry / "done.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache_lib.CacheWarning)
        again = train.train(DATA, MODEL, TRAIN, progress=False)
    assert not again.loaded
    assert_same_training(again, finished[1])


@pytest.mark.slow
def test_an_entry_written_before_digests_still_loads(finished, entry):
    # earlier versions kept one checkpoint and recorded no digests
    progress = json.loads((entry / "progress.json").read_text())
    del progress["digests"]
    (entry / "progress.json").write_text(json.dumps(progress))
    shutil.rmtree(entry / "checkpoints" / "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error", cache_lib.CacheWarning)
        loaded = train.train(DATA, MODEL, TRAIN, progress=False)
    assert loaded.loaded
    assert_same_training(loaded, finished[1])


CHILD = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {tests!r})
    from test_cache import DATA, MODEL, TRAIN
    from scoreda.surrogates import train
    result = train.train(DATA, MODEL, TRAIN, progress=False)
    print(json.dumps({{"loaded": result.loaded, "digest": train.parameters_digest(result.model),
                      "val_loss": [h["val_loss"] for h in result.history]}}))
""")


@pytest.mark.slow
def test_two_processes_asking_for_one_entry_train_it_once(finished, tmp_path):
    cache = tmp_path / "cache"
    key, _ = cache_lib.config_key(DATA, MODEL, TRAIN)
    path = (cache / "surrogates" / key).absolute()
    env = os.environ | {"SCOREDA_CACHE": str(cache), "JAX_PLATFORMS": "cpu"}
    script = CHILD.format(tests=os.path.dirname(__file__))
    logs = [tmp_path / f"child{i}.err" for i in range(2)]
    # hold the entry while both start, so that both really ask for it at once
    with cache_lib.entry_lock(path):
        children = [subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                     stderr=log.open("w"), text=True) for log in logs]
        deadline = time.monotonic() + 300
        while not all(f"waiting for the cache entry {path}" in log.read_text() for log in logs):
            assert time.monotonic() < deadline and all(c.poll() is None for c in children), \
                [log.read_text()[-2000:] for log in logs]
            time.sleep(0.5)
    outputs = []
    for child, log in zip(children, logs):
        stdout, _ = child.communicate(timeout=600)
        assert child.returncode == 0, log.read_text()[-4000:]
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(o["loaded"] for o in outputs) == [False, True]  # trained once, loaded once
    assert outputs[0]["digest"] == outputs[1]["digest"]
    assert outputs[0]["val_loss"] == outputs[1]["val_loss"]
    fresh = [h["val_loss"] for h in finished[1].history]
    np.testing.assert_allclose(outputs[0]["val_loss"], fresh, rtol=1e-6)
    stored = json.loads((path / "progress.json").read_text())
    assert [h["epoch"] for h in stored["history"]] == [0, 1, 2]
