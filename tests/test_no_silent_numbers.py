"""No silent wrong numbers: the probe of issue 23, one test (or one parametrised line) per case.

Each case was once accepted silently, answered with another computation's numbers, or
refused with an error that did not name the culprit. Every line pins what is right now: the
right number, or a refusal that names the argument.
"""

import dataclasses
import json
import math
import re
import threading
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda import _checks, _digest, assimilate, chapters, cli
from scoreda.cache import CacheWarning
from scoreda.experiments import compare, hybrid, records, twin
from scoreda.filters import ensf, gaussian_score, kalman, regression
from scoreda.systems import lorenz96 as l96

KEY = jax.random.key(0)
TINY = twin.TwinConfig(d=8, n_cycles=15, burn_in=5, n_members=8)


def _refused(match, fn, error=ValueError):
    with pytest.raises(error, match=match):
        fn()


def _noop(key, ensemble, y, obs_std, mask=None, **knobs):
    return ensemble


# ---- 1. the harness keys what it runs by identity ------------------------------------------


def test_two_lambda_wraps_are_two_methods(tmp_path, monkeypatch):
    # A no-op analysis once scored the ETKF's numbers: both wraps were "<lambda>".
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    case = twin.case(TINY)
    methods = [compare.Method("ETKF", "ETKF", grid={}, wrap=lambda fn, obs: fn),
               compare.Method("no analysis", "ETKF", grid={}, wrap=lambda fn, obs: _noop)]
    result = compare.compare(case, methods, tuning_seeds=[], evaluation_seeds=[0, 1, 2],
                             progress=False)
    free = compare.evaluate(case, compare.Method("free run", "ETKF", grid={},
                                                 wrap=lambda fn, obs: _noop), {}, [0, 1, 2])
    np.testing.assert_allclose(result.results["no analysis"].rmse, free.rmse, rtol=1e-6)
    assert np.mean(result.results["no analysis"].rmse) > 2 * np.mean(result.results["ETKF"].rmse)
    assert result.difference("no analysis").estimate > 0.5


def test_two_cases_with_one_label_and_different_operators_do_not_share_numbers(tmp_path, monkeypatch):
    # h(x) = x and h(x) = 3x + 5 on the same data once gave identical RMSE, and the cache kept it.
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    base = twin.case(TINY)
    method = [compare.Method("ETKF", "ETKF", grid={})]
    rmse = {}
    for name, h in (("x", lambda x: x), ("3x + 5", lambda x: 3 * x + 5)):
        case = dataclasses.replace(base, obs=h)  # same cache_key string, another operator
        rmse[name] = compare.compare(case, method, tuning_seeds=[], evaluation_seeds=[0, 1],
                                     progress=False).results["ETKF"].rmse
        again = compare.compare(case, method, tuning_seeds=[], evaluation_seeds=[0, 1],
                                progress=False).results["ETKF"].rmse  # from the cache: its own
        np.testing.assert_array_equal(again, rmse[name])
    assert not np.allclose(rmse["x"], rmse["3x + 5"], rtol=1e-3)


def test_a_method_redefined_in_a_notebook_is_a_new_cache_entry():
    def wrap(fn, obs):
        return fn
    first = compare.Method("m", "ETKF", grid={}, wrap=wrap).identity()

    def wrap(fn, obs):  # noqa: F811 (the redefinition is the point)
        return _noop
    assert compare.Method("m", "ETKF", grid={}, wrap=wrap).identity() != first


