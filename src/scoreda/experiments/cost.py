r"""What a chapter will cost before it runs: its work counted from its parameters, priced by
a short calibration on this machine.

The long chapters spend their time in three kinds of work, each timed here once per
setting, after compilation:

- **training**: samples per second of one surrogate architecture (two short epochs of the
  real training loop on a small data set; the second epoch's rate);
- **forecasts**: one forecast step of an ``N``-member ensemble (the surrogate's batched
  forward pass, or the exact model);
- **analyses**: one analysis of each filter at ``(N, d)`` with its knobs.

A cycle of ``T`` steps costs :math:`T\,(t_\text{forecast} + f_\text{obs}\,t_\text{analysis})`,
with :math:`f_\text{obs} = 15/20` the share of observed steps. A comparison case runs, per
method, every grid point on every tuning trial and its chosen point on every reported trial.
Training is priced at its full number of epochs (early stopping can only shorten it), and
nothing already in the cache is subtracted: the estimate is for an empty cache.
Compilation and data generation are not counted; they add minutes, not hours.

:func:`estimate` dispatches on the chapter (``"04"``, ``"05"``); the dry run of
``scoreda reproduce`` prints its stages.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks, device

#: share of DA steps that carry observations (the paper's 15 observed / 5 forecast-only)
OBSERVED_SHARE = 15 / 20
#: the knobs of EnSF in the authors' setting that set its cost (500 Euler steps), read from
#: :data:`scoreda.experiments.rollout.AUTHORS_ENSF`
_COSTLY_AUTHORS_KNOBS = ("n_steps", "integrator")


class Stage(NamedTuple):
    """One stage of a chapter: what it does and its estimated seconds on this machine."""

    name: str
    seconds: float
    detail: str


def seconds_per_call(fn: Callable, *args, repeats: int = 3) -> float:
    """The fastest of ``repeats`` timed calls of ``fn(*args)`` after one untimed call (which
    compiles); the result is blocked on, so asynchronous dispatch is included."""
    _checks.integer("repeats", repeats, 1)
    jax.block_until_ready(fn(*args))
    return device.best_seconds(lambda: fn(*args), repeats)


def machine_fingerprint() -> dict:
    """What a calibration depends on besides its arguments: the machine as a run records it
    (:func:`scoreda.runs.machine`: processor, cores usable, JAX's devices), the JAX version
    and the package's code."""
    from scoreda import _digest, runs

    found = runs.machine()
    return {"processor": found["processor"], "cores": found.get("cores_available", found["cpu_count"]),
            "devices": found["devices"], "jax": jax.__version__, "code": _digest.package_digest()}


@functools.lru_cache(maxsize=None)
def machine_is_busy() -> bool:
    """Whether other work competed for the processor when this process first asked (once
    per process, before any calibration ran, so the calibrations' own load does not count):
    the 1-minute load average above half the cores this process may use plus a quarter (its
    own start-up). The load average is the host's: in a container pinned to a few cores of a
    busy host this says busy (nothing is kept), under a CPU quota it may miss a throttle.
    False where the system keeps no load average (Windows)."""
    import os

    from scoreda import runs

    cores = runs.usable_cores() or os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this system: assume idle
        return False
    return load > 0.5 * cores + 0.25


def remembered(function: Callable) -> Callable:
    """``function`` (returning seconds or a rate) measured once per machine: its result is
    kept in ``<cache>/calibration/`` under its name, arguments and :func:`machine_fingerprint`,
    so a second dry run reads it instead of compiling and timing again (a system argument is
    keyed by its name). A value measured in a process that found the machine busy
    (:func:`machine_is_busy`) is used but not kept: a later dry run measures again. An
    unreadable entry is measured again; an unwritable cache just measures. Also memoised in
    the process."""
    import hashlib
    import json

    @functools.lru_cache(maxsize=None)
    @functools.wraps(function)
    def measured(*args):
        from scoreda import cache

        described = [a.name if hasattr(a, "true_step") else a for a in args]  # a system: its name
        key = json.dumps([function.__name__, repr(described), machine_fingerprint()], sort_keys=True)
        entry = cache.cache_dir() / "calibration" / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
        try:
            return float(json.loads(entry.read_text())["value"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        busy = machine_is_busy()  # read once per process, before the first measurement
        value = function(*args)
        if busy:
            return value
        try:
            entry.parent.mkdir(parents=True, exist_ok=True)
            cache.write_json(entry, {"value": value, "key": key})
        except OSError:
            pass
        return value

    return measured


@remembered
def training_rate(model_config, batch_size: int) -> float:
    """Training samples per second of ``model_config`` at ``batch_size`` (whole steps: window
    gathering, forward, backward, Adam), measured on a small data set without the cache."""
    from scoreda.surrogates import data, lstm, train

    if isinstance(model_config, lstm.LSTMConfig):
        data_config = data.Lorenz96Data(n_trajectories=4, n_steps=200, d=model_config.d)
    else:
        data_config = data.KdVData(n_trajectories=2, n_steps=50)
    config = train.TrainConfig(epochs=2, batch_size=batch_size, samples_per_epoch=4 * batch_size,
                               val_samples=batch_size, patience=5)
    result = train.train(data_config, model_config, config, cache=False, progress=False,
                         trajectories=data.make(data_config))
    return float(result.history[-1]["samples_per_second"])


@remembered
def forecast_seconds(model_config, n_members: int) -> float:
    """Seconds of one forecast step of ``n_members`` histories through a freshly initialised
    surrogate (the cost does not depend on the parameters' values)."""
    from scoreda.surrogates import train

    predict = train.as_function(train.create_model(model_config))
    histories = jnp.zeros((n_members, model_config.window, model_config.d), jnp.float32)
    return seconds_per_call(predict, histories)


@remembered
def exact_forecast_seconds(system, n_members: int) -> float:
    """Seconds of one exact-model step of ``n_members`` states of ``system``."""
    step = jax.jit(jax.vmap(system.true_step))
    return seconds_per_call(step, jnp.ones((n_members, system.d), jnp.float32))


@remembered
def analysis_seconds(filter_name: str, n_members: int, d: int, knobs: tuple = ()) -> float:
    """Seconds of one arctan-observed analysis of ``filter_name`` (registry name) with
    ``knobs`` (a tuple of pairs) at ensemble size ``n_members`` and dimension ``d``."""
    from scoreda.filters import registry

    analysis = registry.get(filter_name).bind(obs="arctan", **dict(knobs))
    ensemble = jax.random.normal(jax.random.key(0), (n_members, d), jnp.float32)
    y = jnp.arctan(ensemble.mean(axis=0))
    run = jax.jit(lambda e, y: analysis(jax.random.key(1), e, y, 0.01))
    return seconds_per_call(run, ensemble, y)


class MethodWork(NamedTuple):
    """One method of a comparison case: its filter, the knobs that set its cost, the number
    of points of its tuning grid (0 for a fixed method) and how many compiled groups they
    fall into (points that differ in a static knob, the LETKF's radius, are run apart)."""

    filter: str
    knobs: tuple
    grid_points: int
    static_groups: int = 1


def tuning_runs(method: MethodWork, n_tuning: int, batch: int) -> int:
    """Cycles the harness runs to tune ``method``: each static group's ``points * n_tuning``
    runs go in batches of ``batch`` (the number of reported trials), the last one padded
    with repeats that cost as much as the rest (:func:`scoreda.experiments.compare.compare`).
    The given grid only: a widening round (``Method.widen``) adds one slice of the grid per
    axis whose choice sits at an edge, which the data decide, so it is not counted here."""
    if not method.grid_points:
        return 0
    per_group = method.grid_points // method.static_groups * n_tuning
    return method.static_groups * math.ceil(per_group / batch) * batch


def comparison_seconds(methods: list[MethodWork], *, n_members: int, d: int, n_steps: int,
                       n_tuning: int, n_trials: int, forecast: float) -> float:
    """Seconds of one comparison case: per method, its tuning runs (:func:`tuning_runs`) and
    ``n_trials`` reported runs, each ``n_steps`` cycles."""
    total = 0.0
    for m in methods:
        runs = tuning_runs(m, n_tuning, n_trials) + n_trials
        step = forecast + OBSERVED_SHARE * analysis_seconds(m.filter, n_members, d, m.knobs)
        total += runs * n_steps * step
    return total


def close_call_seconds(methods: list[MethodWork], *, n_members: int, d: int, n_steps: int,
                       n_close: int, forecast: float) -> float:
    """Seconds a comparison case may add when a verdict is a close call: every method runs
    ``n_close`` more trials (``close_call_seeds``, one batch) at its chosen knobs, tuning
    nothing (:func:`comparison_seconds` with no tuning trial). An upper bound: a case
    without a close call adds nothing. ``n_close``: a whole number, 0 or more."""
    if _checks.integer("n_close", n_close, 0) == 0:
        return 0.0
    return comparison_seconds(methods, n_members=n_members, d=d, n_steps=n_steps, n_tuning=0,
                              n_trials=n_close, forecast=forecast)


def _grid(*axes) -> int:
    return int(np.prod([len(a) for a in axes]))


#: the knobs that set an analysis's cost (the rest are values, not work)
_COST_KNOBS = ("n_steps", "integrator", "radius")


def method_work(method) -> MethodWork:
    """What a :class:`~scoreda.experiments.compare.Method` costs: its filter; its knobs among
    ``n_steps``, ``integrator`` and ``radius`` (fixed, else the registry's default; a tuned one at the grid's most
    expensive value, its largest); the points of its grid; and the static groups they fall
    into (one per value of each of the filter's static knobs on the grid)."""
    from scoreda.filters import registry

    spec = registry.get(method.filter)
    settings = dict(spec.knobs) | dict(method.knobs)
    knobs = tuple((k, max(method.grid[k]) if k in method.grid else settings[k])
                  for k in _COST_KNOBS if k in spec.knobs)
    points = _grid(*method.grid.values()) if method.grid else 0
    groups = _grid(*(method.grid[k] for k in spec.static if k in method.grid))
    return MethodWork(method.filter, knobs, points, groups)


def _methods(p: Mapping, with_authors: bool, tuned_kalman=("LETKF",)) -> list[MethodWork]:
    """The methods of chapters 4 and 5 (:func:`scoreda.experiments.rollout.paper_methods`,
    every one of ``tuned_kalman`` included), priced by :func:`method_work`."""
    from scoreda.experiments import rollout

    methods = rollout.paper_methods(
        0.0, ensf_steps=p["ensf_steps"], eps_b_grid=p["eps_b_grid"],
        inflation_grid=p["inflation_grid"], radius_grid=p["radius_grid"],
        model_error_grid=p["model_error_grid"], kalman=tuple(tuned_kalman),
        with_authors=with_authors)
    return [method_work(m) for m in methods]


def _tuned_ensf(p: Mapping) -> tuple:
    return ("n_steps", p["ensf_steps"]), ("integrator", "exponential")


def _chapter_04(p: Mapping) -> list[Stage]:
    """Mirror of chapter 4's loops (six surrogates; each observation network of every case
    in the comparison plus the true model; the methods of ``methods_for``; the single run
    of the paper's printed case)."""
    from scoreda.experiments import lorenz96 as ex
    from scoreda.surrogates import lstm, train

    stages = []
    model = lstm.LSTMConfig(d=20, window=ex.WINDOW, hidden=p["hidden"], layers=p["layers"])
    batch = train.TrainConfig().batch_size
    rate = training_rate(model, batch)
    samples = 6 * p["epochs"] * p["samples_per_epoch"]
    stride = p.get("window_stride", 1)
    stages.append(Stage("training", samples / rate,
                        f"6 LSTMs {p['layers']} x {p['hidden']}, {samples:,} samples at "
                        f"{rate:,.0f}/s (batch {batch})"
                        + (f", windows every {stride} steps" if stride > 1 else "")))
    n_steps = p["da_steps"] - ex.WINDOW + 1
    n = p["n_members"]
    forecast_nn = forecast_seconds(model, n)
    forecast_true = exact_forecast_seconds(ex.SYSTEM, n)
    # single-step errors: every test window of the six surrogates in batches of n; free
    # rollouts (LTP): one history at a time, for each surrogate in the comparison
    one = forecast_seconds(model, 1)
    compared = p["well_posed_in_comparison"] + p["faithful_in_comparison"]
    ssp = 6 * p["n_trials"] * (n_steps / n) * forecast_nn
    ltp = len(compared) * p["n_trials"] * n_steps * one
    stages.append(Stage("SSP and LTP", ssp + ltp,
                        f"{p['n_trials']} test trajectories of {p['da_steps']} steps"))
    methods = functools.partial(_methods, p, tuned_kalman=p["tuned_kalman"])
    n_obs = len(p["observations"])
    sizes = dict(n_members=n, d=20, n_steps=n_steps, n_tuning=len(p["tuning_seeds"]),
                 n_trials=p["n_trials"])
    seconds = sum(n_obs * comparison_seconds(methods(scenario in p["authors_setting_in"]),
                                             forecast=forecast_nn, **sizes) for scenario in compared)
    # the single runs drawn: the tuned EnSF's picture and the paper's printed run (both of
    # the SA paper-faithful surrogate under full observation)
    if "SA" in p["faithful_in_comparison"] and "full" in p["observations"]:
        seconds += n_steps * (forecast_nn + OBSERVED_SHARE * analysis_seconds("EnSF", n, 20, _tuned_ensf(p)))
        if "SA" in p["authors_setting_in"]:
            from scoreda.experiments.rollout import AUTHORS_ENSF
            authors = tuple((k, AUTHORS_ENSF[k]) for k in _COSTLY_AUTHORS_KNOBS)
            seconds += n_steps * (forecast_nn + OBSERVED_SHARE * analysis_seconds("EnSF", n, 20, authors))
    stages.append(Stage("comparison, surrogates", seconds,
                        f"{len(compared)} surrogates x {n_obs} observation networks, N = {n}, "
                        f"{n_steps} steps, {p['n_trials']} + {len(p['tuning_seeds'])} trials; "
                        f"one {n}-member forecast {forecast_nn * 1e3:.1f} ms"))
    stages.append(Stage("comparison, true model",
                        n_obs * comparison_seconds(methods("truth" in p["authors_setting_in"]),
                                                   forecast=forecast_true, **sizes),
                        f"{n_obs} observation networks"))
    n_close = p.get("close_call_trials", 0)
    if n_close:
        more = {k: sizes[k] for k in ("n_members", "d", "n_steps")} | {"n_close": n_close}
        seconds = n_obs * sum(
            close_call_seconds(methods(s in p["authors_setting_in"]), forecast=forecast_nn, **more)
            for s in compared)
        seconds += n_obs * close_call_seconds(methods("truth" in p["authors_setting_in"]),
                                              forecast=forecast_true, **more)
        stages.append(Stage("close calls, at most", seconds,
                            f"{n_close} more trials for every method of every case (only "
                            "where a verdict is a close call)"))
    return stages


def _chapter_05(p: Mapping) -> list[Stage]:
    """Mirror of chapter 5's loops (three DeepONets; five cases; the methods of
    ``methods_for``; the convergence check of the standard case)."""
    from scoreda.experiments import kdv as ex

    model = ex.SurrogateSpec().model_config()
    rate = training_rate(model, 128)
    samples = 3 * p["epochs"] * p["samples_per_epoch"]
    stages = [Stage("training", samples / rate,
                    f"3 DeepONets, {samples:,} samples at {rate:,.0f}/s (batch 128)")]
    n, d = p["n_members"], ex.SYSTEM.d
    n_steps = p["da_steps"] - ex.WINDOW + 1
    forecast_nn = forecast_seconds(model, n)
    forecast_true = exact_forecast_seconds(ex.SYSTEM, n)
    # single-step errors of the three surrogates (batched) and one free rollout each
    ssp_ltp = 3 * p["n_trials"] * (n_steps / n) * forecast_nn + 3 * n_steps * forecast_seconds(model, 1)
    stages.append(Stage("SSP and LTP", ssp_ltp, f"{p['n_trials']} test trajectories of {p['da_steps']} snapshots"))
    methods = functools.partial(_methods, p)

    sizes = dict(n_members=n, d=d, n_steps=n_steps, n_tuning=len(p["tuning_seeds"]),
                 n_trials=p["n_trials"])
    cases = ["standard", "insufficient data", "noisy data", "partial observation"]
    seconds = sum(comparison_seconds(methods(c in p["authors_setting_in"]), forecast=forecast_nn,
                                     **sizes) for c in cases)
    seconds += n_steps * (forecast_nn + OBSERVED_SHARE * analysis_seconds("EnSF", n, d, _tuned_ensf(p)))  # the picture
    stages.append(Stage("comparison, surrogates", seconds,
                        f"4 cases, N = {n}, {n_steps} steps, {p['n_trials']} + "
                        f"{len(p['tuning_seeds'])} trials; one {n}-member forecast "
                        f"{forecast_nn * 1e3:.1f} ms"))
    stages.append(Stage("comparison, exact solver",
                        comparison_seconds(methods("exact solver" in p["authors_setting_in"]),
                                           forecast=forecast_true, **sizes),
                        f"one {n}-member solver step {forecast_true * 1e3:.1f} ms"))
    n_close = p.get("close_call_trials", 0)
    if n_close:
        more = {k: sizes[k] for k in ("n_members", "d", "n_steps")} | {"n_close": n_close}
        seconds = sum(close_call_seconds(methods(c in p["authors_setting_in"]),
                                         forecast=forecast_nn, **more) for c in cases)
        seconds += close_call_seconds(methods("exact solver" in p["authors_setting_in"]),
                                      forecast=forecast_true, **more)
        stages.append(Stage("close calls, at most", seconds,
                            f"{n_close} more trials for every method of every case (only "
                            "where a verdict is a close call)"))
    check = len(p["tuning_seeds"]) * n_steps * sum(
        forecast_nn + OBSERVED_SHARE * analysis_seconds("EnSF", n, d, (("n_steps", k), ("integrator", i)))
        for i, k in [("exponential", k) for k in p["convergence_steps"]] + [("euler", 500)])
    stages.append(Stage("EnSF step convergence", check, f"steps {p['convergence_steps']} and Euler 500"))
    return stages


ESTIMATORS: dict[str, Callable[[Mapping], list[Stage]]] = {"04": _chapter_04, "05": _chapter_05}


def estimate(chapter: str, parameters: Mapping) -> list[Stage] | None:
    """The stages of ``chapter`` (its two-digit prefix) at ``parameters`` (every parameter of
    its ``parameters`` cell, the scale's changes applied), priced on this machine; None for a
    chapter without an estimator."""
    estimator = ESTIMATORS.get(chapter[:2])
    return None if estimator is None else estimator(dict(parameters))
