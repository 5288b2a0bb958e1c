"""Every analysis step of the package in one table: :data:`FILTERS`.

Each entry is a :class:`FilterSpec`: the analysis function (the common contract
``analysis(key, ensemble, y, obs_std, *, obs, mask=None, **knobs) -> ensemble``), the
defaults of its knobs, and the grid a comparison tunes it over. A harness or a reader
iterates over ``FILTERS`` instead of listing filters by hand::

    from scoreda.filters import FILTERS
    for name, spec in FILTERS.items():
        analysis = spec.bind(obs="arctan")          # knobs at their defaults
        xa = analysis(key, xf, y, 0.01, mask=mask)

Knobs that are floats (inflation, eps_b, kernel variance) may be traced arrays, so one
compiled cycle serves a whole grid (:func:`scoreda.assimilate.cycle_batch`); strings and
integers (integrator, number of pseudo-time steps) select code and are static, and so is
the LETKF's localisation radius (``FilterSpec.static``), which sets the size of its local
problems (EnSF-G's and EnSF-LR's take a traced radius: a dense taper at run time).

Two knobs belong to the cycle rather than to the analysis and are listed here because every
filter has them: ``model_error``, the standard deviation of additive Gaussian noise put on
every forecast (the usual treatment of model error), and ``init_std``, the spread of the
initial ensemble around the truth. The comparison harness
(:mod:`scoreda.experiments.compare`) applies them.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Callable, Mapping, NamedTuple

from scoreda import _checks
from scoreda.filters import ensf, gaussian_score, iterative, kalman, regression, transformed

#: knobs every filter has that the cycle (not the analysis) applies
CYCLE_KNOBS = ("model_error", "init_std")


class FilterSpec(NamedTuple):
    """One filter of the registry.

    Fields:
      analysis: the analysis function.
      knobs: the knobs' defaults (passed as keywords; ``prior`` etc. fixed per entry).
      grid: candidate values per knob for tuning; the comparison tunes over their product.
      summary: one line for tables and the book.
      static: float knobs that are better fixed at compile time than traced (the harness
        compiles one cycle per value): the LETKF's radius sizes its local problems.
      check: ``(**knobs) -> None``, the filter's own check of its knobs' values (the one its
        analysis runs), raising ``ValueError`` naming the knob.
    """

    analysis: Callable
    knobs: Mapping
    grid: Mapping
    summary: str
    static: tuple = ()
    check: Callable | None = None

    def check_knobs(self, knobs: Mapping) -> None:
        """Raise ``ValueError`` naming the first of ``knobs`` (merged over the defaults) that
        this filter refuses, or an unknown name; the cycle knobs (:data:`CYCLE_KNOBS`) are
        checked too. A deflation (inflation < 1) is allowed silently here: a tuning grid may
        hold it, and the analysis warns when it runs."""
        unknown = set(knobs) - set(self.knobs) - set(CYCLE_KNOBS)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}; this filter has "
                             f"{sorted(set(self.knobs) | set(CYCLE_KNOBS))}")
        for name in CYCLE_KNOBS:
            if name in knobs:
                _checks.non_negative(name, knobs[name])
        values = {k: v for k, v in (dict(self.knobs) | dict(knobs)).items() if k not in CYCLE_KNOBS}
        if self.check is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", _checks.Deflation)
                self.check(**values)

    def bind(self, *, obs, **knobs) -> Callable:
        """The analysis with ``obs`` and the knobs (defaults overridden by ``knobs``) bound:
        ``(key, ensemble, y, obs_std, mask=None, **traced_knobs) -> ensemble``."""
        unknown = set(knobs) - set(self.knobs)
        if unknown:
            raise ValueError(f"unknown knobs {sorted(unknown)}; this filter has {sorted(self.knobs)}")
        return partial(self.analysis, obs=obs, **(dict(self.knobs) | knobs))


_INFLATION = (1.0, 1.02, 1.05, 1.1, 1.2, 1.4)
_ENSF = {"eps_a": 0.5, "eps_b": 0.025, "kernel_var": 0.0, "n_steps": 100,
         "integrator": "exponential", "start": "marginal", "clip": None, "scale": 1.0,
         "report_clipping": False}


def _check_ensf(**knobs):
    report = knobs.get("report_clipping", False)
    if not isinstance(report, bool):
        raise ValueError(f"report_clipping must be True or False, got {report!r}")
    ensf.check_knobs(**{k: v for k, v in knobs.items() if k not in ("prior", "report_clipping")})


def _kalman_check(**knobs):
    kalman.check_knobs(**knobs)

FILTERS: dict[str, FilterSpec] = {
    "EnKF": FilterSpec(
        kalman.enkf, {"inflation": 1.0}, {"inflation": _INFLATION},
        "stochastic (perturbed-observation) EnKF, multiplicative inflation",
        check=_kalman_check),
    "ETKF": FilterSpec(
        kalman.etkf, {"inflation": 1.0}, {"inflation": _INFLATION},
        "ensemble transform Kalman filter (symmetric square root), multiplicative inflation",
        check=_kalman_check),
    "LETKF": FilterSpec(
        kalman.letkf, {"inflation": 1.0, "radius": 4.0},
        {"inflation": _INFLATION, "radius": (1.0, 2.0, 4.0, 8.0)},
        "local ETKF, Gaspari-Cohn R-localisation, multiplicative inflation", static=("radius",),
        check=_kalman_check),
    "IEnKF": FilterSpec(
        iterative.ienkf, {"inflation": 1.0, "radius": 4.0, "n_iter": 10, "tol": 1e-4, "damped": True},
        {"inflation": _INFLATION, "radius": (1.0, 2.0, 4.0, 8.0)},
        "iterative EnKF (Gauss-Newton in the ensemble subspace, re-linearising h), "
        "LETKF-localised, multiplicative inflation", static=("radius",),
        check=iterative.check_knobs),
    "LETKF-tan": FilterSpec(
        transformed.letkf_tan, {"inflation": 1.0, "radius": 4.0},
        {"inflation": _INFLATION, "radius": (1.0, 2.0, 4.0, 8.0)},
        "LETKF on tan(y) with the delta-method noise sigma (1 + tan(y)^2) (arctan only)",
        static=("radius",), check=_kalman_check),
    "EnSF": FilterSpec(
        partial(ensf.analysis, prior="paired"), _ENSF,
        {"eps_b": (0.005, 0.01, 0.025, 0.05, 0.1)},
        "Ensemble Score Filter, paired prior score (one member per trajectory)",
        check=_check_ensf),
    "EnSF mixture": FilterSpec(
        partial(ensf.analysis, prior="mixture"), _ENSF | {"kernel_var": 0.05},
        {"kernel_var": (0.01, 0.05, 0.2), "eps_b": (0.01, 0.025, 0.05)},
        "Ensemble Score Filter, Gaussian-mixture prior score over all members",
        check=_check_ensf),
    "EnSF-G": FilterSpec(
        gaussian_score.analysis,
        {"inflation": 1.0, "radius": 4.0, "n_steps": 20, "eps_a": 1e-4, "eps_b": 0.0, "sampler": "flow",
         "linearise": "mean"},
        {"inflation": _INFLATION[:5], "radius": (2.0, 4.0, 8.0)},
        "score filter with a localised Gaussian prior and the exact diffused likelihood "
        "(Kalman posterior when h is linear), analysis inflation",
        check=gaussian_score.check_knobs),
    "EnSF-LR": FilterSpec(
        regression.analysis, _ENSF | {"radius": 4.0},
        {"eps_b": (0.005, 0.01, 0.025, 0.05, 0.1), "radius": (2.0, 4.0, 8.0)},
        "paired EnSF, then its observed increments regressed onto the unobserved components "
        "(localised ensemble covariance)",
        check=regression.check_knobs),
}


def get(name: str) -> FilterSpec:
    """The registry entry ``name`` (a clear error listing the names otherwise)."""
    try:
        return FILTERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"filter must be one of {sorted(FILTERS)}, got {name!r}") from None
