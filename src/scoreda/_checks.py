"""Input checks shared by the package: fail early, name the parameter and the allowed range.

Checks on *values* (positivity, finiteness) only run when the value is concrete; inside
``jax.jit``/``vmap`` the argument is a tracer and the check is skipped, so the hot paths
stay traceable. Checks on *shapes* always run, since shapes are static under tracing.
"""

from __future__ import annotations

import numbers
import warnings

import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(value) -> bool:
    """True when ``value`` holds numbers now (not a tracer inside jit/vmap/grad)."""
    return not isinstance(value, jax.core.Tracer)


def _number(name: str, value, allowed: str) -> np.ndarray:
    """``value`` as a numpy array, or ``ValueError`` naming it when it is not a real number
    (a string such as ``"0.5"``, a boolean, ``None``, a complex number, an object)."""
    if isinstance(value, (str, bytes, bool, np.bool_)) or value is None:
        raise ValueError(f"{name} must be a finite number{allowed}, got {value!r} "
                         f"({type(value).__name__})")
    try:
        v = np.asarray(value)
    except Exception:
        v = np.asarray(None)
    if not (jnp.issubdtype(v.dtype, jnp.integer) or jnp.issubdtype(v.dtype, jnp.floating)):
        raise ValueError(f"{name} must be a finite number{allowed}, got {value!r} "
                         f"({type(value).__name__})")
    return v


def _scalar(name: str, value, ok, allowed: str, allow_inf: bool = False) -> None:
    """Raise ``ValueError`` unless the concrete ``value`` is a real scalar, finite (or
    ``+inf`` with ``allow_inf``), with ``ok(value)``."""
    if not is_concrete(value):
        return
    v = _number(name, value, allowed)
    if v.ndim != 0:
        raise ValueError(f"{name} must be one number{allowed}, got an array of shape {v.shape}")
    finite = np.isfinite(v) or (allow_inf and v == np.inf)
    if not finite or not ok(v):
        raise ValueError(f"{name} must be a {'' if allow_inf else 'finite '}number{allowed}, "
                         f"got {value!r}")


def positive(name: str, value, allow_inf: bool = False) -> None:
    """Raise ``ValueError`` unless the scalar ``value`` is > 0 and finite (or ``inf`` with
    ``allow_inf``)."""
    _scalar(name, value, lambda v: v > 0, " > 0" + (" (inf allowed)" if allow_inf else ""),
            allow_inf)


def non_negative(name: str, value) -> None:
    """Raise ``ValueError`` unless the scalar ``value`` is finite and >= 0."""
    _scalar(name, value, lambda v: v >= 0, " >= 0")


def finite_scalar(name: str, value) -> None:
    """Raise ``ValueError`` unless the concrete ``value`` is a finite scalar (any sign)."""
    _scalar(name, value, lambda v: True, "")


def integer(name: str, value, minimum: int = 0) -> int:
    """Return ``value`` as an ``int`` or raise ``ValueError`` if it is not an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def all_finite(x, where=None) -> bool:
    """Whether the concrete array ``x`` is finite (everywhere ``where`` is True, if given). A
    JAX array is reduced where it lives, no host copy, and eagerly even while a jit trace is
    running (a concrete array closed over by a traced function); anything else with numpy."""
    if isinstance(x, jax.Array):
        with jax.ensure_compile_time_eval():
            ok = jnp.isfinite(x) if where is None else jnp.isfinite(x) | ~jnp.asarray(where, bool)
            return bool(jnp.all(ok))
    ok = np.isfinite(np.asarray(x))
    return bool(np.all(ok if where is None else ok | ~np.asarray(where, bool)))


def finite(name: str, x) -> None:
    """Raise ``ValueError`` if the concrete array ``x`` holds NaN or infinity."""
    if not is_concrete(x):
        return
    if not all_finite(x):
        raise ValueError(f"{name} must be finite everywhere; it contains NaN or infinity")


def ensf_noise_scales(eps_a, eps_b) -> None:
    """EnSF's noise-schedule ends: ``eps_a`` in (0, 1], ``eps_b`` in [0, 1) (concrete values)."""
    for name, value, lo_open in (("eps_a", eps_a, True), ("eps_b", eps_b, False)):
        if not is_concrete(value):
            continue
        value = _number(name, value, "")  # numpy: a jnp comparison in a jit trace is staged
        if value.ndim != 0 or not ((0.0 < value <= 1.0) if lo_open else (0.0 <= value < 1.0)):
            allowed = "(0, 1]" if lo_open else "[0, 1)"
            raise ValueError(f"{name} must lie in {allowed}, got {value!r}")


def observation_shapes(y, mask, d: int) -> None:
    """Raise ``ValueError`` unless ``y`` (and ``mask`` when given) have shape ``(d,)`` and the
    mask is boolean."""
    if jnp.shape(y) != (d,):
        raise ValueError(f"y must have shape (d,) = ({d},), got {jnp.shape(y)}")
    if mask is not None:
        if jnp.shape(mask) != (d,):
            raise ValueError(f"mask must have shape (d,) = ({d},), got {jnp.shape(mask)}")
        boolean_mask("mask", mask)


