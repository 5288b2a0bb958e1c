r"""The Ensemble Score Filter (EnSF) analysis step (Bao, Zhang & Zhang 2024).

EnSF draws the analysis ensemble by running a score-based diffusion model backwards, with
the score built from the forecast ensemble (no training) and the observation likelihood.

**Standardised coordinates.** The diffusion runs on :math:`u = (x - m)/s`, with :math:`m`
the forecast ensemble's mean (per component) and :math:`s` = ``scale``, a number in the
state's units (default 1); the analysis is mapped back by :math:`x = m + s u`. So a shift of
the state (kelvin instead of degrees Celsius, a state near :math:`10^6`) leaves the analysis
unchanged, and so does a change of unit made together with ``scale``, ``obs_std`` and
``kernel_var`` (to float rounding; ``tests/test_no_silent_numbers.py``). ``eps_a``, ``eps_b`` and
``clip`` are dimensionless (they act on :math:`u`); ``obs_std`` is a standard deviation and
``kernel_var`` a variance in the state's units. With ``scale = 1`` the process is the
reference's, except that it contracts towards the ensemble mean instead of towards 0 (and
the reference's :math:`N(0, I)` start is :math:`N(m, I)` in the state).

**Forward process** in pseudo-time :math:`t \in [0, 1]`:
:math:`p(u_t \mid u_0) = N(\alpha_t u_0, \beta_t^2 I)` with
:math:`\alpha_t = 1 - (1 - \epsilon_\alpha) t` and
:math:`\beta_t^2 = \epsilon_\beta + (1 - \epsilon_\beta) t`; drift
:math:`f(t) = \frac{d \log\alpha_t}{dt}`, diffusion
:math:`g(t)^2 = \frac{d\beta_t^2}{dt} - 2 f(t)\beta_t^2`.

**Prior score** from the forecast ensemble :math:`\{u_k\}_{k=1}^N` with kernel variance
:math:`v = ` ``kernel_var`` :math:`/ s^2`, :math:`\sigma_t^2 = \alpha_t^2 v + \beta_t^2`:

* ``"paired"``: member :math:`j` uses only :math:`u_j`,
  :math:`s_j(u, t) = -(u - \alpha_t u_j)/\sigma_t^2`, the score of
  :math:`N(\alpha_t u_j, \sigma_t^2 I)`. Componentwise, :math:`O(Nd)` per step.
* ``"mixture"``: the score of the Gaussian mixture
  :math:`\frac1N\sum_k N(u; \alpha_t u_k, \sigma_t^2 I)`,
  :math:`s(u, t) = -(u - \alpha_t \sum_k w_k(u) u_k)/\sigma_t^2`,
  :math:`w = \mathrm{softmax}_k(-\lVert u - \alpha_t u_k\rVert^2 / 2\sigma_t^2)`. The
  distances come from matrix products (memory :math:`O(Nd + N^2)`, never an
  :math:`N \times N \times d` array). Only this estimator couples components, so only it
  can move unobserved ones.

**Likelihood score** for :math:`y = h(x) + N(0, \sigma^2 I)` on the observed components:
:math:`\nabla_u \log p(y\mid x) = -s\,h'(x)(h(x) - y)/\sigma^2` at :math:`x = m + s u`
(identity and arctan in closed form, any other differentiable ``h`` through ``jax.vjp``),
zero elsewhere, damped by :math:`1 - t`.

**Reverse SDE** on :math:`t_k = 1 - k/K`, :math:`k = 0..K-1`, from :math:`u \sim N(0, I)`
(``start="standard"``, the reference) or from the forward process's terminal marginal
:math:`N(\alpha_1 u_j, \sigma_1^2 I)` (``start="marginal"``); the end states are the
analysis ensemble. Two integrators (see ``_step``):

* ``"euler"``, Euler-Maruyama, the reference: it is stable only when
  :math:`\Delta t\, g^2 h'^2 s^2/\sigma^2 \lesssim 1`, so, as in the reference code, the
  posterior score :math:`s + (1 - t)\nabla\log p(y \mid x)` is clipped to :math:`\pm`
  ``clip`` (default 1000, in :math:`u`).
* ``"exponential"``: the stiff linear part of the drift is solved exactly per step, so it is
  stable for any :math:`\sigma` without a clip (default: none for ``"identity"`` and
  ``"arctan"``; 1000 for a callable ``h``, whose curvature it does not know). For the curved
  ``"arctan"`` its Gauss-Newton move is kept within :math:`|h'/h''|` of the current state per
  step (a trust region: Newton's method on arctan overshoots from beyond :math:`|x| > 1.39`).

A clip that binds biases the analysis towards the prior (a score of :math:`10^6` treated as
:math:`10^3`): an analysis run outside a compiled loop counts the clipped evaluations and
warns (:class:`ScoreClipped`) when they exceed :data:`CLIP_WARNING_SHARE`;
:func:`clip_share` measures the share of any analysis.

**No observation.** When no component is observed (``mask`` all False), the forecast is
returned unchanged, as at a step without observations (no noise of :math:`\epsilon_\beta`
is added).

**Known biases** (measured against closed-form posteriors in ``tests/test_ensf.py``). The
damped likelihood :math:`(1 - t)\nabla\log p(y \mid x)` is not the diffused likelihood, so
EnSF is not an exact posterior sampler even with infinitely many members:

* Gaussian prior, linear observation (2000 members, ``"mixture"``, :math:`\epsilon_\alpha = 1`,
  K = 200): the analysis mean is the Kalman mean, the variance about 0.6 of the Kalman
  variance (0.55 in the many-member limit): the followed score stays as narrow as the
  posterior while the diffused posterior's widens.
* Two separated modes: each mode moves to its own Kalman mean, but the members keep the
  prior's mode weights (0.50 where the exact posterior gives 0.92): the likelihood is weak
  early in the reverse process, when a member's mode is decided.

:mod:`scoreda.filters.gaussian_score` (EnSF-G) uses the exact diffused likelihood instead.

Speed: with the paired estimator and an elementwise operator ("identity", "arctan") every
(member, component) pair evolves on its own, so the whole pseudo-time loop runs over blocks
of components that stay in cache (``block_size``; one block of the whole state on a GPU, see
:mod:`scoreda.device`), with the fast arctan and counter-based noise of
``scoreda.filters._fastmath``. Blocked and unblocked runs draw identical noise. Every public
analysis of :mod:`scoreda.filters` traces its matrix products at float32 precision
(:func:`scoreda.device.full_precision`).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import threading
import warnings
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks, device, observe
from scoreda.device import full_precision
from scoreda.filters import _fastmath

PRIORS = ("paired", "mixture")
STARTS = ("standard", "marginal")
NOISES = ("hash", "threefry")
INTEGRATORS = ("euler", "exponential")
_ELEMENTWISE_OBS = ("identity", "arctan")

#: the reference code's score clip (in standardised units), the default of Euler steps
REFERENCE_CLIP = 1000.0
#: share of clipped score evaluations above which an analysis warns (:class:`ScoreClipped`)
CLIP_WARNING_SHARE = 0.01


class ScoreClipped(UserWarning):
    """The score clip bound in more than :data:`CLIP_WARNING_SHARE` of an analysis's score
    evaluations (members x components x pseudo-time steps): the analysis is pulled towards
    the prior by an amount the clip, not the data, decides."""


class Schedule(NamedTuple):
    """Pseudo-time grid and coefficients of the reverse SDE, each of shape ``(n_steps,)``."""

    t: jax.Array
    alpha: jax.Array
    beta2: jax.Array
    drift: jax.Array
    diffusion2: jax.Array


def schedule(eps_a: float, eps_b: float, n_steps: int, dtype=jnp.float32) -> Schedule:
    r"""The linear schedule on :math:`t_k = 1 - k/K`: :math:`\alpha_t, \beta_t^2, f(t), g(t)^2`."""
    t = 1.0 - jnp.arange(n_steps, dtype=dtype) / n_steps
    alpha = 1.0 - (1.0 - eps_a) * t
    beta2 = eps_b + (1.0 - eps_b) * t
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
    Identity: :math:`-(z - y)/\sigma^2`; arctan: :math:`-(\arctan z - y)/(\sigma^2 (1 + z^2))`;
    a callable ``h`` acting on one state ``(d,) -> (d,)``: by ``jax.vjp``.
    """
    m = 1.0 if mask is None else jnp.asarray(mask, z.dtype)
    inv_var = 1.0 / obs_std**2
    if obs == "identity":
        return -(z - y) * (m * inv_var)
    if obs == "arctan":
        atan = _fastmath.arctan if fast else jnp.arctan
        return -(atan(z) - y) * (m * inv_var) / (1.0 + z * z)
    if not callable(obs):
        raise ValueError(f"obs must be one of {_ELEMENTWISE_OBS} or a callable, got {obs!r}")

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


