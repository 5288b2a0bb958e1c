r"""Training window surrogates: Adam on the mean squared error, minibatches, a validation
split, early stopping, progress, orbax checkpoints, and a cache keyed by the configuration.

:func:`train` is the one training loop of the package. It

* holds out whole trajectories for validation (``val_fraction``);
* draws ``samples_per_epoch`` random windows per epoch and runs the epoch's minibatches in a
  single compiled ``lax.scan`` (one dispatch per chunk of batches, so the progress bar is
  cheap);
* keeps the parameters of the best validation epoch and stops after ``patience`` epochs
  without improvement;
* checkpoints every epoch with orbax under ``<cache>/surrogates/<key>/`` where ``key`` hashes the full
  configuration (data, architecture, training, package version): a second call with the
  same configuration loads the result, an interrupted one resumes at its last epoch, and an
  entry is never reused for, or overwritten by, a different configuration;
* is safe against concurrent and broken runs: an entry is used under an OS lock
  (:func:`~scoreda.cache.entry_lock`; a second process waits, then loads what the first trained), is
  complete only when its marker ``done.json``, written last, agrees with its history, and
  a damaged entry (unreadable JSON or checkpoint, a history that disagrees with the
  checkpoints) is never loaded: it is resumed from its last sound epoch, or moved to
  ``<key>.damaged`` and trained again, with a :class:`~scoreda.cache.CacheWarning` naming it.

The cache (:mod:`scoreda.cache`) lives in ``$SCOREDA_CACHE`` (default ``~/.cache/scoreda``). Entries hold only
orbax array checkpoints and JSON, never pickles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tqdm import tqdm

from scoreda import _checks
from scoreda import cache as cache_lib
from scoreda.surrogates import data as data_lib


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the paper: Adam, learning rate 1e-3, MSE).

    ``window_stride`` thins the training windows: only those starting at every
    ``window_stride``-th step of a trajectory are drawn (validation keeps them all). Two
    neighbouring windows share all but one of their states, and at the paper's Lorenz-96
    step (0.004, about 0.007 Lyapunov times) their targets barely differ, so a thinned set
    holds nearly the same information in a tenth of the windows; an epoch of
    ``samples_per_epoch`` random windows then covers it in fewer draws.
    """

    epochs: int = 30
    batch_size: int = 256
    learning_rate: float = 1e-3
    samples_per_epoch: int = 65_536
    val_fraction: float = 0.1
    val_samples: int = 8_192
    patience: int = 5
    seed: int = 0
    window_stride: int = 1

    #: left out of the cache key at its default (:func:`scoreda.cache.config_key`):
    #: ``window_stride`` came after entries were cached, and they keep their keys
    KEY_OMITS_AT_DEFAULT: ClassVar[dict] = {"window_stride": 1}

    def __post_init__(self):
        _checks.integer("epochs", self.epochs, 1)
        _checks.integer("batch_size", self.batch_size, 1)
        _checks.positive("learning_rate", self.learning_rate)
        _checks.integer("samples_per_epoch", self.samples_per_epoch, self.batch_size)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie in [0, 1), got {self.val_fraction}")
        _checks.integer("val_samples", self.val_samples, 1)
        _checks.integer("patience", self.patience, 1)
        _checks.integer("window_stride", self.window_stride, 1)


def create_model(config, seed: int = 0):
    """A freshly initialised surrogate: ``config.create(seed)``.

    The protocol of a model configuration (:class:`~scoreda.surrogates.lstm.LSTMConfig`,
    :class:`~scoreda.surrogates.deeponet.DeepONetConfig`,
    :class:`~scoreda.surrogates.conv.ConvConfig`, or a new one): a frozen dataclass with
    ``d`` and ``window`` whose fields describe the architecture (they key the training
    cache), and a ``create(seed)`` that returns an ``nnx.Module`` mapping histories
    ``(B, window, d)`` to ``(B, d)``, with ``config`` and ``set_statistics(mean, std)``."""
    create = getattr(config, "create", None)
    if not callable(create):
        raise TypeError(f"no surrogate for {type(config).__name__}: a model configuration "
                        "has a create(seed) method that returns the network")
    return create(seed)


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


def parameters_digest(model) -> str:
    """A hash of a model's arrays (parameters and statistics), to key warm-started training."""
    return cache_lib.tree_digest(nnx.state(model))


