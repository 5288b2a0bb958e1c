"""scoreda: Ensemble Score Filter data assimilation for data-driven dynamical systems.

Floors, each importing only from its own floor or below (``tests/test_house.py``):

1. ``cache`` (where every cache lives; keys, locks, atomic writes), ``plotting`` (the book's
   figures), ``chapters``, ``glued`` and ``runs`` (a chapter's parameters, the numbers it
   glued, a chapter run into a folder), ``exercises`` (the check of the book's code
   exercises), ``device`` (what the device is and the defaults it implies), and the private
   ``_checks`` and ``_digest``;
2. ``systems`` (the truth: Lorenz-96, KdV), ``observe`` (observation operators, masks,
   schedules) and ``metrics`` (scores);
3. ``filters`` (analysis steps: EnSF, EnKF, ETKF, LETKF, ...), ``surrogates`` (neural-network
   forecast models and their training), ``assimilate`` (the cycling driver) and
   ``sharding`` (meshes and placement on several devices);
4. ``experiments``: typed configurations and runners of the book's experiments (with
   ``experiments.hybrid``, data assimilation inside training) and the comparison harness;
5. ``cli``: the ``scoreda`` command.
"""

__version__ = "0.5.0"