def check_knobs(*, prior="paired", kernel_var=0.0, eps_a=0.5, eps_b=0.025, n_steps=100,
                clip=None, scale=1.0, start="standard", noise="hash", block_size=None,
                integrator="euler") -> None:
    """Raise ``ValueError`` naming the first knob outside its range (concrete values only)."""
    for name, value, allowed in (("prior", prior, PRIORS), ("start", start, STARTS),
                                 ("noise", noise, NOISES), ("integrator", integrator, INTEGRATORS)):
        if not isinstance(value, str) or value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    _checks.non_negative("kernel_var", kernel_var)
    if clip is not None:
        _checks.positive("clip", clip, allow_inf=True)
    _checks.positive("scale", scale)
    _checks.integer("n_steps", n_steps, 1)
    if block_size is not None:
        _checks.integer("block_size", block_size, 1)
    _checks.ensf_noise_scales(eps_a, eps_b)


def default_clip(clip, integrator: str, obs) -> float:
    """``clip`` itself, or when None the integrator's default: none (``inf``) for the
    exponential integrator with ``"identity"`` or ``"arctan"``, else the reference's 1000."""
    if clip is not None:
        return clip
    if integrator == "exponential" and not callable(obs) and obs in _ELEMENTWISE_OBS:
        return math.inf
    return REFERENCE_CLIP


