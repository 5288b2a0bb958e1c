r"""The reverse-time SDE of the Ensemble Score Filter: its schedule, scores and loops.

The numerics behind :func:`scoreda.filters.ensf.analysis` (whose docstring gives the
equations and the knobs' meaning), in standardised coordinates :math:`u = (x - m)/s`:

* :func:`forward_coefficients` and :func:`schedule`: the forward process
  :math:`\alpha_t = 1 - (1 - \epsilon_\alpha) t`,
  :math:`\beta_t^2 = \epsilon_\beta + (1 - \epsilon_\beta) t` and the reverse SDE's drift
  and diffusion on :math:`t_k = 1 - k/K` (EnSF-G, :mod:`scoreda.filters.gaussian_score`,
  diffuses with the same coefficients);
* the prior scores from the ensemble (:func:`paired_prior_score`,
  :func:`mixture_prior_score`) and the likelihood's (:func:`likelihood_score`, and the
  elementwise form with its Gauss-Newton curvature and trust radius);
* one reverse step (Euler-Maruyama or the exponential integrator) and the three loops that
  run it: :func:`paired_blocked` (every (member, component) pair on its own, over blocks of
  components that stay in cache), :func:`sharded` (that kernel under ``shard_map``) and
  :func:`general` (the mixture prior, a callable ``h``, ``threefry`` noise, the whole path).

The loops check their static choices (names, step and block counts) and nothing else: the
arrays and float knobs are checked by :func:`scoreda.filters.ensf.analysis`, the function to
call. The float knobs travel as one pytree, :class:`Numbers`, traced in a compiled cycle.
"""

from __future__ import annotations

import functools
import math
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from scoreda import _checks, device, observe
from scoreda.filters import _fastmath

PRIORS = ("paired", "mixture")
STARTS = ("standard", "marginal")
NOISES = ("hash", "threefry")
INTEGRATORS = ("euler", "exponential")


def check_static(*, n_steps, integrator, start, prior="paired", noise="hash",
                 block_size=None) -> None:
    """Raise ``ValueError`` naming the first static choice outside its set (``prior``,
    ``start``, ``noise``, ``integrator``) or count below 1 (``n_steps``, ``block_size``)."""
    for name, value, allowed in (("prior", prior, PRIORS), ("start", start, STARTS),
                                 ("noise", noise, NOISES), ("integrator", integrator, INTEGRATORS)):
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    _checks.integer("n_steps", n_steps, 1)
    if block_size is not None:
        _checks.integer("block_size", block_size, 1)


class Schedule(NamedTuple):
    """Pseudo-time grid and coefficients of the reverse SDE, each of shape ``(n_steps,)``."""

    t: jax.Array
    alpha: jax.Array
    beta2: jax.Array
    drift: jax.Array
    diffusion2: jax.Array


def forward_coefficients(t, eps_a, eps_b):
    r"""The forward process :math:`p(u_t \mid u_0) = N(\alpha_t u_0, \beta_t^2 I)` at
    pseudo-times ``t`` (any shape): ``(alpha, beta2)`` with
    :math:`\alpha_t = 1 - (1 - \epsilon_\alpha) t` and
    :math:`\beta_t^2 = \epsilon_\beta + (1 - \epsilon_\beta) t`."""
    return 1.0 - (1.0 - eps_a) * t, eps_b + (1.0 - eps_b) * t


def schedule(eps_a: float, eps_b: float, n_steps: int, dtype=jnp.float32) -> Schedule:
    r"""The linear schedule on :math:`t_k = 1 - k/K`: :math:`\alpha_t, \beta_t^2, f(t), g(t)^2`."""
    t = 1.0 - jnp.arange(n_steps, dtype=dtype) / n_steps
    alpha, beta2 = forward_coefficients(t, eps_a, eps_b)
    drift = -(1.0 - eps_a) / alpha
    diffusion2 = (1.0 - eps_b) - 2.0 * drift * beta2
    return Schedule(t, alpha, beta2, drift, diffusion2)


def paired_prior_score(z, x, alpha, beta2, kernel_var=0.0):
    r"""Score of :math:`N(\alpha x_j, (\alpha^2 v + \beta^2) I)` at :math:`z_j`; ``z, x``: ``(N, d)``."""
    return -(z - alpha * x) / (alpha**2 * kernel_var + beta2)


