"""Paper scale: thinned training windows, the cost model's counting, and the committed
records of paper-scale runs (their parameters are ``--scale paper``'s in the current code,
and the page "The paper's numbers beside ours" shows their numbers, not others)."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from scoreda import cache as cache_lib
from scoreda import assimilate, chapters
from scoreda.experiments import compare, cost, records, twin
from scoreda.surrogates import data, lstm, train

ROOT = Path(__file__).resolve().parent.parent
RECORDS = ROOT / "book" / "paper_scale"
PAGE = ROOT / "notebooks" / "09_paper_numbers.ipynb"


@pytest.mark.slow
def test_a_window_stride_draws_only_the_thinned_windows_and_keeps_old_cache_keys():
    config = data.Lorenz96Data(n_trajectories=6, n_steps=80)
    clean = data.make(config)
    window, stride = 5, 10
    # targets NaN wherever a window starting at a step that is not a multiple of the
    # stride would read them: a training that draws such a window gets a NaN loss
    steps = np.arange(clean.targets.shape[1])
    poisoned = np.where(((steps - window) % stride != 0)[None, :, None], np.nan, clean.targets)
    trajectories = data.Trajectories(clean.inputs, poisoned)
    model = lstm.LSTMConfig(d=20, window=window, hidden=8, layers=1)
    run = lambda s: train.train(config, model, train.TrainConfig(epochs=1, batch_size=32,
                                samples_per_epoch=256, window_stride=s), cache=False,
                                progress=False, trajectories=trajectories)
    assert np.isfinite(run(stride).history[0]["train_loss"])
    assert np.isnan(run(1).history[0]["train_loss"])
    # the default stride leaves the key of an entry trained before the field existed
    plain = train.TrainConfig()
    described = {k: v for k, v in dataclasses.asdict(plain).items() if k != "window_stride"}
    key, hashed = cache_lib.config_key(plain)
    assert hashed["TrainConfig"] == described
    assert cache_lib.config_key(dataclasses.replace(plain, window_stride=10))[0] != key
    with pytest.raises(ValueError, match="window_stride"):
        train.TrainConfig(window_stride=0)


@pytest.mark.slow
def test_the_cost_model_counts_the_cycles_the_harness_runs(tmp_path, monkeypatch):
    """Padded batches included: tuning runs go in batches of the number of reported trials,
    a one-point grid is still tuned, a fixed method is not."""
    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    case = twin.case(twin.TwinConfig(d=20, n_cycles=30, burn_in=5, n_members=10))
    # widen=0: the cost model counts the given grids (widening depends on the scores)
    methods = [compare.Method("ETKF", "ETKF", grid={"inflation": (1.0, 1.05, 1.3)}, widen=0),
               compare.Method("ETKF one point", "ETKF", grid={"inflation": (1.1,)}),
               compare.Method("ETKF fixed", "ETKF", knobs={"inflation": 1.3}, grid={}),
               compare.Method("LETKF", "LETKF", grid={"inflation": (1.0, 1.1), "radius": (2.0, 4.0)},
                              widen=0)]
    rows = []
    real = assimilate.cycle_batch
    monkeypatch.setattr(assimilate, "cycle_batch",
                        lambda keys, *a, **k: rows.append(keys.shape[0]) or real(keys, *a, **k))
    compare.compare(case, methods, tuning_seeds=[101, 102], evaluation_seeds=range(4), progress=False)
    monkeypatch.setattr(cost, "analysis_seconds", lambda *a, **k: 0.004)
    work = [cost.MethodWork("ETKF", (), 3), cost.MethodWork("ETKF", (), 1), cost.MethodWork("ETKF", (), 0),
            cost.MethodWork("LETKF", (), 4, static_groups=2)]
    counted = [cost.tuning_runs(m, n_tuning=2, batch=4) for m in work]
    assert counted == [8, 4, 0, 8]  # 6 runs in two batches of 4; 2 in one; none; 2 x (2 x 2)
    assert sum(rows) == sum(counted) + 4 * len(methods)
    seconds = cost.comparison_seconds(work, n_members=10, d=20, n_steps=30, n_tuning=2,
                                      n_trials=4, forecast=0.001)
    assert seconds == pytest.approx(sum(rows) * 30 * (0.001 + cost.OBSERVED_SHARE * 0.004))


def test_the_close_call_price_is_zero_without_trials_and_refuses_a_bad_count(monkeypatch):
    monkeypatch.setattr(cost, "analysis_seconds", lambda *a, **k: 0.004)
    work = [cost.MethodWork("ETKF", (), 3), cost.MethodWork("LETKF", (), 4, static_groups=2)]
    sizes = dict(n_members=10, d=20, n_steps=30, forecast=0.001)
    assert cost.close_call_seconds(work, n_close=0, **sizes) == 0.0
    # two methods, five runs each, no tuning: 10 runs of 30 steps
    assert cost.close_call_seconds(work, n_close=5, **sizes) == pytest.approx(
        10 * 30 * (0.001 + cost.OBSERVED_SHARE * 0.004))
    for bad in (-1, 2.5, True, "3"):
        with pytest.raises(ValueError, match="n_close"):
            cost.close_call_seconds(work, n_close=bad, **sizes)


def test_a_record_is_refused_unless_finished_and_whole(tmp_path):
    folder = tmp_path / "05_kdv_experiment"
    folder.mkdir()
    run = {"notebook": "05_kdv_experiment.ipynb", "parameters": {"scale": "paper"},
           "versions": {"scoreda": "x", "jax": "y"}, "effective_parameters": {}, "machine": {},
           "command": "scoreda reproduce --scale paper 05", "status": "running",
           "started": "2026-11-29T10:00:00+00:00", "ended": "2026-11-29T11:30:00+00:00",
           "earlier_attempts": [{"started": "2026-11-28T10:00:00+00:00",
                                 "ended": "2026-11-28T10:30:00+00:00", "status": "interrupted"}]}
    (folder / "run.json").write_text(json.dumps(run))
    assert records.check(folder) == [f"{folder}: no results.json"]
    results = {k: run[k] for k in ("notebook", "parameters", "versions")} | {"values": {"n_cases": 4}}
    (folder / "results.json").write_text(json.dumps(results))
    with pytest.raises(ValueError, match="'running'"):
        records.load(tmp_path)
    (folder / "run.json").write_text(json.dumps(run | {"status": "completed"}))
    record = records.load(tmp_path)["05"]
    assert record.values == {"n_cases": 4}
    assert record.wall_seconds() == pytest.approx(2 * 3600)  # 1.5 h now, 0.5 h before
    assert record.summary()["attempts"] == 2


def _committed():
    """The chapters' record folders (not the sweeps, which their own modules check)."""
    if not RECORDS.is_dir():
        return []
    return sorted(p for p in RECORDS.iterdir() if p.is_dir() and p.name != records.SWEEPS)


