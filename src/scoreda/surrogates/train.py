r"""Training window surrogates: Adam on the mean squared error, minibatches, a validation
split, early stopping, progress, orbax checkpoints, and a cache keyed by the configuration.

:func:`train` is the one training loop of the package. It

* holds out whole trajectories for validation (``val_fraction``);
* draws ``samples_per_epoch`` random windows per epoch and runs the epoch's minibatches in a
  single compiled ``lax.scan`` (one dispatch per chunk of batches, so the progress bar is
  cheap);
* keeps the parameters of the best validation epoch and stops after ``patience`` epochs
  without improvement;
* checkpoints every epoch with orbax under ``<cache>/<key>/`` where ``key`` hashes the full
  configuration (data, architecture, training, package version): a second call with the
  same configuration loads the result, an interrupted one resumes at its last epoch, and an
  entry is never reused for, or overwritten by, a different configuration.

The cache lives in ``$SCOREDA_CACHE`` (default ``~/.cache/scoreda``). Entries hold only
orbax array checkpoints and JSON, never pickles.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

import scoreda
from scoreda import _checks
from scoreda.surrogates import data as data_lib
from scoreda.surrogates import conv, deeponet, lstm


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the paper: Adam, learning rate 1e-3, MSE)."""

    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    samples_per_epoch: int = 65_536
    val_fraction: float = 0.1
    val_samples: int = 8_192
    patience: int = 5
    seed: int = 0

    def __post_init__(self):
        _checks.integer("epochs", self.epochs, 1)
        _checks.integer("batch_size", self.batch_size, 1)
        _checks.positive("learning_rate", self.learning_rate)
        _checks.integer("samples_per_epoch", self.samples_per_epoch, self.batch_size)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        _checks.integer("val_samples", self.val_samples, 1)
        _checks.integer("patience", self.patience, 1)


def create_model(config, seed: int = 0):
    """A freshly initialised surrogate for an :class:`~scoreda.surrogates.lstm.LSTMConfig`, a
    :class:`~scoreda.surrogates.deeponet.DeepONetConfig` or a
    :class:`~scoreda.surrogates.conv.ConvConfig`."""
    if isinstance(config, lstm.LSTMConfig):
        return lstm.create(config, seed)
    if isinstance(config, conv.ConvConfig):
        return conv.create(config, seed)
    if isinstance(config, deeponet.DeepONetConfig):
        return deeponet.create(config, seed)
    raise TypeError(f"no surrogate for {type(config).__name__}")


class TrainedSurrogate(NamedTuple):
    """A trained surrogate and how it got there.

    Fields:
      model: the surrogate (LSTM or DeepONet) with the best parameters.
      history: per epoch, ``{"epoch", "train_loss", "val_loss", "samples_per_second"}``.
      path: the cache entry.
      loaded: True when the result came from the cache without training.
    """

    model: Any
    history: list[dict]
    path: Path
    loaded: bool


class CacheMismatch(RuntimeError):
    """A cache entry exists under the key but holds a different configuration."""


def cache_dir() -> Path:
    return Path(os.environ.get("SCOREDA_CACHE", Path.home() / ".cache" / "scoreda"))


def config_key(*configs, **extra) -> tuple[str, dict]:
    """A stable hash of dataclass configurations, JSON-able ``extra`` entries and the package
    version; returns the hash and the dict that was hashed."""
    described = {type(c).__name__: dataclasses.asdict(c) for c in configs} | extra
    described["scoreda_version"] = scoreda.__version__
    text = json.dumps(described, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:20], described


def parameters_digest(model) -> str:
    """A hash of a model's arrays (parameters and statistics), to key warm-started training."""
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(nnx.state(model)):
        digest.update(np.asarray(leaf).tobytes())
    return digest.hexdigest()[:20]


def claim_entry(path: Path, described: dict, what: str = "cache entry") -> None:
    """Create the cache entry ``path`` for the configuration ``described``, or check that an
    existing one holds exactly it (:class:`CacheMismatch` otherwise)."""
    path.mkdir(parents=True, exist_ok=True)
    config_file = path / "config.json"
    if config_file.exists():
        if json.loads(config_file.read_text()) != json.loads(json.dumps(described, sort_keys=True)):
            raise CacheMismatch(f"{what} {path} holds another configuration; remove it")
    else:
        write_json(config_file, described)