def test_an_unkeyable_callable_is_refused_for_caching_and_runs_uncached(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    opaque = threading.Lock()  # state that cannot be read
    case = dataclasses.replace(twin.case(TINY), obs=lambda x, _o=opaque: x)
    method = [compare.Method("ETKF", "ETKF", grid={})]
    _refused("cannot cache this comparison.*lock.*cache=False", lambda: compare.compare(
        case, method, tuning_seeds=[], evaluation_seeds=[0, 1], progress=False))
    assert np.all(np.isfinite(compare.compare(case, method, tuning_seeds=[], evaluation_seeds=[0, 1],
                                              progress=False, cache=False).results["ETKF"].rmse))


def test_a_cached_choice_off_its_grid_is_named_and_tuned_again(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    case, grid = twin.case(TINY), {"inflation": (1.0, 1.1)}
    method = [compare.Method("ETKF", "ETKF", grid=grid)]
    run = lambda: compare.compare(case, method, tuning_seeds=[101], evaluation_seeds=[0, 1],
                                  progress=False)
    honest = run()
    (tune_file,) = (tmp_path / "compare").glob("tune-*.json")
    stored = json.loads(tune_file.read_text())
    tune_file.write_text(json.dumps(stored | {"chosen": {"inflation": 7.0}}))
    with pytest.warns(CacheWarning, match="not a point of ETKF's grid"):
        again = run()
    assert again.tunings["ETKF"].chosen == honest.tunings["ETKF"].chosen
    np.testing.assert_array_equal(again.results["ETKF"].rmse, honest.results["ETKF"].rmse)


def test_digests_see_closures_globals_arrays_and_code():
    scale = 3.0
    times = lambda x: scale * x
    before = _digest.digest(times)
    scale = 4.0  # noqa: F841 (a global the lambda reads)
    assert _digest.digest(times) != before
    assert _digest.digest(lambda x: x) != _digest.digest(lambda x: 3 * x + 5)
    assert _digest.digest(jnp.arange(3.0)) != _digest.digest(jnp.arange(3.0) + 1e-7)
    assert _digest.digest(partial(kalman.etkf, inflation=1.0)) != _digest.digest(
        partial(kalman.etkf, inflation=1.02))
    assert _digest.digest({"a": 1, "b": 2}) == _digest.digest({"b": 2, "a": 1})
    _refused("holds a _thread.lock", lambda: _digest.digest({"x": threading.Lock()}), _digest.Unkeyable)


# ---- 2 and 3. EnSF at any noise level and in any units -------------------------------------


def _gaussian_problem(n=50, d=4):
    ensemble = 2.0 + 0.5 * jax.random.normal(jax.random.key(1), (n, d))
    return ensemble, jnp.full(d, 3.0)


@pytest.mark.parametrize("obs_std", [1e-2, 1e-3, 1e-4, 1e-5, 1e-6])
def test_ensf_at_small_noise_lands_on_the_observation(obs_std):
    # y = 3 observed directly, prior around 2 with spread 0.5, no clip needed (exponential
    # steps): each member's posterior is within about obs_std of 3. The ±1000 clip once gave
    # 0.53 at 1e-3 and 0.03 at 1e-4.
    ensemble, y = _gaussian_problem()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ensf.ScoreClipped)
        out = ensf.analysis(KEY, ensemble, y, obs_std, n_steps=100, integrator="exponential")
    assert abs(float(out.mean()) - 3.0) < 0.5 * obs_std + 1e-5
    assert float(out.std()) < 2 * obs_std + 1e-5


@pytest.mark.parametrize("truth, obs_std", [(3.0, 1e-4), (3.0, 1e-6), (10.0, 1e-6), (-5.0, 1e-6)])
def test_ensf_with_arctan_at_small_noise_inverts_the_saturating_operator(truth, obs_std):
    # arctan(truth) observed with tiny noise: the analysis must find the truth (the
    # observation pins x to within obs_std (1 + x^2)); Newton steps on arctan from |x| > 1.39
    # diverge without the trust region.
    ensemble, _ = _gaussian_problem()
    y = jnp.arctan(jnp.full(4, truth))
    out = ensf.analysis(KEY, ensemble, y, obs_std, obs="arctan", n_steps=100,
                        integrator="exponential")
    assert abs(float(out.mean()) - truth) < 30 * obs_std * (1 + truth**2) + 1e-4


def test_a_binding_clip_is_said_aloud_and_measured():
    ensemble, y = _gaussian_problem()
    with pytest.warns(ensf.ScoreClipped, match=r"bound in \d+\.\d% of the score evaluations"):
        ensf.analysis(KEY, ensemble, y, 1e-3, n_steps=100, integrator="euler")
    assert ensf.clip_share(KEY, ensemble, y, 1e-3, n_steps=100, integrator="euler") > 0.5
    assert ensf.clip_share(KEY, ensemble, y, 0.5, n_steps=100, integrator="euler") == 0.0
    assert ensf.clip_share(KEY, ensemble, y, 1e-3, n_steps=100, integrator="exponential") == 0.0


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e4, 1e6])
def test_ensf_is_the_same_analysis_at_any_offset(offset):
    # The same problem shifted by 10^4 once gave a mean error of 8,272 instead of 0.20. The
    # shifted ensemble itself is rounded to float32 at the offset (its spacing there, e.g.
    # 0.0625 at 10^6), so the comparison allows a few of those spacings.
    ensemble, y = _gaussian_problem(n=40, d=6)
    kw = dict(obs_std=0.3, n_steps=50, integrator="exponential", start="standard")
    base = ensf.analysis(KEY, ensemble, y, **kw)
    moved = ensf.analysis(KEY, ensemble + offset, y + offset, **kw) - offset
    spacing = float(np.spacing(np.float32(offset))) if offset else 0.0
    np.testing.assert_allclose(moved, base, atol=4 * spacing + 2e-5)
    assert abs(float(moved.mean() - base.mean())) < spacing + 1e-5


