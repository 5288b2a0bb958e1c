r"""The Ensemble Score Filter (EnSF) analysis step (Bao, Zhang & Zhang 2024).

EnSF draws the analysis ensemble by running a score-based diffusion model backwards, with
the score built from the forecast ensemble (no training) and the observation likelihood.

**Forward process** in pseudo-time :math:`t \in [0, 1]`:
:math:`p(z_t \mid z_0) = N(\alpha_t z_0, \beta_t^2 I)` with
:math:`\alpha_t = 1 - (1 - \epsilon_\alpha) t` and
:math:`\beta_t^2 = \epsilon_\beta + (1 - \epsilon_\beta) t`; drift
:math:`f(t) = \frac{d \log\alpha_t}{dt}`, diffusion
:math:`g(t)^2 = \frac{d\beta_t^2}{dt} - 2 f(t)\beta_t^2`.

**Prior score** from the forecast ensemble :math:`\{x_k\}_{k=1}^N` with kernel variance
:math:`v`, :math:`\sigma_t^2 = \alpha_t^2 v + \beta_t^2`:

* ``"paired"``: member :math:`j` uses only :math:`x_j`,
  :math:`s_j(z, t) = -(z - \alpha_t x_j)/\sigma_t^2`, the score of
  :math:`N(\alpha_t x_j, \sigma_t^2 I)`. Componentwise, :math:`O(Nd)` per step.
* ``"mixture"``: the score of the Gaussian mixture
  :math:`\frac1N\sum_k N(z; \alpha_t x_k, \sigma_t^2 I)`,
  :math:`s(z, t) = -(z - \alpha_t \sum_k w_k(z) x_k)/\sigma_t^2`,
  :math:`w = \mathrm{softmax}_k(-\lVert z - \alpha_t x_k\rVert^2 / 2\sigma_t^2)`. The
  distances come from matrix products (memory :math:`O(Nd + N^2)`, never an
  :math:`N \times N \times d` array). Only this estimator couples components, so only it
  can move unobserved ones.

**Likelihood score** for :math:`y = h(x) + N(0, \sigma^2 I)` on the observed components:
:math:`\nabla_z \log p(y\mid z) = -h'(z)(h(z) - y)/\sigma^2` (identity and arctan in closed
form, any other differentiable ``h`` through ``jax.vjp``), zero elsewhere, damped by
:math:`1 - t`. The posterior score :math:`s + (1 - t)\nabla\log p(y \mid z)` is clipped to
:math:`\pm` ``clip``.

**Reverse SDE**, Euler-Maruyama on :math:`t_k = 1 - k/K`, :math:`k = 0..K-1`:
:math:`z \leftarrow z - \Delta t\,[f(t) z - g(t)^2 s(z, t)] + \sqrt{\Delta t}\,g(t)\,\xi`,
from :math:`z \sim N(0, I)` (``start="standard"``, the reference) or from the forward
process's terminal marginal :math:`N(\alpha_1 x_j, \sigma_1^2 I)` (``start="marginal"``).
The end states are the analysis ensemble.

**Known biases** (measured against closed-form posteriors in ``tests/test_ensf.py``). The
damped likelihood :math:`(1 - t)\nabla\log p(y \mid z)` is not the diffused likelihood, so
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
of components that stay in cache (``block_size``), with the fast arctan and counter-based
noise of ``scoreda.filters._fastmath``. Blocked and unblocked runs draw identical noise.
"""

from __future__ import annotations

import functools
import inspect
import math
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from scoreda import _checks
from scoreda.filters import _fastmath

PRIORS = ("paired", "mixture")
STARTS = ("standard", "marginal")
NOISES = ("hash", "threefry")
INTEGRATORS = ("euler", "exponential")
_ELEMENTWISE_OBS = ("identity", "arctan")


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


