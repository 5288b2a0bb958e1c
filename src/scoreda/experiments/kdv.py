"""The paper's KdV experiment: a recurrent DeepONet surrogate of two-soliton KdV solutions,
rolled out long-term and corrected by EnSF or a stochastic EnKF from arctan observations
(Tang et al. 2026, experiment 2).

The state is the field on 100 grid points multiplied by ``scale`` = 10, as the authors
scale their data; it is observed as ``arctan(state) + N(0, obs_std^2)``. Because arctan
saturates, a soliton of scaled height 5 to 10 is seen mainly through its flanks (chapter 2).
The machinery is :mod:`scoreda.experiments.rollout`.
"""

from __future__ import annotations

import dataclasses
from functools import partial

from scoreda.experiments import rollout
from scoreda.experiments.rollout import DAConfig
from scoreda.surrogates import data as data_lib
from scoreda.surrogates import deeponet, train
from scoreda.systems import kdv

#: the experiment's names (``DAConfig`` is :class:`scoreda.experiments.rollout.DAConfig`,
#: named here so that a chapter needs one import)
__all__ = ["DAConfig", "SCALE", "SNAPSHOT_DT", "SYSTEM", "SurrogateSpec", "WINDOW", "make_truth",
           "true_model"]

WINDOW = 5
SCALE = 10.0
SNAPSHOT_DT = 0.5
_DATA = data_lib.KdVData()


def _states(key, n_steps: int):
    return data_lib.kdv_states(key, dataclasses.replace(_DATA, n_steps=n_steps), 1)[0]


_advance = kdv.propagator(_DATA.length, _DATA.n_points, _DATA.dt, _DATA.save_every)


def _true_step(state):
    return SCALE * _advance(state / SCALE)


SYSTEM = rollout.System("KdV", d=_DATA.n_points, window=WINDOW, make_states=_states,
                        true_step=_true_step)


@dataclasses.dataclass(frozen=True)
class SurrogateSpec:
    """Everything that determines a trained KdV surrogate (and so its cache key)."""

    scenario: str = "standard"
    n_trajectories: int | None = None
    n_steps: int = 1000
    hidden: int = 64
    layers: int = 1
    basis: int = 48
    train: train.TrainConfig = train.TrainConfig()

    def data_config(self) -> data_lib.KdVData:
        return data_lib.kdv_scenario(self.scenario, n_steps=self.n_steps,
                                     n_trajectories=self.n_trajectories)

    def model_config(self) -> deeponet.DeepONetConfig:
        return deeponet.DeepONetConfig(d=_DATA.n_points, length=_DATA.length, window=WINDOW,
                                       hidden=self.hidden, layers=self.layers, basis=self.basis)


make_truth = partial(rollout.make_truth, SYSTEM)


def true_model():
    """The exact solver between snapshots as ``(forecast model, model_args, batched predictor)``."""
    return rollout.true_model(SYSTEM)
