"""scoreda: Ensemble Score Filter data assimilation for data-driven dynamical systems.

Layers (lower never imports higher): ``systems`` (truth models) -> ``observe``
(observation operators, masks, schedules) -> ... -> ``plotting``.
"""

__version__ = "0.1.0"
