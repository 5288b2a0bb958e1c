r"""Observations: operators, noise, masks and the paper's observation schedule.

An observation at step :math:`n` is :math:`y_n = h(x_n) + \varepsilon_n`,
:math:`\varepsilon_n \sim N(0, \sigma^2 I)`, on the components selected by a boolean mask.
To keep shapes static under ``jit`` and ``scan``, observations are stored at full state size
``d`` together with the mask: ``values`` is zero where ``mask`` is False (never NaN, which would
survive multiplication by zero inside a filter).

Operators are looked up by name (``"identity"``, ``"arctan"``) or passed as any
differentiable callable acting elementwise on a state ``(..., d) -> (..., d)``.
The paper's set-up: ``h = arctan``, :math:`\sigma = 0.01`, full observation or 5 of 20
components drawn anew at every step, 15 observed steps then 5 forecast-only steps.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks

Operator = Callable[[jax.Array], jax.Array]


def identity(x: jax.Array) -> jax.Array:
    """:math:`h(x) = x`."""
    return x


def arctan(x: jax.Array) -> jax.Array:
    """:math:`h(x) = \\arctan(x)`, elementwise; its range is (-pi/2, pi/2), so large states saturate."""
    return jnp.arctan(x)


def _unit_slope(x: jax.Array) -> jax.Array:
    return jnp.ones_like(x)


def _arctan_slope(x: jax.Array) -> jax.Array:
    """:math:`h'(x) = 1/(1 + x^2)`."""
    return 1.0 / (1.0 + x * x)


def _arctan_trust_length(x: jax.Array) -> jax.Array:
    """:math:`|h'/h''| = (1 + x^2)/(2|x|)` (huge, not infinite, at 0)."""
    return (1.0 + x * x) / (2.0 * jnp.maximum(jnp.abs(x), 1e-30))


class Elementwise(NamedTuple):
    r"""A named elementwise operator with what the filters need of it, all ``(...,) -> (...,)``.

    Fields:
      h: the operator :math:`h(x)`.
      slope: its derivative :math:`h'(x)` (the diagonal of the Jacobian).
      inverse: :math:`h^{-1}(y)` on the open range ``(-bound, bound)``.
      bound: :math:`\sup |h|`, the edge of the range (``inf`` when it has none).
      trust_length: :math:`|h'(x)/h''(x)|`, the distance over which the slope changes by
        about itself (how far a linearisation at ``x`` can be trusted); None for a linear
        ``h``.
    """

    h: Callable[[jax.Array], jax.Array]
    slope: Callable[[jax.Array], jax.Array]
    inverse: Callable[[jax.Array], jax.Array]
    bound: float
    trust_length: Callable[[jax.Array], jax.Array] | None


#: the named operators: the one place that knows their derivatives and inverses
ELEMENTWISE: dict[str, Elementwise] = {
    "identity": Elementwise(identity, _unit_slope, identity, float("inf"), None),
    "arctan": Elementwise(arctan, _arctan_slope, jnp.tan, float(np.pi / 2),
                          _arctan_trust_length),
}
OPERATORS: dict[str, Operator] = {name: op.h for name, op in ELEMENTWISE.items()}


def is_named(obs) -> bool:
    """Whether ``obs`` names an operator of :data:`ELEMENTWISE` (a string key of it; a
    callable, or any other string, is not)."""
    return isinstance(obs, str) and obs in ELEMENTWISE


def elementwise(obs) -> Elementwise:
    """The :class:`Elementwise` entry of a named operator; ``ValueError`` for anything else
    (a callable has no known inverse)."""
    if is_named(obs):
        return ELEMENTWISE[obs]
    raise ValueError(f"obs must be one of {sorted(ELEMENTWISE)} here, got {obs!r}")


def invert(obs, values, margin=0.0):
    r""":math:`h^{-1}(y)` of a named operator, with ``values`` first clipped to
    :math:`|y| \le` ``bound - margin`` (noise can push an observation past an asymptote:
    arctan's :math:`\pm\pi/2`); ``margin`` in ``[0, bound)``, in the observation's units."""
    op = elementwise(obs)
    _checks.non_negative("margin", margin)
    if not np.isfinite(op.bound):
        return op.inverse(values)
    if _checks.is_concrete(margin) and not float(margin) < op.bound:
        raise ValueError(f"margin must be below {obs}'s range bound {op.bound:g}, got {margin!r}")
    edge = op.bound - margin
    return op.inverse(jnp.clip(values, -edge, edge))


def operator(obs: str | Operator) -> Operator:
    """Return the observation operator named ``obs`` or ``obs`` itself when it is callable."""
    if callable(obs):
        return obs
    try:
        return OPERATORS[obs]
    except (KeyError, TypeError):
        raise ValueError(
            f"obs must be one of {sorted(OPERATORS)} or a callable, got {obs!r}"
        ) from None


def check_operator(obs: str | Operator, d: int, dtype=jnp.float32) -> Operator:
    """The operator named or given by ``obs``, checked on an abstract state ``(d,)`` (nothing
    is computed): a callable must map it to an observation of shape ``(d,)`` (observations
    are stored at full state size) and a floating dtype. Raises ``ValueError`` naming ``obs``."""
    h = operator(obs)
    if not callable(obs):
        return h
    name = getattr(obs, "__qualname__", type(obs).__name__)
    try:
        out = jax.eval_shape(h, jax.ShapeDtypeStruct((d,), dtype))
    except Exception as exc:
        raise ValueError(f"obs ({name}) failed on a state of shape ({d},): "
                         f"{type(exc).__name__}: {exc}") from exc
    shape = getattr(out, "shape", None)
    if shape != (d,):
        raise ValueError(f"obs ({name}) must map a state of shape ({d},) to an observation of "
                         f"shape ({d},) (observations are stored at full state size, unobserved "
                         f"entries masked), got {shape if shape is not None else type(out).__name__}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ValueError(f"obs ({name}) must return floating values, got dtype {out.dtype}")
    return h


def add_noise(key: jax.Array, y: jax.Array, std) -> jax.Array:
    """``y + std * xi`` with ``xi ~ N(0, I)``, same shape and dtype as ``y``; ``std >= 0``."""
    _checks.non_negative("std", std)
    return y + std * jax.random.normal(key, jnp.shape(y), jnp.result_type(y, jnp.float32))


def fixed_mask(d: int, indices) -> jax.Array:
    """Boolean mask of shape ``(d,)``, True at ``indices`` (each in ``[0, d)``, no repeats)."""
    _checks.integer("d", d, 1)
    raw = np.asarray(indices) if _checks.is_concrete(indices) else indices
    if raw.size and not (np.issubdtype(raw.dtype, np.integer)):
        raise ValueError(f"indices must be integers, got dtype {raw.dtype}: {indices!r}")
    idx = jnp.asarray(indices, dtype=int).ravel()
    if _checks.is_concrete(idx):
        if idx.size > d:
            raise ValueError(f"indices selects {idx.size} components but the state has d={d}")
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= d):
            raise ValueError(f"indices must lie in [0, {d}), got {indices!r}")
        if jnp.unique(idx).size != idx.size:
            raise ValueError(f"indices must not repeat, got {indices!r}")
    return jnp.zeros(d, dtype=bool).at[idx].set(True)


def random_masks(key: jax.Array, n_steps: int, d: int, k: int) -> jax.Array:
    """A new random subset of ``k`` of the ``d`` components at each of ``n_steps`` steps.

    Returns a boolean array ``(n_steps, d)`` with exactly ``k`` True entries per row, each
    subset uniform over all subsets of size ``k`` and independent across steps.
    """
    _checks.integer("n_steps", n_steps, 0)
    _checks.integer("d", d, 1)
    _checks.integer("k", k, 0)
    if k > d:
        raise ValueError(f"k (observed components per step) must be <= d={d}, got {k}")
    # The k smallest of d iid uniforms form a uniformly random k-subset.
    u = jax.random.uniform(key, (n_steps, d))
    ranks = jnp.argsort(jnp.argsort(u, axis=-1), axis=-1)
    return ranks < k


def cycle_schedule(
    n_steps: int, n_observed: int = 15, n_free: int = 5, start: int = 0
) -> jax.Array:
    """The paper's observation schedule: repeat ``n_observed`` observed steps, then ``n_free``
    forecast-only steps, beginning at step ``start`` (steps before it are never observed).

    Returns a boolean array ``(n_steps,)``, True at observed steps. The paper: 15 and 5,
    ``start = 20`` (the first 20 states form the surrogate's initial history).
    """
    _checks.integer("n_steps", n_steps, 0)
    _checks.integer("n_observed", n_observed, 0)
    _checks.integer("n_free", n_free, 0)
    _checks.integer("start", start, 0)
    if n_observed + n_free == 0:
        raise ValueError("n_observed + n_free must be > 0")
    step = jnp.arange(n_steps)
    return (step >= start) & ((step - start) % (n_observed + n_free) < n_observed)


class Observations(NamedTuple):
    """Observations of a trajectory, stored at full size with masks.

    Fields:
      values: ``y_n`` where observed, 0 elsewhere; shape ``(T, d)``.
      mask: True where component ``i`` is observed at step ``n``; shape ``(T, d)``.
      observed: True at steps with any observation (the schedule); shape ``(T,)``.
      std: the observation noise standard deviation :math:`\\sigma` (scalar).
    """

    values: jax.Array
    mask: jax.Array
    observed: jax.Array
    std: jax.Array


def observe(
    key: jax.Array,
    truth: jax.Array,
    obs: str | Operator = "arctan",
    std: float = 0.01,
    *,
    mask: jax.Array | None = None,
    schedule: jax.Array | None = None,
) -> Observations:
    """Simulate noisy observations ``y_n = h(x_n) + N(0, std^2)`` of a true trajectory.

    Args:
      key: PRNG key for the noise.
      truth: true states, shape ``(T, d)``.
      obs: observation operator, a name or a callable.
      std: noise standard deviation, >= 0.
      mask: observed components, ``(d,)`` (the same every step) or ``(T, d)``; default all.
      schedule: observed steps ``(T,)``; default every step.

    Returns:
      :class:`Observations` with ``values``, ``mask`` of shape ``(T, d)``; the mask is
      False at every component of unobserved steps.
    """
    truth = jnp.asarray(truth)
    if truth.ndim != 2:
        raise ValueError(f"truth must have shape (T, d), got {truth.shape}")
    n_steps, d = truth.shape
    _checks.finite("truth", truth)
    h = operator(obs)
    if mask is not None:
        _checks.boolean_mask("mask", mask)
    mask = jnp.ones((n_steps, d), bool) if mask is None else jnp.asarray(mask, bool)
    if mask.shape == (d,):
        mask = jnp.broadcast_to(mask, (n_steps, d))
    if mask.shape != (n_steps, d):
        raise ValueError(f"mask must have shape (d,) = ({d},) or (T, d) = {(n_steps, d)}, got {mask.shape}")
    schedule = jnp.ones(n_steps, bool) if schedule is None else jnp.asarray(schedule, bool)
    if schedule.shape != (n_steps,):
        raise ValueError(f"schedule must have shape (T,) = ({n_steps},), got {schedule.shape}")
    mask = mask & schedule[:, None]
    y = add_noise(key, h(truth), std)
    return Observations(
        values=jnp.where(mask, y, 0.0),
        mask=mask,
        observed=schedule & jnp.any(mask, axis=-1),
        std=jnp.asarray(std, y.dtype),
    )
