"""Input checks shared by the package: fail early, name the parameter and the allowed range.

Checks on *values* (positivity, finiteness) only run when the value is concrete; inside
``jax.jit``/``vmap`` the argument is a tracer and the check is skipped, so the hot paths
stay traceable. Checks on *shapes* always run, since shapes are static under tracing.
"""

from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
    """True when ``value`` holds numbers now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(value, jax.core.Tracer)


def positive(name: str, value) -> None:
    """Raise ``ValueError`` unless the scalar ``value`` is finite and > 0."""
    if not is_concrete(value):
        return
    v = np.asarray(value)
    if v.ndim != 0 or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def non_negative(name: str, value) -> None:
    """Raise ``ValueError`` unless the scalar ``value`` is finite and >= 0."""
    if not is_concrete(value):
        return
    v = np.asarray(value)
    if v.ndim != 0 or not np.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def integer(name: str, value, minimum: int = 0) -> int:
    """Return ``value`` as an ``int`` or raise ``ValueError`` if it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def finite(name: str, x) -> None:
    """Raise ``ValueError`` if the concrete array ``x`` holds NaN or infinity."""
    if not is_concrete(x):
        return
    if not np.all(np.isfinite(np.asarray(x))):  # numpy: jnp inside a jit trace would be traced
        raise ValueError(f"{name} must be finite everywhere; it contains NaN or infinity")


def ensf_noise_scales(eps_a, eps_b) -> None:
    """EnSF's noise-schedule ends: ``eps_a`` in (0, 1], ``eps_b`` in [0, 1) (concrete values)."""
    for name, value, lo_open in (("eps_a", eps_a, True), ("eps_b", eps_b, False)):
        if is_concrete(value) and not ((0.0 < value <= 1.0) if lo_open else (0.0 <= value < 1.0)):
            allowed = "(0, 1]" if lo_open else "[0, 1)"
            raise ValueError(f"{name} must lie in {allowed}, got {value!r}")


def observation_shapes(y, mask, d: int) -> None:
    """Raise ``ValueError`` unless ``y`` (and ``mask`` when given) have shape ``(d,)``."""
    if jnp.shape(y) != (d,):
        raise ValueError(f"y must have shape (d,) = ({d},), got {jnp.shape(y)}")
    if mask is not None and jnp.shape(mask) != (d,):
        raise ValueError(f"mask must have shape (d,) = ({d},), got {jnp.shape(mask)}")


def state_dim(name: str, x, minimum: int) -> int:
    """Return the size of the last axis of ``x``; raise if ``x`` is a scalar or it is < minimum."""
    shape = jnp.shape(x)
    if len(shape) == 0 or shape[-1] < minimum:
        raise ValueError(
            f"{name} must have a last (state) axis of size >= {minimum}, got shape {shape}"
        )
    return shape[-1]


def masked_observation(y, mask, dtype):
    """``y`` as ``dtype`` with every unobserved entry (``mask`` False) set to 0, so that a NaN
    or infinity there cannot reach the analysis; a non-finite *observed* entry is refused."""
    if is_concrete(y) and is_concrete(mask) and not np.all(
            np.isfinite(np.asarray(y, np.float64)) | ~np.asarray(mask, bool)):
        raise ValueError("y must be finite at every observed component (mask True); "
                         "it contains NaN or infinity there")
    y = jnp.asarray(y, dtype)
    mask = jnp.asarray(mask, bool)
    return jnp.where(mask, y, jnp.zeros((), dtype))
