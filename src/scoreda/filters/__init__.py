"""Analysis steps: ensemble in, ensemble out (pure, jit-able).

Every filter has the signature ``analysis(key, ensemble, y, obs_std, *, obs, mask=None,
**params) -> analysis_ensemble`` with ``ensemble`` of shape ``(N, d)`` (members first),
``y`` and ``mask`` of shape ``(d,)``.
"""

from scoreda.filters import ensf, kalman
from scoreda.filters.ensf import analysis as ensf_analysis
from scoreda.filters.kalman import enkf, etkf, letkf

__all__ = ["ensf", "kalman", "ensf_analysis", "enkf", "etkf", "letkf"]