def test_ensf_is_the_same_analysis_in_other_units(x64):
    # x' = a x + b with obs_std, kernel_var and scale converted: the analysis converts the
    # same way (to float64 rounding), for both priors and both starts.
    a, b = 1000.0, 273.15
    ensemble, y = (v.astype(jnp.float64) for v in _gaussian_problem(n=30, d=5))
    for kw in (dict(prior="paired", start="marginal", integrator="exponential"),
               dict(prior="mixture", start="standard", integrator="euler", clip=np.inf)):
        base = ensf.analysis(KEY, ensemble, y, 0.3, kernel_var=0.05, scale=2.0, n_steps=40,
                             noise="threefry", **kw)
        other = ensf.analysis(KEY, a * ensemble + b, a * y + b, a * 0.3, kernel_var=a**2 * 0.05,
                              scale=a * 2.0, n_steps=40, noise="threefry", **kw)
        np.testing.assert_allclose(other, a * base + b, rtol=1e-10, atol=1e-7 * a)


# ---- 4, 5. the harness refuses what it cannot do ---------------------------------------------


METHOD = [compare.Method("ETKF", "ETKF", grid={})]


@pytest.mark.parametrize("tuning, evaluation, match", [
    ([], [0, 1, 1], r"evaluation_seeds repeats \[1\]"),
    ([], [0, 1.5], r"evaluation_seeds must hold integers in \[0, 2\*\*30\), got 1.5"),
    ([], [0, True], r"evaluation_seeds must hold integers in \[0, 2\*\*30\), got True"),
    ([1, 1], [2, 3], r"tuning_seeds repeats \[1\]"),
    ([], [], r"evaluation_seeds must hold at least 2 seeds"),
    ([], "01", r"evaluation_seeds must be a sequence of integer seeds"),
])
def test_seeds_are_distinct_integers(tuning, evaluation, match):
    _refused(match, lambda: compare.compare(twin.case(TINY), METHOD, tuning_seeds=tuning,
                                            evaluation_seeds=evaluation, cache=False))


def test_a_tuned_method_needs_a_tuning_trial():
    _refused("tuning_seeds must hold at least 1 seed", lambda: compare.compare(
        twin.case(TINY), [compare.Method("ETKF", "ETKF")], tuning_seeds=[],
        evaluation_seeds=[0, 1], cache=False))