class Deflation(UserWarning):
    """An inflation below 1: the analysis anomalies are shrunk. Legitimate when tuned (a
    filter that over-disperses), but never a default, so it is said aloud."""


def inflation(value, stacklevel: int = 3) -> None:
    """Multiplicative inflation of the analysis anomalies: a finite number > 0 (1 = none).
    Below 1 it shrinks them: allowed (a tuning grid may hold it) but warned as
    :class:`Deflation` when the value is concrete; ``stacklevel`` points the warning at the
    user's call (2: the caller of this function)."""
    positive("inflation", value)
    if is_concrete(value) and float(value) < 1.0:
        warnings.warn(Deflation(f"inflation {float(value):g} < 1 shrinks the analysis anomalies "
                                "(deflation); 1 leaves them unchanged"), stacklevel=stacklevel)


def likelihood_precision(obs_std, dtype, name: str = "obs_std") -> None:
    """Raise ``ValueError`` when ``1 / obs_std**2`` is too large for ``dtype``: a likelihood
    score ``(y - h(x)) / obs_std**2`` or a precision-weighted anomaly would overflow to
    infinity (e.g. float32 and 1e-19)."""
    if not is_concrete(obs_std):
        return
    smallest = float(np.sqrt(1e6 / np.finfo(dtype).max))  # 1/sigma^2 at most max/1e6
    value = float(np.min(np.asarray(obs_std)))
    if value < smallest:
        term = name if name.isidentifier() else f"({name})"
        raise ValueError(f"{name}={value:g} is too small for {np.dtype(dtype).name}: the "
                         f"likelihood's precision 1 / {term}**2 would overflow; use "
                         f"{name} >= {smallest:.1e} (or float64 with jax x64 enabled)")


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


def boolean_mask(name: str, mask) -> None:
    """Raise ``ValueError`` unless ``mask`` is boolean (a float mask would turn every nonzero,
    0.5 included, into True)."""
    dtype = getattr(mask, "dtype", None) or np.asarray(mask).dtype
    if dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array (True = observed), got dtype {dtype}")


def prng_key(name: str, key) -> None:
    """Raise ``ValueError`` unless ``key`` is one JAX PRNG key: a typed key
    (``jax.random.key``) or a raw ``uint32`` key of shape ``(2,)`` (``jax.random.PRNGKey``)."""
    dtype, shape = getattr(key, "dtype", None), jnp.shape(key)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key) and shape == ():
        return
    if dtype == jnp.uint32 and shape == (2,):
        return
    raise ValueError(f"{name} must be one PRNG key (jax.random.key(seed)), got "
                     f"{type(key).__name__} with shape {shape} and dtype {dtype}")


def integration_finite(name: str, states, advice: str) -> None:
    """Raise ``FloatingPointError`` when a concrete integrated trajectory ``states``
    (time on axis -2) left the finite numbers, naming the first such saved step."""
    if not is_concrete(states) or all_finite(states):
        return
    bad = ~np.all(np.isfinite(np.asarray(states)), axis=-1)  # (..., T)
    if bad.any():
        first = int(np.argmax(bad.reshape(-1, bad.shape[-1]).any(axis=0)))
        raise FloatingPointError(f"{name} blew up: the state is not finite from saved step "
                                 f"{first} on; {advice}")


#: seeds stay below 2**30: trials derive keys from seed + offsets (10,000, 20,000, ...) and
#: ``jax.random.key`` keeps 32 bits, so larger seeds could alias one another
MAX_SEED = 2**30


def seeds(name: str, values, minimum: int = 1) -> tuple[int, ...]:
    """``values`` as a tuple of distinct integer seeds >= 0, at least ``minimum`` of them;
    ``ValueError`` naming ``name`` otherwise (a float seed would be truncated, a repeated one
    would count one trial twice)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise ValueError(f"{name} must be a sequence of integer seeds, got {values!r}")
    if isinstance(values, (np.ndarray, jax.Array)):  # an integer array: its elements
        if values.ndim != 1 or not jnp.issubdtype(values.dtype, jnp.integer):
            raise ValueError(f"{name} must be a sequence of integer seeds, got an array of "
                             f"dtype {values.dtype} and shape {values.shape}")
        values = [int(v) for v in np.asarray(values)]
    values = list(values)
    bad = [v for v in values if isinstance(v, (bool, np.bool_))
           or not isinstance(v, numbers.Integral) or not 0 <= v < MAX_SEED]
    if bad:
        raise ValueError(f"{name} must hold integers in [0, 2**30), got {bad[0]!r} "
                         f"({type(bad[0]).__name__})")
    values = [int(v) for v in values]
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{name} repeats {repeated}: a repeated seed would count one trial twice")
    if len(values) < minimum:
        raise ValueError(f"{name} must hold at least {minimum} seed{'s' * (minimum > 1)}, "
                         f"got {len(values)}")
    return tuple(values)
