r"""How good is a window surrogate: single-step (SSP) and long-term (LTP) predictions.

* **SSP** feeds the surrogate the *true* previous :math:`W` states at every step: the best it
  can do, its one-step error.
* **LTP** feeds it its own predictions after the first :math:`W` true states: the rollout
  that drifts away.

Scores of both: :func:`one_step_rmse` (SSP) and :func:`valid_steps` (how long an LTP stays
within a fraction of the climatological spread of the truth).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import metrics


def single_step(predict: Callable, trajectory: jax.Array, window: int) -> jax.Array:
    """SSP: predictions of states ``window..T`` from the true windows, shape ``(..., T + 1 - window, d)``.

    ``predict`` maps histories ``(B, window, d)`` to ``(B, d)``; ``trajectory`` is
    ``(..., T + 1, d)`` (any leading batch axes).
    """
    n = trajectory.shape[-2] - window
    if n < 1:
        raise ValueError(f"trajectory of {trajectory.shape[-2]} states is too short for window {window}")
    idx = jnp.arange(n)[:, None] + jnp.arange(window)[None, :]
    histories = trajectory[..., idx, :]  # (..., n, W, d)
    flat = predict(histories.reshape((-1,) + histories.shape[-2:]))
    return flat.reshape(histories.shape[:-2] + flat.shape[-1:])


@partial(jax.jit, static_argnames=("predict", "n_steps"))
def long_term(predict: Callable, history: jax.Array, n_steps: int) -> jax.Array:
    """LTP: roll the surrogate forward ``n_steps`` from a true window ``(W, d)``, or from a
    batch of windows ``(B, W, d)`` at once; returns ``(n_steps, d)`` or ``(B, n_steps, d)``."""
    windows = history if history.ndim == 3 else history[None]

    def step(windows, _):
        nxt = predict(windows)
        return jnp.concatenate([windows[:, 1:], nxt[:, None]], axis=1), nxt

    _, states = jax.lax.scan(step, windows, None, length=n_steps)  # (n_steps, B, d)
    states = jnp.swapaxes(states, 0, 1)
    return states if history.ndim == 3 else states[0]


def persistence_mse(trajectories: jax.Array) -> jax.Array:
    """One-step MSE of persistence (next state = last state) over ``(..., T, d)`` trajectories."""
    return jnp.mean((trajectories[..., 1:, :] - trajectories[..., :-1, :]) ** 2)


def one_step_rmse(predict: Callable, trajectory: jax.Array, window: int) -> float:
    """RMSE of the SSP (:func:`single_step`) against the true states ``window..T`` of
    ``trajectory (..., T + 1, d)``, over every step, component and trajectory."""
    prediction = single_step(predict, trajectory, window)
    return float(jnp.sqrt(jnp.mean((prediction - trajectory[..., window:, :]) ** 2)))


def valid_steps(forecast, truth, climate_std: float, threshold: float = 0.5) -> np.ndarray:
    r"""How many steps each forecast stays valid: the index of the first step at which its
    normalised RMSE :math:`\lVert \hat x_n - x_n \rVert / (\sqrt d\, \sigma_\mathrm{clim})`
    exceeds ``threshold`` or is not finite, or ``n_steps`` when it never does. ``forecast`` and ``truth`` are
    ``(B, n_steps, d)``; returns ``(B,)`` integers (multiply by the step length, in Lyapunov
    times, for a valid time)."""
    if np.shape(forecast) != np.shape(truth) or np.ndim(forecast) != 3:
        raise ValueError(f"forecast and truth must both be (B, n_steps, d), got "
                         f"{np.shape(forecast)} and {np.shape(truth)}")
    if not climate_std > 0:
        raise ValueError(f"climate_std must be > 0, got {climate_std!r}")
    error = np.asarray(metrics.rmse(forecast, truth)) / climate_std  # (B, n_steps)
    above = ~(error <= threshold)  # a non-finite error (a forecast that blew up) is not valid
    return np.where(above.any(axis=1), above.argmax(axis=1), error.shape[1])