@pytest.mark.parametrize("kwargs, match", [
    (dict(knobs={"inflation": 1.05}, grid={"inflation": (1.0, 1.1)}),
     r"\['inflation'\] both fixed in knobs and tuned in grid"),
    (dict(knobs={"model_error": -0.1}), r"model_error must be a finite number >= 0, got -0.1"),
    (dict(knobs={"init_std": -1.0}), r"init_std must be a finite number >= 0, got -1.0"),
    (dict(knobs={"model_error": math.nan}), r"model_error must be a finite number >= 0, got nan"),
    (dict(grid={"model_error": (0.0, math.nan)}), r"model_error must be a finite number >= 0"),
    (dict(knobs={"inflation": "1.05"}), r"inflation must be a finite number > 0, got '1.05' \(str\)"),
    (dict(grid={"inflation": 1.05}), r"grid\['inflation'\] must be a sequence of candidate values"),
    (dict(grid={"inflation": (1.0, 1.0)}), r"grid\['inflation'\] repeats 1.0"),
    (dict(grid={"inflation": (1.0, 0.0)}), r"inflation must be a finite number > 0, got 0.0"),
])
def test_a_method_refuses_knobs_its_filter_refuses(kwargs, match):
    _refused(match, lambda: compare.Method("ETKF", "ETKF", **kwargs))


@pytest.mark.parametrize("filter_name, knobs, match", [
    ("EnSF", {"eps_b": 1.5}, r"eps_b must lie in \[0, 1\)"),
    ("EnSF", {"eps_a": "0.5"}, r"eps_a must be a finite number, got '0.5' \(str\)"),
    ("EnSF", {"integrator": "rk4"}, r"integrator must be one of \('euler', 'exponential'\)"),
    ("EnSF", {"clip": -1.0}, r"clip must be a number > 0"),
    ("EnSF", {"scale": 0.0}, r"scale must be a finite number > 0"),
    ("LETKF", {"radius": -2.0}, r"radius must be a finite number > 0"),
    ("EnSF-G", {"sampler": "heun"}, r"sampler must be one of"),
    ("EnSF-LR", {"radius": "4"}, r"radius must be a finite number > 0, got '4' \(str\)"),
])
def test_every_filters_knobs_are_checked_when_the_method_is_built(filter_name, knobs, match):
    _refused(match, lambda: compare.Method("m", filter_name, knobs=knobs, grid={}))


def test_a_fixed_knob_is_kept_beside_the_registrys_grid():
    method = compare.Method("ETKF", "ETKF", knobs={"inflation": 1.05})
    assert method.tuning_grid() == {}  # inflation is fixed: the registry's grid tunes the rest
    method = compare.Method("LETKF", "LETKF", knobs={"inflation": 1.05})
    assert set(method.tuning_grid()) == {"radius"}
    assert all(p["inflation"] == 1.05 for p in compare.grid_points(method))


def test_a_burn_in_longer_than_the_trial_is_refused_not_shown_as_divergence():
    case = dataclasses.replace(twin.case(TINY), burn_in=100)
    _refused(r"burn_in \(100\) must be smaller than the trial's 15 steps", lambda: compare.compare(
        case, [compare.Method("ETKF", "ETKF", grid={"inflation": (1.0, 1.1)})],
        tuning_seeds=[101], evaluation_seeds=[0, 1], cache=False))


@pytest.mark.parametrize("methods, match", [
    ([], "methods must be a non-empty sequence"),
    (["ETKF"], "methods must hold compare.Method objects, got str"),
])
def test_compare_names_a_missing_or_wrong_method(methods, match):
    _refused(match, lambda: compare.compare(twin.case(TINY), methods, tuning_seeds=[],
                                            evaluation_seeds=[0, 1], cache=False))


def test_relative_with_every_method_diverged_names_the_problem():
    rmse = np.array([np.nan, 1.0])
    result = compare.MethodResult({}, rmse, rmse, rmse, rmse, np.zeros(3, int), np.array([3, -1]))
    comparison = compare.Comparison("c", "a", {}, {}, {"a": result, "b": result}, (), (0, 1))
    _refused("every method diverged in some trial.*reference=", lambda: comparison.relative("a"))


# ---- 6, 7. the filters at tiny noise and with nothing observed -------------------------------


@pytest.mark.parametrize("fn", [kalman.etkf, kalman.enkf, kalman.letkf, gaussian_score.analysis,
                                partial(gaussian_score.analysis, obs="arctan"), ensf.analysis])
