"""scoreda: Ensemble Score Filter data assimilation for data-driven dynamical systems.

Layers, each importing only those above it in this list:

- ``systems``: the truth (Lorenz-96, KdV);
- ``observe``: observation operators, masks, schedules;
- ``surrogates``: neural-network forecast models and their training;
- ``filters``: analysis steps (EnSF, EnKF, ETKF, LETKF);
- ``metrics`` and ``assimilate``: scores and the cycling driver;
- ``sharding``: meshes and placement for running filters and cycles on several devices;
- ``experiments`` and ``hybrid``: typed configurations and runners of the book's
  experiments, and data assimilation inside training;
- ``plotting``: the book's figures.
"""

__version__ = "0.4.0"
