r"""Fast elementwise arctan and Gaussian noise for the EnSF hot loop.

On CPU, XLA's ``arctan`` (about 6 ns an element here) and ``jax.random.normal`` with the
default threefry generator (about 3.6 ns) cost ten times the memory traffic of an EnSF
pseudo-time step. Both are replaced here, and ``tests/test_fastmath.py`` checks that they
keep the filter's statistics:

* :func:`arctan`: range reduction :math:`\arctan x = \mathrm{sign}(x)\pi/2 - \arctan(1/x)` for
  :math:`|x| > 1`, then :math:`\arctan x = x P(x^2)` on :math:`[0, 1]` with a degree-8
  polynomial fitted (weighted least squares, relative error 1.5e-8, below float32's half
  ulp) by this project. Accurate to a few float32 rounding units everywhere.
* :func:`normal`: a counter-based generator. Each draw is a function of (seed, pseudo-time
  step, member, component) only, through two rounds of the ``lowbias32`` integer hash
  (C. Wellons' constants), 23 bits mapped to a uniform in (-1, 1) and
  :math:`\sqrt2\,\mathrm{erf}^{-1}(u)`. Because the draw depends on the global indices, a
  computation split into blocks of components, or sharded over devices, draws exactly the
  same numbers as the unsplit one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# arctan(x) = x * P(x^2) on [0, 1]; coefficients of P from t^0 to t^8.
_ATAN_COEFFS = (
    0.99999998477,
    -0.33333073337,
    0.1999261911,
    -0.14203641832,
    0.10640922763,
    -0.075042691457,
    0.04269120674,
    -0.016068430385,
    0.0028498386446,
)


def arctan(x: jax.Array) -> jax.Array:
    """Elementwise arctan by range reduction and a polynomial (float32 accurate)."""
    ax = jnp.abs(x)
    big = ax > 1.0
    r = jnp.where(big, 1.0 / jnp.where(big, ax, 1.0), ax)
    t = r * r
    p = jnp.asarray(_ATAN_COEFFS[-1], x.dtype)
    for c in _ATAN_COEFFS[-2::-1]:
        p = p * t + jnp.asarray(c, x.dtype)
    a = r * p
    a = jnp.where(big, jnp.asarray(np.pi / 2, x.dtype) - a, a)
    return jnp.copysign(a, x)


#: fast versions of the named observation operators (by :data:`scoreda.observe.ELEMENTWISE`
#: name); an operator not listed here is its own fast version
FAST = {"arctan": arctan}


def _lowbias32(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(0x846CA68B)
    return h ^ (h >> 16)


def seed_words(key: jax.Array) -> jax.Array:
    """Two uint32 words of seed drawn from a JAX PRNG key."""
    return jax.random.bits(key, (2,), jnp.uint32)


def row_keys(seed: jax.Array, step, rows: jax.Array) -> jax.Array:
    """Per-row 32-bit keys for pseudo-time ``step``; ``rows`` holds global member indices."""
    s = _lowbias32(jnp.asarray(step, jnp.uint32) ^ seed[0])
    return _lowbias32(rows.astype(jnp.uint32) ^ _lowbias32(s + seed[1]))


def column_hash(seed: jax.Array, cols: jax.Array) -> jax.Array:
    """Per-column hash of global component indices (independent of the step, computed once)."""
    return _lowbias32(cols.astype(jnp.uint32) ^ seed[1])


def normal(row_key: jax.Array, col_hash: jax.Array, dtype=jnp.float32) -> jax.Array:
    """Standard normal draws of shape ``(rows, cols)`` from per-row keys and per-column hashes."""
    bits = _lowbias32(col_hash[None, :] ^ row_key[:, None])
    # 23 bits -> (b + 1/2) 2^-22 - 1, a uniform on a symmetric grid strictly inside (-1, 1):
    # b + 1/2 < 2^23 is exact in float32, so |u| <= 1 - 2^-23 and |normal| <= 5.4.
    u = ((bits >> 9).astype(dtype) + 0.5) * (2.0**-22) - 1.0
    return jnp.sqrt(jnp.asarray(2.0, dtype)) * jax.lax.erf_inv(u)