def test_an_obs_std_whose_precision_overflows_is_refused(fn):
    # the Kalman filters once returned all-NaN at 1e-20, EnSF-G with arctan errors of 2.8e14
    ensemble, y = _gaussian_problem(n=10, d=8)
    _refused(r"obs_std=1e-20 is too small for float32", lambda: fn(KEY, ensemble, y, 1e-20))
    _refused(r"obs_std=1e-18 is too small for float32", lambda: fn(KEY, ensemble, y, 1e-18))


@pytest.mark.parametrize("obs_std", [1e-8, 1e-16])
@pytest.mark.parametrize("fn", [kalman.etkf, kalman.letkf, gaussian_score.analysis])
def test_the_smallest_accepted_obs_std_gives_the_observation(fn, obs_std):
    ensemble, y = _gaussian_problem(n=10, d=8)
    out = fn(KEY, ensemble, y, obs_std)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out.mean(0), y, atol=1e-3)


@pytest.mark.parametrize("name", ["EnKF", "ETKF", "LETKF", "EnSF", "EnSF mixture", "EnSF-G", "EnSF-LR"])
def test_nothing_observed_leaves_the_forecast_unchanged(name):
    # the score filters once drifted with every mask False (EnSF-G spread 4.33 against the
    # free run's 3.41); a step without observations changes nothing, inflation included
    from scoreda.filters import FILTERS

    ensemble, y = _gaussian_problem(n=10, d=8)
    knobs = {"inflation": 1.2} if "inflation" in FILTERS[name].knobs else {}
    analyse = FILTERS[name].bind(obs="arctan", **knobs)
    out = analyse(KEY, ensemble, y, 0.1, mask=jnp.zeros(8, bool))
    np.testing.assert_array_equal(out, ensemble)


# ---- obscure or misattributed: each names the culprit ----------------------------------------


@pytest.mark.parametrize("fn", [ensf.analysis, gaussian_score.analysis, kalman.etkf, kalman.letkf,
                                kalman.enkf, regression.analysis])
def test_a_callable_operator_of_the_wrong_shape_is_named(fn):
    ensemble, y = _gaussian_problem(n=10, d=8)
    _refused(r"obs \(.*lambda.*\) must map a state of shape \(8,\) to an observation of shape \(8,\)"
             r".*got \(3,\)", lambda: fn(KEY, ensemble, y, 0.1, obs=lambda x: x[:3]))


@pytest.mark.parametrize("call, match", [
    (lambda e, y: ensf.analysis(KEY, e, y, 0.1, eps_a="0.5"), r"eps_a must be a finite number, got '0.5'"),
    (lambda e, y: kalman.etkf(KEY, e, y, 0.1, inflation="1.0"), r"inflation must be a finite number > 0, got '1.0'"),
    (lambda e, y: kalman.letkf(KEY, e, y, "0.1"), r"obs_std must be a finite number > 0, got '0.1'"),
    (lambda e, y: regression.analysis(KEY, e[:1], y, 0.1, mask=jnp.arange(8) < 4),
     r"EnSF-LR needs N >= 2 members"),
    (lambda e, y: regression.analysis(KEY, e, y, 0.1, mask=jnp.arange(8) < 4, distances=jnp.ones((3, 3))),
     r"distances must have shape \(d, d\) = \(8, 8\)"),
    (lambda e, y: regression.analysis(KEY, e, y, 0.1, distances=-jnp.ones((8, 8))),
     r"distances must be >= 0 everywhere"),
])
def test_bad_filter_arguments_are_named(call, match):
    ensemble, y = _gaussian_problem(n=10, d=8)
    _refused(match, lambda: call(ensemble, y))


def test_a_model_that_blows_up_is_blamed_not_the_filter():
    truth = l96.trajectory(l96.initial_states(KEY, 8), 9, 0.05)
    from scoreda import observe

    obs = observe.observe(jax.random.key(1), truth, "identity", 1.0)
    ens0 = truth[0] + jax.random.normal(jax.random.key(2), (8, 8))
    blowing_up = lambda x, key: jnp.where(x[0] > -1e30, x * 1e6, x)  # leaves the bound at once
    with pytest.raises(assimilate.ForecastDivergence, match="the forecast model diverged at step 1"):
        assimilate.cycle(KEY, blowing_up, partial(kalman.etkf, inflation=1.0), truth, obs, ens0)