def _check(ensemble, y, obs_std, obs, mask, prior, kernel_var, eps_a, eps_b, n_steps, clip,
           start, noise, block_size, integrator="euler"):
    ensemble = jnp.asarray(ensemble)
    if ensemble.ndim != 2 or ensemble.shape[0] < 1 or ensemble.shape[1] < 1:
        raise ValueError(f"ensemble must have shape (N, d) with N, d >= 1, got {ensemble.shape}")
    d = ensemble.shape[1]
    _checks.observation_shapes(y, mask, d)
    if not (callable(obs) or obs in _ELEMENTWISE_OBS):
        raise ValueError(f"obs must be one of {_ELEMENTWISE_OBS} or a callable, got {obs!r}")
    for name, value, allowed in (("prior", prior, PRIORS), ("start", start, STARTS),
                                 ("noise", noise, NOISES), ("integrator", integrator, INTEGRATORS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    _checks.positive("obs_std", obs_std)
    _checks.likelihood_precision(obs_std, jnp.result_type(ensemble, jnp.float32))
    _checks.non_negative("kernel_var", kernel_var)
    _checks.positive("clip", clip)
    _checks.integer("n_steps", n_steps, 1)
    if block_size is not None:
        _checks.integer("block_size", block_size, 1)
    _checks.ensf_noise_scales(eps_a, eps_b)
    _checks.finite("ensemble", ensemble)


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
    clip=1000.0,
    start: str = "standard",
    noise: str = "hash",
    block_size: int | None = None,
    integrator: str = "euler",
    mesh: jax.sharding.Mesh | None = None,
) -> jax.Array:
    """EnSF analysis: forecast ensemble ``(N, d)`` and observation ``y`` ``(d,)`` in, analysis ``(N, d)`` out.

    Args:
      key: PRNG key.
      ensemble: forecast ensemble, members first, shape ``(N, d)``.
      y: observation at full state size, shape ``(d,)`` (values where ``mask`` is False are
        ignored).
      obs_std: observation noise standard deviation :math:`\\sigma` > 0.
      obs: ``"identity"``, ``"arctan"`` or a differentiable callable ``(d,) -> (d,)``.
      mask: observed components, bool ``(d,)``; None observes all.
      prior: ``"paired"`` or ``"mixture"`` prior-score estimator (see the module docstring).
      kernel_var: kernel variance :math:`v` >= 0 added to each member's Gaussian.
      eps_a: :math:`\\epsilon_\\alpha` in (0, 1], the signal kept at t = 1 (1: no decay).
      eps_b: :math:`\\epsilon_\\beta` in [0, 1), the noise variance at t = 0 (acts like
        additive inflation).
      n_steps: Euler-Maruyama steps K (stiff likelihoods with small ``obs_std`` need many).
      clip: posterior scores are clipped to ``[-clip, clip]``.
      start: ``"standard"`` starts from N(0, I) as the reference code; ``"marginal"`` from
        the forward process's terminal marginal of each member.
      noise: ``"hash"`` (fast counter-based Gaussian noise, the default) or ``"threefry"``
        (``jax.random.normal``).
      integrator: ``"euler"`` (Euler-Maruyama, the reference) or ``"exponential"`` (the stiff
        part of the drift solved exactly per step; see ``_step``), which needs far fewer
        steps when ``obs_std`` is small.
      block_size: components per cache block in the paired fast path (default: about
        65,536 / N components per block: 256 KiB of float32 state, which stays in cache).
      mesh: run the paired fast path on the devices of a :class:`jax.sharding.Mesh`: members
        split over its ``"members"`` axis (if it has one), components over all its other
        axes. Paired updates are independent per (member, component) and the noise depends
        only on global indices, so every device works on its own slice with no
        communication and the result equals the single-device one. ``N`` and ``d`` must be
        divisible by the axis sizes. See :mod:`scoreda.sharding`.

    Returns:
      The analysis ensemble, shape ``(N, d)``, dtype of ``ensemble``.
    """
    _check(ensemble, y, obs_std, obs, mask, prior, kernel_var, eps_a, eps_b, n_steps, clip,
           start, noise, block_size, integrator)
    ensemble = jnp.asarray(ensemble, dtype=jnp.result_type(ensemble, jnp.float32))
    n_members, d = ensemble.shape
    mask = jnp.ones(d, bool) if mask is None else jnp.asarray(mask, bool)
    y = _checks.masked_observation(y, mask, ensemble.dtype)
    # every float knob in the ensemble's precision (a float64 scalar under x64 would promote
    # the float32 reverse-SDE state and break its scan)
    obs_std, kernel_var, eps_a, eps_b, clip = (
        jnp.asarray(v, ensemble.dtype) for v in (obs_std, kernel_var, eps_a, eps_b, clip))
    elementwise = prior == "paired" and not callable(obs) and noise == "hash"
    if mesh is not None:
        if not elementwise:
            raise ValueError("mesh needs the paired fast path: prior='paired', obs 'identity' or "
                             "'arctan', noise='hash'")
        return _sharded(key, ensemble, y, mask, obs_std, kernel_var, eps_a, eps_b, clip, obs=obs,
                        n_steps=n_steps, start=start, block_size=block_size,
                        integrator=integrator, mesh=mesh)
    if elementwise:
        if block_size is None:
            block_size = max(128, 65_536 // n_members)
        block_size = min(block_size, d)
        return _paired_blocked(key, ensemble, y, mask, obs_std, kernel_var, eps_a, eps_b, clip,
                               obs=obs, n_steps=n_steps, start=start, block_size=block_size,
                               integrator=integrator)
    return _general(key, ensemble, y, mask, obs_std, kernel_var, eps_a, eps_b, clip,
                    obs=obs, prior=prior, n_steps=n_steps, start=start, noise=noise,
                    integrator=integrator)


def _start_state(start, z_noise, x, sched: Schedule, kernel_var):
    if start == "standard":
        return z_noise
    alpha1, beta21 = sched.alpha[0], sched.beta2[0]
    return alpha1 * x + jnp.sqrt(alpha1**2 * kernel_var + beta21) * z_noise


def _likelihood_curvature(z, obs, mask, obs_std):
    r"""Gauss-Newton curvature of the negative log-likelihood, :math:`m\,h'(z)^2/\sigma^2`
    (elementwise operators only; 0 for a callable, whose Jacobian need not be diagonal)."""
    if obs == "identity":
        return mask / obs_std**2
    if obs == "arctan":
        return mask / (obs_std**2 * (1.0 + z * z) ** 2)
    return 0.0


def _phi1(x):
    """:math:`(1 - e^{-x})/x` for ``x >= 0`` (1 at 0), stable for small ``x``."""
    safe = jnp.where(x > 1e-4, x, 1.0)
    return jnp.where(x > 1e-4, -jnp.expm1(-safe) / safe, 1.0 - 0.5 * x)


def _step(z, k, *, prior_score, lik_score, lik_curvature, prior_var, sched: Schedule, dt, xi,
          clip, integrator):
    r"""One reverse-time step from :math:`t_k` to :math:`t_k - \Delta t`.

    The drift is :math:`F(z) = g^2 s(z, t) - f z` with the clipped posterior score
    :math:`s = s_{prior} + (1 - t) s_{lik}`.

    * ``"euler"`` (the reference): :math:`z + \Delta t F + \sqrt{\Delta t}\,g\,\xi`.
    * ``"exponential"``: the drift is linearised componentwise,
      :math:`F(z') \approx F(z) - J (z' - z)` with :math:`J = f + g^2(1/\sigma_t^2 + (1 - t)c)`
      (:math:`c` the Gauss-Newton curvature of the likelihood), and that linear SDE is solved
      exactly over the step: :math:`z + \Delta t\,\varphi(J\Delta t) F +
      \sqrt{\Delta t\,\varphi(2J\Delta t)}\,g\,\xi`, :math:`\varphi(x) = (1 - e^{-x})/x`.
      Stiff components relax to their local equilibrium with the right variance instead of
      overshooting, so far fewer steps reach the many-step answer; as
      :math:`\Delta t \to 0` it is Euler-Maruyama.
    """
    t, f, g2 = sched.t[k], sched.drift[k], sched.diffusion2[k]
    score = jnp.clip(prior_score + (1.0 - t) * lik_score, -clip, clip)
    drift = g2 * score - f * z
    if integrator == "euler":
        return z + dt * drift + jnp.sqrt(dt * g2) * xi
    stiffness = jnp.maximum(f + g2 * (1.0 / prior_var + (1.0 - t) * lik_curvature), 0.0) * dt
    return z + dt * _phi1(stiffness) * drift + jnp.sqrt(dt * g2 * _phi1(2.0 * stiffness)) * xi


@partial(jax.jit, static_argnames=("obs", "n_steps", "start", "block_size", "integrator"))
def _paired_blocked(key, x, y, mask, obs_std, kernel_var, eps_a, eps_b, clip, *, obs, n_steps,
                    start, block_size, integrator="euler", row_offset=0, col_offset=0):
    # row_offset / col_offset: global index of this slice's first member / component (the
    # noise depends on global indices only, so a shard draws what the whole array would)
    n_members, d = x.shape
    dtype = x.dtype
    sched = schedule(eps_a, eps_b, n_steps, dtype)
    dt = jnp.asarray(1.0 / n_steps, dtype)
    seed = _fastmath.seed_words(key)
    rows = jnp.arange(n_members, dtype=jnp.uint32) + jnp.asarray(row_offset, jnp.uint32)
    n_blocks = -(-d // block_size)
    pad = n_blocks * block_size - d

    def blocks(a, fill):  # (..., d) -> (n_blocks, ..., block_size)
        a = jnp.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, pad)], constant_values=fill)
        return jnp.moveaxis(a.reshape(a.shape[:-1] + (n_blocks, block_size)), -2, 0)

    cols = blocks(jnp.arange(d, dtype=jnp.uint32) + jnp.asarray(col_offset, jnp.uint32), 0)
    inputs = (blocks(x, 0), blocks(y, 0), blocks(mask.astype(dtype), 0), cols)

    def run_block(args):
        xb, yb, mb, cb = args
        col_hash = _fastmath.column_hash(seed, cb)
        z0 = _fastmath.normal(_fastmath.row_keys(seed, n_steps, rows), col_hash, dtype)
        z0 = _start_state(start, z0, xb, sched, kernel_var)

        def body(z, k):
            xi = _fastmath.normal(_fastmath.row_keys(seed, k, rows), col_hash, dtype)
            z = _step(
                z, k, prior_score=paired_prior_score(z, xb, sched.alpha[k], sched.beta2[k], kernel_var),
                lik_score=likelihood_score(z, yb, obs_std, obs, mb),
                lik_curvature=_likelihood_curvature(z, obs, mb, obs_std),
                prior_var=sched.alpha[k] ** 2 * kernel_var + sched.beta2[k], sched=sched, dt=dt,
                xi=xi, clip=clip, integrator=integrator)
            return z, None

        z, _ = jax.lax.scan(body, z0, jnp.arange(n_steps))
        return z

    out = jax.lax.map(run_block, inputs)  # (n_blocks, N, block_size)
    return jnp.moveaxis(out, 0, 1).reshape(n_members, n_blocks * block_size)[:, :d]


