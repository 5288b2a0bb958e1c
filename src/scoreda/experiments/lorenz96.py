"""The paper's Lorenz-96 experiment: an LSTM surrogate rolled out long-term, corrected by
EnSF or by a stochastic EnKF from arctan observations (Tang et al. 2026, experiment 1).

One *case* is a training scenario (SA, IA, SI), a surrogate variant (paper-faithful or
well-posed) and an observation network (full, or 5 of 20 components drawn anew each step).
The machinery is :mod:`scoreda.experiments.rollout`; this module supplies the system
(d = 20, F = 8, RK4 dt = 0.004, initial states uniform in [7, 9], windows of 20 states) and
the surrogate specification, and binds the generic functions to it.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from scoreda.experiments import rollout
from scoreda.experiments.rollout import DAConfig
from scoreda.surrogates import data as data_lib
from scoreda.surrogates import lstm, train
from scoreda.systems import lorenz96 as l96

#: the experiment's names (``DAConfig`` is :class:`scoreda.experiments.rollout.DAConfig`,
#: named here so that a chapter needs one import)
__all__ = ["DAConfig", "DT", "SYSTEM", "SurrogateSpec", "WINDOW", "make_truth", "true_model"]

WINDOW = 20
DT = 0.004


def _states(key, n_steps: int):
    return l96.trajectory(l96.initial_states(key, 20), n_steps, DT)


def _true_step(x):
    return l96.step(x, DT)


SYSTEM = rollout.System("Lorenz-96", d=20, window=WINDOW, make_states=_states, true_step=_true_step)


@dataclasses.dataclass(frozen=True)
class SurrogateSpec:
    """Everything that determines a trained Lorenz-96 surrogate (and so its cache key)."""

    scenario: str = "SA"
    well_posed: bool = False
    n_trajectories: int | None = None  # None: the scenario's (1500, 100 or 1500)
    n_steps: int = 2500
    hidden: int = 128
    layers: int = 5
    train: train.TrainConfig = train.TrainConfig()

    def data_config(self) -> data_lib.Lorenz96Data:
        return data_lib.scenario(self.scenario, n_steps=self.n_steps,
                                 n_trajectories=self.n_trajectories)

    def model_config(self) -> lstm.LSTMConfig:
        return lstm.LSTMConfig(d=20, window=WINDOW, hidden=self.hidden, layers=self.layers,
                               well_posed=self.well_posed)


make_truth = partial(rollout.make_truth, SYSTEM)


def true_model():
    """The exact RK4 map as ``(forecast model, model_args, batched predictor)``."""
    return rollout.true_model(SYSTEM)