def test_a_loop_config_names_a_surrogate_that_is_not_a_configuration():
    _refused(r"surrogate must be a scoreda.surrogates.conv.ConvConfig, got 'conv'",
             lambda: hybrid.LoopConfig(surrogate="conv"))


# ---- 8, 9. the command line and the records ---------------------------------------------------


@pytest.mark.parametrize("argv, match", [
    (["reproduce", "--no-estimate", "04"], "--no-estimate only applies with --dry-run"),
    (["reproduce", "--dry-run", "--force", "04"], "--dry-run runs nothing, so --force"),
    (["reproduce", "--dry-run", "--resume", "04"], "--dry-run runs nothing, so --resume"),
    (["reproduce", "--dry-run", "--no-estimate", "04", "04"], "04_lorenz96_experiment named more than once"),
    (["run", "01", "-p", "scale", "book", "--scale", "paper"], "give the scale once"),
    (["run", "04", "-p", "tuned_kalman", "['EnKFF']"], r"tuned_kalman may hold only \['LETKF', 'LETKF-tan', 'EnKF', 'IEnKF'\], got 'EnKFF'"),
    (["run", "04", "-p", "authors_setting_in", "['XX']"], r"authors_setting_in may hold only \['SA', 'IA', 'SI', 'truth'\], got 'XX'"),
    (["run", "04", "-p", "tuning_seeds", "[1, 1]"], r"tuning_seeds repeats 1"),
    (["run", "04", "-p", "eps_b_grid", "[0.1, -0.2]"], r"eps_b_grid must hold finite numbers >= 0 .*got -0.2"),
    (["run", "04", "-p", "tuning_seeds", "[1.5]"], r"tuning_seeds must hold finite integers >= 0"),
    (["run", "06", "-p", "ensf_eps_b", "{'paper': 0.1}"], r"ensf_eps_b must have the keys"),
])
def test_the_command_line_refuses_before_anything_runs(tmp_path, argv, match):
    _refused(match, lambda: cli.main(argv + ["--runs", str(tmp_path)]), SystemExit)
    assert not any(tmp_path.iterdir())


def test_a_truncated_run_record_is_named_on_resume(tmp_path):
    folder = tmp_path / "02_kdv"
    folder.mkdir()
    (folder / "run.json").write_text('{"status": "interr')
    _refused(re.escape(str(folder / "run.json")) + r" cannot be read \(JSONDecodeError",
             lambda: cli.main(["run", "02", "--runs", str(tmp_path), "--resume"]), SystemExit)


def _record(folder, **changes):
    run = {"notebook": "05_kdv_experiment.ipynb", "parameters": {"scale": "paper"},
           "versions": {"scoreda": "x", "jax": "y"}, "effective_parameters": {}, "machine": {},
           "command": "c", "status": "completed", "started": "2026-11-29T10:00:00+00:00",
           "ended": "2026-11-29T11:30:00+00:00"} | changes
    folder.mkdir(exist_ok=True)
    (folder / "run.json").write_text(json.dumps({k: v for k, v in run.items() if v is not None}))
    results = {k: run.get(k) for k in ("notebook", "parameters", "versions")} | {"values": {"n": 1}}
    (folder / "results.json").write_text(json.dumps({k: v for k, v in results.items() if v is not None}))


@pytest.mark.parametrize("changes, match", [
    (dict(ended="2026-11-29T09:00:00+00:00"), r"ends \(2026-11-29T09:00:00\+00:00\) before it starts"),
    (dict(versions=None), "run.json has no versions"),
    (dict(versions={"jax": "y"}), "versions must name scoreda and jax"),
    (dict(started="yesterday"), "started time that is not ISO 8601"),
])
def test_a_record_that_would_mislead_is_refused(tmp_path, changes, match):
    _record(tmp_path / "05_kdv_experiment", **changes)
    _refused(match, lambda: records.load(tmp_path))


