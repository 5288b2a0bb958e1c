r"""A recurrent DeepONet surrogate for fields on a periodic domain (Lu et al. 2021).

The next snapshot is an operator of the :math:`W` previous ones, written as a DeepONet:

.. math::

    \hat u_n(x) = b_0 + \sum_{k=1}^{p} \beta_k\big(u_{n-W:n}\big)\,\tau_k(x),

* the **branch** :math:`\beta`: LSTM layers over the window of standardised snapshots (each a
  vector of the ``n_sensors`` grid values), the last hidden state mapped linearly to
  :math:`p` coefficients;
* the **trunk** :math:`\tau`: a fully connected network of the coordinate, fed periodic
  features :math:`(\sin 2\pi m x / L, \cos 2\pi m x / L)_{m=1}^{M}` so every basis function
  is periodic.

Because the trunk is a function of :math:`x`, the surrogate can be evaluated anywhere, not
only on the sensor grid (:meth:`DeepONetSurrogate.query`). On the grid it obeys the same
window contract as the LSTM surrogate: ``(..., W, n_sensors) -> (..., n_sensors)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from scoreda import _checks
from scoreda.surrogates.lstm import LSTMLayer, Statistic, check_window


@dataclasses.dataclass(frozen=True)
class DeepONetConfig:
    """Architecture: sensors (grid points), domain length, window, branch and trunk sizes."""

    d: int = 100  # sensors = grid points
    length: float = 50.0
    window: int = 5
    hidden: int = 64  # branch LSTM width
    layers: int = 1  # branch LSTM layers
    basis: int = 48  # p, number of basis functions
    trunk_width: int = 64
    trunk_depth: int = 2
    fourier_modes: int = 16  # M, periodic input features of the trunk

    def __post_init__(self):
        for name in ("d", "window", "hidden", "layers", "basis", "trunk_width", "trunk_depth",
                     "fourier_modes"):
            _checks.integer(name, getattr(self, name), 1)
        _checks.positive("length", self.length)

    def create(self, seed: int = 0) -> "DeepONetSurrogate":
        """A freshly initialised surrogate of this architecture (:func:`create`)."""
        return create(self, seed)


class DeepONetSurrogate(nnx.Module):
    """Recurrent DeepONet; call on windows ``(..., W, d)``, or :meth:`query` at any ``x``."""

    def __init__(self, config: DeepONetConfig, *, rngs: nnx.Rngs):
        self.config = config
        c = config
        self.branch = nnx.List([LSTMLayer(c.d if i == 0 else c.hidden, c.hidden, rngs=rngs)
                                for i in range(c.layers)])
        self.branch_out = nnx.Linear(c.hidden, c.basis, rngs=rngs)
        sizes = [2 * c.fourier_modes] + [c.trunk_width] * c.trunk_depth + [c.basis]
        self.trunk = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:])])
        self.bias = nnx.Param(jnp.zeros(()))
        self.grid = Statistic(jnp.arange(c.d) * (c.length / c.d))
        self.mean = Statistic(jnp.zeros(()))
        self.scale = Statistic(jnp.ones(()))

    def set_statistics(self, mean, scale, increment_scale=None) -> None:
        """Scalar normalisation of the field (the same at every sensor, as the domain is homogeneous)."""
        del increment_scale
        self.mean[...] = jnp.mean(jnp.asarray(mean, jnp.float32))
        self.scale[...] = jnp.mean(jnp.asarray(scale, jnp.float32))

    def basis_functions(self, x: jax.Array) -> jax.Array:
        """Trunk :math:`\\tau_k(x)` at points ``x`` ``(m,)``: shape ``(m, p)``."""
        c = self.config
        modes = jnp.arange(1, c.fourier_modes + 1)
        phase = 2 * jnp.pi * x[:, None] * modes[None, :] / c.length
        h = jnp.concatenate([jnp.sin(phase), jnp.cos(phase)], axis=-1)
        for i, layer in enumerate(self.trunk):
            h = layer(h)
            if i < len(self.trunk) - 1:
                h = jnp.tanh(h)
        return h

    def coefficients(self, history: jax.Array) -> jax.Array:
        """Branch :math:`\\beta(u_{n-W:n})` for windows ``(B, W, d)``: shape ``(B, p)``."""
        h = (history - self.mean[...]) / self.scale[...]
        for layer in self.branch:
            h = layer(h)
        return self.branch_out(h[:, -1])

    def query(self, history: jax.Array, x: jax.Array) -> jax.Array:
        """The predicted next field at arbitrary points ``x`` ``(m,)``: ``(..., m)``."""
        c = self.config
        check_window(history, c.window, c.d)
        batch_shape = history.shape[:-2]
        beta = self.coefficients(history.reshape((-1, c.window, c.d)))
        u = beta @ self.basis_functions(jnp.asarray(x, jnp.float32)).T + self.bias[...]
        u = self.mean[...] + self.scale[...] * u
        return u.reshape(batch_shape + (jnp.shape(x)[0],))

    def __call__(self, history: jax.Array) -> jax.Array:
        return self.query(history, self.grid[...])


def create(config: DeepONetConfig, seed: int = 0) -> DeepONetSurrogate:
    return DeepONetSurrogate(config, rngs=nnx.Rngs(seed))