def write_json(path: Path, payload) -> None:
    """Write JSON atomically (a temporary file, then a rename)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _statistics(trajectories: data_lib.Trajectories):
    x = trajectories.inputs
    inc = trajectories.targets[:, 1:] - trajectories.inputs[:, :-1]
    return (x.mean(axis=(0, 1)), x.std(axis=(0, 1)) + 1e-6, inc.std(axis=(0, 1)) + 1e-6)


def _split(trajectories: data_lib.Trajectories, val_fraction: float, seed: int):
    n = trajectories.inputs.shape[0]
    n_val = int(round(val_fraction * n)) if n > 1 else 0
    order = np.random.default_rng(seed).permutation(n)
    take = lambda idx: jax.tree.map(lambda a: a[idx], trajectories)
    train = take(np.sort(order[n_val:]))
    val = take(np.sort(order[:n_val])) if n_val else train
    return train, val


def _make_steps(graphdef, statics, tx, window):
    def loss_fn(params, batch_x, batch_y, batch_w):
        model = nnx.merge(graphdef, params, statics)
        return jnp.mean(batch_w * (model(batch_x) - batch_y) ** 2)

    @jax.jit
    def run_batches(params, opt_state, trajectories, starts):
        def one(carry, batch_starts):
            params, opt_state = carry
            x, y, w = data_lib.gather_windows(trajectories, batch_starts, window)
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y, w)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(one, (params, opt_state), starts)
        return params, opt_state, losses

    @jax.jit
    def evaluate(params, trajectories, starts):
        def one(total, batch_starts):
            x, y, w = data_lib.gather_windows(trajectories, batch_starts, window)
            return total + loss_fn(params, x, y, w), None

        total, _ = jax.lax.scan(one, 0.0, starts)
        return total / starts.shape[0]

    return run_batches, evaluate


def train(
    data_config,
    model_config,
    train_config: TrainConfig = TrainConfig(),
    *,
    progress: bool = True,
    cache: bool = True,
    trajectories: data_lib.Trajectories | None = None,
    stop_after: int | None = None,
    initial_model=None,
) -> TrainedSurrogate:
    """Train (or load from the cache) a surrogate on the data described by ``data_config``.

    ``data_config``: :class:`~scoreda.surrogates.data.Lorenz96Data` or
    :class:`~scoreda.surrogates.data.KdVData`; ``model_config``:
    :class:`~scoreda.surrogates.lstm.LSTMConfig` or
    :class:`~scoreda.surrogates.deeponet.DeepONetConfig`.

    ``trajectories`` may pass data already generated from ``data_config`` (it is not part of
    the cache key, so it must be exactly that data). ``stop_after`` ends the call after that
    many epochs as if interrupted (the next call resumes); for tests and time-boxed runs.

    ``initial_model`` warm-starts from a surrogate of the same ``model_config``: training
    begins at its parameters and keeps its normalisation statistics (a hash of its arrays
    enters the cache key). Targets are weighted by ``trajectories.weights`` when given.
    """
    if model_config.d != data_config.d:
        raise ValueError(f"the surrogate's d ({model_config.d}) differs from the data's d ({data_config.d})")
    extra = {}
    if initial_model is not None:
        if getattr(initial_model, "config", None) != model_config:
            raise ValueError("initial_model must have the architecture model_config describes")
        extra["initial_model"] = parameters_digest(initial_model)
    key, described = config_key(data_config, model_config, train_config, **extra)
    path = (cache_dir() / "surrogates" / key).absolute()
    if cache:
        claim_entry(path, described)

    if trajectories is None:
        trajectories = data_lib.make(data_config)
    train_set, val_set = _split(trajectories, train_config.val_fraction, train_config.seed)
    if initial_model is None:
        model = create_model(model_config, seed=train_config.seed)
        model.set_statistics(*_statistics(train_set))
    else:
        graphdef0, state0 = nnx.split(initial_model)
        model = nnx.merge(graphdef0, jax.tree.map(jnp.array, state0))  # a copy
    graphdef, params, statics = nnx.split(model, nnx.Param, ...)
    tx = optax.adam(train_config.learning_rate)
    opt_state = tx.init(params)

    manager = None
    start_epoch, history, best = 0, [], {"val_loss": float("inf"), "params": params, "bad": 0}
    if cache:
        manager = ocp.CheckpointManager(path / "checkpoints", options=ocp.CheckpointManagerOptions(max_to_keep=1))
        if (path / "done.json").exists() or manager.latest_step() is not None:
            step = manager.latest_step()
            target = {"params": params, "opt_state": opt_state, "best_params": params}
            restored = manager.restore(step, args=ocp.args.StandardRestore(target))
            progress_file = json.loads((path / "progress.json").read_text())
            params, opt_state = restored["params"], restored["opt_state"]
            best = {"val_loss": progress_file["best_val_loss"], "params": restored["best_params"],
                    "bad": progress_file["bad_epochs"]}
            history, start_epoch = progress_file["history"], step + 1
            if (path / "done.json").exists():
                manager.close()
                return TrainedSurrogate(nnx.merge(graphdef, best["params"], statics), history, path, True)

    run_batches, evaluate = _make_steps(graphdef, statics, tx, model_config.window)
    window = model_config.window
    train_starts = data_lib.window_starts(train_set.inputs.shape[0], train_set.inputs.shape[1], window)
    val_starts = data_lib.window_starts(val_set.inputs.shape[0], val_set.inputs.shape[1], window)
    rng = np.random.default_rng(train_config.seed + 1)
    n_val = min(train_config.val_samples, val_starts.shape[0]) // train_config.batch_size
    n_val = max(n_val, 1)
    val_pick = rng.choice(val_starts.shape[0], size=n_val * train_config.batch_size,
                          replace=val_starts.shape[0] < n_val * train_config.batch_size)
    val_batches = val_starts[val_pick].reshape(n_val, train_config.batch_size, 2)
    n_batches = train_config.samples_per_epoch // train_config.batch_size
    chunks = max(1, min(10, n_batches))

    bar = tqdm(total=train_config.epochs, initial=start_epoch, desc="training", unit="epoch",
               disable=not progress)
    for epoch in range(start_epoch, train_config.epochs):
        epoch_rng = np.random.default_rng([train_config.seed, epoch])
        pick = epoch_rng.integers(0, train_starts.shape[0], size=n_batches * train_config.batch_size)
        batches = train_starts[pick].reshape(n_batches, train_config.batch_size, 2)
        tic = time.perf_counter()
        losses = []
        for part in np.array_split(np.arange(n_batches), chunks):
            params, opt_state, chunk_losses = run_batches(params, opt_state, train_set, batches[part])
            losses.append(np.asarray(chunk_losses))
        seconds = time.perf_counter() - tic
        val_loss = float(evaluate(params, val_set, val_batches))
        train_loss = float(np.mean(np.concatenate(losses)))
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                        "samples_per_second": n_batches * train_config.batch_size / seconds})
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "params": params, "bad": 0}
        else:
            best["bad"] += 1
        bar.update(1)
        bar.set_postfix(train=f"{train_loss:.2e}", val=f"{val_loss:.2e}")
        stop = best["bad"] >= train_config.patience or epoch == train_config.epochs - 1
        if manager is not None:
            manager.save(epoch, args=ocp.args.StandardSave(
                {"params": params, "opt_state": opt_state, "best_params": best["params"]}))
            manager.wait_until_finished()
            write_json(path / "progress.json", {"history": history, "best_val_loss": best["val_loss"],
                                                 "bad_epochs": best["bad"]})
            if stop:
                write_json(path / "done.json", {"epochs_run": epoch + 1,
                                                 "best_val_loss": best["val_loss"]})
        if stop or (stop_after is not None and epoch + 1 - start_epoch >= stop_after):
            break
    bar.close()
    if manager is not None:
        manager.close()
    return TrainedSurrogate(nnx.merge(graphdef, best["params"], statics), history, path, False)


@functools.lru_cache(maxsize=16)
def _window_forecaster(graphdef):
    def step(history, key, state):
        del key
        return nnx.merge(graphdef, state)(history[None])[0]

    return step


def forecast_model(model):
    """The surrogate as a forecast model for :func:`scoreda.assimilate.cycle`.

    Returns ``(fn, model_args)``: ``fn(history (W, d), key, *model_args) -> next (d,)``. The
    function depends only on the architecture and the parameters travel in ``model_args``,
    so all surrogates of one architecture share a single compiled cycle.
    """
    graphdef, state = nnx.split(model)
    return _window_forecaster(graphdef), (state,)


def as_function(model):
    """A jitted pure function ``histories (..., W, d) -> next (..., d)``."""
    graphdef, state = nnx.split(model)
    return jax.jit(lambda h: nnx.merge(graphdef, state)(h))
