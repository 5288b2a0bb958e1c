"""The EnSF paper's Lorenz-96 experiment (scoreda.experiments.ensf_reference): its protocol
as the authors' code runs it, the reference's EnSF knobs, the final RMSE, the resumable
record, a stored comparison read back, and the committed record."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda.experiments import compare, records
from scoreda.experiments import ensf_reference as er
from scoreda.filters import ensf, registry
from scoreda.systems import lorenz96 as l96

ROOT = Path(__file__).resolve().parent.parent
RECORD = ROOT / "book" / "paper_scale" / records.SWEEPS / "ensf_reference.json"
TINY = er.ReferenceConfig(d=12, n_cycles=8, scored_from=4, spinup_steps=50)


@pytest.mark.slow
def test_a_trial_is_the_reference_protocol():
    config = er.ReferenceConfig(d=40)
    trial = er.make_trial(config, 3)
    assert trial.truth.shape == (150, 40) and trial.noise.shape == (20, 40)
    # the truth: 3 N(0, I), spun up 1000 steps and one more (the first analysis is one step
    # after the start), then RK4 steps of 0.01 with an analysis every 10th. Checked step by
    # step over a short spin-up (over 1000 steps chaos amplifies float rounding to O(1))
    short = er.make_trial(dataclasses.replace(config, spinup_steps=5, n_cycles=3,
                                                 scored_from=0), 3)
    k_truth, k_obs, k_ens = jax.random.split(jax.random.key(3), 3)
    x = 3.0 * jax.random.normal(k_truth, (40,))
    for _ in range(6):
        x = l96.step(x, 0.01, 8.0)
    np.testing.assert_allclose(short.truth[0], x, rtol=1e-5, atol=1e-5)
    for n in (1, 2):
        for _ in range(10):
            x = l96.step(x, 0.01, 8.0)
        np.testing.assert_allclose(short.truth[n], x, rtol=1e-4, atol=1e-4)
    # on the attractor by then (mean about 2.3, std about 3.6 at F = 8)
    assert 1.5 < float(jnp.mean(trial.truth)) < 3.2 and 3.0 < float(jnp.std(trial.truth)) < 4.2
    # every component observed through arctan at every analysis, noise sigma
    obs = trial.observations
    assert bool(jnp.all(obs.mask)) and bool(jnp.all(obs.observed))
    residual = np.asarray(obs.values - jnp.arctan(trial.truth))
    assert residual.std() == pytest.approx(0.05, rel=0.05) and abs(residual.mean()) < 0.003
    # the ensemble: N(0, I), independent of the truth
    assert bool(jnp.all(trial.center == 0))
    noise = np.asarray(trial.noise)
    assert abs(noise.mean()) < 0.05 and noise.std() == pytest.approx(1.0, rel=0.05)
    np.testing.assert_array_equal(noise, jax.random.normal(k_ens, (20, 40)))
    # seeds make different trials, the same seed the same
    np.testing.assert_array_equal(er.make_trial(config, 3).truth, trial.truth)
    assert not np.allclose(er.make_trial(config, 4).truth, trial.truth)


def test_the_case_scores_the_last_50_analyses_from_the_reference_start():
    case = er.case(er.ReferenceConfig(d=40, obs_std=0.03))
    assert case.burn_in == 100 and case.init_std == 1.0 and case.obs == "arctan"
    assert case.climate_std == pytest.approx(3.6)
    assert "obs_std" in case.cache_key and case.name.endswith("sigma = 0.03")
    # the reference's EnSF: its knobs, Euler steps, so the reference's clip of 1000
    method = er.reference_method()
    assert method.tuning_grid() == {}
    knobs = dict(registry.get("EnSF").knobs) | method.knobs
    assert (knobs["eps_a"], knobs["eps_b"], knobs["n_steps"]) == (0.5, 0.025, 500)
    assert (knobs["integrator"], knobs["start"], knobs["kernel_var"]) == ("euler", "standard", 0.0)
    assert ensf.default_clip(knobs["clip"], knobs["integrator"], "arctan") == 1000.0


@pytest.mark.parametrize("bad, match", [
    (dict(d=3), "d"), (dict(obs_std=0.0), "obs_std"), (dict(scored_from=150), "scored_from"),
    (dict(n_members=1), "n_members"), (dict(d=40.0), "d"), (dict(truth_init_std=-1.0), "truth_init_std"),
])
def test_a_bad_setting_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        er.ReferenceConfig(**bad)


def test_case_refuses_what_is_not_a_config():
    with pytest.raises(ValueError, match="ReferenceConfig"):
        er.case({"d": 40})


@pytest.mark.slow
def test_final_rmse_is_the_last_analysis_and_the_late_mean_the_harness_score():
    method = compare.Method("ETKF", "ETKF", knobs={"inflation": 1.1}, grid={})
    out = er.final_rmse(TINY, [0, 1], method)
    batched = compare.evaluate(er.case(TINY), method, {"inflation": 1.1}, [0, 1])
    np.testing.assert_allclose(out["late_mean"], batched.rmse, rtol=1e-4)
    # the reference's RMSE, by hand: the analysis mean against the truth over the components
    one = compare.trajectory(er.case(TINY), method, {"inflation": 1.1}, 1)
    truth = np.asarray(er.make_trial(TINY, 1).truth, float)
    by_hand = np.sqrt(np.mean((np.asarray(one.analysis_mean, float) - truth) ** 2, axis=1))
    assert out["final"][1] == pytest.approx(by_hand[-1], rel=1e-5)
    assert out["late_mean"][1] == pytest.approx(by_hand[TINY.scored_from:].mean(), rel=1e-5)
    assert list(out["diverged_step"]) == [-1, -1]


@pytest.mark.slow
def test_the_record_resumes_and_refuses_to_mix_settings(tmp_path, monkeypatch):
    calls = []
    real = er.final_rmse

    def counted(config, seeds, *a, **k):
        calls.extend(seeds)
        return real(config, seeds, *a, **k)

    monkeypatch.setattr(er, "final_rmse", counted)
    path = tmp_path / "sweeps" / "ref.json"
    er.record_final_rmse(path, TINY, [0, 1], progress=False)
    stage = er.record_final_rmse(path, TINY, [0, 1, 2], progress=False)
    assert calls == [0, 1, 2]  # the finished seeds were not run again
    assert stage["seeds"] == [0, 1, 2] and len(stage["final"]) == 3 and len(stage["attempts"]) == 2
    assert all(a["machine"]["devices"] and a["ended"] >= a["started"] for a in stage["attempts"])
    stored = json.loads(path.read_text())["stages"][er.stage_name(TINY)]
    assert stored["final"] == stage["final"]
    # the same name with other settings is not appended to
    with pytest.raises(ValueError, match="other settings"):
        er.record_final_rmse(path, dataclasses.replace(TINY, n_cycles=9), [3], progress=False)
    # other code: a finished stage is returned as it is, an unfinished one refused
    from scoreda import _digest
    monkeypatch.setattr(_digest, "package_digest", lambda: "other code")
    assert er.record_final_rmse(path, TINY, [0, 2], progress=False)["seeds"] == [0, 1, 2]
    assert calls == [0, 1, 2]
    with pytest.raises(ValueError, match="another version"):
        er.record_final_rmse(path, TINY, [3], progress=False)
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a record"):
        er.read_record(tmp_path / "junk.json")


@pytest.mark.slow
def test_a_stored_comparison_reads_back_with_its_tables_and_verdicts(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    methods = [compare.Method("ETKF", "ETKF", grid={"inflation": (1.05, 1.2)}),
               compare.Method("ETKF fixed", "ETKF", knobs={"inflation": 1.3}, grid={})]
    path = tmp_path / "ref.json"
    original = er.record_comparison(path, TINY, methods, tuning_seeds=[101, 102],
                                    evaluation_seeds=range(6), progress=False)
    entry = er.read_record(path)["comparisons"][er.stage_name(TINY)]
    back = er.comparison_from_record(json.loads(json.dumps(entry)))
    assert back.table() == original.table()
    assert back.tuning_table("ETKF") == original.tuning_table("ETKF")
    # every tuned method's table under its label; the fixed one has none
    assert original.tuning_tables() == "*ETKF*\n\n" + original.tuning_table("ETKF")
    assert back.verdict("ETKF fixed") == original.verdict("ETKF fixed")
    assert back.difference("ETKF fixed") == original.difference("ETKF fixed")
    assert entry["machine"]["devices"] and entry["versions"]["scoreda"]
    # a diverged trial (NaN, stored as null) and an infinite tuning score read back too
    bad = original.results["ETKF fixed"]
    rmse, steps = bad.rmse.copy(), bad.diverged_step.copy()
    rmse[0], steps[0] = np.nan, 3
    original.results["ETKF fixed"] = bad._replace(rmse=rmse, diverged_step=steps)
    scores = original.tunings["ETKF"].scores.copy()
    scores[0] = np.inf
    original.tunings["ETKF"] = original.tunings["ETKF"]._replace(scores=scores)
    again = compare.Comparison.from_record(json.loads(json.dumps(original.record())))
    assert again.table() == original.table() and "1/6" in again.table()
    assert again.tuning_table("ETKF") == original.tuning_table("ETKF")
    assert np.isinf(again.tunings["ETKF"].scores[0]) and np.isnan(again.results["ETKF fixed"].rmse[0])
    broken = dict(entry["record"], reference="LETKF")
    with pytest.raises(ValueError, match="reference"):
        compare.Comparison.from_record(broken)
    with pytest.raises(ValueError, match="not a comparison record"):
        compare.Comparison.from_record({"case": "x"})


def test_records_load_leaves_the_sweeps_folder_alone(tmp_path):
    (tmp_path / records.SWEEPS).mkdir()
    (tmp_path / records.SWEEPS / "ensf_reference.json").write_text("{}")
    assert records.load(tmp_path) == {}
    (tmp_path / "04_other").mkdir()
    with pytest.raises(ValueError, match="no run.json"):
        records.load(tmp_path)


@pytest.mark.slow
def test_a_transfer_evaluates_at_the_large_dimension_what_was_tuned_at_the_small(tmp_path,
                                                                                  monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    large = dataclasses.replace(TINY, d=24)
    method = compare.Method("ETKF", "ETKF", grid={"inflation": (1.05, 1.3)}, widen=0)
    entry = er.record_transfer(tmp_path / "ref.json", TINY, large, method, tuning_seeds=[101],
                               evaluation_seeds=[0, 1], progress=False)
    tuned = compare.tune(er.case(TINY), method, [101])
    assert entry["tuning"]["chosen"] == tuned.chosen
    at_large = compare.evaluate(er.case(large), method, tuned.chosen, [0, 1])
    np.testing.assert_allclose(entry["result"]["rmse"], at_large.rmse, rtol=1e-6)
    stored = er.read_record(tmp_path / "ref.json")["transfers"]
    assert list(stored) == [er.transfer_name(large, "ETKF")]
    assert stored[er.transfer_name(large, "ETKF")]["evaluation_seeds"] == [0, 1]
    # the tuning saw the small dimension's trials, the evaluation the large one's
    seen = {}

    def spy(name, returned):
        def called(case, *args, **kwargs):
            seen[name] = case
            return returned
        return called

    monkeypatch.setattr(compare, "tune", spy("tune", tuned))
    monkeypatch.setattr(compare, "evaluate", spy("eval", at_large))
    er.record_transfer(tmp_path / "ref.json", TINY, large, method, tuning_seeds=iter([101]),
                       evaluation_seeds=(s for s in (0, 1)), progress=False)
    assert seen["tune"].make_trial(101).truth.shape[1] == TINY.d
    assert seen["eval"].make_trial(0).truth.shape[1] == large.d
    again = er.read_record(tmp_path / "ref.json")["transfers"][er.transfer_name(large, "ETKF")]
    assert again["evaluation_seeds"] == [0, 1] and again["tuning_seeds"] == [101]


@pytest.mark.slow
def test_a_record_entry_run_with_other_settings_is_refused_not_overwritten(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    method = compare.Method("ETKF", "ETKF", knobs={"inflation": 1.1}, grid={})
    path = tmp_path / "ref.json"
    er.record_comparison(path, TINY, [method], tuning_seeds=[], evaluation_seeds=[0, 1],
                         progress=False)
    fewer = dataclasses.replace(TINY, n_members=10)  # the same name: d and sigma
    assert er.stage_name(fewer) == er.stage_name(TINY)
    with pytest.raises(ValueError, match=r"other settings \(config\.n_members differ"):
        er.record_comparison(path, fewer, [method], tuning_seeds=[], evaluation_seeds=[0, 1],
                             progress=False)
    large = dataclasses.replace(TINY, d=24)
    er.record_transfer(path, TINY, large, method, tuning_seeds=[101], evaluation_seeds=[0],
                       progress=False)
    with pytest.raises(ValueError, match=r"other settings \(small\.n_members differ"):
        er.record_transfer(path, fewer, large, method, tuning_seeds=[101],
                           evaluation_seeds=[0], progress=False)
    # a transfer recorded before 0.4.0 has no tie_rtol in its method: named as a difference
    record = er.read_record(path)
    del record["transfers"][er.transfer_name(large, "ETKF")]["method"]["tie_rtol"]
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"method\.tie_rtol differ"):
        er.record_transfer(path, TINY, large, method, tuning_seeds=[101],
                           evaluation_seeds=[0], progress=False)
    stored = er.read_record(path)
    assert stored["comparisons"][er.stage_name(TINY)]["config"]["n_members"] == TINY.n_members


def test_a_config_of_numpy_scalars_is_described_as_python_numbers():
    config = er.ReferenceConfig(d=np.int64(40), obs_std=np.float64(0.05))
    assert type(config.d) is int and type(config.obs_std) is float
    assert er.case(config).cache_key == er.case(er.ReferenceConfig(d=40)).cache_key


NOTEBOOK = ROOT / "notebooks" / "08_closing_the_gap.ipynb"


def test_the_committed_record_holds_whole_stages_with_their_machine():
    record = er.read_record(RECORD)
    for sigma in er.PUBLISHED_FINAL_RMSE:  # d = 1000: every published noise level
        stage = record["stages"][er.stage_name(er.ReferenceConfig(d=1000, obs_std=sigma))]
        assert stage["seeds"] == list(range(10)) and len(stage["final"]) == 10
        assert stage["knobs"] == er.REFERENCE_KNOBS
        assert all(a["machine"]["processor"] and a["versions"]["scoreda"] for a in stage["attempts"])
    entry = record["comparisons"][er.stage_name(er.ReferenceConfig(d=1000))]
    c = er.comparison_from_record(entry)
    assert c.evaluation_seeds == tuple(range(10)) and len(c.tuning_seeds) >= 3
    assert set(c.methods) == {m.label for m in er.comparison_methods()}
    # the tuned methods' grids are the module's (so the book's lab tier tunes the same way)
    for m in er.comparison_methods():
        assert c.methods[m.label].tuning_grid() == m.tuning_grid()


def test_chapter_8_shows_the_records_numbers():
    record = er.read_record(RECORD)
    glued = records.book_values(NOTEBOOK)
    complete = {(s["config"]["d"], s["config"]["obs_std"]): s["final"]
                for s in record["stages"].values() if len(s["seeds"]) >= 10}
    largest = max(d for d, sigma in complete if sigma == 0.05)
    assert glued["ref_repro_largest_d"] == largest
    expected = er.reproduction(complete[largest, 0.05], er.PUBLISHED_FINAL_RMSE[0.05])
    assert glued["ref_repro_largest_mean"] == pytest.approx(expected["mean"], rel=1e-12)
    assert glued["ref_repro_largest_verdict"] == expected["verdict"]
    # the count the introduction quotes: the recorded rows only, not the lab's
    verdicts = [er.reproduction(f, er.PUBLISHED_FINAL_RMSE[sigma])["verdict"]
                for (_, sigma), f in complete.items()]
    assert glued["ref_repro_rows"] == len(complete) == 6
    assert glued["ref_repro_n"] == verdicts.count("reproduced")
    transfer = record["transfers"]["d=1000 sigma=0.05 LETKF"]
    moved = np.asarray([np.nan if v is None else v for v in transfer["result"]["rmse"]])
    assert glued["ref_transfer_small_d"] == transfer["small"]["d"] == 100
    assert glued["ref_transfer_n"] == moved.size
    assert glued["ref_transfer_lost"] == int(np.sum(~np.isfinite(moved) | (moved > 3.6)))
    assert glued["ref_transfer_tuning_score"] == pytest.approx(
        min(float(v) for v in transfer["tuning"]["scores"]), rel=1e-12)
    c = er.comparison_from_record(record["comparisons"][er.stage_name(er.ReferenceConfig(d=1000))])
    kb = c.best_of(["LETKF", "LETKF-tan"])
    assert c.verdict("EnSF", kb) in glued["ref_verdict_record"]


def test_reproduction_reads_the_interval_of_the_mean_against_the_published_value():
    finals = [0.19, 0.21, 0.20, 0.22, 0.18, 0.20]
    r = er.reproduction(finals, 0.2)
    assert r["verdict"] == "reproduced" and r["n"] == 6 and r["diverged"] == 0
    assert r["mean"] == pytest.approx(0.2) and r["low"] < 0.2 < r["high"]
    assert r["ratio"] == pytest.approx(1.0)
    assert er.reproduction(finals, 0.25)["verdict"] == "lower"
    assert er.reproduction(finals, 0.15)["verdict"] == "higher"
    assert er.reproduction([0.2], 0.2)["verdict"] == "not comparable"
    # a diverged seed (the reference's all finished) is never a reproduction, however
    # well the others agree
    for diverged in ([None], [float("nan")], [None] * 8):
        r = er.reproduction(finals[:2] + diverged, 0.2)
        assert r["verdict"] == "diverged" and r["diverged"] == len(diverged) and r["n"] == 2
    for published in (float("nan"), -1.0, 0.0, "0.2"):
        with pytest.raises(ValueError, match="published"):
            er.reproduction(finals, published)
    for bad in ([0.2, "x"], [0.2, True], [0.2, -0.1], [0.2, float("inf")], "0.2",
                {0.2: 1, 0.3: 2}, 0.2, [[0.2, 0.3]]):
        with pytest.raises(ValueError, match="final_rmses"):
            er.reproduction(bad, 0.2)


def test_the_readme_states_the_records_numbers():
    """The README's line on the EnSF paper's experiment holds the record's numbers, each
    formatted as the README prints it."""
    record = er.read_record(RECORD)
    readme = (ROOT / "README.md").read_text()
    line = readme[readme.index("**The EnSF paper's own experiment**"):]
    line = " ".join(line[:line.index("\n\n")].split())
    complete = {(s["config"]["d"], s["config"]["obs_std"]): s["final"]
                for s in record["stages"].values() if len(s["seeds"]) >= 10}
    largest = max(d for d, sigma in complete if sigma == 0.05)
    repro = er.reproduction(complete[largest, 0.05], er.PUBLISHED_FINAL_RMSE[0.05])
    said = {"reproduced": "the interval holds it", "lower": "lower than the published",
            "higher": "higher than the published"}
    assert f"of {repro['mean']:.4f} at d = {largest:,}" in line
    assert (f"(bootstrap 95% interval {repro['low']:.4f}–{repro['high']:.4f}: "
            f"{said[repro['verdict']]}") in line
    at_1000 = er.reproduction(complete[1000, 0.05], er.PUBLISHED_FINAL_RMSE[0.05])
    assert f"and {at_1000['mean']:.4f} at d = 1,000 ({said[at_1000['verdict']]})" in line
    assert f"{er.PUBLISHED_FINAL_RMSE[0.05]:.4f} at d = 10⁶" in line
    c = er.comparison_from_record(record["comparisons"][er.stage_name(er.ReferenceConfig(d=1000))])
    kb = c.best_of(["LETKF", "LETKF-tan"])
    diff = c.difference("EnSF", kb)
    assert (f"the {kb} tuned there reaches {c.results[kb].mean_rmse:.3f} against the tuned "
            f"EnSF's {c.results['EnSF'].mean_rmse:.3f}") in line
    assert f"EnSF minus it {diff.estimate:+.3f} [{diff.low:+.3f}, {diff.high:+.3f}])" in line
    moved = np.asarray([np.nan if v is None else v
                        for v in record["transfers"]["d=1000 sigma=0.05 LETKF"]["result"]["rmse"]])
    lost = int(np.sum(~np.isfinite(moved) | (moved > 3.6)))
    assert f"lost track in {lost} of {moved.size} twins" in line
