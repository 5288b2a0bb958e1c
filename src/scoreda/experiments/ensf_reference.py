r"""The EnSF paper's Lorenz-96 experiment (Bao, Zhang & Zhang 2024), at any dimension.

EnSF was published with one headline: Lorenz-96 at :math:`d = 10^6`, tracked by 20 members
through :math:`\arctan` observations of every component. What its public code
(``zezhongzhang/EnSF``: ``data/gen_state_init``, ``run_all_EnSF``, ``ScoreFilter``) runs:

* Lorenz-96, :math:`F = 8`, RK4 with :math:`\Delta t = 0.01`; no model error, no inflation;
* the truth starts at :math:`3\,N(0, I)` and is spun up 1000 steps; 1500 steps follow,
  every component observed as :math:`\arctan x + N(0, \sigma^2)` (:math:`\sigma = 0.05`;
  also 0.03 and 0.1) at every 10th step: 150 analyses, the first one step after the start;
* the initial ensemble is :math:`N = 20` draws of :math:`N(0, I)`, independent of the truth;
* EnSF with :math:`\epsilon_\alpha = 0.5`, :math:`\epsilon_\beta = 0.025`, 500 Euler-Maruyama
  steps, the paired prior score, the score clipped at 1000, likelihood weight :math:`1 - t`;
* reported: the RMSE of the ensemble mean at the last analysis ("final RMSE"), one per seed,
  10 seeds (:data:`PUBLISHED_FINAL_RMSE`); its tuning at :math:`d = 100` scored the mean
  RMSE of the last 50 analyses.

:func:`case` is that experiment, at any ``d``, as a case of the comparison harness
(:mod:`scoreda.experiments.compare`): its time average starts at analysis 100 (the
reference's tuning score) and :func:`reference_method` is the reference's EnSF as a
:class:`~scoreda.experiments.compare.Method`; :func:`final_rmse` runs it trial by trial and
keeps the last analysis's RMSE (the reported number).

What differs here, by design of this package, not of the experiment:

* this package's EnSF diffuses the standardised state :math:`u = x - m` (:math:`m` the
  forecast ensemble's mean) and starts its reverse process at :math:`N(m, I)`; the
  reference diffuses :math:`x` itself towards 0 and starts at :math:`N(0, I)` draws
  standardised over the members (:mod:`scoreda.filters.ensf`);
* the first analysis is at the initial ensemble's time (the reference forecasts its
  :math:`N(0, I)` draws one step of 0.01 first, which moves them by about 0.08 against an
  initial error of about 4);
* forecasts are not clipped to :math:`\pm 50` after each step (a diverged run is counted as
  such by the harness instead).
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks, assimilate, observe
from scoreda.experiments import compare, records
from scoreda.experiments.compare.store import result_json, tuning_json
from scoreda.experiments.twin import CLIMATE_STD_F8, _advance
from scoreda.systems import lorenz96 as l96

#: the reference's dimension
REFERENCE_DIM = 1_000_000

#: the reference's reported final RMSE at d = 10^6 with its EnSF setting (eps_a 0.5,
#: eps_b 0.025, 500 Euler steps), by observation noise: the mean of the 10 seeds' printed
#: values in ``run_all_EnSF.ipynb`` (per-seed spread about +-0.002; at sigma 0.05 the seeds
#: span 0.203-0.206)
PUBLISHED_FINAL_RMSE = {0.03: 0.1665, 0.05: 0.2044, 0.1: 0.4843}

#: the reference's tuning at d = 100 (mean RMSE of the last 50 analyses, 10 seeds): its
#: EnSF setting 0.1928, its best LETKF (inflation 1.1, Gaussian taper of radius 4) 0.1382
PUBLISHED_TUNING_D100 = {"EnSF": 0.1928, "LETKF": 0.1382}

#: the reference's EnSF knobs, in this package's names
REFERENCE_KNOBS = {"eps_a": 0.5, "eps_b": 0.025, "n_steps": 500, "integrator": "euler",
                   "start": "standard"}


@dataclasses.dataclass(frozen=True)
class ReferenceConfig:
    """The reference experiment's settings (defaults: the reference's, but ``d``).

    ``scored_from``: the first analysis in the harness's time averages (the reference's
    tuning scored analyses 100-149).
    """

    d: int = 1000
    obs_std: float = 0.05
    n_members: int = 20
    n_cycles: int = 150
    steps_per_cycle: int = 10
    dt: float = 0.01
    forcing: float = 8.0
    spinup_steps: int = 1000
    truth_init_std: float = 3.0
    scored_from: int = 100

    def __post_init__(self):
        _checks.integer("d", self.d, l96.MIN_DIM)
        _checks.positive("obs_std", self.obs_std)
        _checks.integer("n_members", self.n_members, 2)
        _checks.integer("n_cycles", self.n_cycles, 2)
        _checks.integer("steps_per_cycle", self.steps_per_cycle, 1)
        _checks.positive("dt", self.dt)
        _checks.finite_scalar("forcing", self.forcing)
        _checks.integer("spinup_steps", self.spinup_steps, 0)
        _checks.positive("truth_init_std", self.truth_init_std)
        _checks.integer("scored_from", self.scored_from, 0)
        for field in dataclasses.fields(self):  # numpy scalars as Python numbers (JSON)
            cast = int if field.type in (int, "int") else float
            object.__setattr__(self, field.name, cast(getattr(self, field.name)))
        if self.scored_from >= self.n_cycles:
            raise ValueError(f"scored_from ({self.scored_from}) must be below n_cycles "
                             f"({self.n_cycles}): nothing would be scored")


def make_trial(config: ReferenceConfig, seed: int) -> compare.Trial:
    """Trial ``seed``: the truth at the ``n_cycles`` analysis times ``(n_cycles, d)`` (started
    at ``truth_init_std * N(0, I)``, spun up ``spinup_steps + 1`` steps: the first analysis
    is one step after the reference's start), its arctan observations of every component,
    and the initial ensemble's draws: ``center`` 0, ``noise`` ``N(0, I)`` of shape ``(N, d)``
    (with ``init_std`` 1 the reference's ensemble, independent of the truth)."""
    (seed,) = _checks.seeds("seed", [seed])
    k_truth, k_obs, k_ens = jax.random.split(jax.random.key(seed), 3)
    x0 = config.truth_init_std * jax.random.normal(k_truth, (config.d,))
    x0 = l96.trajectory(x0, config.spinup_steps + 1, config.dt, config.forcing,
                        save_every=config.spinup_steps + 1)[-1]
    every = config.steps_per_cycle
    truth = l96.trajectory(x0, (config.n_cycles - 1) * every, config.dt, config.forcing,
                           save_every=every)
    observations = observe.observe(k_obs, truth, "arctan", config.obs_std)
    noise = jax.random.normal(k_ens, (config.n_members, config.d))
    return compare.Trial(truth, observations, jnp.zeros(config.d), noise)


def case(config: ReferenceConfig, name: str | None = None) -> compare.Case:
    """The reference experiment of ``config`` as a comparison case: trial ``seed`` is
    :func:`make_trial`, the forecast model RK4 ``steps_per_cycle`` steps, the time averages
    from analysis ``scored_from`` on, the initial ensemble ``N(0, I)`` (``init_std`` 1)."""
    if not isinstance(config, ReferenceConfig):
        raise ValueError(f"config must be a ReferenceConfig, got {type(config).__name__}")
    model = assimilate.deterministic(
        partial(_advance, n_steps=config.steps_per_cycle, dt=config.dt, forcing=config.forcing))
    described = dataclasses.asdict(config)
    name = name or f"EnSF reference, d = {config.d}, sigma = {config.obs_std:g}"
    return compare.Case(name, partial(make_trial, config), model, "arctan",
                        burn_in=config.scored_from, init_std=1.0,
                        climate_std=CLIMATE_STD_F8 if config.forcing == 8.0 else None,
                        divergence_bound=50.0,
                        cache_key="ensf reference " + json.dumps(described, sort_keys=True))


def reference_method(label: str = "EnSF, the reference's setting") -> compare.Method:
    """The reference's EnSF (:data:`REFERENCE_KNOBS`) as an untuned harness method."""
    return compare.Method(label, "EnSF", knobs=dict(REFERENCE_KNOBS), grid={})


#: the Kalman filters' grids in the comparison: the reference's LETKF grid spans inflation
#: 0.9-1.8 (0.9 diverged there), so the same span above 1 (1.05 lost track in the lab tier's
#: tuning); localisation radii in DAPPER's convention
COMPARISON_INFLATION = (1.1, 1.2, 1.4, 1.8)
COMPARISON_RADIUS = (4.0, 8.0)
#: the initial ensemble's spread: the reference's 1, or about the climate's (3.6), as an
#: expert would start a filter that knows nothing of the truth (every tuned method gets it)
COMPARISON_INIT_STD = (1.0, 3.6)


def comparison_methods() -> list[compare.Method]:
    """The filters of the tuned comparison: EnSF tuned over eps_b (the reference's 0.025
    inside the grid) and, as a labelled row, as the reference set it; the LETKF on y and on
    tan(y) (LETKF-tan), tuned over inflation and radius; every tuned method also over the
    initial spread (:data:`COMPARISON_INIT_STD`); two widening rounds each. (The IEnKF
    costs 90 s per run at d = 1000 on two CPU cores and is left to a GPU record.)"""
    ensf_fixed = {k: v for k, v in REFERENCE_KNOBS.items() if k != "eps_b"}
    start = {"init_std": COMPARISON_INIT_STD}
    kalman = {"inflation": COMPARISON_INFLATION, "radius": COMPARISON_RADIUS} | start
    return [compare.Method("EnSF", "EnSF", knobs=ensf_fixed,
                           grid={"eps_b": (0.01, 0.025, 0.05, 0.1)} | start, widen=2),
            reference_method(),
            compare.Method("LETKF", "LETKF", grid=kalman, widen=2),
            compare.Method("LETKF-tan", "LETKF-tan", grid=kalman, widen=2)]


def reproduction(final_rmses, published: float) -> dict:
    """Is the mean over seeds of ``final_rmses`` (one per seed; None or NaN: the seed
    diverged) consistent with ``published``? Its percentile bootstrap 95% interval
    (:func:`scoreda.experiments.statistics.mean_interval`) over the seeds that finished:
    ``{"mean", "low", "high", "n", "diverged", "ratio" (mean / published), "verdict"}``. The
    verdict: ``"diverged"`` when any seed diverged (every seed of the reference finished, so
    that is not a reproduction, whatever the others say), ``"not comparable"`` with fewer
    than two finished seeds, ``"reproduced"`` when the interval holds the published value
    (a test that does not reject, weak with wide intervals), else ``"lower"`` or
    ``"higher"`` than it."""
    from scoreda.experiments.statistics import mean_interval

    _checks.positive("published", published)
    if isinstance(final_rmses, (str, bytes, dict)) or not hasattr(final_rmses, "__len__"):
        raise ValueError(f"final_rmses must be a sequence of numbers, got {final_rmses!r}")
    if any(isinstance(v, (bool, np.bool_, str, bytes)) for v in final_rmses):
        raise ValueError(f"final_rmses must be numbers (None or NaN: a diverged seed), got "
                         f"{final_rmses!r}")
    try:
        values = np.asarray([np.nan if v is None else v for v in final_rmses], float)
    except (TypeError, ValueError):
        raise ValueError("final_rmses must be numbers (None or NaN: a diverged seed), got "
                         f"{final_rmses!r}") from None
    if values.ndim != 1:
        raise ValueError(f"final_rmses must be one value per seed, got shape {values.shape}")
    if np.any(values < 0) or np.any(np.isinf(values)):
        raise ValueError(f"final_rmses must be finite and >= 0 (NaN: diverged), got {values}")
    n_diverged = int(np.isnan(values).sum())
    mean, low, high = mean_interval(values)
    if n_diverged:
        verdict = "diverged"
    elif not np.isfinite(low):
        verdict = "not comparable"
    elif low <= published <= high:
        verdict = "reproduced"
    else:
        verdict = "lower" if high < published else "higher"
    return {"mean": float(mean), "low": float(low), "high": float(high),
            "n": int(values.size - n_diverged), "diverged": n_diverged,
            "ratio": float(mean / published), "verdict": verdict}


def final_rmse(config: ReferenceConfig, seeds, method: compare.Method | None = None,
               knobs: dict | None = None, *, progress: bool = False) -> dict:
    """Run ``method`` (default: :func:`reference_method`) with ``knobs`` (default: its own)
    on the trials ``seeds`` one at a time; per seed the RMSE of the analysis mean at the last
    analysis (the reference's "final RMSE"), the mean over analyses ``scored_from`` on, and
    the step where the run diverged (-1: none; its RMSEs are then NaN).

    Returns ``{"final": (n,), "late_mean": (n,), "diverged_step": (n,)}`` as numpy arrays.
    """
    method = reference_method() if method is None else method
    knobs = dict(method.knobs) if knobs is None else dict(knobs)
    the_case = case(config)
    final, late, diverged = [], [], []
    for seed in _checks.seeds("seeds", seeds, 1):
        result = compare.trajectory(the_case, method, knobs, seed, progress=progress)
        rmse = np.asarray(result.analysis_rmse, float)
        ok = result.diverged_step < 0
        final.append(rmse[-1] if ok else np.nan)
        late.append(float(np.mean(rmse[config.scored_from:])) if ok else np.nan)
        diverged.append(int(result.diverged_step))
    return {"final": np.asarray(final), "late_mean": np.asarray(late),
            "diverged_step": np.asarray(diverged)}


# ---------------------------------------------------------------------------------------
# the record: resumable, one run (seed) at a time


def stage_name(config: ReferenceConfig) -> str:
    """A stage's key in the record: ``"d=1000 sigma=0.05"``."""
    return f"d={config.d} sigma={config.obs_std:g}"


def read_record(path) -> dict:
    """The record at ``path`` (``{"stages": {}, "comparisons": {}}`` when there is none)."""
    return records.read_sweep(path, ("stages", "comparisons"),
                              "the EnSF reference experiment")


def _write(path, record: dict) -> None:
    records.write_sweep(path, record)


def record_final_rmse(path, config: ReferenceConfig, seeds, *, progress: bool = True) -> dict:
    """Run the reference's EnSF (:func:`final_rmse`) on ``seeds`` and keep every finished
    seed in the record at ``path`` (JSON, written after each seed): an interrupted stage
    resumes at its first unfinished seed, a finished one is returned as it is. An unfinished
    stage begun with other settings, or by another version of the package (its code
    digest), is refused rather than mixed. Returns the
    stage: config, seeds done, per-seed ``final``, ``late_mean``, ``diverged_step``,
    ``seconds``, and the machine, versions and times of its attempts."""
    import time

    from scoreda import _digest, runs

    seeds = _checks.seeds("seeds", seeds, 1)
    record = read_record(path)
    key = stage_name(config)
    code = _digest.package_digest()
    stage = record["stages"].get(key)
    settings = {"config": dataclasses.asdict(config), "knobs": dict(REFERENCE_KNOBS),
                "code": code}
    if (stage is not None and stage.get("config") == settings["config"]
            and stage.get("knobs") == settings["knobs"] and set(seeds) <= set(stage["seeds"])):
        return stage  # finished: nothing to run, whatever code asks
    if stage is not None and {k: stage.get(k) for k in settings} != settings:
        raise ValueError(f"{path}: stage {key!r} was begun with other settings or another "
                         f"version of the package; remove it from the record to run it anew")
    if stage is None:
        stage = settings | {"seeds": [], "final": [], "late_mean": [], "diverged_step": [],
                            "seconds": [], "attempts": []}
        record["stages"][key] = stage
    attempt = {"machine": runs.machine(), "versions": runs.versions(), "started": runs._now()}
    stage["attempts"].append(attempt)
    for seed in seeds:
        if seed in stage["seeds"]:
            continue
        start = time.perf_counter()
        out = final_rmse(config, [seed], progress=progress)
        stage["seeds"].append(seed)
        for name in ("final", "late_mean"):
            value = float(out[name][0])
            stage[name].append(value if np.isfinite(value) else None)
        stage["diverged_step"].append(int(out["diverged_step"][0]))
        stage["seconds"].append(round(time.perf_counter() - start, 2))
        attempt["ended"] = runs._now()
        _write(path, record)
    attempt.setdefault("ended", runs._now())
    _write(path, record)
    return stage


def _refuse_another(path, kind: str, key: str, settings: dict) -> None:
    """Raise ``ValueError`` if the record at ``path`` holds under ``kind`` an entry ``key``
    whose ``settings`` differ (its name says d and sigma only)."""
    records.refuse_another(read_record(path), path, kind, key, settings)


def record_comparison(path, config: ReferenceConfig, methods, *, tuning_seeds,
                      evaluation_seeds, reference: str | None = None,
                      progress: bool = True) -> compare.Comparison:
    """:func:`scoreda.experiments.compare.compare` on :func:`case` (cached, so resumable
    within a method), its numbers (:meth:`~scoreda.experiments.compare.Comparison.record`)
    and table kept in the record at ``path`` with the machine and versions it ran on."""
    from scoreda import runs

    _refuse_another(path, "comparisons", stage_name(config),
                    {"config": dataclasses.asdict(config)})
    started = runs._now()
    comparison = compare.compare(case(config), methods, tuning_seeds=tuning_seeds,
                                 evaluation_seeds=evaluation_seeds, reference=reference,
                                 progress=progress)
    record = read_record(path)
    record["comparisons"][stage_name(config)] = {
        "config": dataclasses.asdict(config), "record": comparison.record(),
        "machine": runs.machine(), "versions": runs.versions(), "started": started,
        "ended": runs._now()}
    _write(path, record)
    return comparison


def transfer_name(large: ReferenceConfig, label: str) -> str:
    """The name of a transfer in the record's ``transfers``: the large stage's name and the
    method's label (e.g. ``"d=1000 sigma=0.05 LETKF"``)."""
    return f"{stage_name(large)} {label}"


def record_transfer(path, small: ReferenceConfig, large: ReferenceConfig,
                    method: compare.Method, *, tuning_seeds, evaluation_seeds,
                    progress: bool = True) -> dict:
    """Tune ``method`` at the ``small`` dimension (harness, ``tuning_seeds``) and evaluate the
    chosen knobs at the ``large`` one on ``evaluation_seeds``, as the reference did with its
    LETKF (tuned at d = 100, run at d = 10^6). Kept in the record's ``transfers`` under the
    large stage's name and the method's label: the knobs, the tuning and the per-trial
    time-averaged RMSEs (NaN, stored as null: diverged)."""
    from scoreda import runs

    tuning_seeds = _checks.seeds("tuning_seeds", tuning_seeds, 1)
    evaluation_seeds = _checks.seeds("evaluation_seeds", evaluation_seeds, 1)
    key = transfer_name(large, method.label)
    _refuse_another(path, "transfers", key, {"small": dataclasses.asdict(small),
                                             "large": dataclasses.asdict(large),
                                             "method": method.describe()})
    started = runs._now()
    tuning = compare.tune(case(small), method, tuning_seeds, progress=progress)
    result = compare.evaluate(case(large), method, tuning.chosen, evaluation_seeds,
                              progress=progress)
    record = read_record(path)
    entry = {"small": dataclasses.asdict(small), "large": dataclasses.asdict(large),
             "method": method.describe(), "tuning": tuning_json(tuning),
             "result": result_json(result), "tuning_seeds": list(tuning_seeds),
             "evaluation_seeds": list(evaluation_seeds),
             "machine": runs.machine(), "versions": runs.versions(), "started": started,
             "ended": runs._now()}
    record.setdefault("transfers", {})[key] = entry
    _write(path, record)
    return entry


def comparison_from_record(entry: dict) -> compare.Comparison:
    """A stored comparison (an entry of the record's ``comparisons``) back as a
    :class:`~scoreda.experiments.compare.Comparison`, for its tables and verdicts."""
    return compare.Comparison.from_record(entry["record"])