def test_a_truncated_record_file_is_named(tmp_path):
    folder = tmp_path / "05_kdv_experiment"
    _record(folder)
    (folder / "run.json").write_text('{"notebook": ')
    _refused(re.escape(str(folder / "run.json")) + ": not readable JSON", lambda: records.load(tmp_path))


# ---- a second reading (review of the first fix): collisions and refusals found there -------


def _never_equal(a, b):
    """Two callables that compute different things: different digests, or one refused."""
    try:
        assert _digest.digest(a) != _digest.digest(b)
    except _digest.Unkeyable:
        pass


def test_library_wrappers_of_different_functions_never_share_a_digest():
    f, g = (lambda x: x), (lambda x: 2 * x)
    _never_equal(jax.vmap(f), jax.vmap(g))
    _never_equal(jax.vmap(f, in_axes=0), jax.vmap(f, in_axes=1))
    _never_equal(jax.grad(jnp.sin), jax.grad(jnp.cos))
    _never_equal(jax.checkpoint(f), jax.checkpoint(g))
    assert _digest.digest(jax.jit(f)) != _digest.digest(jax.jit(g))


def test_a_user_class_is_known_by_its_methods_and_attributes():
    @dataclasses.dataclass(frozen=True)
    class Op:
        k: float = 1.0

        def __call__(self, x):
            return self.k * x
    first = _digest.digest(Op())

    @dataclasses.dataclass(frozen=True)
    class Op:  # noqa: F811 (the redefinition is the point)
        k: float = 1.0

        def __call__(self, x):
            return self.k * x**3
    assert _digest.digest(Op()) != first

    def scaled(x):
        return x * scaled.k
    scaled.k = 1.0
    before = _digest.digest(scaled)
    scaled.k = 2.0
    assert _digest.digest(scaled) != before


def test_a_user_network_is_known_by_its_code():
    from flax import nnx

    from scoreda.surrogates import train

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(4, 4, rngs=rngs)

        def __call__(self, h):
            return self.lin(h[..., -1, :])
    first = _digest.digest(train.forecast_model(Net(nnx.Rngs(0))))

    class Net(nnx.Module):  # noqa: F811
        def __init__(self, rngs):
            self.lin = nnx.Linear(4, 4, rngs=rngs)

        def __call__(self, h):
            return -self.lin(h[..., -1, :])
    assert _digest.digest(train.forecast_model(Net(nnx.Rngs(0)))) != first


def test_a_user_helper_module_is_known_by_its_source(tmp_path, monkeypatch):
    import importlib
    import sys

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "scoreda_probe_helpers.py").write_text("def h(x):\n    return x\n")
    helpers = importlib.import_module("scoreda_probe_helpers")

    def uses(x):
        return helpers.h(x)
    first = _digest.digest(uses)
    (tmp_path / "scoreda_probe_helpers.py").write_text("def h(x):\n    return 2 * x\n")
    importlib.reload(helpers)
    assert _digest.digest(uses) != first
    del sys.modules["scoreda_probe_helpers"]


def test_an_attribute_name_does_not_pull_in_an_unrelated_global(tmp_path):
    globals()["log"] = open(tmp_path / "x.txt", "w")  # a notebook global named like jnp.log
    try:
        _digest.digest(lambda x: jnp.log(x))
    finally:
        globals().pop("log").close()


def test_a_replaced_registry_entry_is_not_served_from_the_bound_filters(monkeypatch):
    from scoreda.filters import FILTERS

    case, seed = twin.case(TINY), 0
    method = compare.Method("mine", "ETKF", grid={})
    before = compare.trajectory(case, method, {}, seed).analysis_rmse
    monkeypatch.setitem(FILTERS, "ETKF", FILTERS["ETKF"]._replace(analysis=_noop))
    after = compare.trajectory(case, method, {}, seed).analysis_rmse
    assert np.mean(after[5:]) > 2 * np.mean(before[5:])