def _history(entry: Path, progress) -> tuple[list, list]:
    """The history of ``progress.json`` and the digests of its epochs' checkpoints (None for
    entries written before digests), checked to run over epochs 0, 1, ..., n - 1."""
    if progress is None:
        return [], []
    try:
        history = progress["history"]
        epochs = [h["epoch"] for h in history]
        [float(h["val_loss"]) for h in history]
        digests = progress.get("digests") or [None] * len(history)
    except (KeyError, TypeError, ValueError) as err:
        raise cache_lib.DamagedEntry(entry, f"progress.json is malformed ({cache_lib.brief(err)})") from err
    if epochs != list(range(len(history))) or len(digests) != len(history):
        raise cache_lib.DamagedEntry(entry, f"progress.json's history runs over epochs {epochs}, not "
                                  f"0..{len(history) - 1} with one checkpoint digest each")
    return history, digests


def _marker_problem(path: Path, n_epochs: int) -> str | None:
    """What is wrong with the entry's ``done.json`` when ``n_epochs`` epochs are sound; None
    when it is absent or agrees."""
    try:
        done = cache_lib.read_json(path, "done.json")
    except cache_lib.DamagedEntry as err:
        return err.problem
    if done is not None and (not isinstance(done, dict) or done.get("epochs_run") != n_epochs):
        return f"done.json does not count the {n_epochs} sound epochs"
    return None


def _restore(path: Path, manager, target):
    """The entry's last sound epoch as ``(history, digests, state)``, or None for an entry with
    no epoch yet.

    Sound means: ``progress.json`` reads, its history runs over epochs ``0..n-1``, and the
    checkpoint of the last epoch kept restores and matches the digest recorded for it.
    Checkpoints after that epoch are deleted and the history is cut there (a warning names
    what was wrong); a ``done.json`` that is unreadable or disagrees with the history is
    removed. :class:`~scoreda.cache.DamagedEntry` when epochs were recorded but none is sound.
    """
    history, digests = _history(path, cache_lib.read_json(path, "progress.json"))
    steps = sorted(manager.all_steps(), reverse=True)
    problems, state, sound = [], None, -1
    for step in (s for s in steps if s < len(history)):
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as err:  # orbax / tensorstore raise many kinds
            problems.append(f"checkpoint {step} cannot be restored ({cache_lib.brief(err)})")
            continue
        if digests[step] is not None and cache_lib.tree_digest(restored) != digests[step]:
            problems.append(f"checkpoint {step} differs from the digest progress.json recorded")
            continue
        state, sound = restored, step
        break
    if sound < len(history) - 1 and not problems:
        problems.append(f"progress.json has {len(history)} epochs but no checkpoint of "
                        f"epoch {len(history) - 1}")
    history, digests = history[:sound + 1], digests[:sound + 1]
    marker = _marker_problem(path, len(history))
    problems += [marker] if marker else []
    if state is None and problems:
        raise cache_lib.DamagedEntry(path, "; ".join(problems))
    for step in steps:
        if step > sound:
            manager.delete(step)
    if marker:
        (path / "done.json").unlink()
    if state is None:
        return None
    if problems:
        warnings.warn(f"damaged cache entry {path}: {'; '.join(problems)}; resuming from epoch {sound}",
                      cache_lib.CacheWarning, stacklevel=4)
    return history, digests, state


def _open_entry(path: Path, described: dict, target):
    """Claim ``path`` (held under :func:`~scoreda.cache.entry_lock`) and restore its last sound epoch: returns
    the checkpoint manager and :func:`_restore`'s answer. A damaged entry is moved to
    ``<path>.damaged`` with a :class:`~scoreda.cache.CacheWarning` naming it and what is wrong, and started
    afresh."""
    for attempt in range(2):
        manager = None
        try:
            cache_lib.claim_entry(path, described)
            try:
                manager = ocp.CheckpointManager(path / "checkpoints",
                                                options=ocp.CheckpointManagerOptions(max_to_keep=2))
            except Exception as err:  # orbax raises many kinds
                raise cache_lib.DamagedEntry(path, f"its checkpoints cannot be opened ({cache_lib.brief(err)})") from err
            return manager, _restore(path, manager, target)
        except cache_lib.DamagedEntry as err:
            if manager is not None:
                manager.close()
            if attempt:
                raise
            aside = cache_lib.set_aside(path)
            warnings.warn(f"damaged {err}; moved it to {aside} and training it again",
                          cache_lib.CacheWarning, stacklevel=3)


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


_STEPS: dict = {}  # (graphdef, statics digest, learning rate, window) -> _make_steps's result
_STEPS_LOCK = threading.Lock()


