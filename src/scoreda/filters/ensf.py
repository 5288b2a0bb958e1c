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
analysis ensemble. Two integrators (see :mod:`scoreda.filters.reverse_sde`):

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
``scoreda.filters._fastmath`` (the loops are in :mod:`scoreda.filters.reverse_sde`).
Blocked and unblocked runs draw identical noise. Every public
analysis of :mod:`scoreda.filters` traces its matrix products at float32 precision
(:func:`scoreda.device.full_precision`).
"""

from __future__ import annotations

import contextlib
import inspect
import math
import threading
import warnings
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from scoreda import _checks, device, observe
from scoreda.device import full_precision
from scoreda.filters import reverse_sde
from scoreda.filters.reverse_sde import Numbers, ensemble_mean


#: the reference code's score clip (in standardised units), the default of Euler steps
REFERENCE_CLIP = 1000.0
#: share of clipped score evaluations above which an analysis warns (:class:`ScoreClipped`)
CLIP_WARNING_SHARE = 0.01


class ScoreClipped(UserWarning):
    """The score clip bound in more than :data:`CLIP_WARNING_SHARE` of an analysis's score
    evaluations (members x components x pseudo-time steps): the analysis is pulled towards
    the prior by an amount the clip, not the data, decides."""


def check_knobs(*, prior="paired", kernel_var=0.0, eps_a=0.5, eps_b=0.025, n_steps=100,
                clip=None, scale=1.0, start="standard", noise="hash", block_size=None,
                integrator="euler") -> None:
    """Raise ``ValueError`` naming the first knob outside its range (concrete values only)."""
    reverse_sde.check_static(n_steps=n_steps, integrator=integrator, start=start, prior=prior,
                             noise=noise, block_size=block_size)
    _checks.non_negative("kernel_var", kernel_var)
    if clip is not None:
        _checks.positive("clip", clip, allow_inf=True)
    _checks.positive("scale", scale)
    _checks.ensf_noise_scales(eps_a, eps_b)


def default_clip(clip, integrator: str, obs) -> float:
    """``clip`` itself, or when None the integrator's default: none (``inf``) for the
    exponential integrator with ``"identity"`` or ``"arctan"``, else the reference's 1000."""
    if clip is not None:
        return clip
    if integrator == "exponential" and observe.is_named(obs):
        return math.inf
    return REFERENCE_CLIP


def _prepare(ensemble, y, obs_std, obs, mask, knobs: dict):
    """Checked inputs: the ensemble as float ``(N, d)``, ``y`` with unobserved entries
    zeroed, the mask, and the float knobs as :class:`Numbers`."""
    ensemble = jnp.asarray(ensemble)
    if ensemble.ndim != 2 or ensemble.shape[0] < 1 or ensemble.shape[1] < 1:
        raise ValueError(f"ensemble must have shape (N, d) with N, d >= 1, got {ensemble.shape}")
    d = ensemble.shape[1]
    _checks.observation_shapes(y, mask, d)
    if not (callable(obs) or observe.is_named(obs)):
        raise ValueError(f"obs must be one of {tuple(observe.ELEMENTWISE)} or a callable, "
                         f"got {obs!r}")
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
        out = reverse_sde.sharded(key, ensemble, y, mask, nums, obs=obs, n_steps=n_steps,
                                  start=start, block_size=block_size, integrator=integrator,
                                  mesh=mesh)
        out = jnp.where(jnp.any(mask), out, ensemble)
        return out, None
    center = ensemble_mean(ensemble)
    if elementwise:
        if block_size is None:
            block_size = device.paired_block_size(n_members, d)
        out = reverse_sde.paired_blocked(key, ensemble, center, y, mask, nums, obs=obs,
                                         n_steps=n_steps, start=start,
                                         block_size=min(block_size, d), integrator=integrator,
                                         count_clipped=count_clipped)
    else:
        out = reverse_sde.general(key, ensemble, center, y, mask, nums, obs=obs, prior=prior,
                                  n_steps=n_steps, start=start, noise=noise,
                                  integrator=integrator, count_clipped=count_clipped)
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
        part of the drift solved exactly per step; see :mod:`scoreda.filters.reverse_sde`),
        which needs far fewer steps when ``obs_std`` is small.
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
    return reverse_sde.general(key, ensemble, ensemble_mean(ensemble), y, mask, nums,
                               obs=p["obs"], prior=p["prior"], n_steps=p["n_steps"],
                               start=p["start"], noise=p["noise"], return_path=True,
                               integrator=p["integrator"])