def mixture_prior_score(z, x, alpha, beta2, kernel_var=0.0):
    r"""Score of :math:`\frac1M\sum_k N(\alpha x_k, \sigma^2 I)` at each row of ``z``.

    ``z``: ``(N, d)`` evaluation points; ``x``: ``(M, d)`` ensemble. Squared distances are
    assembled from ``z @ x.T`` (memory :math:`O(NM)`), so no ``(N, M, d)`` array exists.
    """
    var = alpha**2 * kernel_var + beta2
    mx = alpha * x
    sq = (
        jnp.sum(z * z, axis=-1, keepdims=True)
        - 2.0 * z @ mx.T
        + jnp.sum(mx * mx, axis=-1)[None, :]
    )  # (N, M)
    w = jax.nn.softmax(-0.5 * sq / var, axis=-1)
    return -(z - w @ mx) / var


def likelihood_score(z, y, obs_std, obs: str | Callable = "identity", mask=None, *, fast=True):
    r"""Gradient in ``z`` of :math:`\log p(y \mid z) = -\lVert m \odot (h(z) - y)\rVert^2 / 2\sigma^2`.

    ``z``: ``(N, d)``; ``y``: ``(d,)``; ``mask``: ``(d,)`` bool or None (all observed).
    A named operator (:data:`scoreda.observe.ELEMENTWISE`):
    :math:`-h'(z)(h(z) - y)/\sigma^2` (identity: :math:`-(z - y)/\sigma^2`; arctan:
    :math:`-(\arctan z - y)/(\sigma^2 (1 + z^2))`, with ``fast`` the polynomial arctan of
    ``scoreda.filters._fastmath``); a callable ``h`` acting on one state
    ``(d,) -> (d,)``: by ``jax.vjp``.
    """
    m = 1.0 if mask is None else jnp.asarray(mask, z.dtype)
    inv_var = 1.0 / obs_std**2
    if not callable(obs):
        if not observe.is_named(obs):
            raise ValueError(f"obs must be one of {sorted(observe.ELEMENTWISE)} or a callable, "
                             f"got {obs!r}")
        op = observe.ELEMENTWISE[obs]
        h = _fastmath.FAST.get(obs, op.h) if fast else op.h
        return -(h(z) - y) * (m * inv_var) * op.slope(z)

    def one(zj):
        hz, pullback = jax.vjp(obs, zj)
        return pullback(-(hz - y) * (m * inv_var))[0]

    return jax.vmap(one)(z)


class Numbers(NamedTuple):
    """The analysis's float knobs, as arrays of the ensemble's dtype (traced in a compiled
    cycle, so one compilation serves a whole tuning grid). ``clip`` may be ``inf``."""

    obs_std: jax.Array
    kernel_var: jax.Array
    eps_a: jax.Array
    eps_b: jax.Array
    clip: jax.Array
    scale: jax.Array


def _elementwise_likelihood(u, y, center, mask, nums: Numbers, obs: str, fast: bool = True):
    r"""The likelihood's score, Gauss-Newton curvature and trust radius in the standardised
    coordinates ``u = (x - center) / scale`` of one block (all ``(N, B)`` or broadcastable).

    Identity: :math:`-s^2 (u - (y - m)/s)/\sigma^2`, curvature :math:`s^2/\sigma^2`, no trust
    radius (the linearisation is exact). A curved named operator
    (:data:`scoreda.observe.ELEMENTWISE`) at :math:`x = m + s u`:
    :math:`-s h'(x)(h(x) - y)/\sigma^2`, curvature :math:`s^2 h'(x)^2/\sigma^2` and radius
    :math:`|h'/h''|/s` (its ``trust_length``), the distance over which :math:`h'` changes by
    about itself; for arctan :math:`h' = 1/(1 + x^2)` and :math:`|h'/h''| = (1 + x^2)/2|x|`.
    """
    s = nums.scale
    precision = mask * (s / nums.obs_std) ** 2
    if obs == "identity":  # exact in u, without going through the state
        return -(u - (y - center) / s) * precision, precision, None
    op = observe.elementwise(obs)
    x = center + s * u
    slope = op.slope(x)
    h = _fastmath.FAST.get(obs, op.h) if fast else op.h
    score = -(h(x) - y) * slope * precision / s
    radius = None if op.trust_length is None else op.trust_length(x) / s
    return score, precision * slope * slope, radius


