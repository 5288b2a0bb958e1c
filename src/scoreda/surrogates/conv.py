r"""A periodic convolutional surrogate for homogeneous lattice models such as Lorenz-96.

Lorenz-96's tendency :math:`\dot x_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F` is local,
quadratic and the same at every site. A network with the same three properties learns it
from a few thousand states, which an all-to-all LSTM cannot (Brajard et al. 2020 use such a
network for the same reason). The network sees the window of :math:`W` standardised states
as channels and predicts the standardised increment:

.. math::

   \hat x_n = x_{n-1} + s_\Delta\,\mathrm{Net}\big((x_{n-W:n} - \mu)/s\big),
   \qquad
   \mathrm{Net} = C_\mathrm{out} \circ (\mathrm{gelu} \circ C_\ell)^{L-1}
                  \circ \big[\mathrm{gelu}(h),\ h_{:C/2} \odot h_{C/2:}\big]_{h = C_1(\cdot)}

with :math:`C_\ell` circular convolutions of width ``kernel`` over the sites, a bilinear
feature block after the first one (products of channel pairs: the advection term is a
product) and a pointwise output convolution. :math:`\mu, s, s_\Delta` are scalars (averaged
over the sites of the training data), so the network commutes with cyclic shifts of the
sites. It starts as persistence (zero output layer).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from scoreda import _checks
from scoreda.surrogates.lstm import Statistic, check_window


@dataclasses.dataclass(frozen=True)
class ConvConfig:
    """Architecture of :class:`ConvSurrogate`."""

    d: int = 40
    window: int = 1
    channels: int = 32
    layers: int = 3
    kernel: int = 5

    def __post_init__(self):
        _checks.integer("d", self.d, 1)
        _checks.integer("window", self.window, 1)
        _checks.integer("channels", self.channels, 2)
        if self.channels % 2:
            raise ValueError(f"channels must be even (bilinear pairs), got {self.channels}")
        _checks.integer("layers", self.layers, 1)
        _checks.integer("kernel", self.kernel, 1)
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd (centred stencil), got {self.kernel}")

    def create(self, seed: int = 0) -> "ConvSurrogate":
        """A freshly initialised surrogate of this architecture (:func:`create`)."""
        return create(self, seed)


class CircularConv(nnx.Module):
    r"""A 1-D convolution over periodic sites, ``(B, d, C_in) -> (B, d, C_out)``:
    :math:`\mathrm{out}_i = b + \sum_{s=-r}^{r} W_s\, h_{(i+s) \bmod d}` with
    :math:`r` = ``width // 2``. The shifted copies are stacked along the channels and
    contracted in one matrix product (faster on CPU than XLA's convolution here)."""

    def __init__(self, n_in: int, n_out: int, width: int, *, rngs: nnx.Rngs):
        self.width = width
        self.linear = nnx.Linear(width * n_in, n_out, rngs=rngs)

    def __call__(self, h: jax.Array) -> jax.Array:
        r = self.width // 2
        shifted = [jnp.roll(h, -s, axis=-2) for s in range(-r, r + 1)]  # entry i holds h[i + s]
        return self.linear(jnp.concatenate(shifted, axis=-1))


class ConvSurrogate(nnx.Module):
    """Call it on histories ``(..., window, d)`` to get the next states ``(..., d)``."""

    def __init__(self, config: ConvConfig, *, rngs: nnx.Rngs):
        self.config = config
        c, k = config.channels, config.kernel
        conv = lambda n_in, n_out, width: CircularConv(n_in, n_out, width, rngs=rngs)
        self.first = conv(config.window, c, k)
        self.hidden = nnx.List([conv(c + c // 2, c, k) if i == 0 else conv(c, c, k)
                                for i in range(config.layers - 1)])
        self.out = conv(c + c // 2 if config.layers == 1 else c, 1, 1)
        self.out.linear.kernel[...] = jnp.zeros_like(self.out.linear.kernel[...])  # start as persistence
        self.mean = Statistic(jnp.zeros(()))
        self.scale = Statistic(jnp.ones(()))
        self.increment_scale = Statistic(jnp.ones(()))

    def set_statistics(self, mean, scale, increment_scale) -> None:
        """Normalisation constants from the training data, averaged over the sites."""
        self.mean[...] = jnp.mean(jnp.asarray(mean, jnp.float32))
        self.scale[...] = jnp.mean(jnp.asarray(scale, jnp.float32))
        self.increment_scale[...] = jnp.mean(jnp.asarray(increment_scale, jnp.float32))

    def __call__(self, history: jax.Array) -> jax.Array:
        cfg = self.config
        check_window(history, cfg.window, cfg.d)
        batch_shape = history.shape[:-2]
        x = history.reshape((-1, cfg.window, cfg.d))
        h = jnp.swapaxes((x - self.mean[...]) / self.scale[...], 1, 2)  # (B, d, W): sites x channels
        h = self.first(h)
        half = cfg.channels // 2
        h = jnp.concatenate([jax.nn.gelu(h), h[..., :half] * h[..., half:]], axis=-1)
        for layer in self.hidden:
            h = jax.nn.gelu(layer(h))
        out = x[:, -1] + self.increment_scale[...] * self.out(h)[..., 0]
        return out.reshape(batch_shape + (cfg.d,))


def create(config: ConvConfig, seed: int = 0) -> ConvSurrogate:
    """A freshly initialised surrogate."""
    return ConvSurrogate(config, rngs=nnx.Rngs(seed))
