r"""Data assimilation inside training: learn a surrogate from sparse, noisy, nonlinear
observations alone, with a filter in the loop (the abstract's promise of Tang et al. 2026,
in the form of Brajard et al. 2020).

Only observations :math:`y_n = h(x_n) + \varepsilon_n` of a long trajectory are known; at
each step a new random subset of the components is observed. The loop:

0. **Start.** Invert :math:`h` where observed and interpolate each component linearly in
   time between its observations; train surrogate :math:`M_0` on that field (the
   *raw-observation* surrogate).
1. **Assimilate.** Cycle a filter (EnSF, stochastic EnKF, ETKF or LETKF) over
   the observations with :math:`M_k` as the forecast model; keep the analysis mean
   :math:`\bar x^a_n` and per-component variance :math:`v^a_{n,i}` at every step.
2. **Retrain.** Warm-start from :math:`M_k` and fit the analysis trajectory, each target
   entry weighted by :math:`w_{n,i} \propto 1 / (v^a_{n,i} + v_\mathrm{floor})` (mean one):
   :math:`M_{k+1} = \arg\min \sum_{n,i} w_{n,i} (M(\bar x^a_{n-W:n})_i - \bar x^a_{n,i})^2`.
3. Repeat 1-2 ``n_iterations`` times.

Every surrogate :math:`M_k` is scored against the truth, which the loop never sees: its
one-step RMSE, its forecast *valid time* (the time its normalised RMSE
:math:`\lVert \hat x - x \rVert / (\sqrt d\, \sigma_\mathrm{clim})` stays below 0.5, in
Lyapunov times, averaged over many starts), and the analysis RMSE of the cycle run with it.

Each outer iteration is checkpointed under ``<cache>/hybrid/<key>/`` (``key`` hashes the
setting and the loop configuration): its analysis (``.npz``) and scores (``.json``) are
written as soon as they exist, and the retraining goes through the cached, resumable
:func:`scoreda.surrogates.train.train`, so an interrupted run resumes at the phase it
stopped in.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from scoreda import _checks, assimilate, cache, observe
from scoreda.experiments import compare
from scoreda.filters import registry
from scoreda.surrogates import conv, evaluate, train
from scoreda.surrogates import data as data_lib
from scoreda.systems import lorenz96 as l96

FILTERS = ("EnSF", "EnKF", "ETKF", "LETKF", "IEnKF", "LETKF-tan")


@dataclasses.dataclass(frozen=True)
class Setting:
    """A Lorenz-96 observation setting: ``n_observed`` of ``d`` components, drawn anew at
    every step (of length ``dt``), observed through ``obs`` with noise ``obs_std``."""

    name: str
    d: int
    dt: float
    obs: str
    obs_std: float
    n_observed: int
    forcing: float = 8.0

    def __post_init__(self):
        _checks.integer("d", self.d, l96.MIN_DIM)
        _checks.positive("dt", self.dt)
        if self.obs not in ("identity", "arctan"):
            raise ValueError(f"obs must be 'identity' or 'arctan', got {self.obs!r}")
        _checks.positive("obs_std", self.obs_std)
        _checks.integer("n_observed", self.n_observed, 1)
        if self.n_observed > self.d:
            raise ValueError(f"n_observed must be <= d = {self.d}, got {self.n_observed}")


#: The paper's observation of Lorenz-96 (d = 20, arctan, sigma = 0.01, 5 of 20 components).
PAPER = Setting("paper", d=20, dt=0.05, obs="arctan", obs_std=0.01, n_observed=5)
#: Brajard et al. (2020): d = 40, identity, sigma = 1, half of the components, dt = 0.05.
BRAJARD2020 = Setting("brajard2020", d=40, dt=0.05, obs="identity", obs_std=1.0, n_observed=20)


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    r"""The loop's sizes and knobs (book defaults; the notebook's ``scale="paper"`` raises them).

    ``n_steps`` observed steps form the training window, cut into ``n_segments`` pieces (one
    is held out for validation). Every forecast adds N(0, ``model_error_std``^2) noise per
    component (the surrogate's error, for all filters); ``inflation`` is the Kalman filters'
    multiplicative inflation and ``radius`` the LETKF's localisation radius; EnSF runs the exponential integrator from the marginal start
    with ``ensf_steps`` steps. ``variance_floor`` is :math:`v_\mathrm{floor}` of the weights.
    """

    n_steps: int = 2000
    n_segments: int = 10
    n_iterations: int = 3
    n_members: int = 30
    init_std: float = 1.0
    model_error_std: float = 0.3
    inflation: float = 1.2
    radius: float = 4.0
    ensf_steps: int = 50
    eps_a: float = 0.5
    eps_b: float = 0.025
    variance_floor: float = 0.25
    surrogate: conv.ConvConfig = conv.ConvConfig()
    initial_training: train.TrainConfig = train.TrainConfig(
        epochs=8, batch_size=128, learning_rate=2e-3, samples_per_epoch=16_384, patience=3)
    retraining: train.TrainConfig = train.TrainConfig(
        epochs=4, batch_size=128, learning_rate=1e-3, samples_per_epoch=16_384, patience=2)
    seed: int = 0

    def __post_init__(self):
        for name, kind in (("surrogate", conv.ConvConfig), ("initial_training", train.TrainConfig),
                           ("retraining", train.TrainConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(f"{name} must be a {kind.__module__}.{kind.__name__}, got "
                                 f"{getattr(self, name)!r}")
        _checks.integer("n_steps", self.n_steps, 10)
        _checks.integer("n_segments", self.n_segments, 2)
        if self.n_steps // self.n_segments <= self.surrogate.window + 1:
            raise ValueError("n_steps / n_segments must exceed the surrogate's window + 1")
        _checks.integer("n_iterations", self.n_iterations, 0)
        _checks.integer("n_members", self.n_members, 2)
        _checks.positive("init_std", self.init_std)
        _checks.non_negative("model_error_std", self.model_error_std)
        _checks.inflation(self.inflation, stacklevel=4)  # names the LoopConfig(...) call
        _checks.positive("radius", self.radius)
        _checks.integer("ensf_steps", self.ensf_steps, 1)
        _checks.ensf_noise_scales(self.eps_a, self.eps_b)
        _checks.positive("variance_floor", self.variance_floor)


def config_for(setting: Setting, **overrides) -> LoopConfig:
    """The default :class:`LoopConfig` with a surrogate of the setting's ``d``, and overrides."""
    surrogate = overrides.pop("surrogate", conv.ConvConfig(d=setting.d))
    return LoopConfig(surrogate=surrogate, **overrides)


# ----------------------------------------------------------------------------- the data
class Experiment(NamedTuple):
    """The hidden truth ``(T, d)``, its observations, and the raw-observation field ``(T, d)``
    (``h`` inverted where observed, linear interpolation in time elsewhere)."""

    truth: jax.Array
    observations: observe.Observations
    filled: np.ndarray


def invert(setting: Setting, values):
    r""":math:`h^{-1}(y)`; for arctan the argument is clipped to :math:`|y| \le \pi/2 - 0.05`
    first (noise can push an observation past the asymptote)."""
    return observe.invert(setting.obs, values, margin=0.05)


def interpolate_in_time(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Fill each component's unobserved steps by linear interpolation in time between its
    observed ones (constant before the first and after the last); ``(T, d)`` in and out."""
    values, mask = np.asarray(values), np.asarray(mask, bool)
    steps = np.arange(values.shape[0])
    filled = np.empty(values.shape, np.float32)
    for i in range(values.shape[1]):
        seen = mask[:, i]
        if not seen.any():
            raise ValueError(f"component {i} is never observed; cannot interpolate it")
        filled[:, i] = np.interp(steps, steps[seen], values[seen, i])
    return filled


def attractor_states(setting: Setting, key, n: int, spinup_time: float = 20.0) -> jax.Array:
    """``n`` states on the setting's attractor, ``(n, d)`` (:func:`~scoreda.systems.lorenz96.attractor_states`)."""
    return l96.attractor_states(key, setting.d, n, setting.dt, setting.forcing, spinup_time)


def make_experiment(setting: Setting, n_steps: int, seed: int = 0) -> Experiment:
    """A true trajectory of ``n_steps`` steps on the attractor, observed at every step."""
    k_x, k_obs, k_mask = jax.random.split(jax.random.key(30_000 + seed), 3)
    x0 = attractor_states(setting, k_x, 1)[0]
    truth = l96.trajectory(x0, n_steps - 1, setting.dt, setting.forcing)
    mask = observe.random_masks(k_mask, n_steps, setting.d, setting.n_observed)
    obs = observe.observe(k_obs, truth, setting.obs, setting.obs_std, mask=mask)
    filled = interpolate_in_time(invert(setting, obs.values), obs.mask)
    return Experiment(truth, obs, filled)


def segments(field, n_segments: int) -> jax.Array:
    """Cut a ``(T, d)`` trajectory into ``n_segments`` equal pieces ``(n_segments, T // n_segments, d)``."""
    field = jnp.asarray(field)
    length = field.shape[0] // n_segments
    return field[: n_segments * length].reshape(n_segments, length, field.shape[1])


@dataclasses.dataclass(frozen=True)
class ObservationData:
    """Training data made from observations alone (identifies a raw-observation surrogate)."""

    setting: Setting
    n_steps: int
    n_segments: int
    seed: int

    @property
    def d(self) -> int:
        return self.setting.d


@dataclasses.dataclass(frozen=True)
class AnalysisData:
    """Training data made of the analyses of outer iteration ``iteration`` of loop ``loop``."""

    d: int
    loop: str
    iteration: int


def raw_surrogate(setting: Setting, config: LoopConfig, training: train.TrainConfig | None = None,
                  *, progress: bool = False) -> train.TrainedSurrogate:
    """The surrogate trained directly on the raw-observation field (cached)."""
    experiment = make_experiment(setting, config.n_steps, config.seed)
    field = segments(experiment.filled, config.n_segments)
    data_config = ObservationData(setting, config.n_steps, config.n_segments, config.seed)
    return train.train(data_config, config.surrogate, training or config.initial_training,
                       trajectories=data_lib.Trajectories(field, field), progress=progress)


# ------------------------------------------------------------------------------- scores
@functools.lru_cache(maxsize=8)
def system_scales(setting: Setting) -> tuple[float, float]:
    """``(leading Lyapunov exponent, climatological standard deviation)`` of the setting's
    Lorenz-96 (200 time units of tangent-linear growth; 401 states, 10 steps apart, of 10 trajectories)."""
    key = jax.random.key(40_000)
    x0 = attractor_states(setting, key, 10)
    n = int(round(200.0 / setting.dt))
    lyap = float(l96.leading_lyapunov_exponent(x0[0], n, setting.dt, setting.forcing,
                                               n_spinup=n // 10))
    states = l96.trajectory(x0, 4000, setting.dt, setting.forcing, save_every=10)
    return lyap, float(jnp.std(states))


def valid_times(predict, setting: Setting, window: int, *, n_starts: int = 100,
                horizon: float = 10.0, threshold: float = 0.5, seed: int = 1) -> np.ndarray:
    r"""Forecast valid times in Lyapunov times from ``n_starts`` attractor states: the first
    time the normalised RMSE :math:`\lVert\hat x_n - x_n\rVert/(\sqrt d\,\sigma_\mathrm{clim})`
    exceeds ``threshold`` (``horizon`` Lyapunov times when it never does). ``(n_starts,)``.

    ``predict``: batched ``(B, W, d) -> (B, d)``.
    """
    lyap, clim_std = system_scales(setting)
    n_steps = int(math.ceil(horizon / (lyap * setting.dt)))
    x0 = attractor_states(setting, jax.random.key(50_000 + seed), n_starts)
    truth = l96.trajectory(x0, window - 1 + n_steps, setting.dt, setting.forcing)
    forecast = evaluate.long_term(predict, truth[:, :window], n_steps)
    first = evaluate.valid_steps(forecast, truth[:, window:], clim_std, threshold)
    return np.minimum(first * setting.dt * lyap, horizon)


def one_step_rmse(predict, setting: Setting, window: int, *, n_starts: int = 100,
                  n_steps: int = 50, seed: int = 2) -> float:
    """RMSE of one-step predictions from true windows along ``n_starts`` test trajectories."""
    x0 = attractor_states(setting, jax.random.key(60_000 + seed), n_starts)
    truth = l96.trajectory(x0, window + n_steps - 1, setting.dt, setting.forcing)
    return evaluate.one_step_rmse(predict, truth, window)


def scores(model, setting: Setting, **kwargs) -> dict:
    """One-step RMSE and mean / median valid time (Lyapunov times) of a surrogate."""
    predict = train.as_function(model)
    window = model.config.window
    times = valid_times(predict, setting, window, **kwargs)
    return {"one_step_rmse": one_step_rmse(predict, setting, window),
            "valid_time": float(np.mean(times)), "valid_time_median": float(np.median(times))}


# ------------------------------------------------------------------------------ the loop
def filter_knobs(config: LoopConfig) -> dict:
    """The loop's knobs under the names the filters of the registry give them; a filter takes
    those it has (EnSF: ``n_steps``, ``eps_a``, ``eps_b``; the Kalman filters: ``inflation``,
    and ``radius`` where they localise) and the registry's defaults for the rest."""
    return {"inflation": config.inflation, "radius": config.radius,
            "n_steps": config.ensf_steps, "eps_a": config.eps_a, "eps_b": config.eps_b}


def make_filter(name: str, obs: str, config: LoopConfig):
    """The analysis step of the loop's filter ``name`` (one of ``FILTERS``): the registry's
    entry (:data:`scoreda.filters.FILTERS`) bound with :func:`filter_knobs`. Cached by the
    knobs it takes: one compilation per filter and knob values."""
    if name not in FILTERS:
        raise ValueError(f"filter must be one of {FILTERS}, got {name!r}")
    spec = registry.get(name)
    knobs = {k: v for k, v in filter_knobs(config).items() if k in spec.knobs}
    return _bound_filter(name, obs, tuple(sorted(knobs.items())))


@functools.lru_cache(maxsize=16)
def _bound_filter(name: str, obs: str, knobs: tuple):
    return registry.get(name).bind(obs=obs, **dict(knobs))


def assimilate_with(model, setting: Setting, config: LoopConfig, filter_name: str,
                    experiment: Experiment, *, progress: bool = False) -> assimilate.CycleResult:
    """Cycle ``filter_name`` over the experiment's observations with ``model`` forecasting.
    The initial members are the raw-observation field's first window plus N(0, init_std^2)."""
    window = config.surrogate.window
    filt = make_filter(filter_name, setting.obs, config)
    k_init, k_cycle = jax.random.split(jax.random.key(70_000 + config.seed))
    first = jnp.asarray(experiment.filled[:window])
    ens0 = first + config.init_std * jax.random.normal(k_init, (config.n_members,) + first.shape)
    obs = jax.tree.map(lambda a: a[window - 1:] if jnp.ndim(a) else a, experiment.observations)
    fn, model_args = train.forecast_model(model)
    return assimilate.cycle(k_cycle, assimilate.with_model_error(fn), filt,
                            experiment.truth[window - 1:], obs, ens0,
                            model_args=model_args + (jnp.float32(config.model_error_std),),
                            on_divergence="report", progress=progress)


def target_weights(variance, floor: float) -> np.ndarray:
    r"""Retraining weights :math:`w \propto 1/(v^a + v_\mathrm{floor})`, normalised to mean one
    over all entries; an entry without an analysis (variance NaN) weighs 0. Any shape in,
    the same shape out."""
    _checks.positive("floor", floor)
    variance = np.asarray(variance, float)
    if np.any(variance < 0):
        raise ValueError("analysis variances must be >= 0 (NaN where there is no analysis)")
    weights = 1.0 / (np.nan_to_num(variance, nan=np.inf) + floor)
    if not np.any(weights > 0):
        raise ValueError("no entry has an analysis variance (all NaN): nothing to weight")
    return weights / weights.mean()


def analysis_trajectories(result: assimilate.CycleResult, config: LoopConfig, window: int):
    r"""Training data from an analysis: means as inputs and targets, weights
    :func:`target_weights` (:math:`1/(v^a + v_\mathrm{floor})`, mean one); the first
    ``window - 1`` steps (before the cycle starts) are dropped."""
    mean = np.nan_to_num(result.analysis_mean)
    weights = target_weights(result.analysis_variance, config.variance_floor)
    cut = lambda a: segments(a, config.n_segments)
    return data_lib.Trajectories(cut(mean), cut(mean), cut(weights.astype(np.float32)))


class LoopResult(NamedTuple):
    """The loop's record: per iteration ``k = 0..n_iterations`` (surrogate ``M_k``) a dict with
    ``iteration``, ``one_step_rmse``, ``valid_time``, ``valid_time_median``, ``analysis_rmse``,
    ``analysis_spread`` (time averages over the second half of the cycle) and
    ``diverged_step``; the analysis RMSE curves ``(n_iterations + 1, T)``; the surrogates.
    A cycle that diverges ends the loop (there is no analysis to train on): the records stop
    at that iteration, whose ``diverged_step`` is >= 0."""

    records: list
    analysis_rmse: np.ndarray
    surrogates: list
    path: Path


def loop_key(setting: Setting, config: LoopConfig, filter_name: str) -> tuple[str, dict]:
    return cache.config_key(setting, config, filter=filter_name)


def run(setting: Setting, config: LoopConfig, filter_name: str, *, progress: bool = True) -> LoopResult:
    """Run (or resume, or load) the DA-inside-training loop of ``filter_name`` (see the module
    docstring). Scores are computed with :func:`scores` at their defaults."""
    if config.surrogate.d != setting.d:
        raise ValueError(f"the surrogate's d ({config.surrogate.d}) differs from the setting's d ({setting.d})")
    make_filter(filter_name, setting.obs, config)  # refuse a bad filter before any work
    key, described = loop_key(setting, config, filter_name)
    path = (cache.cache_dir() / "hybrid" / key).absolute()
    with cache.entry_lock(path):  # a second process waits, then loads this one's iterations
        cache.claim_entry(path, described, "loop entry")
        return _run_locked(setting, config, filter_name, key, path, progress)


def _stored_iteration(path: Path, k: int):
    """Iteration ``k``'s stored analysis and record (each None when absent); a file that
    cannot be read is removed with a :class:`~scoreda.cache.CacheWarning` naming
    it, and computed again."""
    analysis_file = path / f"iteration_{k}.npz"
    result = record = None
    try:
        if analysis_file.exists():
            with np.load(analysis_file) as stored:
                result = assimilate.CycleResult(**{f: stored[f] for f in stored.files})
        record = cache.read_json(path, f"iteration_{k}.json")
    except (cache.DamagedEntry, ValueError, OSError, TypeError, zipfile.BadZipFile) as err:
        warnings.warn(f"damaged loop cache entry {path}, iteration {k} ({type(err).__name__}: "
                      f"{err}); computing it again", cache.CacheWarning, stacklevel=3)
        for name in (f"iteration_{k}.npz", f"iteration_{k}.json"):
            (path / name).unlink(missing_ok=True)
        return None, None
    return result, record


def _run_locked(setting, config, filter_name, key, path, progress):
    experiment = make_experiment(setting, config.n_steps, config.seed)
    window = config.surrogate.window
    model = raw_surrogate(setting, config, progress=progress).model
    records, curves, surrogates = [], [], [model]
    bar = tqdm(total=config.n_iterations + 1, desc=f"{setting.name} {filter_name} loop",
               unit="iteration", disable=not progress)
    for k in range(config.n_iterations + 1):
        record_file, analysis_file = path / f"iteration_{k}.json", path / f"iteration_{k}.npz"
        result, record = _stored_iteration(path, k)
        if result is None:
            result = assimilate_with(model, setting, config, filter_name, experiment)
            cache.write_npz(analysis_file, result._asdict())
        if record is None:
            second_half = result.analysis_rmse[result.analysis_rmse.shape[0] // 2:]
            record = {"iteration": k, **scores(model, setting),
                      "analysis_rmse": float(np.mean(second_half)),
                      "analysis_spread": float(np.mean(result.analysis_spread[len(second_half):])),
                      "diverged_step": int(result.diverged_step)}
            cache.write_json(record_file, record)
        records.append(record)
        curves.append(result.analysis_rmse)
        bar.update(1)
        if result.diverged_step >= 0:
            break
        if k < config.n_iterations:
            trajectories = analysis_trajectories(result, config, window)
            model = train.train(AnalysisData(setting.d, key, k), config.surrogate, config.retraining,
                                trajectories=trajectories, initial_model=model, progress=False).model
            surrogates.append(model)
    bar.close()
    return LoopResult(records, np.stack(curves), surrogates, path)


# ------------------------------------------------------------------ the comparison harness
def case(setting: Setting, config: LoopConfig, model, *, name: str, model_key: str,
         n_steps: int = 500, burn_in: int = 100) -> compare.Case:
    """Cycling ``model`` (e.g. the raw-observation surrogate :math:`M_0`) through the
    setting's observations, as a comparison case (:mod:`scoreda.experiments.compare`).

    Trial ``seed`` is a trajectory of ``n_steps`` steps on the attractor made by
    :func:`make_experiment` with that seed (the loop itself trains on ``config.seed``'s, so
    use other seeds), cycled exactly as in :func:`assimilate_with`: the members start from
    the raw-observation field's first window plus ``config.init_std`` times standard-normal
    draws. ``model_key`` identifies the model for the result cache (e.g. its cache entry).
    """
    window = config.surrogate.window
    fn, model_args = train.forecast_model(model)

    def make_trial(seed: int) -> compare.Trial:
        experiment = make_experiment(setting, n_steps, int(seed))
        obs = jax.tree.map(lambda a: a[window - 1:] if jnp.ndim(a) else a, experiment.observations)
        first = jnp.asarray(experiment.filled[:window])
        noise = jax.random.normal(jax.random.key(70_000 + int(seed)),
                                  (config.n_members,) + first.shape, first.dtype)
        return compare.Trial(experiment.truth[window - 1:], obs, first, noise)

    key = json.dumps({"hybrid": dataclasses.asdict(setting), "model": model_key,
                      "n_steps": n_steps, "n_members": config.n_members}, sort_keys=True)
    return compare.Case(name, make_trial, fn, setting.obs, model_args=tuple(model_args),
                        burn_in=burn_in, init_std=config.init_std,
                        climate_std=system_scales(setting)[1], cache_key=key)