@jax.jit
def ensemble_mean(ensemble: jax.Array) -> jax.Array:
    """The members' mean ``(d,)``, summed in member order (a left fold): the same bits on one
    device and on any sharding of the components, so the centre of a sharded analysis is the
    unsharded one's exactly (a tree reduction's order depends on the layout)."""
    total, _ = jax.lax.scan(lambda acc, row: (acc + row, None), jnp.zeros_like(ensemble[0]),
                            ensemble)
    return total / ensemble.shape[0]


def _start_state(start, noise, u, sched: Schedule, kernel_var):
    if start == "standard":
        return noise
    alpha1, beta21 = sched.alpha[0], sched.beta2[0]
    return alpha1 * u + jnp.sqrt(alpha1**2 * kernel_var + beta21) * noise


def _phi1(x):
    """:math:`(1 - e^{-x})/x` for ``x >= 0`` (1 at 0), stable for small ``x``."""
    safe = jnp.where(x > 1e-4, x, 1.0)
    return jnp.where(x > 1e-4, -jnp.expm1(-safe) / safe, 1.0 - 0.5 * x)


def _step(u, k, *, prior_score, lik_score, lik_curvature, lik_radius, prior_var,
          sched: Schedule, dt, xi, clip, integrator):
    r"""One reverse-time step from :math:`t_k` to :math:`t_k - \Delta t`; returns the new
    state and which score entries the clip changed (bool, shape of ``u``).

    The drift is :math:`F(u) = g^2 s(u, t) - f u` with the posterior score
    :math:`s = s_{prior} + (1 - t) s_{lik}` clipped to :math:`\pm` ``clip``.

    * ``"euler"`` (the reference): :math:`u + \Delta t F + \sqrt{\Delta t}\,g\,\xi`.
    * ``"exponential"``: the drift is linearised componentwise,
      :math:`F(u') \approx F(u) - J (u' - u)` with :math:`J = f + g^2(1/\sigma_t^2 + (1 - t)c)`
      (:math:`c` the Gauss-Newton curvature of the likelihood), and that linear SDE is solved
      exactly over the step: :math:`u + \Delta t\,\varphi(J\Delta t) F +
      \sqrt{\Delta t\,\varphi(2J\Delta t)}\,g\,\xi`, :math:`\varphi(x) = (1 - e^{-x})/x`.
      Stiff components relax to their local equilibrium with the right variance instead of
      overshooting, so far fewer steps reach the many-step answer; as
      :math:`\Delta t \to 0` it is Euler-Maruyama. With ``lik_radius`` (a curved ``h``) the
      likelihood's share of the move, :math:`\Delta t\,\varphi\,g^2 (1 - t) s_{lik}`, is
      limited to :math:`\pm` ``lik_radius`` (Gauss-Newton in a trust region).
    """
    t, f, g2 = sched.t[k], sched.drift[k], sched.diffusion2[k]
    raw = prior_score + (1.0 - t) * lik_score
    clipped = jnp.abs(raw) > clip
    drift = g2 * jnp.clip(raw, -clip, clip) - f * u
    if integrator == "euler":
        return u + dt * drift + jnp.sqrt(dt * g2) * xi, clipped
    stiffness = jnp.maximum(f + g2 * (1.0 / prior_var + (1.0 - t) * lik_curvature), 0.0) * dt
    phi = _phi1(stiffness)
    move = dt * phi * drift
    if lik_radius is not None:
        prior_move = dt * phi * (g2 * jnp.clip(prior_score, -clip, clip) - f * u)
        move = prior_move + jnp.clip(move - prior_move, -lik_radius, lik_radius)
    return u + move + jnp.sqrt(dt * g2 * _phi1(2.0 * stiffness)) * xi, clipped


@partial(jax.jit, static_argnames=("obs", "n_steps", "start", "block_size", "integrator",
                                   "count_clipped"))