def test_trajectory_and_evaluate_keep_the_methods_fixed_knobs():
    case = twin.case(TINY)
    fixed = compare.Method("ETKF 1.4", "ETKF", knobs={"inflation": 1.4}, grid={})
    given = compare.Method("ETKF", "ETKF", grid={})
    np.testing.assert_array_equal(compare.trajectory(case, fixed, {}, 0).analysis_rmse,
                                  compare.trajectory(case, given, {"inflation": 1.4}, 0).analysis_rmse)
    # a knob given explicitly is the caller's choice (a convergence check with other n_steps)
    np.testing.assert_array_equal(compare.trajectory(case, fixed, {"inflation": 1.0}, 0).analysis_rmse,
                                  compare.trajectory(case, given, {}, 0).analysis_rmse)
    _refused(r"seed must hold integers in \[0, 2\*\*30\), got 0.9",
             lambda: compare.trajectory(case, given, {}, 0.9))


def test_grids_are_frozen_when_the_method_is_built():
    method = compare.Method("g", "ETKF", grid={"inflation": (v for v in (1.0, 1.1))})
    assert method.tuning_grid() == {"inflation": (1.0, 1.1)}
    scalar = compare.Method("s", "ETKF", knobs={"inflation": jnp.float32(1.05)}, grid={})
    assert scalar.knobs == {"inflation": pytest.approx(1.05)} and type(scalar.knobs["inflation"]) is float


@pytest.mark.parametrize("call, match", [
    (lambda: compare.Method("a", "ETKF", knobs={"inflation": [1.0, 1.1]}),
     r"inflation must be one number > 0, got an array of shape \(2,\)"),
    (lambda: kalman.etkf(KEY, jnp.ones((4, 8)), jnp.zeros(8), jnp.full(5, 0.5)),
     r"obs_std must be one number or one per component, shape \(8,\), got shape \(5,\)"),
    (lambda: ensf.analysis(KEY, jnp.ones((4, 8)), jnp.zeros(8), 0.5, scale=jnp.ones(8)),
     r"scale must be one number > 0"),
    (lambda: ensf.analysis(KEY, jnp.ones((4, 8)), jnp.zeros(8), 0.5, scale=1e-20),
     r"scale=1e-20 is too small for float32"),
    (lambda: compare.compare(twin.case(TINY), METHOD, tuning_seeds=[], evaluation_seeds=[0, 2**31]),
     r"evaluation_seeds must hold integers in \[0, 2\*\*30\), got 2147483648"),
])
def test_arrays_where_numbers_belong_and_out_of_range_values_are_named(call, match):
    _refused(match, call)


def test_integer_arrays_of_seeds_are_seeds():
    assert _checks.seeds("s", jnp.arange(3)) == (0, 1, 2)
    assert _checks.seeds("s", np.array([5, 7])) == (5, 7)


def test_a_filter_that_lets_the_ensemble_drift_is_not_blamed_on_the_model():
    from scoreda import observe

    truth = l96.trajectory(l96.initial_states(KEY, 8), 40, 0.05)
    obs = observe.observe(jax.random.key(1), truth, "identity", 1.0)
    ens0 = truth[0] + 0.1 * jax.random.normal(jax.random.key(2), (8, 8))
    model = assimilate.deterministic(partial(l96.step, dt=0.05))
    with pytest.raises(assimilate.FilterDivergence, match="the filter diverged") as err:
        assimilate.cycle(KEY, model, _noop, truth, obs, ens0, divergence_bound=3.0)
    assert not isinstance(err.value, assimilate.ForecastDivergence)


def test_grids_that_hold_zero_pass_the_command_line():
    params = chapters.parameters(chapters.find_notebook("05"))
    assert chapters.check_value(params["model_error_grid"], [0.0, 0.3]) == [0.0, 0.3]


def test_earlier_attempts_of_the_wrong_shape_are_named(tmp_path):
    _record(tmp_path / "05_kdv_experiment", earlier_attempts={"started": "x"})
    _refused("earlier_attempts must be a list of objects", lambda: records.load(tmp_path))
