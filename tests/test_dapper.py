"""Our ETKF and IEnKF against DAPPER's on one and the same Lorenz-96 twin (DAPPER's "Sakov 2008"
set-up; for the IEnKF observed through arctan).

Both filters get our truth, our observations and our initial ensemble, so any difference is
the filters' (and float32 against float64 arithmetic), not the realisation. The benchmark
(benchmarks/bench_filters.py) runs DAPPER on its own realisation: there 0.170 against our
0.186 is the spread between realisations (measured over 1000 scored cycles, ETKF N = 40,
infl = 1.02: 0.177-0.197 over four of our twins, 0.180-0.188 over four of DAPPER's).
"""

import os
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# DAPPER lives in the benchmark environment (scripts/bench.sh runs this file there); the test
# environment leaves it out, since it would downgrade the Jupyter stack (notebook < 7)
if os.environ.get("SCOREDA_REQUIRE_DAPPER"):  # scripts/bench.sh: a broken DAPPER fails
    import dapper  # noqa: F401
else:
    pytest.importorskip("dapper", reason="DAPPER is installed by scripts/bench.sh (.venv-bench)")

import dapper.da_methods as da  # noqa: E402
import dapper.mods.Lorenz96 as l96_dapper  # noqa: E402
import dapper.mods as modelling  # noqa: E402
import dapper.mods.Lorenz96.sakov2008 as sakov  # noqa: E402

from scoreda import assimilate  # noqa: E402
from scoreda.experiments.twin import TwinConfig, make_twin  # noqa: E402
from scoreda.filters import iterative, kalman  # noqa: E402

BURN_IN, SCORED = 200, 1000


def dapper_inputs(twin, config):
    """DAPPER's ``HMM, xx, yy`` for our twin, the initial ensemble being ours.

    DAPPER (1.x) never observes t = 0: its cycle starts with a forecast, and with
    ``dko = 1`` observation ``yy[ko]`` is of ``xx[ko + 1]``. Our twin observes every step
    from step 0, so ``yy[ko]`` is our observation at step ``ko + 1``, and our cycle must
    skip the analysis at step 0.
    """
    n_steps = config.n_cycles
    xx = np.asarray(twin.truth, np.float64)
    values = np.asarray(twin.observations.values, np.float64)
    yy = np.empty(n_steps - 1, dtype=object)
    for ko in range(n_steps - 1):
        yy[ko] = values[ko + 1]
    hmm = sakov.HMM.copy()
    hmm.tseq = modelling.Chronology(dt=config.dt, dko=1, Ko=n_steps - 2, BurnIn=BURN_IN * config.dt)
    if config.obs == "arctan":  # every component through arctan, noise variance obs_std^2
        hmm = modelling.HiddenMarkovModel(sakov.Dyn, {"M": config.d, "model": np.arctan,
                                                      "noise": config.obs_std**2},
                                          hmm.tseq, sakov.X0)
    assert hmm.tseq.K == n_steps - 1 and list(hmm.tseq.kko[:2]) == [1, 2]
    assert hmm.Nx == config.d and l96_dapper.Force == config.forcing
    assert config.obs in ("identity", "arctan") and config.observed_fraction == 1.0
    np.testing.assert_allclose(hmm.Obs(0).noise.C.full, config.obs_std**2 * np.eye(config.d),
                               rtol=1e-15)
    ensemble0 = np.asarray(twin.ensemble0, np.float64)
    hmm.X0 = modelling.RV(M=config.d, func=lambda n: ensemble0[:n].copy())
    return hmm, xx, yy