def paired_blocked(key, x, center, y, mask, nums: Numbers, *, obs, n_steps, start, block_size,
                    integrator="euler", count_clipped=False, row_offset=0, col_offset=0):
    """EnSF's paired path over blocks of ``block_size`` components (each block's whole
    pseudo-time loop runs while it stays in cache): ``x`` the forecast ``(N, d)``, ``center``
    its mean ``(d,)``, ``y`` and ``mask`` ``(d,)``, ``obs`` ``"identity"`` or ``"arctan"``.
    Returns the analysis ``(N, d)`` (and, with ``count_clipped``, the number of clipped score
    entries). ``row_offset`` / ``col_offset``: global index of this slice's first member /
    component, so a shard draws the noise the whole array would."""
    check_static(n_steps=n_steps, integrator=integrator, start=start, block_size=block_size)
    n_members, d = x.shape
    dtype = x.dtype
    sched = schedule(nums.eps_a, nums.eps_b, n_steps, dtype)
    kernel_var = nums.kernel_var / nums.scale**2
    dt = jnp.asarray(1.0 / n_steps, dtype)
    seed = _fastmath.seed_words(key)
    rows = jnp.arange(n_members, dtype=jnp.uint32) + jnp.asarray(row_offset, jnp.uint32)
    n_blocks = -(-d // block_size)
    pad = n_blocks * block_size - d

    def blocks(a, fill):  # (..., d) -> (n_blocks, ..., block_size)
        a = jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)], constant_values=fill)
        return jnp.moveaxis(a.reshape(a.shape[:-1] + (n_blocks, block_size)), -2, 0)

    cols = blocks(jnp.arange(d, dtype=jnp.uint32) + jnp.asarray(col_offset, jnp.uint32), 0)
    valid = blocks(jnp.ones(d, dtype), 0)  # 0 on the padding columns
    inputs = (blocks(x, 0), blocks(center, 0), blocks(y, 0), blocks(mask.astype(dtype), 0), cols,
              valid)

    def run_block(args):
        xb, cb, yb, mb, colb, vb = args
        ub = (xb - cb) / nums.scale
        col_hash = _fastmath.column_hash(seed, colb)
        u0 = _fastmath.normal(_fastmath.row_keys(seed, n_steps, rows), col_hash, dtype)
        u0 = _start_state(start, u0, ub, sched, kernel_var)

        def body(carry, k):
            u, n_clipped = carry
            xi = _fastmath.normal(_fastmath.row_keys(seed, k, rows), col_hash, dtype)
            lik, curvature, radius = _elementwise_likelihood(u, yb, cb, mb, nums, obs)
            prior_var = sched.alpha[k] ** 2 * kernel_var + sched.beta2[k]
            u, clipped = _step(
                u, k, prior_score=paired_prior_score(u, ub, sched.alpha[k], sched.beta2[k], kernel_var),
                lik_score=lik, lik_curvature=curvature, lik_radius=radius, prior_var=prior_var,
                sched=sched, dt=dt, xi=xi, clip=nums.clip, integrator=integrator)
            if count_clipped:  # per entry, summed once at the end (cheaper than every step)
                n_clipped = n_clipped + clipped.astype(jnp.int32)
            return (u, n_clipped), None

        counts = jnp.zeros(u0.shape if count_clipped else (), jnp.int32)
        (u, n_clipped), _ = jax.lax.scan(body, (u0, counts), jnp.arange(n_steps))
        # float: N d K overflows int32 at d = 10^6; padding columns (vb = 0) not counted
        return cb + nums.scale * u, jnp.sum(n_clipped * vb, dtype=jnp.float32)

    out, n_clipped = jax.lax.map(run_block, inputs)  # (n_blocks, N, block_size)
    out = jnp.moveaxis(out, 0, 1).reshape(n_members, n_blocks * block_size)[:, :d]
    return (out, jnp.sum(n_clipped)) if count_clipped else out


def sharded(key, x, y, mask, nums: Numbers, *, mesh, block_size, obs, n_steps, start,
             integrator):
    """The paired fast path under ``shard_map``: each device runs the blocked kernel on its
    slice, with the global offsets of its first member and component. The centre (the
    ensemble mean) is folded over all members on each component's device first."""
    fn = _sharded_fn(mesh, *x.shape, block_size, obs, n_steps, start, integrator)
    return fn(key, x, y, mask, nums)


