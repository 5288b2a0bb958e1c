"""The comparison harness: batched cycles equal single ones, traced knobs equal bound ones,
tuning picks the best point on hidden trials."""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda import cache as cache_lib
from scoreda import assimilate
from scoreda.experiments import compare, cost, twin
from scoreda.filters import FILTERS, kalman, registry

SMALL = twin.TwinConfig(d=20, n_cycles=120, burn_in=20, n_members=10)


@pytest.mark.slow
def test_cycle_batch_equals_separate_cycles():
    # three trials side by side in one vmapped scan give each trial's own cycle
    cfg = SMALL
    twins = [twin.make_twin(dataclasses.replace(cfg, seed=s)) for s in (1, 2, 3)]
    filt = partial(kalman.etkf, obs="identity", inflation=1.05)
    keys = jnp.stack([jax.random.key(10 + s) for s in range(3)])
    stack = lambda *a: jnp.stack(a)
    out = assimilate.cycle_batch(keys, twins[0].model, filt, jnp.stack([t.truth for t in twins]),
                                 jax.tree.map(stack, *[t.observations for t in twins]),
                                 jnp.stack([t.ensemble0 for t in twins]))
    for i, t in enumerate(twins):
        single = assimilate.cycle(keys[i], t.model, filt, t.truth, t.observations, t.ensemble0)
        np.testing.assert_allclose(out.analysis_rmse[i], single.analysis_rmse, rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(out.forecast_spread[i], single.forecast_spread, rtol=2e-5, atol=1e-6)
    # the rank histogram counts every component of every step once
    assert out.rank_counts.shape == (3, cfg.n_cycles, cfg.n_members + 1)
    np.testing.assert_array_equal(out.rank_counts.sum(axis=-1), cfg.d)


@pytest.mark.slow
def test_traced_knobs_equal_bound_knobs():
    # inflation passed as a batched array (one compilation for the grid) gives what the
    # filter with the inflation bound as a Python float gives
    t = twin.make_twin(dataclasses.replace(SMALL, seed=4))
    grid = np.array([1.0, 1.1, 1.3], np.float32)
    key = jax.random.key(0)
    rep = lambda a: jnp.stack([a] * 3)
    out = assimilate.cycle_batch(jnp.stack([key] * 3), t.model, partial(kalman.letkf, obs="identity"),
                                 rep(t.truth), jax.tree.map(rep, t.observations), rep(t.ensemble0),
                                 filter_kwargs={"inflation": grid, "radius": np.full(3, 3.0, np.float32)})
    for i, r in enumerate(grid):
        single = assimilate.cycle(key, t.model, partial(kalman.letkf, obs="identity", inflation=float(r),
                                                        radius=3.0),
                                  t.truth, t.observations, t.ensemble0)
        np.testing.assert_allclose(out.analysis_rmse[i], single.analysis_rmse, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_cycle_batch_reports_divergence_per_trial():
    t = twin.make_twin(dataclasses.replace(SMALL, seed=5))
    rep = lambda a: jnp.stack([a] * 2)
    # a filter that throws the ensemble away (inflation 50) diverges; the other does not
    out = assimilate.cycle_batch(jax.random.key(0), t.model, partial(kalman.etkf, obs="identity"),
                                 rep(t.truth), jax.tree.map(rep, t.observations), rep(t.ensemble0),
                                 filter_kwargs={"inflation": np.array([1.05, 50.0], np.float32)},
                                 divergence_bound=20.0)
    assert out.diverged_step[0] == -1 and out.diverged_step[1] > 0
    assert np.all(np.isnan(out.analysis_rmse[1, out.diverged_step[1] + 1:]))
    assert np.all(np.isfinite(out.analysis_rmse[0]))


@pytest.mark.slow
def test_compare_tunes_on_hidden_trials_and_reports_every_trial(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    case = twin.case(SMALL)
    methods = [compare.Method("ETKF", "ETKF", grid={"inflation": (1.0, 1.05, 1.3)}),
               compare.Method("ETKF fixed", "ETKF", knobs={"inflation": 1.3}, grid={})]
    with pytest.raises(ValueError, match="disjoint"):
        compare.compare(case, methods, tuning_seeds=[1, 2], evaluation_seeds=[2, 3])
    result = compare.compare(case, methods, tuning_seeds=[101, 102], evaluation_seeds=range(4),
                             progress=False)
    tuning = result.tunings["ETKF"]
    assert tuning.chosen["inflation"] == tuning.points[int(np.argmin(tuning.scores))]["inflation"]
    # a tuning score is the mean over the tuning trials of what evaluate() reports there
    chosen = compare.evaluate(case, methods[0], tuning.chosen, [101, 102])
    assert np.min(tuning.scores) == pytest.approx(np.mean(chosen.rmse), rel=1e-5)
    r = result.results["ETKF"]
    assert r.rmse.shape == (4,) and np.all(np.isfinite(r.rmse)) and r.n_diverged == 0
    # spread and RMSE of the same cycles: a tuned ETKF on this twin is roughly calibrated
    assert 0.6 < np.mean(r.spread) / np.mean(r.rmse) < 1.6
    # paired difference against the reference and a verdict computed from it
    diff = result.difference("ETKF fixed")
    assert diff == compare.paired_difference(result.results["ETKF fixed"].rmse, r.rmse)
    assert diff.n == 4 and diff.low == -np.inf and diff.high == np.inf  # 4 pairs: no 95% interval
    assert result.verdict("ETKF fixed").startswith("ETKF fixed minus ETKF: ")
    assert "| ETKF fixed |" in result.table()
    # relative to the best: the paired estimate and interval over the best's mean RMSE
    best = result.best()
    other = ({"ETKF", "ETKF fixed"} - {best}).pop()
    ratio, low, high = result.relative(other)
    d_best = result.difference(other, best)
    mean_best = np.mean(result.results[best].rmse)
    assert ratio == pytest.approx(1 + d_best.estimate / mean_best, rel=1e-6)
    assert (low, high) == (-np.inf, np.inf)
    assert result.relative(best) == (1.0, 1.0, 1.0)
    # the cache: a second call reads the same numbers without running anything
    again = compare.compare(case, methods, tuning_seeds=[101, 102], evaluation_seeds=range(4),
                            progress=False)
    np.testing.assert_array_equal(again.results["ETKF"].rmse, r.rmse)
    np.testing.assert_array_equal(again.tunings["ETKF"].scores, tuning.scores)


@pytest.mark.slow
def test_trajectory_is_the_trial_row_of_evaluate():
    # one trial cycled alone (analysis means kept for pictures) is the batched run's row
    case = twin.case(SMALL)
    for method, knobs in [(compare.Method("LETKF", "LETKF"), {"inflation": 1.05, "radius": 3.0}),
                          (compare.Method("EnSF", "EnSF"), {"eps_b": 0.05, "model_error": 0.1})]:
        batched = compare.evaluate(case, method, knobs, [7, 8])
        one = compare.trajectory(case, method, knobs, 8)
        late = one.analysis_rmse[case.burn_in:]
        assert np.mean(late) == pytest.approx(batched.rmse[1], rel=1e-4)
        assert one.analysis_mean.shape == (SMALL.n_cycles, SMALL.d)


@pytest.mark.slow
def test_registry_lists_every_filter_with_knobs_and_grids():
    assert {"EnKF", "ETKF", "LETKF", "EnSF", "EnSF mixture", "EnSF-G", "EnSF-LR"} <= set(FILTERS)
    key = jax.random.key(0)
    ens = jax.random.normal(key, (8, 10))
    y = jnp.zeros(10)
    mask = jnp.arange(10) % 2 == 0
    for name, spec in FILTERS.items():
        assert set(spec.grid) <= set(spec.knobs), name
        out = spec.bind(obs="arctan", n_steps=20)(key, ens, y, 0.1, mask=mask) if "EnSF" in name \
            else spec.bind(obs="arctan")(key, ens, y, 0.1, mask=mask)
        assert out.shape == ens.shape and np.all(np.isfinite(np.asarray(out))), name
    with pytest.raises(ValueError, match="unknown knobs"):
        FILTERS["ETKF"].bind(obs="identity", radius=2.0)
    with pytest.raises(ValueError, match="filter must be one of"):
        registry.get("EnKS")
    with pytest.raises(ValueError, match="unknown grid"):
        compare.Method("x", "ETKF", grid={"eps_b": (0.1,)})


@pytest.mark.slow
def test_a_damaged_comparison_cache_entry_is_named_and_computed_again(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    case = twin.case(dataclasses.replace(SMALL, n_cycles=60, burn_in=10))
    method = compare.Method("ETKF", "ETKF", grid={"inflation": (1.0, 1.2)})
    run = lambda: compare.compare(case, [method], tuning_seeds=[101], evaluation_seeds=[0, 1], progress=False)
    first = run()
    tune_file, = (tmp_path / "compare").glob("tune-*.json")
    eval_file, = (tmp_path / "compare").glob("eval-*.json")
    stored = {f: f.read_text() for f in (tune_file, eval_file)}
    # a result cut short by a crash, and a tuning that parses but is not this method's grid
    eval_file.write_text(stored[eval_file][: len(stored[eval_file]) // 2])
    tune_file.write_text(json.dumps({"points": [{"inflation": 9.0}], "scores": [0.1],
                                     "chosen": {"inflation": 9.0}}))
    with pytest.warns(cache_lib.CacheWarning) as caught:
        again = run()
    messages = " | ".join(str(w.message) for w in caught if issubclass(w.category, cache_lib.CacheWarning))
    assert f"damaged comparison cache entry {tune_file}" in messages
    assert f"damaged comparison cache entry {eval_file}" in messages
    # recomputed: the same numbers as the first run, and the files whole again
    assert again.tunings["ETKF"].points == first.tunings["ETKF"].points
    np.testing.assert_array_equal(again.tunings["ETKF"].scores, first.tunings["ETKF"].scores)
    np.testing.assert_array_equal(again.results["ETKF"].rmse, first.results["ETKF"].rmse)
    assert {f: f.read_text() for f in stored} == stored


@pytest.mark.slow
def test_an_interrupted_comparison_resumes_within_a_stage_with_the_same_numbers(tmp_path, monkeypatch):
    case = twin.case(dataclasses.replace(SMALL, n_cycles=60, burn_in=10))
    method = compare.Method("ETKF", "ETKF", grid={"inflation": (1.0, 1.1, 1.3)})
    run = lambda: compare.compare(case, [method], tuning_seeds=[101, 102], evaluation_seeds=[0, 1],
                                  progress=False)
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "uninterrupted"))
    whole = run()

    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "interrupted"))
    real, calls = assimilate.cycle_batch, []

    def stopping(*args, **kwargs):  # 6 tuning runs in batches of 2: stop in the third batch
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(assimilate, "cycle_batch", stopping)
    with pytest.raises(KeyboardInterrupt):
        run()
    runs, = (tmp_path / "interrupted" / "compare").glob("tune-*.runs")
    assert len(list(runs.glob("*.npz"))) == 4  # the two finished batches
    calls.clear()
    resumed = run()
    assert len(calls) == 2  # the last tuning batch and the evaluation, nothing twice
    np.testing.assert_array_equal(resumed.tunings["ETKF"].scores, whole.tunings["ETKF"].scores)
    np.testing.assert_array_equal(resumed.results["ETKF"].rmse, whole.results["ETKF"].rmse)
    np.testing.assert_array_equal(resumed.results["ETKF"].rank_counts, whole.results["ETKF"].rank_counts)
    assert not list((tmp_path / "interrupted" / "compare").glob("*.runs"))  # removed once stored


def test_joined_results_are_one_evaluation_of_both_trial_sets():
    knobs = {"inflation": 1.1}
    a = compare.MethodResult(knobs, np.array([1.0, np.nan]), np.array([0.5, np.nan]),
                             np.array([0.2, np.nan]), np.array([2.0, 4.0]), np.array([1, 2, 3]),
                             np.array([-1, 7]))
    b = compare.MethodResult(dict(knobs), np.array([3.0, 5.0]), np.array([1.0, 1.0]),
                             np.array([0.4, 0.6]), np.array([5.0, 1.0]), np.array([0, 1, 1]),
                             np.array([-1, -1]))
    ab = a.joined(b)
    np.testing.assert_array_equal(ab.rmse, [1.0, np.nan, 3.0, 5.0])
    np.testing.assert_array_equal(ab.diverged_step, [-1, 7, -1, -1])
    np.testing.assert_array_equal(ab.rank_counts, [1, 3, 4])
    # the curve is the mean over the three trials that ran: (1 x a's + 2 x b's) / 3
    np.testing.assert_allclose(ab.rmse_curve, [(2.0 + 2 * 5.0) / 3, (4.0 + 2 * 1.0) / 3])
    assert ab.n_diverged == 1 and ab.mean_rmse == pytest.approx(3.0)
    every = a._replace(diverged_step=np.array([3, 7]), rmse_curve=np.full(2, np.nan))
    assert np.all(np.isnan(every.joined(every).rmse_curve))
    with pytest.raises(ValueError, match="different knobs"):
        a.joined(b._replace(knobs={"inflation": 1.2}))
    with pytest.raises(ValueError, match="cycles"):
        a.joined(b._replace(rmse_curve=np.zeros(3)))


@pytest.mark.slow
def test_a_close_call_runs_every_method_on_more_trials(tmp_path, monkeypatch):
    """Two settings of one filter that differ by little are a close call on six trials:
    every method then runs on the six close-call seeds too, and each result is what
    evaluating it on all twelve seeds at once gives. A clear difference adds no trial."""
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    case = twin.case(SMALL)
    near = [compare.Method("ETKF", "ETKF", knobs={"inflation": 1.05}, grid={}),
            compare.Method("ETKF 1.06", "ETKF", knobs={"inflation": 1.06}, grid={}),
            compare.Method("ETKF 3", "ETKF", knobs={"inflation": 3.0}, grid={})]
    with pytest.raises(ValueError, match="evaluation and close-call seeds must be disjoint"):
        compare.compare(case, near, tuning_seeds=[], evaluation_seeds=range(6),
                        close_call_seeds=[5, 6], progress=False)
    first = compare.compare(case, near, tuning_seeds=[], evaluation_seeds=range(6), progress=False)
    assert first.close_call_labels() == ["ETKF 1.06"] and first.close_calls == ()
    rows = []  # the runs the close calls add (the first six trials come from the cache)
    real = assimilate.cycle_batch
    monkeypatch.setattr(assimilate, "cycle_batch",
                        lambda keys, *a, **k: rows.append(keys.shape[0]) or real(keys, *a, **k))
    more = compare.compare(case, near, tuning_seeds=[], evaluation_seeds=range(6),
                           close_call_seeds=range(6, 12), progress=False)
    monkeypatch.setattr(assimilate, "cycle_batch", real)
    # the dry run's upper bound for them is these runs, no fewer
    monkeypatch.setattr(cost, "analysis_seconds", lambda *a, **k: 0.004)
    work = [cost.MethodWork("ETKF", (), 0)] * len(near)
    steps = SMALL.n_cycles
    assert cost.close_call_seconds(work, n_members=SMALL.n_members, d=SMALL.d, n_steps=steps,
                                   n_close=6, forecast=0.001) == pytest.approx(
        sum(rows) * steps * (0.001 + cost.OBSERVED_SHARE * 0.004))
    assert rows == [6] * len(near)
    assert more.close_calls == ("ETKF 1.06",) and more.evaluation_seeds == tuple(range(12))
    assert more.close_call_seeds == tuple(range(6, 12))
    for m in near:
        together = compare.evaluate(case, m, dict(m.knobs), range(12))
        np.testing.assert_allclose(more.results[m.label].rmse, together.rmse, rtol=1e-6)
        np.testing.assert_allclose(more.results[m.label].rmse_curve, together.rmse_curve, rtol=1e-5)
        np.testing.assert_array_equal(more.results[m.label].rank_counts, together.rank_counts)
    assert more.difference("ETKF 3").n == 12
    assert "ETKF 1.06 minus ETKF was a close call on the first 6" in more.table()
    assert "| 0/12 |" in more.table()
    back = compare.Comparison.from_record(more.record())
    assert back.close_calls == more.close_calls and back.table() == more.table()
    two = dataclasses.replace(more, close_calls=("ETKF 1.06", "ETKF 3"))
    assert ("the differences to ETKF of ETKF 1.06 and ETKF 3 were close calls on the first 6"
            in two.table())
    clear = compare.compare(case, [near[0], near[2]], tuning_seeds=[], evaluation_seeds=range(6),
                            close_call_seeds=range(6, 12), progress=False)
    assert clear.close_calls == () and clear.evaluation_seeds == tuple(range(6))
    assert "close call" not in clear.table()