def test_paper_scale_records_are_committed():
    assert _committed(), f"no paper-scale record in {RECORDS}"


@pytest.mark.parametrize("folder", _committed(), ids=lambda p: p.name)
def test_a_record_ran_with_the_current_paper_scale(folder):
    assert records.check(folder) == []
    run = json.loads((folder / "run.json").read_text())
    notebook = ROOT / "notebooks" / run["notebook"]
    assert run["parameters"] == {"scale": "paper"}
    assert run["versions"].get("commit"), "the record names no commit"
    # a record may predate the chapter's current --scale paper (it is what ran then), but the
    # page that shows it must name every parameter that differs
    now, ran = chapters.effective_parameters(notebook, "paper"), run["effective_parameters"]
    differ = sorted(k for k in set(now) | set(ran) if k not in now or k not in ran or now[k] != ran[k])
    shown = records.book_values(PAGE).get(f"stale_{run['notebook'][:2]}")
    assert shown == (", ".join(differ) or "none"), \
        f"{folder.name}: chapter 9 shows {shown!r} as the parameters changed since the record, not {differ}"


def test_the_page_shows_the_records_numbers():
    found = records.load(RECORDS)
    glued = records.book_values(PAGE)
    shown = {name: value for name, value in glued.items() if name.startswith("rec_")}
    assert shown, "the page shows no number from a record"
    for name, value in shown.items():
        _, chapter, key = name.split("_", 2)
        assert chapter in found, f"{name}: no record of chapter {chapter}"
        expected = found[chapter].values[key]
        if isinstance(expected, float):
            assert value == pytest.approx(expected, rel=1e-12, nan_ok=True), name
        else:
            assert value == expected, name
    # and every record the page could show is shown
    assert {name.split("_", 2)[1] for name in shown} == set(found)


