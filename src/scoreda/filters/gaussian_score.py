r"""EnSF-G: a score filter with a localised Gaussian prior and the exact diffused likelihood.

Plain EnSF (:mod:`scoreda.filters.ensf`) scores the prior with one Gaussian per member and
damps the likelihood score by the heuristic weight :math:`1 - t`. Its analysis is not the
Bayesian posterior even when everything is Gaussian and linear, and the paired score ignores
every cross-covariance, so an observation of one component never informs its neighbours.
EnSF-G keeps the diffusion (EnSF's forward process and schedule, an analysis made by running
it backwards) and changes both scores:

**Prior.** The forecast ensemble :math:`\{x_j\}` (``(N, d)``) gives the mean :math:`m` and
the localised covariance :math:`B = \rho \circ \frac{1}{N-1} A^\top A` (anomalies
:math:`A`, Gaspari-Cohn taper :math:`\rho` of half-width :math:`1.82\,r`; ``radius=inf``
switches it off). Under the forward process
:math:`z_t = \alpha_t x_0 + \beta_t \xi` the diffused prior is Gaussian in closed form,
:math:`p_t = N(\alpha_t m, \Sigma_t)`, :math:`\Sigma_t = \alpha_t^2 B + \beta_t^2 I`, and so
is the denoising posterior (Tweedie):

.. math::

    x_0 \mid z_t \sim N(\hat x_0(z_t), C_t), \quad
    \hat x_0 = m + \alpha_t B \Sigma_t^{-1}(z_t - \alpha_t m), \quad
    C_t = B - \alpha_t^2 B \Sigma_t^{-1} B,

all three from one eigendecomposition :math:`B = U \Lambda U^\top` (``(d, d)``, once per
analysis): :math:`C_t = U\,\mathrm{diag}(\lambda\beta_t^2/(\alpha_t^2\lambda + \beta_t^2))\,U^\top`.

**Likelihood.** :math:`p(y \mid z_t) = \int p(y \mid x_0)\, p(x_0 \mid z_t)\, dx_0`. For a
linear :math:`h` it is :math:`N(y; H\hat x_0, H C_t H^\top + R)` exactly; a nonlinear
:math:`h` is linearised (Jacobian :math:`J`) at the members' average of
:math:`\hat x_0(z_t)` (``linearise="mean"``, one factorisation shared by all members) or at
each member's own (``"member"``), while the innovation :math:`y - h(\hat x_0)` is each
member's. The linearisation point moves through pseudo-time: early (large :math:`C_t`) it
is the prior's, late (small :math:`C_t`) the posterior's, where the linearisation is
accurate. Then :math:`x_0 \mid z_t, y` is Gaussian, a Kalman update of
:math:`N(\hat x_0, C_t)`: mean
:math:`\hat x = \hat x_0 + C_t J^\top S^{-1}(y - h(\hat x_0))`, :math:`S = J C_t J^\top + R`.
The score of the diffused posterior is :math:`\nabla\log p_t(z \mid y) =
(\alpha_t \hat x - z)/\beta_t^2` (Tweedie), exact for a linear :math:`h`, where plain EnSF
adds two heuristic terms.

**Sampling** on the pseudo-times :math:`1 = t_0 > \dots > t_K = 0` of :func:`pseudo_times`:

* ``sampler="flow"`` (the default), deterministic: each member is *encoded* by the prior's
  probability-flow ODE, which for a Gaussian prior is linear and solved exactly
  (eigen-coordinate :math:`w \mapsto \sqrt{(\alpha_1^2\lambda + \beta_1^2)/(\lambda + \beta_0^2)}\,w`),
  then *decoded* by the posterior's probability-flow ODE,
  :math:`du/d\sigma = (u - \hat x)/\sigma` in :math:`u = z/\alpha_t`,
  :math:`\sigma = \beta_t/\alpha_t`, with Heun's method (Karras et al. 2022; the first,
  long step by DDIM). For a Gaussian prior and a linear :math:`h` the composite map is a
  deterministic square-root Kalman update: the analysis mean is the Kalman mean and the
  covariance converges to the Kalman covariance as ``n_steps`` grows (0.3 % at K = 40 in
  ``tests/test_gaussian_score.py``). Members keep their identity, as in the ETKF, and there
  is no sampling noise.
* ``sampler="ancestral"``, stochastic: from :math:`z_1 \sim N(\alpha_1 m, \Sigma_1)`, draw
  :math:`x_0' \sim N(\hat x, C_t - C_t J^\top S^{-1} J C_t)` pathwise (Matheron's rule:
  :math:`\tilde x \sim N(\hat x_0, C_t)`, :math:`x_0' = \tilde x + C_t J^\top S^{-1}(y -
  h(\hat x_0) - J(\tilde x - \hat x_0) - \varepsilon)`, :math:`\varepsilon \sim N(0, R)`),
  then :math:`z_s` from the forward process's bridge,
  :math:`z_s = \frac{v\alpha_s}{\beta_t^2} x_0' + \frac{a\beta_s^2}{\beta_t^2} z_t +
  \sqrt{\beta_s^2 v/\beta_t^2}\,\xi` (:math:`a = \alpha_t/\alpha_s`,
  :math:`v = \beta_t^2 - a^2\beta_s^2`). With a linear :math:`h` every step is exact, so
  the members are fresh draws of the Kalman posterior for any ``n_steps``; like a
  perturbed-observation EnKF it pays for that with sampling noise in the mean.

Both start at :math:`\alpha_1 = \epsilon_\alpha`, where the diffused prior and posterior
differ by :math:`O(\epsilon_\alpha)`; the default :math:`10^{-4}` makes that negligible.

**Cost.** One ``(d, d)`` eigendecomposition per analysis, then per pseudo-time step and
member :math:`O(d^2)` products and one ``(d, d)`` Cholesky of :math:`S` (one shared by all
members unless ``linearise="member"`` with a nonlinear :math:`h`). Dense in :math:`d`:
meant for states up to a few thousand components (Lorenz-96, KdV), not for :math:`d = 10^6`
(:mod:`scoreda.filters.regression` is the variant that scales).

Analysis inflation multiplies the analysis anomalies, as for the Kalman filters; with
nothing observed the forecast is returned unchanged, as by the Kalman filters.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import jax
import jax.numpy as jnp

from scoreda import _checks, observe
from scoreda.device import full_precision
from scoreda.filters import kalman, localisation
from scoreda.filters.reverse_sde import forward_coefficients

#: ``"flow"``: deterministic (each member encoded by the prior's flow, decoded by the
#: posterior's); ``"ancestral"``: stochastic, fresh draws of the posterior
SAMPLERS = ("flow", "ancestral")


#: the grid's span relative to the problem's scales (see :func:`pseudo_times`)
SIGMA_HI, SIGMA_LO = 10.0, 0.03


def pseudo_times(eps_a, eps_b, n_steps: int, sigma_hi, sigma_lo, dtype=jnp.float32) -> jax.Array:
    r"""The grid :math:`1 = t_0 > t_1 > \dots > t_K = 0`: after :math:`t_0`, uniform in
    :math:`\log\sigma_t` (:math:`\sigma_t = \beta_t/\alpha_t`, the noise-to-signal ratio)
    from ``sigma_hi`` down to ``sigma_lo`` (both clipped to the schedule's range), then 0.

    A component changes most where :math:`\sigma_t^2` crosses its posterior variance, so
    the grid spans the problem's scales (the analysis takes ``sigma_hi`` = 3 x the largest
    prior standard deviation, ``sigma_lo`` = 0.1 x the smaller of the smallest prior standard
    deviation and ``obs_std``): above them :math:`E[x_0 \mid z_t]` hardly moves and one step
    is exact; below them nothing is left to resolve. Shape ``(K + 1,)``.
    """
    eps_a = jnp.asarray(eps_a, dtype)
    eps_b = jnp.asarray(eps_b, dtype)

    def log_sigma(t):
        alpha, beta2 = forward_coefficients(t, eps_a, eps_b)
        return 0.5 * jnp.log(beta2) - jnp.log(alpha)

    top, bottom = log_sigma(jnp.asarray(1.0, dtype)), log_sigma(jnp.asarray(0.0, dtype))
    hi = jnp.clip(jnp.log(jnp.asarray(sigma_hi, dtype)), bottom, top)
    lo = jnp.clip(jnp.log(jnp.asarray(sigma_lo, dtype)), bottom, hi)
    targets = hi + (lo - hi) * jnp.arange(n_steps - 1, dtype=dtype) / max(n_steps - 2, 1)

    def invert(target):  # log_sigma increases with t: bisection
        def halve(_, bounds):
            a, b = bounds
            below = log_sigma(0.5 * (a + b)) < target
            return jnp.where(below, 0.5 * (a + b), a), jnp.where(below, b, 0.5 * (a + b))
        a, b = jax.lax.fori_loop(0, 40, halve, (jnp.asarray(0.0, dtype), jnp.asarray(1.0, dtype)))
        return 0.5 * (a + b)

    inner = jax.vmap(invert)(targets) if n_steps > 1 else jnp.zeros(0, dtype)
    return jnp.concatenate([jnp.ones(1, dtype), inner, jnp.zeros(1, dtype)])


def _jacobian(obs, h):
    """``x_hat (N, d) -> J``: ``(1, d)`` diagonal for the identity (shared by all members),
    ``(N, d)`` diagonal for another named operator (its slope,
    :data:`scoreda.observe.ELEMENTWISE`), ``(N, d, d)`` for a callable (``jax.jacfwd``)."""
    if obs == "identity":
        return lambda xh: jnp.ones((1, xh.shape[1]), xh.dtype)
    if observe.is_named(obs):  # obs is "callable" for a callable h
        return observe.ELEMENTWISE[obs].slope
    return jax.vmap(jax.jacfwd(h))


def _innovation_solve(cov, jac, rvar, rhs):
    r""":math:`C J^\top S^{-1}\,\mathrm{rhs}` with :math:`S = J C J^\top + \mathrm{diag}(r)`.

    ``cov (d, d)``; ``jac``: diagonal ``(n, d)`` or full ``(n, d, d)`` with ``n`` = 1 (one
    Jacobian shared by all members: one Cholesky factor) or ``N``; ``rhs (N, d)``.
    """
    diagonal = jac.ndim == 2
    if diagonal:
        s = cov[None] * jac[:, :, None] * jac[:, None, :]
    else:
        s = jnp.einsum("nij,jk,nlk->nil", jac, cov, jac)
    chol = jnp.linalg.cholesky(s + jnp.diag(rvar)[None])  # (n, d, d)
    solve = lambda c, b: jax.scipy.linalg.cho_solve((c, True), b)
    if chol.shape[0] == 1:
        sol = jax.vmap(solve, in_axes=(None, 0))(chol[0], rhs)
    else:
        sol = jax.vmap(solve)(chol, rhs)
    if diagonal:
        return (sol * jac) @ cov
    return jnp.einsum("nj,nji,ik->nk", sol, jnp.broadcast_to(jac, (rhs.shape[0],) + jac.shape[1:]), cov)


@partial(jax.jit, static_argnames=("obs", "h", "n_steps", "sampler", "linearise"))
def _analysis(key, x, y, mask, obs_std, inflation, radius, eps_a, eps_b, distances, *, obs, h,
              n_steps, sampler, linearise):
    n_members, d = x.shape
    dtype = x.dtype
    mean = x.mean(axis=0)
    anom = x - mean
    taper = localisation.gaspari_cohn(distances / (localisation.GC_RADIUS_SCALE * radius))
    cov_prior = taper * (anom.T @ anom) / (n_members - 1)
    lam, vecs = jnp.linalg.eigh(0.5 * (cov_prior + cov_prior.T))
    lam = jnp.maximum(lam, 0.0)
    lam_floor = 1e-6 * jnp.max(lam) + 1e-30  # the flow's encoder divides by lam + eps_b

    prior_std = jnp.sqrt(jnp.diagonal(cov_prior))
    sigma_hi = SIGMA_HI * jnp.sqrt(jnp.max(lam))
    sigma_lo = SIGMA_LO * jnp.minimum(jnp.min(prior_std), jnp.asarray(obs_std, dtype))
    t = pseudo_times(eps_a, eps_b, n_steps, sigma_hi, sigma_lo, dtype)
    alpha, beta2 = forward_coefficients(t, eps_a, eps_b)
    maskf = mask.astype(dtype)
    obs_var = jnp.asarray(obs_std, dtype) ** 2
    rvar = jnp.where(mask, obs_var, 1.0)  # unobserved rows: J = 0, innovation 0, S = 1
    jacobian = _jacobian(obs, h)
    keys = jax.random.split(key, n_steps + 1)

    def to_state(coords):  # eigen-coordinates (N, d) -> state (N, d)
        return coords @ vecs.T

    def denoise(z, k, key_k, draw):
        """``x0 | z_t, y`` at ``t = t_k``: a pathwise draw (``draw``) or its mean."""
        a_t, b_t = alpha[k], beta2[k]
        denom = a_t**2 * lam + b_t
        coords = (z - a_t * mean) @ vecs
        x_hat = mean + to_state(coords * (a_t * lam / denom))  # E[x0 | z_t]
        cvar = lam * b_t / denom  # eigenvalues of C_t = Cov[x0 | z_t]
        cov = (vecs * cvar) @ vecs.T
        jac = jacobian(x_hat.mean(axis=0, keepdims=True) if linearise == "mean" else x_hat)
        k1, k2 = jax.random.split(key_k)
        x_tilde = x_hat
        residual = y - jax.vmap(h)(x_hat)
        if draw:
            x_tilde = x_hat + to_state(jnp.sqrt(cvar) * jax.random.normal(k1, x.shape, dtype))
            residual = residual - jnp.sqrt(obs_var) * jax.random.normal(k2, x.shape, dtype)
        if jac.ndim == 2:
            jac = jac * maskf
            residual = residual - jac * (x_tilde - x_hat)
        else:
            jac = jac * maskf[None, :, None]
            residual = residual - jnp.einsum("nij,nj->ni", jnp.broadcast_to(jac, (n_members, d, d)),
                                              x_tilde - x_hat)
        return x_tilde + _innovation_solve(cov, jac, rvar, maskf * residual)

    if sampler == "flow":
        # encode each member with the prior's probability flow, exact for a Gaussian prior:
        # eigen-coordinate w_t = sqrt(Sigma_t / Sigma_0) w_0, Sigma_t = alpha_t^2 lam + beta_t^2
        scale = jnp.sqrt((alpha[0] ** 2 * lam + beta2[0]) / (lam + beta2[-1] + lam_floor))
        z0 = alpha[0] * mean + to_state(((x - mean) @ vecs) * scale)

        def body(z, k):
            # Heun step of the posterior's probability flow in (u, sigma) = (z / alpha,
            # beta / alpha): du/dsigma = (u - E[x0 | z, y]) / sigma (Karras et al. 2022)
            sig_t, sig_s = jnp.sqrt(beta2[k]) / alpha[k], jnp.sqrt(beta2[k + 1]) / alpha[k + 1]
            u = z / alpha[k]
            slope = (u - denoise(z, k, keys[k], draw=False)) / sig_t
            u_euler = u + (sig_s - sig_t) * slope  # the DDIM step
            sig_s_safe = jnp.where(sig_s > 0, sig_s, 1.0)
            slope_s = (u_euler - denoise(alpha[k + 1] * u_euler, k + 1, keys[k], draw=False)) / sig_s_safe
            u_heun = u + (sig_s - sig_t) * 0.5 * (slope + slope_s)
            # the first step jumps from sigma_1 to sigma_hi, where E[x0 | z] has hardly moved:
            # DDIM is exact there and Heun's end-point slope would be amplified by the jump
            use_heun = (sig_s > 0) & (k > 0)
            return alpha[k + 1] * jnp.where(use_heun, u_heun, u_euler), None
    else:
        z0 = alpha[0] * mean + to_state(
            jnp.sqrt(alpha[0] ** 2 * lam + beta2[0]) * jax.random.normal(keys[-1], x.shape, dtype))

        def body(z, k):  # ancestral step: the exact law of z_s | z_t, y
            a_t, a_s, b_t, b_s = alpha[k], alpha[k + 1], beta2[k], beta2[k + 1]
            x0 = denoise(z, k, keys[k], draw=True)
            ratio = a_t / a_s
            v = jnp.maximum(b_t - ratio**2 * b_s, 0.0)
            z_s = (v * a_s / b_t) * x0 + (ratio * b_s / b_t) * z
            noise = jax.random.normal(jax.random.fold_in(keys[k], 7), x.shape, dtype)
            return z_s + jnp.sqrt(b_s * v / b_t) * noise, None

    z, _ = jax.lax.scan(body, z0, jnp.arange(n_steps))
    zm = z.mean(axis=0)
    return zm + inflation * (z - zm)


@full_precision
def analysis(key, ensemble, y, obs_std, *, obs: str | Callable = "identity", mask=None,
             inflation=1.0, radius=4.0, n_steps: int = 20, eps_a=1e-4, eps_b=0.0,
             distances=None, sampler: str = "flow",
             linearise: str = "mean") -> jax.Array:
    """EnSF-G analysis (see the module docstring): ``(N, d)`` forecast in, ``(N, d)`` analysis out.

    Args:
      key: PRNG key.
      ensemble: forecast ensemble, members first, ``(N, d)``, N >= 2.
      y: observation ``(d,)`` (entries where ``mask`` is False are ignored, NaN included).
      obs_std: observation noise standard deviation > 0.
      obs: ``"identity"``, ``"arctan"`` or a differentiable callable ``(d,) -> (d,)``.
      mask: observed components, bool ``(d,)``; None observes all.
      inflation: multiplicative inflation of the analysis anomalies (>= 1 in practice).
      radius: localisation radius of the prior covariance in DAPPER's convention (Gaspari-Cohn
        half-width ``1.82 * radius``); ``inf`` uses the raw ensemble covariance.
      n_steps: ancestral pseudo-time steps K (exact for any K when ``h`` is linear).
      eps_a: :math:`\\alpha_1`, the signal kept at t = 1, in (0, 1].
      eps_b: :math:`\\beta_0^2`, the noise variance left at t = 0 (0: an exact posterior draw;
        > 0 acts as additive inflation), in [0, 1).
      distances: ``(d, d)`` distances between components; default the periodic index distance.
      sampler: ``"flow"`` (deterministic) or ``"ancestral"`` (stochastic); see the module docstring.
      linearise: where a nonlinear ``h`` is linearised: ``"mean"`` or ``"member"``.
    """
    ensemble, y, h, precision = kalman.prepare_inputs(ensemble, y, obs_std, obs, mask)  # shapes, y
    d = ensemble.shape[1]
    mask = precision > 0
    check_knobs(inflation=inflation, radius=radius, n_steps=n_steps, eps_a=eps_a, eps_b=eps_b,
                sampler=sampler, linearise=linearise, stacklevel=3)
    distances = localisation.component_distances(d, distances)
    dtype = ensemble.dtype
    out = _analysis(key, ensemble, y, mask, obs_std, jnp.asarray(inflation, dtype),
                    jnp.asarray(radius, dtype), jnp.asarray(eps_a, dtype),
                    jnp.asarray(eps_b, dtype), jnp.asarray(distances, dtype),
                    obs=obs if isinstance(obs, str) else "callable", h=h, n_steps=int(n_steps),
                    sampler=sampler, linearise=linearise)
    return kalman.unless_unobserved(out, ensemble, precision)


def check_knobs(*, inflation=1.0, radius=4.0, n_steps=20, eps_a=1e-4, eps_b=0.0,
                sampler="flow", linearise="mean", stacklevel: int = 4) -> None:
    """Raise ``ValueError`` naming the first knob of :func:`analysis` outside its range."""
    _checks.inflation(inflation, stacklevel=stacklevel)
    _checks.positive("radius", radius, allow_inf=True)
    _checks.integer("n_steps", n_steps, 1)
    if not isinstance(linearise, str) or linearise not in ("member", "mean"):
        raise ValueError(f"linearise must be 'member' or 'mean', got {linearise!r}")
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    _checks.ensf_noise_scales(eps_a, eps_b)