def _sharded(key, x, y, mask, obs_std, kernel_var, eps_a, eps_b, clip, *, mesh, block_size, obs,
             n_steps, start, integrator):
    """The paired fast path under ``shard_map``: each device runs the blocked kernel on its
    slice, with the global offsets of its first member and component."""
    fn = _sharded_fn(mesh, *x.shape, block_size, obs, n_steps, start, integrator)
    as_array = lambda v: jnp.asarray(v, x.dtype)
    return fn(key, x, y, mask, as_array(obs_std), as_array(kernel_var), as_array(eps_a),
              as_array(eps_b), as_array(clip))


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
    block = min(block_size or max(128, 65_536 // n_local), d_local)
    P = jax.sharding.PartitionSpec
    members = P(member_axes[0] if member_axes else None, state_axes or None)
    state = P(state_axes or None)

    def local(key, x, y, mask, obs_std, kernel_var, eps_a, eps_b, clip):
        row0 = jax.lax.axis_index(member_axes) * n_local if member_axes else 0
        col0 = jax.lax.axis_index(state_axes) * d_local if state_axes else 0
        return _paired_blocked(key, x, y, mask, obs_std, kernel_var, eps_a, eps_b, clip, obs=obs,
                               n_steps=n_steps, start=start, block_size=block,
                               integrator=integrator, row_offset=row0, col_offset=col0)

    specs = (P(), members, state, state) + (P(),) * 5
    mapped = jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=members, check_vma=False)

    explicit = any(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types)
    place = jax.reshard if explicit else jax.lax.with_sharding_constraint

    @jax.jit
    def run(*args):  # place the inputs as the map expects, whatever their sharding
        return mapped(*[place(a, jax.sharding.NamedSharding(mesh, spec)) for a, spec in zip(args, specs)])

    return run


@partial(jax.jit, static_argnames=("obs", "prior", "n_steps", "start", "noise", "return_path",
                                   "integrator"))
def _general(key, x, y, mask, obs_std, kernel_var, eps_a, eps_b, clip, *, obs, prior, n_steps,
             start, noise, return_path=False, integrator="euler"):
    n_members, d = x.shape
    dtype = x.dtype
    sched = schedule(eps_a, eps_b, n_steps, dtype)
    dt = jnp.asarray(1.0 / n_steps, dtype)
    rows = jnp.arange(n_members, dtype=jnp.uint32)
    if noise == "hash":
        seed = _fastmath.seed_words(key)
        col_hash = _fastmath.column_hash(seed, jnp.arange(d, dtype=jnp.uint32))
        draw = lambda k: _fastmath.normal(_fastmath.row_keys(seed, k, rows), col_hash, dtype)
    else:
        draw = lambda k: jax.random.normal(jax.random.fold_in(key, k), (n_members, d), dtype)
    prior_score = paired_prior_score if prior == "paired" else mixture_prior_score
    z0 = _start_state(start, draw(n_steps), x, sched, kernel_var)
    maskf = mask.astype(dtype)

    def body(z, k):
        z = _step(
            z, k, prior_score=prior_score(z, x, sched.alpha[k], sched.beta2[k], kernel_var),
            lik_score=likelihood_score(z, y, obs_std, obs, maskf),
            lik_curvature=_likelihood_curvature(z, obs, maskf, obs_std),
            prior_var=sched.alpha[k] ** 2 * kernel_var + sched.beta2[k], sched=sched, dt=dt,
            xi=draw(k), clip=clip, integrator=integrator)
        return z, (z if return_path else None)

    z, path = jax.lax.scan(body, z0, jnp.arange(n_steps))
    return jnp.concatenate([z0[None], path]) if return_path else z


def reverse_path(key, ensemble, y, obs_std, **kwargs) -> jax.Array:
    """The whole reverse-SDE path of :func:`analysis`, for pictures and teaching.

    Same arguments as :func:`analysis` (``block_size`` is ignored); returns the states at
    pseudo-times ``t = 1, 1 - 1/K, ..., 0``, shape ``(K + 1, N, d)``, the last one equal to
    the analysis (up to rounding). Memory grows with K: meant for small ensembles.
    """
    defaults = {name: p.default for name, p in inspect.signature(analysis).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = set(kwargs) - set(defaults)
    if unknown:
        raise TypeError(f"unknown arguments {sorted(unknown)}; allowed: {sorted(defaults)}")
    params = defaults | kwargs
    p = params
    _check(ensemble, y, obs_std, p["obs"], p["mask"], p["prior"], p["kernel_var"], p["eps_a"],
           p["eps_b"], p["n_steps"], p["clip"], p["start"], p["noise"], p["block_size"],
           p["integrator"])
    ensemble = jnp.asarray(ensemble, dtype=jnp.result_type(ensemble, jnp.float32))
    d = ensemble.shape[1]
    mask = jnp.ones(d, bool) if p["mask"] is None else jnp.asarray(p["mask"], bool)
    return _general(key, ensemble, _checks.masked_observation(y, mask, ensemble.dtype), mask, obs_std, p["kernel_var"],
                    p["eps_a"], p["eps_b"], p["clip"], obs=p["obs"], prior=p["prior"],
                    n_steps=p["n_steps"], start=p["start"], noise=p["noise"], return_path=True,
                    integrator=p["integrator"])
