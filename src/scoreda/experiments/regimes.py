"""Chapter 8's regime map: Lorenz-96 twins that differ in what is observed, how and when,
in the forecast model's error and in the ensemble size, each with every filter of the
registry tuned by the harness.

:data:`REGIMES` holds each regime's :class:`~scoreda.experiments.twin.TwinConfig` settings,
:data:`GRIDS` each filter's tuning grid there (centred where the filter's tuning twins put
its best point; the harness widens a grid whose choice sits at an edge), :func:`config`
builds a regime's twin at a chapter's sizes and :func:`methods` its filters. The map's
first four regimes run in the chapter; :data:`RECORDED` (the regimes where Kalman filters
are expected to struggle) are too costly for the book's time budget and are kept in a
record (:func:`record_comparison`, ``scripts/record_regimes.py``) that the chapter reads.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from scoreda.experiments import compare, records, twin

#: twin settings per regime (d = 40, F = 8 unless said)
REGIMES = {
    # every component, sigma = 1, every 0.05 time units (chapter 3's linear twin)
    "linear": dict(obs="identity", obs_std=1.0, dt=0.05, steps_per_cycle=1),
    # arctan x, sigma = 0.05, every 0.1 time units (chapter 3's arctan twin)
    "arctan": dict(obs="arctan", obs_std=0.05, dt=0.01, steps_per_cycle=10),
    "linear, half observed": dict(
        obs="identity", obs_std=1.0, dt=0.05, steps_per_cycle=1, observed_fraction=0.5),
    "linear, every 10 steps": dict(obs="identity", obs_std=1.0, dt=0.05, steps_per_cycle=10),
    # --- the regimes of RECORDED
    # arctan observed every 0.5 time units: the forecast spread grows far past arctan's
    # saturation scale between analyses
    "arctan, every 50 steps": dict(obs="arctan", obs_std=0.05, dt=0.01, steps_per_cycle=50),
    # the paper's observation network: arctan with sigma = 0.01 of a new random quarter of
    # the components each analysis (every 0.1 time units here)
    "arctan, quarter observed": dict(obs="arctan", obs_std=0.01, dt=0.01, steps_per_cycle=10,
                                     observed_fraction=0.25),
    # model error: the forecast model's forcing is 7, the truth's 8
    "linear, wrong forcing": dict(obs="identity", obs_std=1.0, dt=0.05, steps_per_cycle=1,
                                  model_forcing=7.0),
    # a shock: the truth's forcing jumps from 8 to 12 in the middle of the scored cycles;
    # the forecast model keeps 8
    "linear, forcing shock": dict(obs="identity", obs_std=1.0, dt=0.05, steps_per_cycle=1,
                                  shock_forcing=12.0),
    # 8 members, fewer than Lorenz-96's about 13 unstable directions at d = 40
    "linear, 8 members": dict(obs="identity", obs_std=1.0, dt=0.05, steps_per_cycle=1,
                              n_members=8),
}

#: the regimes kept in the record rather than run by the chapter
RECORDED = ("arctan, every 50 steps", "arctan, quarter observed", "linear, wrong forcing",
            "linear, forcing shock", "linear, 8 members")

#: the map's columns: every filter of the registry that a regime can run
COLUMNS = ["ETKF", "LETKF", "IEnKF", "LETKF-tan", "EnSF", "EnSF mixture", "EnSF-G", "EnSF-LR"]
#: the Kalman family among them (a regime's "better Kalman filter" is their best)
KALMAN = ("ETKF", "LETKF", "IEnKF", "LETKF-tan")
#: the score-filter family
SCORE = ("EnSF", "EnSF mixture", "EnSF-G", "EnSF-LR")

_CHAPTER3 = {  # chapter 3's grids, so that its cached comparisons are reused
    "LETKF": {"inflation": (1.0, 1.02, 1.05), "radius": (4.0, 8.0)},
    "ETKF": {"inflation": (1.0, 1.02, 1.05, 1.1, 1.2, 1.4)},
    "EnSF": {"eps_b": (0.005, 0.01, 0.025, 0.05, 0.1, 0.2)},
    "EnSF mixture": {"kernel_var": (0.002, 0.01, 0.05), "eps_b": (0.005, 0.01, 0.05)},
}
_MODEL_ERROR = {"model_error": (0.0, 0.1, 0.2, 0.4)}  # offered to every filter (wrong model)
_WRONG_MODEL = {
    "LETKF": {"inflation": (1.0, 1.05, 1.1, 1.2), "radius": (2.0, 4.0, 8.0)} | _MODEL_ERROR,
    "ETKF": {"inflation": (1.0, 1.1, 1.2, 1.4)} | _MODEL_ERROR,
    "EnSF": {"eps_b": (0.05, 0.1, 0.2, 0.4, 0.8)} | _MODEL_ERROR,
    "EnSF mixture": {"kernel_var": (0.01, 0.05, 0.25), "eps_b": (0.01, 0.05, 0.2)}
    | _MODEL_ERROR,
    "EnSF-G": {"inflation": (1.0, 1.05, 1.1), "radius": (2.0, 4.0, 8.0)} | _MODEL_ERROR,
}

#: arctan observed every 0.5 time units: the LETKF's choice at a first grid's corner
#: (inflation 1.4, radius 1 after widening), for every Kalman filter there
_ARCTAN_RARE = {"inflation": (1.05, 1.1, 1.2, 1.4, 1.6), "radius": (1.0, 2.0, 4.0, 8.0)}

#: each regime's tuning grid per filter
GRIDS = {
    "linear": _CHAPTER3
    | {"EnSF-G": {"inflation": (0.96, 0.98, 1.0), "radius": (4.0, 8.0, 16.0)}},
    "arctan": _CHAPTER3 | {
        "EnSF-G": {"inflation": (0.98, 1.0, 1.02), "radius": (8.0, 16.0, np.inf)},
        "IEnKF": _CHAPTER3["LETKF"],
        "LETKF-tan": _CHAPTER3["LETKF"],
    },
    "linear, half observed": {
        "LETKF": {"inflation": (0.98, 1.0, 1.05), "radius": (2.0, 4.0, 8.0)},
        "ETKF": {"inflation": (1.02, 1.05, 1.1)},
        "EnSF": {"eps_b": (0.2, 0.5, 0.8)},
        "EnSF mixture": {"kernel_var": (0.01, 0.05, 0.2), "eps_b": (0.05, 0.2, 0.5)},
        "EnSF-G": {"inflation": (0.96, 0.98, 1.0), "radius": (4.0, 8.0, 16.0)},
        "EnSF-LR": {"eps_b": (0.1, 0.2, 0.5), "radius": (1.0, 2.0, 4.0)},
    },
    "linear, every 10 steps": {
        "LETKF": {"inflation": (1.1, 1.2, 1.4), "radius": (1.0, 2.0, 4.0)},
        "ETKF": {"inflation": (1.6, 2.0, 2.5)},
        "EnSF": {"eps_b": (0.2, 0.5, 0.8)},
        "EnSF mixture": {"kernel_var": (0.01, 0.05, 0.2), "eps_b": (0.05, 0.2, 0.5)},
        "EnSF-G": {"inflation": (1.1, 1.2, 1.4), "radius": (2.0, 4.0, 8.0)},
    },
    "arctan, every 50 steps": {  # the three Kalman filters on one grid
        "LETKF": _ARCTAN_RARE,
        "ETKF": {"inflation": (1.1, 1.2, 1.4, 1.8)},
        "EnSF": {"eps_b": (0.1, 0.2, 0.5, 0.8)},
        "EnSF mixture": {"kernel_var": (0.01, 0.05, 0.2), "eps_b": (0.05, 0.2, 0.5)},
        "EnSF-G": {"inflation": (1.0, 1.1, 1.2), "radius": (4.0, 8.0, 16.0)},
        "IEnKF": _ARCTAN_RARE,
        "LETKF-tan": _ARCTAN_RARE,
    },
    "arctan, quarter observed": {
        "LETKF": {"inflation": (1.0, 1.05, 1.1, 1.2), "radius": (2.0, 4.0, 8.0)},
        "ETKF": {"inflation": (1.05, 1.1, 1.2, 1.4)},
        "EnSF": {"eps_b": (0.05, 0.2, 0.5, 0.8)},
        "EnSF mixture": {"kernel_var": (0.01, 0.05, 0.2), "eps_b": (0.05, 0.2, 0.5)},
        "EnSF-G": {"inflation": (0.98, 1.0, 1.05, 1.1), "radius": (4.0, 8.0, 16.0)},
        "EnSF-LR": {"eps_b": (0.001, 0.003, 0.01, 0.03), "radius": (1.0, 2.0, 4.0)},
        "IEnKF": {"inflation": (1.0, 1.05, 1.1, 1.2), "radius": (2.0, 4.0, 8.0)},
        "LETKF-tan": {"inflation": (1.0, 1.05, 1.1, 1.2), "radius": (2.0, 4.0, 8.0)},
    },
    "linear, wrong forcing": _WRONG_MODEL,
    "linear, forcing shock": _WRONG_MODEL,
    "linear, 8 members": {
        "LETKF": {"inflation": (0.98, 1.0, 1.02, 1.05, 1.1), "radius": (2.0, 4.0, 8.0)},
        "ETKF": {"inflation": (1.1, 1.2, 1.4, 1.8)},
        "EnSF": {"eps_b": (0.05, 0.1, 0.2, 0.4)},
        "EnSF mixture": {"kernel_var": (0.002, 0.01, 0.05), "eps_b": (0.005, 0.01, 0.05)},
        "EnSF-G": {"inflation": (0.98, 1.0, 1.05, 1.1), "radius": (2.0, 4.0, 8.0)},
    },
}


def config(name: str, *, d: int, n_members: int, n_cycles: int,
           burn_in: int) -> twin.TwinConfig:
    """The twin of regime ``name`` at these sizes (a regime's own ensemble size, as in
    ``"linear, 8 members"``, replaces ``n_members``)."""
    if name not in REGIMES:
        raise ValueError(f"unknown regime {name!r}; choose among {list(REGIMES)}")
    sizes = dict(d=d, n_members=n_members, n_cycles=n_cycles, burn_in=burn_in)
    return twin.TwinConfig(**(sizes | REGIMES[name]))


def methods(name: str, config: twin.TwinConfig, *, ensf_steps: int, expensive: bool,
            widen: int = compare.Method.widen) -> list[compare.Method]:
    """Every filter that regime ``name`` runs, with its grid (:data:`GRIDS`): the LETKF, the
    ETKF, EnSF (``ensf_steps`` reverse steps) and EnSF-G; with ``arctan`` observations the
    LETKF on tan y; with a part of the state observed EnSF-LR; and, when ``expensive``
    (the chapter's paper scale, the record) or in the regimes linear and arctan, EnSF with a
    mixture prior, and with ``arctan`` the IEnKF (each of its iterations costs an LETKF
    analysis). ``widen``: the harness's rounds of grid widening (default: the harness's)."""
    if name not in GRIDS:
        raise ValueError(f"unknown regime {name!r}; choose among {list(GRIDS)}")
    grids = GRIDS[name]

    def method(label, **knobs):
        return compare.Method(label, label, knobs=knobs, grid=grids[label], widen=widen)

    out = [method("LETKF"), method("ETKF"), method("EnSF", n_steps=ensf_steps)]
    if name in ("linear", "arctan") or expensive:
        out.append(method("EnSF mixture", n_steps=ensf_steps))
    out.append(method("EnSF-G"))
    if config.obs == "arctan":
        out += [method(m) for m in (("IEnKF", "LETKF-tan") if expensive else ("LETKF-tan",))]
    if config.observed_fraction < 1.0:
        out.append(method("EnSF-LR", n_steps=ensf_steps))
    return out


# ---------------------------------------------------------------------------------------
# the record of the regimes the chapter does not run

#: the tiers of the record: the chapter's lab sizes and its paper scale (scale = "paper")
TIERS = {
    "lab": dict(n_cycles=250, burn_in=80, n_trials=10, tuning_seeds=(101, 102, 103)),
    "paper": dict(n_cycles=2000, burn_in=500, n_trials=20, tuning_seeds=(101, 102, 103)),
}
#: the sizes every tier shares (the chapter's defaults)
SHARED = dict(d=40, n_members=20, ensf_steps=200, close_call_trials=10,
              widen=compare.Method.widen)


def entry_name(tier: str, name: str) -> str:
    """A comparison's key in the record: ``"lab: linear, forcing shock"``."""
    return f"{tier}: {name}"