def _elementwise_likelihood(u, y, center, mask, nums: Numbers, obs: str, fast: bool = True):
    r"""The likelihood's score, Gauss-Newton curvature and trust radius in the standardised
    coordinates ``u = (x - center) / scale`` of one block (all ``(N, B)`` or broadcastable).

    Identity: :math:`-s^2 (u - (y - m)/s)/\sigma^2`, curvature :math:`s^2/\sigma^2`, no trust
    radius (the linearisation is exact). Arctan at :math:`x = m + s u`:
    :math:`-s (\arctan x - y)/(\sigma^2 (1 + x^2))`, curvature
    :math:`s^2/(\sigma^2 (1 + x^2)^2)` and radius :math:`|h'/h''|/s = (1 + x^2)/(2|x| s)`,
    the distance over which :math:`h'` changes by about itself.
    """
    s = nums.scale
    precision = mask * (s / nums.obs_std) ** 2
    if obs == "identity":
        return -(u - (y - center) / s) * precision, precision, None
    x = center + s * u
    slope = 1.0 / (1.0 + x * x)
    atan = _fastmath.arctan if fast else jnp.arctan
    score = -(atan(x) - y) * slope * precision / s
    radius = (1.0 + x * x) / (2.0 * jnp.maximum(jnp.abs(x), 1e-30) * s)
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
def _paired_blocked(key, x, center, y, mask, nums: Numbers, *, obs, n_steps, start, block_size,
                    integrator="euler", count_clipped=False, row_offset=0, col_offset=0):
    # row_offset / col_offset: global index of this slice's first member / component (the
    # noise depends on global indices only, so a shard draws what the whole array would)
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