def _make_steps(graphdef, statics, learning_rate: float, window: int):
    """The optimiser and the jitted training and validation passes of one architecture,
    non-parameter state (normalisation statistics, held as compile-time constants),
    learning rate and window. Kept for reuse: the warm-started retrainings of
    :mod:`scoreda.experiments.hybrid` keep their statistics, so they share one compilation instead of
    compiling the same program again for every retraining."""
    key = (graphdef, cache_lib.tree_digest(statics), float(learning_rate), int(window),
           tuple((np.shape(a), str(jnp.asarray(a).dtype)) for a in jax.tree.leaves(statics)))
    with _STEPS_LOCK:
        if key not in _STEPS:
            if len(_STEPS) >= 32:  # bounded: drop the oldest
                del _STEPS[next(iter(_STEPS))]
            # a snapshot of the statistics: the closure must not see later in-place changes
            # of the model it was made from (its digest is part of the key)
            _STEPS[key] = _steps(graphdef, jax.tree.map(jnp.array, statics), learning_rate, window)
        return _STEPS[key]


def _steps(graphdef, statics, learning_rate: float, window: int):
    tx = optax.adam(learning_rate)

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

    return tx, run_batches, evaluate


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

    The cache entry is held with :func:`~scoreda.cache.entry_lock` for the whole call, so a second process
    asking for the same entry waits and then loads what the first one trained. An entry is
    complete when its ``done.json`` (written last) agrees with its history; each epoch is
    recorded as an orbax checkpoint, then ``progress.json`` (history and a digest of the
    checkpoint), both atomic. A damaged entry is never loaded: it is resumed from its last
    sound epoch, or set aside and trained again, with a :class:`~scoreda.cache.CacheWarning` naming it.
    """
    if model_config.d != data_config.d:
        raise ValueError(f"the surrogate's d ({model_config.d}) differs from the data's d ({data_config.d})")
    extra = {}
    if initial_model is not None:
        if getattr(initial_model, "config", None) != model_config:
            raise ValueError("initial_model must have the architecture model_config describes")
        extra["initial_model"] = parameters_digest(initial_model)
    key, described = cache_lib.config_key(data_config, model_config, train_config, **extra)
    path = (cache_lib.cache_dir() / "surrogates" / key).absolute()
    with cache_lib.entry_lock(path) if cache else contextlib.nullcontext(), contextlib.ExitStack() as on_exit:
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
        tx, run_batches, evaluate = _make_steps(graphdef, statics, train_config.learning_rate,
                                                model_config.window)
        opt_state = tx.init(params)

        manager = None
        start_epoch, history, digests = 0, [], []
        best = {"val_loss": float("inf"), "params": params, "bad": 0}
        if cache:
            target = {"params": params, "opt_state": opt_state, "best_params": params}
            manager, sound = _open_entry(path, described, target)
            on_exit.callback(manager.close)
            if sound is not None:
                history, digests, state = sound
                params, opt_state = state["params"], state["opt_state"]
                best_val, bad = _best_and_bad(history)
                best = {"val_loss": best_val, "params": state["best_params"], "bad": bad}
                start_epoch = len(history)
                if bad >= train_config.patience or start_epoch >= train_config.epochs:
                    if not (path / "done.json").exists():
                        cache_lib.write_json(path / "done.json", {"epochs_run": start_epoch, "best_val_loss": best_val})
                    return TrainedSurrogate(nnx.merge(graphdef, best["params"], statics), history, path, True)

        window = model_config.window
        train_starts = data_lib.window_starts(train_set.inputs.shape[0], train_set.inputs.shape[1], window)
        if train_config.window_stride > 1:  # every window_stride-th start of each trajectory
            train_starts = train_starts[train_starts[:, 1] % train_config.window_stride == 0]
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
                state = {"params": params, "opt_state": opt_state, "best_params": best["params"]}
                manager.save(epoch, args=ocp.args.StandardSave(state))
                manager.wait_until_finished()
                digests.append(cache_lib.tree_digest(state))
                cache_lib.write_json(path / "progress.json", {"history": history, "digests": digests,
                                                     "best_val_loss": best["val_loss"],
                                                     "bad_epochs": best["bad"]})
                if stop:  # the marker of a complete entry, written last
                    cache_lib.write_json(path / "done.json", {"epochs_run": epoch + 1,
                                                     "best_val_loss": best["val_loss"]})
            if stop or (stop_after is not None and epoch + 1 - start_epoch >= stop_after):
                break
        bar.close()
        return TrainedSurrogate(nnx.merge(graphdef, best["params"], statics), history, path, False)


def _best_and_bad(history: list) -> tuple[float, int]:
    """The best validation loss of ``history`` and the epochs since it (as the loop counts)."""
    best, bad = float("inf"), 0
    for h in history:
        best, bad = (h["val_loss"], 0) if h["val_loss"] < best else (best, bad + 1)
    return best, bad


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