@pytest.mark.slow
def test_a_calibration_is_measured_once_per_machine(tmp_path, monkeypatch):
    """The dry run's timings are kept under the cache: a second process (a fresh wrapper
    here) reads the stored value instead of measuring; a damaged entry is measured again;
    a system argument is keyed by its name (its functions' reprs differ between processes)."""
    from scoreda.experiments import lorenz96

    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    monkeypatch.setattr(cost, "machine_is_busy", lambda: False)
    calls = []

    def timing(system, n):
        calls.append(n)
        return 0.25 * n

    first, second = cost.remembered(timing), cost.remembered(timing)
    assert first(lorenz96.SYSTEM, 2) == 0.5 and first(lorenz96.SYSTEM, 2) == 0.5
    assert second(lorenz96.SYSTEM._replace(true_step=lambda x: x), 2) == 0.5
    assert calls == [2]
    (entry,) = (tmp_path / "calibration").iterdir()
    assert "['Lorenz-96', 2]" in json.loads(entry.read_text())["key"]
    entry.write_text("{trunc")
    assert cost.remembered(timing)(lorenz96.SYSTEM, 2) == 0.5 and calls == [2, 2]
    assert cost.training_rate.__name__ == "training_rate" and "samples per second" in cost.training_rate.__doc__


def test_a_calibration_measured_on_a_busy_machine_is_not_kept(tmp_path, monkeypatch):
    """A rate measured while other work ran would price every later dry run too slow: it is
    used once and measured again next time. The load (os.getloadavg) is read once per
    process, before the first measurement, so the calibrations' own load does not count."""
    import os

    monkeypatch.setenv("SCOREDA_CACHE", str(tmp_path))
    calls, loads = [], []

    def timing(n):
        calls.append(n)
        return 1.0

    def load_average():
        loads.append(1)
        return (1e6, 0.0, 0.0)

    cost.machine_is_busy.cache_clear()
    monkeypatch.setattr(os, "getloadavg", load_average)
    assert cost.remembered(timing)(3) == 1.0 and cost.remembered(timing)(3) == 1.0
    assert calls == [3, 3] and not (tmp_path / "calibration").exists() and len(loads) == 1
    cost.machine_is_busy.cache_clear()  # a new process on an idle machine
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0))
    assert cost.remembered(timing)(3) == 1.0 and cost.remembered(timing)(3) == 1.0
    assert calls == [3, 3, 3] and len(list((tmp_path / "calibration").iterdir())) == 1
    cost.machine_is_busy.cache_clear()  # no load average (Windows): counted as idle
    monkeypatch.delattr(os, "getloadavg")
    assert cost.machine_is_busy() is False
    cost.machine_is_busy.cache_clear()


def test_elapsed_seconds_reads_the_records_times_with_their_offsets():
    assert records.elapsed_seconds("2026-12-07T21:52:00+00:00", "2026-12-07T22:00:30+00:00") == 510
    # the same instant written in another zone is no time at all
    assert records.elapsed_seconds("2026-12-07T21:52:00+00:00", "2026-12-07T22:52:00+01:00") == 0
