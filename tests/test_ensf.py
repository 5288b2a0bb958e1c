"""EnSF against exact references: scores equal the gradients of the log densities they stand
for, the reverse SDE reproduces a known distribution, and an analysis beats its forecast."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import logsumexp
from jax.scipy.stats import norm

from scoreda.filters import ensf, reverse_sde
from scoreda.systems import lorenz96 as l96


@pytest.fixture
def ensemble64(x64):
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (7, 5), jnp.float64) * 2.0
    z = jax.random.normal(k2, (7, 5), jnp.float64) * 2.0
    return x, z


@pytest.mark.parametrize("t, v", [(0.9, 0.0), (0.3, 0.1), (0.02, 0.0946)])
def test_paired_prior_score_is_the_gradient_of_its_gaussian(ensemble64, t, v):
    x, z = ensemble64
    sched = reverse_sde.schedule(0.5, 0.025, 1000, jnp.float64)
    alpha = 1 - 0.5 * t
    beta2 = 0.025 + 0.975 * t
    logp = lambda zj, xj: jnp.sum(norm.logpdf(zj, alpha * xj, jnp.sqrt(alpha**2 * v + beta2)))
    expected = jax.vmap(jax.grad(logp))(z, x)
    got = reverse_sde.paired_prior_score(z, x, alpha, beta2, v)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert sched.t.dtype == jnp.float64


@pytest.mark.parametrize("t, v", [(0.9, 0.0), (0.3, 0.1), (0.05, 0.5)])
def test_mixture_prior_score_is_the_gradient_of_the_gaussian_mixture(ensemble64, t, v):
    x, z = ensemble64
    alpha, beta2 = 1 - 0.4 * t, 0.05 + 0.95 * t
    sd = jnp.sqrt(alpha**2 * v + beta2)

    def log_mixture(zj):
        comp = jnp.sum(norm.logpdf(zj[None, :], alpha * x, sd), axis=-1)
        return logsumexp(comp) - jnp.log(x.shape[0])

    expected = jax.vmap(jax.grad(log_mixture))(z)
    got = reverse_sde.mixture_prior_score(z, x, alpha, beta2, v)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("obs", ["identity", "arctan", "callable"])
def test_likelihood_score_is_the_gradient_of_the_log_likelihood(ensemble64, obs):
    _, z = ensemble64
    y = jnp.linspace(-1, 1, 5)
    mask = jnp.array([True, False, True, True, False])
    sigma = 0.05
    h = {"identity": lambda s: s, "arctan": jnp.arctan, "callable": lambda s: jnp.sin(s) + 0.1 * s**2}[obs]
    loglik = lambda zj: -jnp.sum(jnp.where(mask, (h(zj) - y) ** 2, 0.0)) / (2 * sigma**2)
    expected = jax.vmap(jax.grad(loglik))(z)
    op = h if obs == "callable" else obs
    got = reverse_sde.likelihood_score(z, y, sigma, op, mask, fast=False)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-8)
    assert np.all(np.asarray(got)[:, ~np.asarray(mask)] == 0)


def test_schedule_coefficients_are_the_derivatives():
    # f = d log(alpha)/dt and g^2 = d(beta^2)/dt - 2 f beta^2, checked by finite differences.
    s = reverse_sde.schedule(0.3, 0.05, 10)
    t = np.asarray(s.t, np.float64)
    alpha = lambda t: 1 - 0.7 * t
    beta2 = lambda t: 0.05 + 0.95 * t
    h = 1e-6
    f = (np.log(alpha(t + h)) - np.log(alpha(t - h))) / (2 * h)
    g2 = (beta2(t + h) - beta2(t - h)) / (2 * h) - 2 * f * beta2(t)
    np.testing.assert_allclose(s.drift, f, rtol=1e-5)
    np.testing.assert_allclose(s.diffusion2, g2, rtol=1e-5)
    assert float(s.t[0]) == 1.0 and float(s.t[-1]) == pytest.approx(0.1)


#: an observation that carries no information: noise 10^4 against spreads of order 1 (with
#: nothing observed at all the analysis returns the forecast unchanged, see below)
VAGUE = 1e4


def no_observation(prior, key, ens, v, eps_b, n_steps=1000):
    d = ens.shape[1]
    return ensf.analysis(key, ens, jnp.zeros(d), VAGUE, prior=prior,
                         kernel_var=v, eps_a=0.3, eps_b=eps_b, n_steps=n_steps, start="marginal")


def _slope(deviation, response):
    """Least-squares slope of ``response`` on ``deviation`` (both flattened, float64)."""
    a, b = (np.asarray(v, np.float64).ravel() for v in (deviation, response))
    return float(a @ b / (a @ a))


@pytest.mark.slow
def test_paired_without_observations_samples_each_members_kernel():
    # With no observation and the exact start, member j must end as N(x_j, v + eps_b):
    # the forward process at t = 0 of the kernel N(x_j, v). 2000 x 10 samples: the mean of
    # z - x has standard error 0.005, the variance a relative one of 1 %.
    ens = l96.initial_states(jax.random.key(1), 10, (2000,))
    v, eps_b = 0.2, 0.05
    z = no_observation("paired", jax.random.key(2), ens, v, eps_b)
    r = np.asarray(z - ens, np.float64).ravel()
    se = np.sqrt((v + eps_b) / r.size)
    assert abs(r.mean()) < 5 * se
    # Euler-Maruyama with K = 1000 leaves a bias of order 1/K; allow 4 %.
    assert abs(r.var() / (v + eps_b) - 1) < 0.04, r.var()


@pytest.mark.slow
def test_mixture_without_observations_matches_the_gaussian_prior():
    # Members drawn from a Gaussian prior N(mu, diag(s^2)); the mixture estimator must return
    # a sample of the kernel density: mean mu, variance s^2 + v + eps_b, within Monte Carlo
    # error of 1000 members (checked on each of 3 components).
    mu = jnp.array([1.0, -2.0, 3.0])
    s = jnp.array([1.0, 2.0, 0.5])
    ens = mu + s * jax.random.normal(jax.random.key(3), (1000, 3))
    v, eps_b = 0.1, 0.05
    z = np.asarray(no_observation("mixture", jax.random.key(4), ens, v, eps_b, n_steps=500), np.float64)
    ens = np.asarray(ens, np.float64)
    target_var = ens.var(0) + v + eps_b
    np.testing.assert_array_less(np.abs(z.mean(0) - ens.mean(0)), 5 * np.sqrt(target_var / 1000))
    np.testing.assert_allclose(z.var(0) / target_var, 1.0, atol=0.15)


def lorenz_case(n_members=40, d=40, seed=0):
    key = jax.random.key(seed)
    k1, k2, k3, k4 = jax.random.split(key, 4)
    truth = l96.trajectory(l96.initial_states(k1, d), 500, 0.05, save_every=500)[-1]
    # a forecast whose mean is off by about one unit, with spread 1
    forecast = truth + jax.random.normal(k2, (d,)) + jax.random.normal(k3, (n_members, d))
    y = jnp.arctan(truth) + 0.01 * jax.random.normal(k4, (d,))
    return truth, forecast, y


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["paired", "mixture"])
def test_analysis_beats_the_forecast_on_lorenz96_with_arctan_observations(prior):
    # Measured: forecast RMSE 1.197; analysis 0.453 (paired) and 0.435 (mixture), ratios
    # 0.38 and 0.36 (0.40 and 0.36 with key 6). Upper bound: about 1.5 times that.
    # Lower bound: the exact posterior of the linearised problem (prior variance 1, the
    # forecast spread; observation error sigma (1 + x^2) in state units) has an RMS error of
    # 0.24 here; an analysis error below half of it would be too good to be true.
    truth, forecast, y = lorenz_case()
    rmse = lambda e: float(jnp.sqrt(jnp.mean((e.mean(0) - truth) ** 2)))
    analysis = ensf.analysis(jax.random.key(5), forecast, y, 0.01, obs="arctan", prior=prior,
                             kernel_var=0.5 if prior == "mixture" else 0.0, n_steps=500)
    assert analysis.shape == forecast.shape
    obs_var = (0.01 * (1.0 + np.asarray(truth, np.float64) ** 2)) ** 2
    bayes = float(np.sqrt(np.mean(1.0 / (1.0 + 1.0 / obs_var))))
    assert 0.5 * bayes < rmse(analysis) < 0.55 * rmse(forecast), (rmse(forecast), rmse(analysis), bayes)


def test_partial_observation_leaves_paired_unobserved_components_to_the_prior():
    truth, forecast, y = lorenz_case(seed=1)
    mask = jnp.arange(40) % 4 == 0
    a = ensf.analysis(jax.random.key(6), forecast, y, 0.01, obs="arctan", mask=mask, n_steps=300,
                      eps_a=1.0, eps_b=0.0, start="marginal")
    # eps_a = 1, eps_b = 0, v = 0: the prior score is -(z - x_j) / t, so the last Euler step
    # (t = 1/K) lands exactly on x_j and then adds its noise sqrt(1/K) xi. Unobserved
    # components must therefore end at the forecast plus N(0, 1/K) noise, K = 300.
    r = np.asarray(a[:, ~mask] - forecast[:, ~mask], np.float64).ravel()
    assert abs(r.mean()) < 5 * np.sqrt(1 / 300 / r.size)
    assert abs(r.std() / np.sqrt(1 / 300) - 1) < 0.1
    assert float(jnp.abs(a[:, mask] - forecast[:, mask]).mean()) > 0.1


@pytest.mark.slow
def test_blocked_fast_path_equals_the_plain_loop():
    truth, forecast, y = lorenz_case(n_members=8, d=37)
    kw = dict(obs="arctan", n_steps=50, eps_a=0.5, eps_b=0.025, clip=1000.0)
    nums = reverse_sde.Numbers(*(jnp.float32(v)
                                 for v in (0.01, 0.0, 0.5, 0.025, 1000.0, 1.0)))
    center, mask = reverse_sde.ensemble_mean(forecast), jnp.ones(37, bool)
    blocked = reverse_sde.paired_blocked(jax.random.key(7), forecast, center, y, mask, nums,
                                         obs="arctan", n_steps=50, start="standard",
                                         block_size=5)
    plain = ensf.analysis(jax.random.key(7), forecast, y, 0.01, **kw, block_size=37)
    general = reverse_sde.general(jax.random.key(7), forecast, center, y, mask, nums,
                                  obs="arctan", prior="paired", n_steps=50, start="standard",
                                  noise="hash")
    np.testing.assert_allclose(blocked, plain, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(blocked, general, rtol=1e-5, atol=1e-5)


def _max_intermediate_size(jaxpr) -> int:
    biggest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            biggest = max(biggest, int(np.prod(getattr(var.aval, "shape", ()))))
        for param in eqn.params.values():
            subs = param if isinstance(param, (list, tuple)) else [param]
            for sub in subs:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    biggest = max(biggest, _max_intermediate_size(getattr(inner, "jaxpr", inner)))
    return biggest


def test_mixture_never_builds_an_n_by_n_by_d_array():
    n, d = 16, 64  # N * N * d = 16384 > N * d = 1024 and N * N = 256
    x = jnp.ones((n, d))
    fn = lambda x: ensf.analysis(jax.random.key(0), x, jnp.zeros(d), 0.1, prior="mixture", n_steps=3)
    biggest = _max_intermediate_size(jax.make_jaxpr(fn)(x).jaxpr)
    assert biggest <= max(n * d, n * n), biggest


@pytest.mark.slow
def test_callable_observation_matches_the_named_operator(x64):
    # Same noise, same equations: the closed-form arctan score and the jax.vjp of a callable
    # agree to the accuracy of the fast arctan. sigma = 0.5 keeps the Euler steps stable
    # (with a stiff likelihood, Euler oscillates and amplifies any rounding difference).
    truth, forecast, y = lorenz_case(n_members=10, d=12)
    forecast, y = forecast.astype(jnp.float64), y.astype(jnp.float64)
    kw = dict(n_steps=100, noise="threefry")
    named = ensf.analysis(jax.random.key(8), forecast, y, 0.5, obs="arctan", **kw)
    called = ensf.analysis(jax.random.key(8), forecast, y, 0.5, obs=jnp.arctan, **kw)
    np.testing.assert_allclose(named, called, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(ensemble=jnp.ones(5)), "ensemble must have shape"),
        (dict(y=jnp.ones(4)), "y must have shape"),
        (dict(mask=jnp.ones(4, bool)), "mask must have shape"),
        (dict(obs_std=0.0), "obs_std must be"),
        (dict(obs="cubic"), "obs must be one of"),
        (dict(prior="kde"), "prior must be one of"),
        (dict(eps_a=0.0), r"eps_a must lie in \(0, 1\]"),
        (dict(eps_b=1.0), r"eps_b must lie in \[0, 1\)"),
        (dict(n_steps=0), "n_steps must be an integer >= 1"),
        (dict(kernel_var=-1.0), "kernel_var must be"),
        (dict(ensemble=jnp.ones((3, 5)).at[0, 0].set(jnp.nan)), "ensemble must be finite"),
    ],
)
def test_bad_input_is_refused(kwargs, match):
    args = dict(ensemble=jnp.ones((3, 5)), y=jnp.zeros(5), obs_std=0.1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ensf.analysis(jax.random.key(0), args.pop("ensemble"), args.pop("y"), args.pop("obs_std"), **args)


@pytest.mark.slow
def test_reverse_path_ends_at_the_analysis():
    truth, forecast, y = lorenz_case(n_members=6, d=9)
    kw = dict(obs="arctan", prior="mixture", kernel_var=0.3, n_steps=40)
    path = ensf.reverse_path(jax.random.key(9), forecast, y, 0.1, **kw)
    final = ensf.analysis(jax.random.key(9), forecast, y, 0.1, **kw)
    assert path.shape == (41, 6, 9)
    np.testing.assert_allclose(path[-1], final, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="unknown arguments"):
        ensf.reverse_path(jax.random.key(9), forecast, y, 0.1, steps=3)


@pytest.mark.slow
def test_standard_start_shrinks_towards_the_mean_and_the_marginal_start_does_not():
    # The authors' L96 setting: eps_a = 1, eps_b = 0, v = 0.0946, an uninformative
    # observation. The exact answer is z_j ~ N(x_j, v). Starting the reverse SDE from
    # N(0, I) in the standardised coordinates (N(m, I), m the ensemble mean) instead of the
    # forward process's terminal marginal N(x_j, 1 + v) pulls every member towards m by
    # v / (1 + v) = 0.086 of its deviation (the theory page); the marginal start is unbiased
    # to Monte Carlo error (10,000 samples: slope standard error about 0.003).
    x = 8.0 + jax.random.normal(jax.random.key(0), (500, 20))
    kw = dict(eps_a=1.0, eps_b=0.0, kernel_var=0.0946, n_steps=500)
    biased = np.asarray(ensf.analysis(jax.random.key(1), x, jnp.zeros(20), VAGUE, start="standard", **kw) - x)
    exact = np.asarray(ensf.analysis(jax.random.key(1), x, jnp.zeros(20), VAGUE, start="marginal", **kw) - x)
    deviation = np.asarray(x - x.mean(0))
    assert _slope(deviation, biased) == pytest.approx(-0.0946 / 1.0946, abs=0.015)
    assert abs(_slope(deviation, exact)) < 0.015
    se = np.sqrt(0.0946 / exact.size)
    assert abs(exact.mean()) < 5 * se and abs(biased.mean()) < 5 * se  # centred: no shift
    assert abs(exact.std() / np.sqrt(0.0946) - 1) < 0.03


@pytest.mark.slow
def test_exponential_integrator_reaches_the_many_step_answer_with_few_steps():
    # arctan observations with sigma = 0.01 make the likelihood stiff: Euler-Maruyama needs
    # thousands of steps (with 50, clipped, its error is several times the forecast error),
    # while the exponential step with 50 steps lands within 10 % of the error and spread of
    # unclipped Euler with 20,000 steps.
    from scoreda.experiments import twin

    cfg = twin.TwinConfig(d=40, n_members=50, obs="arctan", obs_std=0.01)

    def stats(**params):
        errs, spreads = [], []
        for i in range(3):
            truth, forecast, y = twin.forecast_case(jax.random.key(100 + i), cfg)
            a = ensf.analysis(jax.random.key(200 + i), forecast, y, 0.01, obs="arctan", **params)
            errs.append(float(jnp.sqrt(jnp.mean((a.mean(0) - truth) ** 2))))
            spreads.append(float(jnp.sqrt(jnp.mean(a.var(0, ddof=1)))))
        return np.mean(errs), np.mean(spreads)

    # Euler without a clip is stable once dt g^2 h'^2 / sigma^2 < 2: 20,000 steps here
    reference = stats(n_steps=20_000, integrator="euler", clip=np.inf)
    fast = stats(n_steps=50, integrator="exponential")
    with pytest.warns(ensf.ScoreClipped):  # the reference clip binds, and says so
        euler_50 = stats(n_steps=50, integrator="euler")
    np.testing.assert_allclose(fast, reference, rtol=0.1)
    assert euler_50[0] > 3 * reference[0]


@pytest.mark.parametrize("eps_a, eps_b, v", [(0.5, 0.1, 0.0), (1.0, 0.0, 0.0946), (0.6, 0.05, 0.2)])
def test_standard_start_bias_has_the_closed_form_of_the_theory_page(eps_a, eps_b, v):
    # With an uninformative observation the paired reverse SDE is linear; its mean error from
    # the start N(0, I) (standardised: centred on the ensemble mean m) is multiplied from
    # t = 1 to 0 by exp(-int (f + g^2/sigma_t^2) dt) = eps_a (v + eps_b) / (1 + eps_a^2 v), so
    # E z_0 - x = -eps_a^2 (v + eps_b) (x - m) / (1 + eps_a^2 v).
    x = 8.0 + jax.random.normal(jax.random.key(0), (500, 20))
    kw = dict(eps_a=eps_a, eps_b=eps_b, kernel_var=v, n_steps=2000, integrator="euler",
              start="standard")
    z = np.asarray(ensf.analysis(jax.random.key(1), x, jnp.zeros(20), VAGUE, **kw), np.float64)
    predicted = -eps_a**2 * (v + eps_b) / (1 + eps_a**2 * v)
    # Monte Carlo: 10,000 samples of variance about v + eps_b against deviations of variance
    # 1 -> slope standard error < 0.005; Euler with K = 2000 adds a bias of order 1/K
    deviation = np.asarray(x - x.mean(0), np.float64)
    assert _slope(deviation, z - np.asarray(x, np.float64)) == pytest.approx(predicted, abs=0.015)


@pytest.mark.slow
def test_mixture_analysis_of_a_gaussian_ensemble_against_the_exact_kalman_posterior():
    # A linear-Gaussian case with a closed-form posterior: 2000 members drawn from N(0, 1),
    # the component observed directly, y = 0.5, sigma = 0.2. With eps_a = 1, eps_b = 0 and
    # v = 0 the diffused kernel density of many members is the diffused Gaussian prior, so
    # the prior score is nearly exact; the exact answer is the Kalman update of the members'
    # own mean and variance: mean 0.480, variance 0.0385.
    #
    # EnSF is exact in its mean here but not in its spread. Measured (K = 200 steps): mean
    # 0.485 (1.6 standard errors from the exact 0.480; 0.474-0.486 over four prior draws,
    # all within 1.8 standard errors), variance 0.0227 = 0.59 of the exact (0.56-0.61). The
    # under-dispersion is the heuristic's: for t > 0 the score it follows, prior score +
    # (1 - t) grad log p(y | z), stays about as narrow as the posterior, while the score of
    # the diffused posterior widens by beta_t^2; a reverse SDE dz = g^2 s dtau + g dW driven
    # by a score -(z - m)/c that does not widen settles at variance c/2, not c. In the
    # N -> infinity limit EnSF's reverse SDE is linear and its Euler recursion gives exactly
    # mean 0.4800 and variance 0.546 of the exact (0.515 with K = 1000); 2000 members add a
    # few per cent of kernel-density noise.
    n, y, sigma = 2000, 0.5, 0.2
    x = jax.random.normal(jax.random.key(0), (n, 1))
    z = ensf.analysis(jax.random.key(10), x, jnp.array([y]), sigma, prior="mixture",
                      eps_a=1.0, eps_b=0.0, kernel_var=0.0, n_steps=200, start="marginal")
    x, z = np.asarray(x, np.float64)[:, 0], np.asarray(z, np.float64)[:, 0]
    prior_mean, prior_var = x.mean(), x.var()  # the kernel density's mean and variance
    gain = prior_var / (prior_var + sigma**2)
    exact_mean, exact_var = prior_mean + gain * (y - prior_mean), (1 - gain) * prior_var
    standard_error = np.sqrt(z.var() / n)
    assert abs(z.mean() - exact_mean) < 4 * standard_error, (z.mean(), exact_mean, standard_error)
    # the documented bias: about half the exact variance (a fix, or a new bias, fails here)
    assert 0.50 < z.var() / exact_var < 0.68, (z.var(), exact_var)


def test_mixture_analysis_moves_each_mode_but_keeps_the_prior_mode_weights():
    # A two-mode prior with a closed-form posterior: 1000 members from N(-3, 0.5^2) and 1000
    # from N(3, 0.5^2), observed directly with y = 0.5, sigma = 1. Exact posterior: the
    # mode at +3 gets weight 1 / (1 + exp(-0.5 (2.5^2 - 3.5^2) / 1.25)) = 0.917 (0.5 before),
    # and each mode moves to its Kalman mean, 3 + 0.2 (0.5 - 3) = 2.5 and -3 + 0.2 (0.5 + 3)
    # = -2.3. EnSF moves the modes as the posterior does (measured: 2.475 and -2.277) but
    # keeps the prior weights: 0.502 of the members end in the + mode (0.52 with
    # start="standard", 0.59 even with eps_a = 0.01). With eps_a = 1 the two modes stay
    # apart over the whole pseudo-time and the likelihood, damped by 1 - t, is weak early on,
    # when a member's mode is decided, so almost no member changes mode. The test pins the
    # bias: a change in how EnSF weighs modes fails it.
    n, y, sigma, s = 2000, 0.5, 1.0, 0.5
    sign = np.where(np.arange(n) < n // 2, -1.0, 1.0)
    x = 3.0 * sign + s * np.asarray(jax.random.normal(jax.random.key(0), (n,)))
    z = ensf.analysis(jax.random.key(1), jnp.asarray(x[:, None], jnp.float32), jnp.array([y]), sigma,
                      prior="mixture", eps_a=1.0, eps_b=0.0, n_steps=200, start="marginal")
    z = np.asarray(z, np.float64)[:, 0]
    log_w = lambda m: -0.5 * (y - m) ** 2 / (s**2 + sigma**2)
    exact_weight = 1.0 / (1.0 + np.exp(log_w(-3.0) - log_w(3.0)))
    assert exact_weight == pytest.approx(0.917, abs=1e-3)
    up = z > 0
    binomial_se = np.sqrt(0.25 / n)
    assert abs(up.mean() - 0.5) < 4 * binomial_se, up.mean()  # the prior weight, not 0.917
    gain = s**2 / (s**2 + sigma**2)
    for members, mode in ((z[up], 3.0), (z[~up], -3.0)):
        exact_mean = mode + gain * (y - mode)
        # 1000 members of variance about 0.2: standard error 0.014
        assert abs(members.mean() - exact_mean) < 0.06, (members.mean(), exact_mean)


def test_the_reverse_sde_loops_refuse_a_static_choice_they_do_not_have():
    """Called directly (not through ensf.analysis), a misspelled choice is refused by name,
    not run as another branch."""
    x = jnp.ones((4, 6))
    nums = reverse_sde.Numbers(*(jnp.float32(v) for v in (0.1, 0.0, 0.5, 0.025, 1e3, 1.0)))
    args = (jax.random.key(0), x, x.mean(0), jnp.zeros(6), jnp.ones(6, bool), nums)
    cases = [(reverse_sde.general, dict(obs="identity", prior="mixed", n_steps=5,
                                        start="standard", noise="hash"), "prior"),
             (reverse_sde.general, dict(obs="identity", prior="paired", n_steps=5,
                                        start="standrad", noise="hash"), "start"),
             (reverse_sde.general, dict(obs="identity", prior="paired", n_steps=5,
                                        start="standard", noise="philox"), "noise"),
             (reverse_sde.general, dict(obs="identity", prior="paired", n_steps=0,
                                        start="standard", noise="hash"), "n_steps"),
             (reverse_sde.paired_blocked, dict(obs="identity", n_steps=5, start="standard",
                                               block_size=0), "block_size"),
             (reverse_sde.paired_blocked, dict(obs="identity", n_steps=5, start="standard",
                                               block_size=3, integrator="heun"), "integrator")]
    for loop, kwargs, name in cases:
        with pytest.raises(ValueError, match=name):
            loop(*args, **kwargs)
    with pytest.raises(ValueError, match="or a callable, got 'cubic'"):
        reverse_sde.likelihood_score(x, jnp.zeros(6), 0.1, "cubic")


def test_a_new_linear_row_of_the_operator_table_runs_through_ensf(monkeypatch):
    """A linear operator added as one row (no trust length) runs through EnSF's fast path:
    h(x) = 2x is identity observation of 2x, so with y = 2 y' and sigma = 2 sigma' the
    analysis equals the identity one (to float rounding)."""
    from scoreda import observe

    table = dict(observe.ELEMENTWISE)
    table["double"] = observe.Elementwise(lambda v: 2.0 * v, lambda v: 2.0 + 0.0 * v,
                                          lambda v: 0.5 * v, float("inf"), None)
    monkeypatch.setattr(observe, "ELEMENTWISE", table)
    ens = 1.0 + jax.random.normal(jax.random.key(3), (16, 30))
    y = jnp.linspace(-1.0, 1.0, 30)
    kw = dict(n_steps=40, integrator="exponential")
    doubled = ensf.analysis(jax.random.key(4), ens, 2.0 * y, 0.2, obs="double", **kw)
    plain = ensf.analysis(jax.random.key(4), ens, y, 0.1, obs="identity", **kw)
    np.testing.assert_allclose(doubled, plain, rtol=1e-4, atol=1e-4)