def test_etkf_matches_dapper_on_the_same_truth_observations_and_initial_ensemble():
    config = TwinConfig(n_cycles=1 + BURN_IN + SCORED, burn_in=BURN_IN, n_members=40, seed=2008)
    twin = make_twin(config)
    hmm, xx, yy = dapper_inputs(twin, config)

    xp = da.EnKF("Sqrt", N=40, infl=1.02)  # symmetric square root, posterior inflation
    xp.assimilate(hmm, xx, yy, liveplots=False)
    theirs_f = np.asarray(xp.stats.err.rms.f)  # (Ko + 1,): step k = ko + 1
    theirs_a = np.asarray(xp.stats.err.rms.a)
    xp.stats.average_in_time()
    # DAPPER's own average runs over the same steps as ours below (t > BurnIn: k > 200)
    assert float(xp.avrgs.err.rms.a.val) == pytest.approx(theirs_a[BURN_IN:].mean(), rel=1e-12)

    result = assimilate.cycle(jax.random.key(0), twin.model, partial(kalman.etkf, inflation=1.02),
                              twin.truth, twin.observations, twin.ensemble0,
                              schedule=jnp.arange(config.n_cycles) > 0)
    ours_f = np.asarray(result.forecast_rmse, np.float64)[1:]
    ours_a = np.asarray(result.analysis_rmse, np.float64)[1:]

    # Step by step the two runs are the same filter: measured |difference| <= 1.3e-6 over the
    # first 200 analyses and <= 6.3e-6 over the first 500 (float32 against float64 rounding,
    # which the chaotic forecasts amplify slowly: 1.5e-4 by step 900, 1.4e-3 by step 1150).
    early = slice(0, 300)
    np.testing.assert_allclose(ours_f[early], theirs_f[early], rtol=0, atol=1e-4)
    np.testing.assert_allclose(ours_a[early], theirs_a[early], rtol=0, atol=1e-4)

    # Time mean over the 1000 scored analyses. Measured: DAPPER 0.184729, ours 0.184765
    # (relative difference 2e-4). Tolerance: the time mean moves by 0.7 % (standard
    # deviation; 0.0013 over 8 of our initial ensembles, 0.0007 over 4 of DAPPER's) when only
    # the initial ensemble changes, so two fully decorrelated runs would differ by about 1 %
    # (standard deviation); sharing the initial ensemble, these agree far better, and 1 %
    # still catches any change in the filter that matters.
    ours_mean, theirs_mean = ours_a[BURN_IN:].mean(), theirs_a[BURN_IN:].mean()
    assert abs(ours_mean / theirs_mean - 1) < 0.01, (ours_mean, theirs_mean)
    assert 0.15 < theirs_mean < 0.2, theirs_mean  # DAPPER's published score: about 0.18


def test_ienkf_matches_dapper_ienks_on_an_arctan_twin():
    # DAPPER's iEnKS("Sqrt", Lag=0) is the MLEF-form IEnKF: Gauss-Newton in the ensemble
    # subspace with full steps. Ours with damped=False and a global problem (radius=inf) is the
    # same algorithm; the twin is Sakov 2008's observed through arctan with sigma = 0.05, so the
    # Gauss-Newton iterations move the analysis (checked below against one update).
    config = TwinConfig(n_cycles=1 + BURN_IN + 300, burn_in=BURN_IN, n_members=40, seed=2012,
                        obs="arctan", obs_std=0.05)
    twin = make_twin(config)
    hmm, xx, yy = dapper_inputs(twin, config)
    xp = da.iEnKS("Sqrt", N=40, Lag=0, nIter=4, wtol=0, infl=1.02)
    xp.assimilate(hmm, xx, yy, liveplots=False)
    theirs_a = np.asarray(xp.stats.err.rms.a)

    def ours(n_iter):
        analysis = partial(iterative.ienkf, obs="arctan", radius=np.inf, n_iter=n_iter, tol=0.0,
                           damped=False, inflation=1.02)
        result = assimilate.cycle(jax.random.key(0), twin.model, analysis, twin.truth,
                                  twin.observations, twin.ensemble0,
                                  schedule=jnp.arange(config.n_cycles) > 0)
        return np.asarray(result.analysis_rmse, np.float64)[1:]

    ours_a, one_update = ours(4), ours(1)
    # step by step the same filter over the first 100 analyses: measured |difference| <= 8.2e-7
    # (float32 against float64 rounding); the tolerance is the ETKF test's
    early = slice(0, 100)
    gap = np.max(np.abs(ours_a[early] - theirs_a[early]))
    assert gap < 1e-4, gap
    # and the iterations matter here: one update is another filter (measured 0.058 apart)
    assert np.max(np.abs(one_update[early] - theirs_a[early])) > 100 * gap
    # time mean over the 300 scored analyses: measured 0.0250827 and 0.0250827
    ours_mean, theirs_mean = ours_a[BURN_IN:].mean(), theirs_a[BURN_IN:].mean()
    assert abs(ours_mean / theirs_mean - 1) < 0.01, (ours_mean, theirs_mean)
