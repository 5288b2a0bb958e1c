r"""An LSTM surrogate: a window of the :math:`W` previous states in, the next state out.

Two variants share the network (``layers`` stacked LSTMs of width ``hidden``, the last hidden
state mapped to the state by a linear layer), and differ in what they see and predict:

* **paper-faithful** (``well_posed=False``), as the authors' code: raw states in, the raw
  next state out, :math:`\hat x_n = \mathrm{Net}(x_{n-W:n})`;
* **well-posed** (``well_posed=True``): standardised states and standardised increments in,
  the standardised *increment* out,
  :math:`\hat x_n = x_{n-1} + s_\Delta\,\mathrm{Net}\big((x_k - \mu)/s,\ (x_k - x_{k-1})/s_\Delta\big)_{k=n-W}^{n-1}`.
  At a small time step the next state is the last one plus a small change that is close to
  the previous change, so this variant learns a correction of order one, and persistence (a
  zero output) is its starting point.

The statistics :math:`\mu, s, s_\Delta` are set from the training data and stored with the
parameters (they are not trained).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from scoreda import _checks


@dataclasses.dataclass(frozen=True)
class LSTMConfig:
    """Architecture of :class:`LSTMSurrogate` (the paper: window 20, 5 layers of 128)."""

    d: int = 20
    window: int = 20
    hidden: int = 128
    layers: int = 5
    well_posed: bool = False

    def __post_init__(self):
        _checks.integer("d", self.d, 1)
        _checks.integer("window", self.window, 1)
        _checks.integer("hidden", self.hidden, 1)
        _checks.integer("layers", self.layers, 1)

    def create(self, seed: int = 0) -> "LSTMSurrogate":
        """A freshly initialised surrogate of this architecture (:func:`create`)."""
        return create(self, seed)


def check_window(history, window: int, d: int) -> None:
    """Raise ``ValueError`` unless ``history`` ends in ``(window, d)``."""
    if history.shape[-2:] != (window, d):
        raise ValueError(
            f"history must end in (window, d) = ({window}, {d}) for this surrogate, "
            f"got shape {history.shape}"
        )


class Statistic(nnx.Variable):
    """A non-trainable array stored with the model (normalisation constants)."""


class LSTMLayer(nnx.Module):
    r"""One LSTM layer over a sequence (Hochreiter & Schmidhuber 1997), zero initial state.

    :math:`(i, f, g, o) = W_x x_t + W_h h_{t-1} + b`,
    :math:`c_t = \sigma(f) c_{t-1} + \sigma(i)\tanh(g)`, :math:`h_t = \sigma(o)\tanh(c_t)`.
    The input projections of all time steps are computed in one matrix product; the
    recurrence runs under ``lax.scan``. ``(B, T, F) -> (B, T, H)``.
    """

    def __init__(self, in_features: int, hidden: int, *, rngs: nnx.Rngs):
        self.hidden = hidden
        self.input_proj = nnx.Linear(in_features, 4 * hidden, rngs=rngs)
        self.recurrent_proj = nnx.Linear(hidden, 4 * hidden, use_bias=False,
                                         kernel_init=nnx.initializers.orthogonal(), rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        projected = jnp.swapaxes(self.input_proj(x), 0, 1)  # (T, B, 4H)
        batch = x.shape[0]
        zeros = jnp.zeros((batch, self.hidden), projected.dtype)
        w_h = self.recurrent_proj.kernel[...]

        def step(carry, p_t):
            h, c = carry
            i, f, g, o = jnp.split(p_t + h @ w_h, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (h, c), h

        _, hs = jax.lax.scan(step, (zeros, zeros), projected)
        return jnp.swapaxes(hs, 0, 1)


class LSTMSurrogate(nnx.Module):
    """LSTM window surrogate; call it on histories ``(..., window, d)`` to get ``(..., d)``."""

    def __init__(self, config: LSTMConfig, *, rngs: nnx.Rngs):
        self.config = config
        d, h = config.d, config.hidden
        n_in = 2 * d if config.well_posed else d
        self.lstms = nnx.List([
            LSTMLayer(n_in if i == 0 else h, h, rngs=rngs) for i in range(config.layers)
        ])
        self.head = nnx.Linear(h, d, rngs=rngs)
        if config.well_posed:
            # start as persistence: a zero increment
            self.head.kernel[...] = jnp.zeros_like(self.head.kernel[...])
        self.mean = Statistic(jnp.zeros(d))
        self.scale = Statistic(jnp.ones(d))
        self.increment_scale = Statistic(jnp.ones(d))

    def set_statistics(self, mean, scale, increment_scale) -> None:
        """Normalisation constants from the training data (used only when well-posed)."""
        self.mean[...] = jnp.asarray(mean, jnp.float32)
        self.scale[...] = jnp.asarray(scale, jnp.float32)
        self.increment_scale[...] = jnp.asarray(increment_scale, jnp.float32)

    def __call__(self, history: jax.Array) -> jax.Array:
        cfg = self.config
        check_window(history, cfg.window, cfg.d)
        batch_shape = history.shape[:-2]
        x = history.reshape((-1, cfg.window, cfg.d))
        if cfg.well_posed:
            increments = jnp.concatenate([jnp.zeros_like(x[:, :1]), jnp.diff(x, axis=1)], axis=1)
            h = jnp.concatenate([(x - self.mean[...]) / self.scale[...],
                                 increments / self.increment_scale[...]], axis=-1)
        else:
            h = x
        for lstm in self.lstms:
            h = lstm(h)
        out = self.head(h[:, -1])
        if cfg.well_posed:
            out = x[:, -1] + self.increment_scale[...] * out
        return out.reshape(batch_shape + (cfg.d,))


def create(config: LSTMConfig, seed: int = 0) -> LSTMSurrogate:
    """A freshly initialised surrogate."""
    return LSTMSurrogate(config, rngs=nnx.Rngs(seed))