def read_record(path) -> dict:
    """The record at ``path`` (``{"comparisons": {}}`` when there is none)."""
    return records.read_sweep(path, ("comparisons",), "chapter 8's regimes")


def stage(tier: str, name: str):
    """What :func:`record_comparison` runs for regime ``name`` in ``tier``: the twin's
    config and the harness's arguments."""
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose among {list(TIERS)}")
    sizes = TIERS[tier]
    cfg = config(name, d=SHARED["d"], n_members=SHARED["n_members"],
                 n_cycles=sizes["n_cycles"], burn_in=sizes["burn_in"])
    n = sizes["n_trials"]
    return cfg, dict(
        methods=methods(name, cfg, ensf_steps=SHARED["ensf_steps"], expensive=True,
                        widen=SHARED["widen"]),
        tuning_seeds=sizes["tuning_seeds"], evaluation_seeds=range(n),
        close_call_seeds=range(n, n + SHARED["close_call_trials"]), reference="LETKF")


def record_comparison(path, tier: str, name: str, *,
                      progress: bool = True) -> compare.Comparison:
    """Run regime ``name`` at ``tier`` through the harness (cached, so an interrupted run
    resumes within a method) and keep its numbers
    (:meth:`~scoreda.experiments.compare.Comparison.record`), the twin's config, the methods
    and the machine and versions it ran on in the record at ``path``. An entry of the same
    name run with other settings is refused, a finished one returned as stored."""
    from scoreda import runs

    cfg, harness = stage(tier, name)
    key = entry_name(tier, name)
    settings = {"config": dataclasses.asdict(cfg),
                "methods": [m.describe() for m in harness["methods"]]}
    record = read_record(path)
    records.refuse_another(record, path, "comparisons", key, settings)
    if key in record["comparisons"]:
        return compare.Comparison.from_record(record["comparisons"][key]["record"])
    started = runs._now()
    comparison = compare.compare(twin.case(cfg, name), progress=progress, **harness)
    record = read_record(path)
    record["comparisons"][key] = settings | {
        "record": comparison.record(), "machine": runs.machine(), "versions": runs.versions(),
        "started": started, "ended": runs._now()}
    records.write_sweep(path, record)
    return comparison


