"""Analysis steps: ensemble in, ensemble out (pure, jit-able).

Every filter has the signature ``analysis(key, ensemble, y, obs_std, *, obs, mask=None,
**params) -> analysis_ensemble`` with ``ensemble`` of shape ``(N, d)`` (members first),
``y`` and ``mask`` of shape ``(d,)``. :data:`FILTERS` lists them all with their knobs'
defaults and tuning grids (:mod:`scoreda.filters.registry`).
"""

from scoreda.filters import (ensf, gaussian_score, iterative, kalman, localisation, regression, registry,
                             transformed)
from scoreda.filters.ensf import analysis as ensf_analysis
from scoreda.filters.iterative import ienkf
from scoreda.filters.kalman import enkf, etkf, letkf
from scoreda.filters.transformed import letkf_tan
from scoreda.filters.registry import FILTERS, FilterSpec

__all__ = ["ensf", "gaussian_score", "iterative", "kalman", "localisation", "regression", "registry",
           "transformed", "ensf_analysis", "enkf", "etkf", "letkf", "ienkf", "letkf_tan", "FILTERS",
           "FilterSpec"]