@functools.lru_cache(maxsize=32)
def _sharded_fn(mesh, n_members, d, block_size, obs, n_steps, start, integrator):
    member_axes = tuple(a for a in mesh.axis_names if a == "members")
    state_axes = tuple(a for a in mesh.axis_names if a != "members")
    n_member_shards = math.prod(mesh.shape[a] for a in member_axes)
    n_state_shards = math.prod(mesh.shape[a] for a in state_axes)
    if n_members % n_member_shards or d % n_state_shards:
        raise ValueError(f"N = {n_members} and d = {d} must be divisible by the mesh's member "
                         f"({n_member_shards}) and state ({n_state_shards}) shards")
    d_local, n_local = d // n_state_shards, n_members // n_member_shards
    block = min(block_size or device.paired_block_size(n_local, d_local), d_local)
    P = jax.sharding.PartitionSpec
    members = P(member_axes[0] if member_axes else None, state_axes or None)
    state = P(state_axes or None)

    def local(key, x, center, y, mask, nums):
        row0 = jax.lax.axis_index(member_axes) * n_local if member_axes else 0
        col0 = jax.lax.axis_index(state_axes) * d_local if state_axes else 0
        return paired_blocked(key, x, center, y, mask, nums, obs=obs, n_steps=n_steps,
                               start=start, block_size=block, integrator=integrator,
                               row_offset=row0, col_offset=col0)

    specs = (P(), members, state, state, state, P())
    mapped = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=members, check_vma=False)

    explicit = any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)
    place = jax.reshard if explicit else jax.lax.with_sharding_constraint

    @jax.jit
    def run(key, x, y, mask, nums):  # place the inputs as the map expects
        # every member of a component on its device, for the left-fold mean
        gathered = place(x, jax.sharding.NamedSharding(mesh, P(None, state_axes or None)))
        center = ensemble_mean(gathered)
        args = (key, x, center, y, mask)
        placed = [place(a, jax.sharding.NamedSharding(mesh, spec)) for a, spec in zip(args, specs)]
        nums = jax.tree.map(lambda a: place(a, jax.sharding.NamedSharding(mesh, P())), nums)
        return mapped(*placed, nums)

    return run


@partial(jax.jit, static_argnames=("obs", "prior", "n_steps", "start", "noise", "return_path",
                                   "integrator", "count_clipped"))
def general(key, x, center, y, mask, nums: Numbers, *, obs, prior, n_steps, start, noise,
             return_path=False, integrator="euler", count_clipped=False):
    """EnSF's general path, one loop over the whole ``(N, d)`` state: the mixture prior, a
    callable ``obs``, ``threefry`` noise, or the whole path (``return_path``: the states at
    every pseudo-time, ``(K + 1, N, d)``). Arguments as :func:`paired_blocked`'s."""
    check_static(n_steps=n_steps, integrator=integrator, start=start, prior=prior, noise=noise)
    n_members, d = x.shape
    dtype = x.dtype
    sched = schedule(nums.eps_a, nums.eps_b, n_steps, dtype)
    kernel_var = nums.kernel_var / nums.scale**2
    dt = jnp.asarray(1.0 / n_steps, dtype)
    rows = jnp.arange(n_members, dtype=jnp.uint32)
    if noise == "hash":
        seed = _fastmath.seed_words(key)
        col_hash = _fastmath.column_hash(seed, jnp.arange(d, dtype=jnp.uint32))
        draw = lambda k: _fastmath.normal(_fastmath.row_keys(seed, k, rows), col_hash, dtype)
    else:
        draw = lambda k: jax.random.normal(jax.random.fold_in(key, k), (n_members, d), dtype)
    prior_score = paired_prior_score if prior == "paired" else mixture_prior_score
    u_ens = (x - center) / nums.scale
    u0 = _start_state(start, draw(n_steps), u_ens, sched, kernel_var)
    maskf = mask.astype(dtype)

    def likelihood(u):
        if not callable(obs):
            return _elementwise_likelihood(u, y, center, maskf, nums, obs)
        state = center + nums.scale * u
        return nums.scale * likelihood_score(state, y, nums.obs_std, obs, maskf), 0.0, None

    def body(carry, k):
        u, n_clipped = carry
        lik, curvature, radius = likelihood(u)
        u, clipped = _step(
            u, k, prior_score=prior_score(u, u_ens, sched.alpha[k], sched.beta2[k], kernel_var),
            lik_score=lik, lik_curvature=curvature, lik_radius=radius,
            prior_var=sched.alpha[k] ** 2 * kernel_var + sched.beta2[k], sched=sched, dt=dt,
            xi=draw(k), clip=nums.clip, integrator=integrator)
        if count_clipped:
            n_clipped = n_clipped + clipped.astype(jnp.int32)
        return (u, n_clipped), (u if return_path else None)

    counts = jnp.zeros(u0.shape if count_clipped else (), jnp.int32)
    (u, n_clipped), path = jax.lax.scan(body, (u0, counts), jnp.arange(n_steps))
    n_clipped = jnp.sum(n_clipped, dtype=jnp.float32)
    if return_path:
        return center + nums.scale * jnp.concatenate([u0[None], path])
    out = center + nums.scale * u
    return (out, n_clipped) if count_clipped else out