def recorded(path) -> dict[tuple[str, str], tuple[compare.Comparison, twin.TwinConfig]]:
    """Every comparison in the record at ``path`` with its twin's config, by (tier, regime),
    in the order of :data:`TIERS` and :data:`RECORDED`."""
    entries = read_record(path)["comparisons"]
    out = {}
    for tier in TIERS:
        for name in RECORDED:
            entry = entries.get(entry_name(tier, name))
            if entry is not None:
                out[tier, name] = (compare.Comparison.from_record(entry["record"]),
                                   twin.TwinConfig(**entry["config"]))
    return out


def machines(path) -> list[str]:
    """The machines the record's comparisons ran on, e.g. ``"x86_64, 2 cores"``."""
    found = set()
    for entry in read_record(path)["comparisons"].values():
        m = entry["machine"]
        found.add(f"{m.get('processor', '?')}, {m.get('cores_available', '?')} cores")
    return sorted(found)


def map_cells(comparison: compare.Comparison, config: twin.TwinConfig) -> dict:
    """One regime's row of the map (:func:`scoreda.plotting.regime_map`): per column of
    :data:`COLUMNS`, the filter's RMSE relative to the best of the row with its interval
    (:meth:`~scoreda.experiments.compare.Comparison.relative`), "diverged" or "k/n
    diverged", or why the filter was not run (the IEnKF and the LETKF on tan y are the
    LETKF for a linear h; EnSF-LR is EnSF when every component is observed)."""
    cells, best = {}, comparison.best()
    n = len(comparison.evaluation_seeds)
    for col in COLUMNS:
        if col in comparison.results:
            r = comparison.results[col]
            if r.n_diverged == n:
                cells[col] = "diverged"
            elif r.n_diverged:
                cells[col] = f"{r.n_diverged}/{n}\ndiverged"
            else:
                cells[col] = comparison.relative(col, best)
        elif col == "EnSF-LR":
            cells[col] = "= EnSF\n(all obs.)"
        elif col == "IEnKF":
            cells[col] = "= LETKF\n(linear h)" if config.obs == "identity" else "paper\nscale"
        elif col == "LETKF-tan":
            cells[col] = "arctan\nonly"
    return cells


def best_of_family(comparison: compare.Comparison, family: tuple[str, ...]) -> str:
    """The best (lowest mean RMSE, a diverged trial the worst) of ``family`` that the
    comparison ran (:meth:`~scoreda.experiments.compare.Comparison.best_of`)."""
    return comparison.best_of([m for m in family if m in comparison.results])
