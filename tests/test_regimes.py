"""Chapter 8's regimes: twins with model error and shocks, the regimes' filters and grids,
and the record of the regimes the chapter does not run."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from scoreda.experiments import compare, records, regimes, twin
from scoreda.systems import lorenz96 as l96


# ---------------------------------------------------------------------------------------
# the twin: a wrong forecast model, a shock of the truth


def test_a_shock_changes_the_truth_from_its_cycle_on_and_nothing_before():
    base = twin.TwinConfig(d=10, n_cycles=30, burn_in=4)
    plain = np.asarray(twin.make_twin(base).truth)
    shocked_cfg = dataclasses.replace(base, shock_forcing=12.0, shock_cycle=11)
    shocked = np.asarray(twin.make_twin(shocked_cfg).truth)
    assert shocked.shape == plain.shape
    np.testing.assert_array_equal(shocked[:11], plain[:11])
    # from cycle 11 on: the same state advanced with F = 12, one cycle at a time
    expected = np.asarray(l96.trajectory(plain[10], 19, base.dt, 12.0))
    np.testing.assert_allclose(shocked[10:], expected, rtol=1e-5, atol=1e-5)
    assert np.abs(shocked[11] - plain[11]).max() > 1e-3
    # a "shock" to the same forcing is no shock
    same = dataclasses.replace(base, shock_forcing=base.forcing)
    np.testing.assert_allclose(np.asarray(twin.make_twin(same).truth), plain, atol=1e-5)
    # by default the shock falls in the middle of the scored cycles
    assert dataclasses.replace(base, shock_forcing=12.0).shock_at == (4 + 30) // 2


def test_the_forecast_model_runs_its_own_forcing_and_the_truth_keeps_its_own():
    cfg = twin.TwinConfig(d=10, n_cycles=5, burn_in=1, model_forcing=7.0)
    case = twin.case(cfg)
    x = jax.numpy.asarray(twin.make_twin(twin.TwinConfig(d=10, n_cycles=5, burn_in=1)).truth[0])
    stepped = case.model(x, jax.random.key(0))
    np.testing.assert_allclose(stepped, l96.step(x, cfg.dt, 7.0), rtol=1e-6)
    assert not np.allclose(stepped, l96.step(x, cfg.dt, 8.0))
    np.testing.assert_array_equal(twin.make_twin(cfg).truth,
                                  twin.make_twin(dataclasses.replace(cfg, model_forcing=None)).truth)
    # the cache keys of twins without model error or a shock are as they were
    assert "forcing\": 7.0" not in twin.case(dataclasses.replace(cfg, model_forcing=None)).cache_key
    assert "model_forcing" not in twin.case(twin.TwinConfig()).cache_key
    assert "model_forcing" in case.cache_key


@pytest.mark.parametrize("bad, match", [
    (dict(shock_cycle=5), "needs a shock_forcing"),
    (dict(shock_forcing=9.0, shock_cycle=20), "never happen"),
    (dict(shock_forcing=9.0, shock_cycle=0), "shock_cycle"),
    (dict(shock_forcing=float("nan")), "shock_forcing"),
    (dict(model_forcing=float("inf")), "model_forcing"),
    (dict(model_forcing="7"), "model_forcing"),
])
def test_a_bad_shock_or_model_forcing_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        twin.TwinConfig(n_cycles=20, burn_in=2, **bad)


def test_the_climate_is_measured_where_it_is_not_known():
    # the measurement recovers the known value at F = 8 (3.6, chapter 1; 3.63 in the
    # literature) when asked just beside it
    assert twin.climate_std(8.0 + 1e-9) == pytest.approx(twin.CLIMATE_STD_F8, abs=0.06)
    assert twin.climate_std(8.0) == twin.CLIMATE_STD_F8
    assert twin.climate_std(6.0) < twin.CLIMATE_STD_F8 < twin.climate_std(12.0)
    assert twin.climate_std(3.0) is None
    # a shocked twin counts lost track against the larger of its two climates
    shocked = twin.case(twin.TwinConfig(n_cycles=20, burn_in=2, shock_forcing=12.0))
    assert shocked.climate_std == twin.climate_std(12.0)


# ---------------------------------------------------------------------------------------
# the regimes' filters and grids


def test_every_regime_builds_and_its_filters_have_grids():
    for name in regimes.REGIMES:
        cfg = regimes.config(name, d=40, n_members=20, n_cycles=250, burn_in=80)
        for expensive in (False, True):
            labels = [m.label for m in regimes.methods(name, cfg, ensf_steps=10,
                                                       expensive=expensive)]
            assert set(labels) <= set(regimes.COLUMNS)
            assert len(labels) == len(set(labels))
            assert ("IEnKF" in labels) == (cfg.obs == "arctan" and expensive)
            assert ("LETKF-tan" in labels) == (cfg.obs == "arctan")
            assert ("EnSF-LR" in labels) == (cfg.observed_fraction < 1.0)
    assert regimes.config("linear, 8 members", d=40, n_members=20, n_cycles=250,
                          burn_in=80).n_members == 8
    with pytest.raises(ValueError, match="unknown regime"):
        regimes.config("linear, 9 members", d=40, n_members=20, n_cycles=250, burn_in=80)
    with pytest.raises(ValueError, match="unknown regime 'linear, 9 members'"):
        regimes.methods("linear, 9 members", twin.TwinConfig(), ensf_steps=10,
                        expensive=False)


def test_a_wrong_model_offers_every_filter_model_error_and_the_perfect_model_grids_stay():
    for name in ("linear, wrong forcing", "linear, forcing shock"):
        cfg = regimes.config(name, d=40, n_members=20, n_cycles=250, burn_in=80)
        for m in regimes.methods(name, cfg, ensf_steps=10, expensive=True):
            assert 0.0 in m.grid["model_error"] and max(m.grid["model_error"]) > 0
    # chapter 3's grids in the regimes it shares with chapter 3 (its cache is reused)
    assert regimes.GRIDS["linear"]["LETKF"] == {"inflation": (1.0, 1.02, 1.05),
                                                "radius": (4.0, 8.0)}
    assert set(regimes.RECORDED) <= set(regimes.REGIMES)


# ---------------------------------------------------------------------------------------
# the record


def _tiny_stage(tier, name):
    cfg = twin.TwinConfig(d=8, n_cycles=12, burn_in=2, n_members=6, model_forcing=7.0)
    return cfg, dict(
        methods=[compare.Method("LETKF", "LETKF", grid={"inflation": (1.0, 1.1)},
                                knobs={"radius": 2.0}, widen=0)],
        tuning_seeds=(101,), evaluation_seeds=range(3), close_call_seeds=range(3, 3),
        reference="LETKF")


def test_the_record_keeps_a_comparison_returns_it_and_refuses_another(tmp_path, monkeypatch):
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(regimes, "stage", _tiny_stage)
    path = tmp_path / "regimes.json"
    first = regimes.record_comparison(path, "lab", "linear, wrong forcing", progress=False)
    stored = json.loads(path.read_text())["comparisons"]["lab: linear, wrong forcing"]
    assert stored["config"]["model_forcing"] == 7.0
    assert {"machine", "versions", "started", "ended", "record", "methods"} <= set(stored)
    # a finished entry is returned as stored: the harness is not called again
    monkeypatch.setattr(compare, "compare", lambda *a, **k: pytest.fail("ran again"))
    again = regimes.record_comparison(path, "lab", "linear, wrong forcing", progress=False)
    assert again.table() == first.table()
    got = regimes.recorded(path)
    assert list(got) == [("lab", "linear, wrong forcing")]
    comparison, cfg = got["lab", "linear, wrong forcing"]
    assert cfg.model_forcing == 7.0 and comparison.table() == first.table()
    assert regimes.machines(path) and all("cores" in m for m in regimes.machines(path))
    cells = regimes.map_cells(comparison, cfg)
    assert cells["LETKF"] == (1.0, 1.0, 1.0)
    assert cells["EnSF-LR"].startswith("= EnSF") and cells["IEnKF"].startswith("= LETKF")
    # the same name with other settings is refused, not overwritten
    monkeypatch.setattr(regimes, "stage", lambda tier, name: (
        dataclasses.replace(_tiny_stage(tier, name)[0], n_members=7),
        _tiny_stage(tier, name)[1]))
    with pytest.raises(ValueError, match=r"other settings \(config\.n_members differ"):
        regimes.record_comparison(path, "lab", "linear, wrong forcing", progress=False)


def test_a_file_that_is_not_a_regime_record_is_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"stages": {}}))
    with pytest.raises(ValueError, match="not a record of chapter 8's regimes"):
        regimes.read_record(path)
    assert regimes.read_record(tmp_path / "none.json") == {"comparisons": {}}
    assert records.read_sweep(tmp_path / "none.json", ("a", "b"), "x") == {"a": {}, "b": {}}
    with pytest.raises(ValueError, match="unknown tier"):
        regimes.stage("huge", "linear, 8 members")


def test_the_record_script_lists_its_stages_and_refuses_an_unknown_one(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "record_regimes.py"
    spec = importlib.util.spec_from_file_location("record_regimes", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert len(script.stages()) == len(regimes.TIERS) * len(regimes.RECORDED)
    assert script.stages()[0].startswith("lab: ")  # the cheap tier first
    script.main(["--list", "--record", str(tmp_path / "none.json")])
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(script.stages()) and all(line.endswith("not run") for line in listed)
    with pytest.raises(SystemExit):
        script.main(["--only", "lab: linear, 9 members", "--record", str(tmp_path / "r.json")])


def test_the_readme_states_the_regime_records_numbers():
    """The README's paragraph on the recorded regimes holds the record's numbers of both
    tiers, each formatted as the README prints it (the minus sign as U+2212), and says how
    much of the paper tier is recorded."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    text = readme[readme.index("**Where Kalman filters should struggle**"):]
    text = " ".join(text[:text.index("\n\n")].split())
    got = regimes.recorded(root / "book" / "paper_scale" / "sweeps" / "regimes.json")
    fmt = lambda v: f"{v:+.3f}".replace("-", "−")
    lab_part, paper_part = text.split("At the paper's scale")
    plain_better = n_lab = 0
    for (tier, name), (c, cfg) in got.items():
        kb = regimes.best_of_family(c, regimes.KALMAN)
        sb = regimes.best_of_family(c, regimes.SCORE)
        d = c.difference(sb, kb)
        part = lab_part if tier == "lab" else paper_part
        assert (f"{sb} minus {kb} {fmt(d.estimate)} [{fmt(d.low)}, {fmt(d.high)}]"
                in part), (tier, name, sb, kb, d)
        if tier == "lab":
            n_lab += 1
            plain_better += c.outcome("EnSF", kb) == "better"
    assert f"better than the best Kalman filter in {plain_better} of the {n_lab}" in lab_part
    c, _ = got["lab", "arctan, every 50 steps"]
    lost = [c.n_lost(m) for m in ("IEnKF", "LETKF-tan")]
    n = len(c.evaluation_seeds)
    assert f"lost track of {lost[0]} and {lost[1]} of {n} twins" in lab_part
    # the paper tier is recorded a stage at a time: the README says how far it has come
    n_paper = sum(tier == "paper" for tier, _ in got)
    assert (f"the other {len(regimes.RECORDED) - n_paper} regimes' paper tier is not run yet"
            in paper_part)