def _sharded(key, x, y, mask, nums: Numbers, *, mesh, block_size, obs, n_steps, start,
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
        return _paired_blocked(key, x, center, y, mask, nums, obs=obs, n_steps=n_steps,
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
def _general(key, x, center, y, mask, nums: Numbers, *, obs, prior, n_steps, start, noise,
             return_path=False, integrator="euler", count_clipped=False):
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


def _prepare(ensemble, y, obs_std, obs, mask, knobs: dict):
    """Checked inputs: the ensemble as float ``(N, d)``, ``y`` with unobserved entries
    zeroed, the mask, and the float knobs as :class:`Numbers`."""
    ensemble = jnp.asarray(ensemble)
    if ensemble.ndim != 2 or ensemble.shape[0] < 1 or ensemble.shape[1] < 1:
        raise ValueError(f"ensemble must have shape (N, d) with N, d >= 1, got {ensemble.shape}")
    d = ensemble.shape[1]
    _checks.observation_shapes(y, mask, d)
    if not (callable(obs) or (isinstance(obs, str) and obs in _ELEMENTWISE_OBS)):
        raise ValueError(f"obs must be one of {_ELEMENTWISE_OBS} or a callable, got {obs!r}")
    check_knobs(**knobs)
    _checks.positive("obs_std", obs_std)
    _checks.finite("ensemble", ensemble)
    ensemble = jnp.asarray(ensemble, dtype=jnp.result_type(ensemble, jnp.float32))
    if callable(obs):
        observe.check_operator(obs, d, ensemble.dtype)
    dtype = ensemble.dtype
    scale = knobs.get("scale", 1.0)
    _checks.likelihood_precision(obs_std, dtype)
    _checks.likelihood_precision(scale, dtype, name="scale")  # kernel_var / scale^2 stays finite
    if _checks.is_concrete(obs_std) and _checks.is_concrete(scale) and float(scale) != 1.0:
        # the likelihood's precision in standardised units is (scale / obs_std)^2
        _checks.likelihood_precision(np.asarray(obs_std, np.float64) / np.asarray(scale, np.float64),
                                     dtype, name="obs_std / scale")
    mask = jnp.ones(d, bool) if mask is None else jnp.asarray(mask, bool)
    y = _checks.masked_observation(y, mask, dtype)
    clip = default_clip(knobs.get("clip"), knobs.get("integrator", "euler"), obs)
    nums = Numbers(*(jnp.asarray(v, dtype) for v in (
        obs_std, knobs.get("kernel_var", 0.0), knobs.get("eps_a", 0.5),
        knobs.get("eps_b", 0.025), clip, scale)))
    return ensemble, y, mask, nums


def _run(key, ensemble, y, obs_std, *, obs, mask, prior, n_steps, start, noise, block_size,
         integrator, mesh, count_clipped, **numbers):
    """The analysis (and, with ``count_clipped``, the number of clipped score entries)."""
    knobs = dict(prior=prior, n_steps=n_steps, start=start, noise=noise, block_size=block_size,
                 integrator=integrator, **numbers)
    ensemble, y, mask, nums = _prepare(ensemble, y, obs_std, obs, mask, knobs)
    n_members, d = ensemble.shape
    elementwise = prior == "paired" and not callable(obs) and noise == "hash"
    if mesh is not None:
        if not elementwise:
            raise ValueError("mesh needs the paired fast path: prior='paired', obs 'identity' or "
                             "'arctan', noise='hash'")
        out = _sharded(key, ensemble, y, mask, nums, obs=obs, n_steps=n_steps,
                       start=start, block_size=block_size, integrator=integrator, mesh=mesh)
        out = jnp.where(jnp.any(mask), out, ensemble)
        return out, None
    center = ensemble_mean(ensemble)
    if elementwise:
        if block_size is None:
            block_size = device.paired_block_size(n_members, d)
        out = _paired_blocked(key, ensemble, center, y, mask, nums, obs=obs, n_steps=n_steps,
                              start=start, block_size=min(block_size, d), integrator=integrator,
                              count_clipped=count_clipped)
    else:
        out = _general(key, ensemble, center, y, mask, nums, obs=obs, prior=prior,
                       n_steps=n_steps, start=start, noise=noise, integrator=integrator,
                       count_clipped=count_clipped)
    out, n_clipped = out if count_clipped else (out, None)
    # nothing observed: the forecast, as at a step without observations
    out = jnp.where(jnp.any(mask), out, ensemble)
    if n_clipped is None:
        return out, None
    total = float(n_members * d * n_steps)
    if not _checks.is_concrete(n_clipped):  # inside a compiled loop: to the active logs
        jax.debug.callback(_report_clipping, n_clipped, total)
        return out, None
    _report_clipping(n_clipped, total)
    return out, float(n_clipped) / total


class ClipLog:
    """Score evaluations and clipped ones of the analyses run with ``report_clipping=True``
    while the log is active (see :func:`record_clipping`)."""

    def __init__(self):
        self.clipped, self.evaluations, self.analyses = 0.0, 0.0, 0

    @property
    def share(self) -> float:
        """Clipped evaluations over all of them (NaN when nothing was recorded)."""
        return self.clipped / self.evaluations if self.evaluations else float("nan")


_ACTIVE_LOGS: list[ClipLog] = []
_LOG_LOCK = threading.Lock()


def _report_clipping(n_clipped, total) -> None:
    n = np.asarray(n_clipped, np.float64).ravel()  # one entry per vmapped cycle
    with _LOG_LOCK:
        for log in _ACTIVE_LOGS:
            log.clipped += float(n.sum())
            log.evaluations += float(total) * n.size
            log.analyses += n.size


@contextlib.contextmanager
def record_clipping():
    """Collect how often the score clip binds in every analysis run with
    ``report_clipping=True`` inside the block, also inside compiled cycles (through a host
    callback), e.g. a comparison's method with that knob::

        with ensf.record_clipping() as log:
            compare.evaluate(case, method, knobs | {"report_clipping": True}, seeds)
        log.share  # clipped score evaluations / all of them
    """
    log = ClipLog()
    with _LOG_LOCK:
        _ACTIVE_LOGS.append(log)
    try:
        yield log
    finally:
        jax.effects_barrier()  # callbacks still in flight land in the log first
        with _LOG_LOCK:
            _ACTIVE_LOGS.remove(log)


@full_precision
def analysis(
    key: jax.Array,
    ensemble: jax.Array,
    y: jax.Array,
    obs_std,
    *,
    obs: str | Callable = "identity",
    mask: jax.Array | None = None,
    prior: str = "paired",
    kernel_var=0.0,
    eps_a=0.5,
    eps_b=0.025,
    n_steps: int = 100,
    clip=None,
    scale=1.0,
    start: str = "standard",
    noise: str = "hash",
    block_size: int | None = None,
    integrator: str = "euler",
    report_clipping: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """EnSF analysis: forecast ensemble ``(N, d)`` and observation ``y`` ``(d,)`` in, analysis ``(N, d)`` out.

    Args:
      key: PRNG key.
      ensemble: forecast ensemble, members first, shape ``(N, d)``.
      y: observation at full state size, shape ``(d,)`` (values where ``mask`` is False are
        ignored).
      obs_std: observation noise standard deviation :math:`\\sigma` > 0 (state's units for
        the identity).
      obs: ``"identity"``, ``"arctan"`` or a differentiable callable ``(d,) -> (d,)``.
      mask: observed components, bool ``(d,)``; None observes all. Nothing observed: the
        forecast is returned unchanged.
      prior: ``"paired"`` or ``"mixture"`` prior-score estimator (see the module docstring).
      kernel_var: kernel variance >= 0 added to each member's Gaussian, in the state's units
        squared.
      eps_a: :math:`\\epsilon_\\alpha` in (0, 1], the signal kept at t = 1 (1: no decay).
      eps_b: :math:`\\epsilon_\\beta` in [0, 1), the noise variance at t = 0 in units of
        ``scale`` squared (acts like additive inflation).
      n_steps: reverse-SDE steps K (Euler with small ``obs_std`` needs many).
      clip: posterior scores (standardised units) are clipped to ``[-clip, clip]``; ``inf``:
        never. None (default): 1000, the reference's, except for the exponential integrator
        with ``"identity"`` or ``"arctan"``, which needs none.
      scale: the state's unit of the diffusion, a standard deviation > 0 in the state's units
        (the climatological one makes ``eps_a``, ``eps_b`` and ``clip`` dimensionless; 1, the
        default, is the reference's).
      start: ``"standard"`` starts from N(0, I) in standardised coordinates, as the
        reference code; ``"marginal"`` from the forward process's terminal marginal of each
        member.
      noise: ``"hash"`` (fast counter-based Gaussian noise, the default) or ``"threefry"``
        (``jax.random.normal``).
      integrator: ``"euler"`` (Euler-Maruyama, the reference) or ``"exponential"`` (the stiff
        part of the drift solved exactly per step; see ``_step``), which needs far fewer
        steps when ``obs_std`` is small.
      block_size: components per block in the paired fast path (default
        :func:`scoreda.device.paired_block_size`: on a CPU about 65,536 / N components, 256
        KiB of float32 state, which stays in cache; on an accelerator the whole state).
      report_clipping: count the clipped score evaluations also inside a compiled loop and
        report them to the logs of :func:`record_clipping` (a host callback per analysis;
        the kernel takes about a quarter longer). An analysis run outside a compiled loop
        counts whenever its clip is finite.
      mesh: run the paired fast path on the devices of a :class:`jax.sharding.Mesh`: members
        split over its ``"members"`` axis (if it has one), components over all its other
        axes. Paired updates are independent per (member, component) and the noise depends
        only on global indices, so every device works on its own slice and the result
        equals the single-device one: bit for bit with Euler steps, to float32 rounding with
        the exponential integrator (the blocks differ, and so does the vectorised code).
        The ensemble mean, the centre of the standardised coordinates, is the one reduction
        across members. ``N`` and ``d`` must be divisible by the axis sizes. See
        :mod:`scoreda.sharding`.

    Returns:
      The analysis ensemble, shape ``(N, d)``, dtype of ``ensemble``.

    Warns:
      ScoreClipped: run outside a compiled loop (concrete inputs), when the score clip bound
        in more than :data:`CLIP_WARNING_SHARE` of the score evaluations.
    """
    if not isinstance(report_clipping, (bool, np.bool_)):
        raise ValueError(f"report_clipping must be True or False, got {report_clipping!r}")
    concrete = all(_checks.is_concrete(a) for a in (key, ensemble, y, obs_std, mask, eps_a,
                                                     eps_b, kernel_var, scale, clip))
    used = default_clip(clip, integrator, obs)
    finite = not (_checks.is_concrete(used) and np.all(np.isinf(np.asarray(used, float))))
    count = mesh is None and finite and (concrete or bool(report_clipping))
    out, share = _run(key, ensemble, y, obs_std, obs=obs, mask=mask, prior=prior,
                      n_steps=n_steps, start=start, noise=noise, block_size=block_size,
                      integrator=integrator, mesh=mesh, count_clipped=bool(count),
                      kernel_var=kernel_var, eps_a=eps_a, eps_b=eps_b, clip=clip, scale=scale)
    if share is not None and share > CLIP_WARNING_SHARE:
        used = default_clip(clip, integrator, obs)
        advice = ("more n_steps, or integrator='exponential' (which needs no clip with "
                  "'identity' or 'arctan')" if integrator == "euler" else
                  "clip=None (no clip with 'identity' or 'arctan')" if not callable(obs) else
                  "a larger clip or more n_steps")
        warnings.warn(ScoreClipped(
            f"the score clip (±{float(used):g}) bound in {100 * share:.1f}% of the score "
            f"evaluations (members x components x {n_steps} steps): the analysis is pulled "
            f"towards the prior; use {advice}"), stacklevel=2)
    return out


def clip_share(key, ensemble, y, obs_std, **knobs) -> float:
    """The share of score evaluations (members x components x pseudo-time steps) that the
    clip changed in :func:`analysis` with the same arguments (0 when nothing is clipped);
    concrete inputs only (not inside ``jit``). ``mesh`` is not supported."""
    defaults = _keyword_defaults()
    unknown = set(knobs) - set(defaults) | ({"mesh"} & set(knobs))
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}; allowed: "
                        f"{sorted(set(defaults) - {'mesh'})}")
    params = defaults | knobs | {"mesh": None}
    params.pop("report_clipping")
    if not np.isfinite(default_clip(params["clip"], params["integrator"], params["obs"])):
        return 0.0
    return _run(key, ensemble, y, obs_std, count_clipped=True, **params)[1]


def _keyword_defaults() -> dict:
    return {name: p.default for name, p in inspect.signature(analysis).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def reverse_path(key, ensemble, y, obs_std, **kwargs) -> jax.Array:
    """The whole reverse-SDE path of :func:`analysis`, for pictures and teaching.

    Same arguments as :func:`analysis` (``block_size`` is ignored); returns the states, in
    the state's units, at pseudo-times ``t = 1, 1 - 1/K, ..., 0``, shape ``(K + 1, N, d)``,
    the last one equal to the analysis (up to rounding; with nothing observed the analysis
    is the forecast itself, and the path shows the diffusion it skipped). Memory grows with
    K: meant for small ensembles.
    """
    defaults = _keyword_defaults()
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}; allowed: {sorted(defaults)}")
    p = defaults | kwargs
    knobs = {k: p[k] for k in ("prior", "kernel_var", "eps_a", "eps_b", "n_steps", "clip",
                               "scale", "start", "noise", "block_size", "integrator")}
    ensemble, y, mask, nums = _prepare(ensemble, y, obs_std, p["obs"], p["mask"], knobs)
    return _general(key, ensemble, ensemble_mean(ensemble), y, mask, nums, obs=p["obs"],
                    prior=p["prior"], n_steps=p["n_steps"], start=p["start"], noise=p["noise"],
                    return_path=True, integrator=p["integrator"])
