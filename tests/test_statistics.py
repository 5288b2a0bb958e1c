"""The harness's statistics against references: the Wilcoxon interval is the set of shifts the
exact signed-rank test (scipy.stats.wilcoxon) does not reject, the Hodges-Lehmann estimate
zeroes the signed-rank statistic's departure from its null mean, diverged trials are losses,
the bootstrap interval agrees with scipy.stats.bootstrap, Holm with a hand computation, and
the grid widening finds a known interior optimum."""

import numpy as np
import pytest
from scipy import stats

from scoreda import cache as cache_lib
from scoreda.experiments import compare, statistics


def signed_rank(delta):
    """T+: the sum of the ranks of |delta| over the positive differences (no ties)."""
    ranks = stats.rankdata(np.abs(delta))
    return float(np.sum(ranks[delta > 0]))


@pytest.mark.parametrize("n", [6, 10, 20, 40])
def test_the_interval_inverts_the_exact_signed_rank_test(n):
    rng = np.random.default_rng(n)
    delta = rng.standard_t(2, n) + 0.3  # heavy-tailed differences
    diff = statistics.paired_difference(delta, np.zeros(n))
    for shift, rejected in [(diff.low + 1e-9, False), (diff.high - 1e-9, False),
                            (diff.low - 1e-7, True), (diff.high + 1e-7, True)]:
        p = stats.wilcoxon(delta - shift, method="exact").pvalue
        assert (p <= 0.05) == rejected, (shift, p)
    # the p-value of 0 is the exact test's, and the interval excludes 0 exactly when p <= 0.05
    assert diff.p == pytest.approx(stats.wilcoxon(delta, method="exact").pvalue, rel=1e-12)
    assert diff.significant == (diff.p <= 0.05)


def test_the_hodges_lehmann_estimate_centres_the_signed_rank_statistic():
    # at the estimate, T+ of the shifted differences sits at its null mean n(n+1)/4 (within
    # one Walsh average's step): the estimate is the shift the test finds most central
    rng = np.random.default_rng(3)
    delta = rng.lognormal(0.0, 1.0, 15) - 1.0
    est = statistics.paired_difference(delta, np.zeros(15)).estimate
    centre = 15 * 16 / 4
    assert signed_rank(delta - est - 1e-9) >= centre >= signed_rank(delta - est + 1e-9)
    # and for a symmetric sample it is the centre of symmetry
    sym = np.array([-3.0, -1.0, 0.5, 2.0, 3.5, 5.0, 7.0])  # symmetric about 2
    assert statistics.paired_difference(sym, np.zeros(7)).estimate == pytest.approx(2.0)


def test_a_diverged_trial_is_a_loss_never_dropped():
    rng = np.random.default_rng(1)
    a, b = rng.normal(1.0, 0.1, 12), rng.normal(1.1, 0.1, 12)
    a_div = a.copy()
    a_div[0] = np.nan  # a diverged in trial 0
    diff = statistics.paired_difference(a_div, b)
    assert diff.n == 12 and diff.n_diverged == 1
    # the same as a trial where a was worse than anything else (ranks are all that count)
    worse = a.copy()
    worse[0] = 100.0
    big = statistics.paired_difference(worse, b)
    assert (diff.estimate, diff.low, diff.p) == pytest.approx((big.estimate, big.low, big.p))
    assert diff.high == np.inf or diff.high == pytest.approx(big.high)
    # both diverged in a trial: a tie there; b diverged: a loss for b
    both = b.copy()
    both[0] = np.inf
    assert statistics.paired_difference(a_div, both).n_diverged == 0
    assert statistics.paired_difference(b, a_div).estimate == pytest.approx(-diff.estimate)
    # diverged in every trial: the estimate and interval are infinite, the loss certain
    assert statistics.paired_difference(np.full(8, np.nan), b[:8])[:3] == (np.inf, np.inf, np.inf)


def test_small_samples_have_no_interval():
    # with n <= 5 even the most extreme signed-rank outcome has p = 2/2^5 > 0.05
    diff = statistics.paired_difference(np.arange(1.0, 6.0), np.zeros(5))
    assert (diff.low, diff.high) == (-np.inf, np.inf) and not diff.significant
    assert statistics.paired_difference(np.arange(1.0, 7.0), np.zeros(6)).significant


def test_the_bootstrap_interval_is_scipys_and_stays_positive():
    rng = np.random.default_rng(2)
    x = rng.lognormal(0.0, 1.5, 12)  # positive and heavy-tailed: t would reach below 0
    mean, low, high = statistics.mean_interval(x)
    assert mean == pytest.approx(x.mean()) and x.min() <= low < mean < high <= x.max()
    ref = stats.bootstrap((x,), np.mean, method="percentile", n_resamples=100_000,
                          random_state=np.random.default_rng(0)).confidence_interval
    # Monte Carlo error of 10,000 resamples: a few per cent of the interval's width
    width = ref.high - ref.low
    assert abs(low - ref.low) < 0.05 * width and abs(high - ref.high) < 0.05 * width
    skewed = np.r_[np.full(11, 0.5), 40.0]  # one trial far out: t reaches below 0
    t_low = skewed.mean() - stats.t.ppf(0.975, 11) * skewed.std(ddof=1) / np.sqrt(12)
    assert t_low < 0 < 0.5 <= statistics.mean_interval(skewed)[1]
    assert statistics.mean_interval([np.nan, 2.0])[0] == 2.0


def test_holm_against_a_hand_computation():
    p = [0.01, 0.04, 0.03, np.nan, 0.2, 0.005]
    # sorted 0.005, 0.01, 0.03, 0.04, 0.2 (m = 5): 0.025, 0.04, 0.09, 0.08 -> 0.09, 0.2
    np.testing.assert_allclose(statistics.holm(p), [0.04, 0.09, 0.09, np.nan, 0.2, 0.025])
    assert statistics.holm([0.6, 0.7]).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        statistics.holm([1.5])


def test_refusals():
    with pytest.raises(ValueError, match="one shape"):
        statistics.paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="level"):
        statistics.paired_difference([1.0, 2.0], [1.0, 3.0], level=95)


def quadratic_scorer(optimum, calls):
    """Scores a point by (log10 eps_b - log10 optimum)^2 + 1 on 3 'trials' (NaN past 5)."""
    def score(points):
        calls.append([p["eps_b"] for p in points])
        for p in points:
            value = (np.log10(p["eps_b"]) - np.log10(optimum)) ** 2 + 1.0
            yield np.full(3, np.nan if p["eps_b"] > 5 else value), 100.0
    return score


def test_widening_reaches_a_known_interior_optimum():
    # optimum at 0.4, grid 0.005 .. 0.1: two rounds add 0.2 and 0.4; 0.4 is chosen at the
    # edge, so a third round adds 0.8 and 0.4 is then interior
    calls = []
    method = compare.Method("EnSF", "EnSF", grid={"eps_b": (0.005, 0.01, 0.025, 0.05, 0.1)}, widen=3)
    tuning = compare.search(method, quadratic_scorer(0.4, calls))
    assert tuning.chosen["eps_b"] == 0.4
    assert tuning.grid["eps_b"] == (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8)
    assert calls[1:] == [[0.2], [0.4], [0.8]]  # only the new points are scored
    compare.check_tuning(method, tuning)
    # limited rounds stop at the edge (and the table says so)
    short = compare.search(dataclasses_replace(method, widen=1), quadratic_scorer(0.4, []))
    assert short.chosen["eps_b"] == 0.2 and max(short.grid["eps_b"]) == 0.2
    # no widening past a knob's domain: inflation 1.0 at the lower edge stays the edge
    infl = compare.Method("ETKF", "ETKF", grid={"inflation": (1.0, 1.05, 1.1)})
    flat = compare.search(infl, lambda pts: ((np.full(3, p["inflation"]), 100.0) for p in pts))
    assert flat.chosen["inflation"] == 1.0 and flat.grid["inflation"] == (1.0, 1.05, 1.1)


def test_tuning_scores_count_divergences():
    rmse = np.array([[1.0, 1.2, np.nan], [1.5, 1.6, 1.7], [np.nan] * 3])
    np.testing.assert_allclose(compare.tuning_scores(rmse), [(1.0 + 1.2 + 1.7) / 3, 1.6, 1.7])
    np.testing.assert_allclose(compare.tuning_scores(rmse, climate_std=3.6),
                               [(1.0 + 1.2 + 3.6) / 3, 1.6, 3.6])
    assert np.all(np.isinf(compare.tuning_scores(np.full((2, 3), np.nan))))


def dataclasses_replace(method, **changes):
    import dataclasses
    return dataclasses.replace(method, **changes)


def test_a_family_of_verdicts_is_holm_corrected():
    family = statistics.Family()
    rng = np.random.default_rng(5)
    clear = family.add("clear", statistics.paired_difference(rng.normal(1.0, 0.1, 12), np.zeros(12)))
    family.add("none", statistics.paired_difference(rng.normal(0.0, 1.0, 12), np.zeros(12)))
    family.add("better", statistics.paired_difference(rng.normal(-1.0, 0.1, 12), np.zeros(12)))
    assert clear.p == pytest.approx(2 / 2**12)  # every pair positive: the exact test's floor
    adjusted = family.adjusted()
    assert adjusted["clear"] == pytest.approx(min(1, 3 * clear.p))
    assert family.holds() == {"clear": "worse", "none": "not significant", "better": "better"}
    assert "| clear | +" in family.table() and "3 verdicts corrected together" in family.table()
    with pytest.raises(ValueError, match="already"):
        family.add("clear", clear)
    # ten trials and 30 verdicts: 2/2^10 > 0.05/30, so nothing can hold, and the table says so
    small = statistics.Family()
    for i in range(30):
        small.add(f"v{i}", statistics.paired_difference(np.arange(1.0, 11.0), np.zeros(10)))
    assert set(small.holds().values()) == {"not significant"}
    assert "no verdict of this family can hold" in small.table()


def test_best_of_counts_diverged_trials_as_losses():
    # a method with the lowest RMSE over its 2 surviving trials, diverged in 8 of 10, is not
    # the best: its diverged trials count as the worst
    good = np.full(10, 1.0)
    fragile = np.r_[np.full(2, 0.5), np.full(8, np.nan)]
    results = {k: compare.MethodResult({}, r, r, r, r, np.zeros(3, int),
                                       np.where(np.isfinite(r), -1, 5))
               for k, r in (("good", good), ("fragile", fragile))}
    c = compare.Comparison("toy", "good", {}, {}, results, (100,), tuple(range(10)), 3.6)
    assert c.best_of(["fragile", "good"]) == "good"
    assert c.difference("fragile", "good").n_diverged == 8


@pytest.mark.slow
def test_a_widened_tuning_survives_the_cache(tmp_path, monkeypatch):
    # the cache writes JSON with sorted keys: a two-knob grid whose knobs are not in
    # alphabetical order must come back as the same tuning, not as a "damaged" entry
    import json

    from scoreda.experiments.compare import store

    method = compare.Method("EnSF mixture", "EnSF mixture",
                            grid={"kernel_var": (0.002, 0.01, 0.05), "eps_b": (0.005, 0.01, 0.05)})
    tuning = compare.search(method, lambda pts: ((np.full(3, 1 / (p["eps_b"] * p["kernel_var"])),
                                                  100.0) for p in pts))
    assert len(tuning.grid["kernel_var"]) > 3 and len(tuning.grid["eps_b"]) > 3
    path = tmp_path / "t.json"
    cache_lib.write_json(path, store.tuning_json(tuning))
    stored = json.loads(path.read_text())
    assert list(stored["grid"]) == ["eps_b", "kernel_var"]  # sorted on disk
    entry = store._Store.__new__(store._Store)
    entry.method, entry._warning, entry.tuning_path = method, UserWarning, path
    back = entry.load_tuning()
    assert back is not None and list(back.grid) == ["kernel_var", "eps_b"]
    assert back.chosen == tuning.chosen


def test_mean_rmse_and_spread_ratio_skip_diverged_trials_without_a_warning():
    """The book's columns: the mean over the trials that did not diverge (here 1.0 and 3.0),
    and NaN, silently, when every trial diverged (chapters 5 and 6 once printed
    "Mean of empty slice" under their tables)."""
    import warnings

    rmse = np.array([1.0, np.nan, 3.0])
    spread = np.array([0.5, np.nan, 1.5])
    result = compare.MethodResult({}, rmse, spread, rmse, rmse, np.zeros(3, int), np.array([-1, 7, -1]))
    assert result.mean_rmse == 2.0 and result.spread_ratio == 0.5
    lost = result._replace(rmse=np.full(3, np.nan), spread=np.full(3, np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(lost.mean_rmse) and np.isnan(lost.spread_ratio)


def test_ties_go_to_the_interior_and_the_given_grid():
    # an initial spread a stable filter forgets: 1, 3.6 and 12.96 score within 0.001%, the
    # edge 12.96 lowest by float noise. Strictly lowest picks the edge and widening chases it
    # to 46.656 (which diverges here); within 1% they tie and the interior 3.6 is chosen,
    # with nothing widened
    noise = {1.0: 0.0575312, 3.6: 0.0575308, 12.96: 0.0575305, 46.656: np.nan}
    scorer = lambda pts: ((np.full(3, noise[p["init_std"]]), 100.0) for p in pts)
    grid = {"init_std": (1.0, 3.6, 12.96)}
    strict = compare.Method("LETKF", "LETKF", grid=grid, widen=2, tie_rtol=0.0)
    chased = compare.search(strict, scorer)
    assert chased.chosen["init_std"] == 12.96 and 46.656 in chased.grid["init_std"]
    method = compare.Method("LETKF", "LETKF", grid=grid, widen=2)
    tuning = compare.search(method, scorer)
    assert tuning.chosen["init_std"] == 3.6 and tuning.grid["init_std"] == grid["init_std"]
    compare.check_tuning(method, tuning)
    # a real difference (2%) still decides, and an edge that wins is still widened
    slope = {1.0: 0.0600, 3.6: 0.0588, 12.96: 0.0576, 46.656: 0.0575}
    edge = compare.search(method, lambda pts: ((np.full(3, slope[p["init_std"]]), 100.0)
                                               for p in pts))
    # 46.656 ties 12.96 (0.2%): the given grid's value is kept, and widening stops there
    assert edge.chosen["init_std"] == 12.96 and max(edge.grid["init_std"]) == 46.656
    # fewer divergences beat a lower score within the tie (3.6: a diverged trial at the
    # worst RMSE 0.1005 scores 0.10017 < 0.1005); the strict rule takes the lower score
    rmse = {1.0: [0.1005] * 3, 3.6: [0.1, 0.1, np.nan], 12.96: [0.1005] * 3}
    scorer = lambda pts: ((np.array(rmse[p["init_std"]]), 100.0) for p in pts)
    safe = compare.search(compare.Method("LETKF", "LETKF", grid=grid, widen=0), scorer)
    assert safe.chosen["init_std"] == 1.0 and safe.diverged.tolist() == [0, 1, 0]
    assert safe.scores[1] < safe.scores[0]
    risky = compare.search(compare.Method("LETKF", "LETKF", grid=grid, widen=0, tie_rtol=0.0),
                           scorer)
    assert risky.chosen["init_std"] == 3.6


def test_the_tie_rule_is_checked():
    method = compare.Method("LETKF", "LETKF", grid={"init_std": (1.0, 3.6, 12.96)})
    scores = np.array([0.0575312, 0.0575308, 0.0575305])
    assert compare.tied(method, scores).all()
    assert list(compare.tied(method, [1.0, 1.0099, 1.0101, np.inf])) == [True, True, False, False]
    points = [{"init_std": v} for v in (1.0, 3.6, 12.96)]
    assert compare.choose(method, points, scores, np.zeros(3, int), method.tuning_grid()) == 1
    # a chosen point outside the tie is refused; one inside it passes
    off = compare.Tuning(points, np.array([1.0, 1.2, 1.5]), {"init_std": 3.6}, np.zeros(3, int))
    with pytest.raises(ValueError, match="lowest score"):
        compare.check_tuning(method, off)
    compare.check_tuning(method, off._replace(scores=np.array([1.0, 1.005, 1.5])))
    for bad in (-0.1, 1.0, True, "0.01", float("nan")):
        with pytest.raises(ValueError, match="tie_rtol"):
            compare.Method("LETKF", "LETKF", grid={"init_std": (1.0, 3.6)}, tie_rtol=bad)


def test_perfect_scores_and_a_divergence_do_not_break_the_choice():
    # every trial that ran scored exactly 0 (an exact filter on noise-free data): the point
    # with a diverged trial scores inf, the others 0 and tie; the interior one is chosen
    grid = {"inflation": (1.0, 1.1, 1.2)}
    rmse = {1.0: [0.0, 0.0, 0.0], 1.1: [0.0, 0.0, 0.0], 1.2: [0.0, np.nan, 0.0]}
    scores = compare.tuning_scores(np.array([rmse[v] for v in grid["inflation"]]))
    assert scores.tolist() == [0.0, 0.0, np.inf]
    method = compare.Method("LETKF", "LETKF", grid=grid, widen=0)
    tuning = compare.search(method, lambda pts: ((np.array(rmse[p["inflation"]]), 100.0)
                                                 for p in pts))
    assert tuning.chosen["inflation"] == 1.1
    # no finite score at all: the point with the fewest divergences, then the interior
    points = [{"inflation": v} for v in grid["inflation"]]
    assert compare.choose(method, points, np.full(3, np.inf), np.array([2, 1, 1]),
                          method.tuning_grid()) == 1


def test_the_edge_mark_is_for_numeric_axes_only():
    # a string axis has no edge, and an axis holding None beside a number has no order:
    # neither is marked (the table used to take min() of the mixed axis and raise)
    method = compare.Method("EnSF", "EnSF", widen=0,
                            grid={"integrator": ("euler", "exponential"), "clip": (None, 3.0),
                                  "eps_b": (0.01, 0.03)})
    score = lambda p: 1.0 + (p["integrator"] == "euler") + (p["clip"] is None) + p["eps_b"]
    tuning = compare.search(method, lambda pts: ((np.full(3, score(p)), 100.0) for p in pts))
    assert tuning.chosen == {"integrator": "exponential", "clip": 3.0, "eps_b": 0.01} | {
        k: v for k, v in tuning.chosen.items() if k not in ("integrator", "clip", "eps_b")}
    ones = np.ones(10)
    result = compare.MethodResult(tuning.chosen, ones, ones, ones, ones[:5], np.zeros(3, int),
                                  np.full(10, -1))
    table = compare.Comparison("toy", "EnSF", {"EnSF": method}, {"EnSF": tuning},
                               {"EnSF": result}, (100, 101, 102), tuple(range(10))).table()
    assert "integrator exponential, clip 3, eps_b 0.01 †" in table


def test_a_close_call_is_an_interval_nearer_to_zero_than_its_half_width():
    D = lambda low, high, n=10: statistics.Difference((low + high) / 2, low, high, n, 0.01)
    assert D(0.1, 0.5).close_call                  # excludes 0 by 0.1, half-width 0.2
    assert not D(0.4, 0.6).close_call              # by 0.4, half-width 0.1
    assert not D(-0.6, -0.4).close_call
    assert D(-0.5, -0.1).close_call
    assert D(-0.1, 0.3).close_call                 # holds 0: distance 0
    assert not D(0.25, 0.75).close_call            # by exactly the half-width: not under it
    assert not D(4.794, np.inf).close_call         # decided by diverged trials
    assert D(-np.inf, 0.3).close_call              # holds 0
    assert D(0.4, 0.6, n=1).close_call             # one trial decides nothing
    # from data: ten paired trials 1.0 apart with a little noise are no close call
    rng = np.random.default_rng(0)
    a = rng.normal(2.0, 0.1, 10)
    assert not statistics.paired_difference(a + 1.0 + rng.normal(0, 0.05, 10), a).close_call
    assert statistics.paired_difference(a + rng.normal(0, 0.05, 10), a).close_call


def _toy_comparison(rmse_by_label, reference):
    results = {k: compare.MethodResult({}, r, r, r, r, np.zeros(3, int),
                                       np.where(np.isfinite(r), -1, 5))
               for k, r in rmse_by_label.items()}
    return compare.Comparison("toy", reference, {}, {}, results, (100,),
                              tuple(range(len(next(iter(rmse_by_label.values()))))))


def test_a_tally_counts_each_verdict_of_its_comparisons():
    """Three toy cases whose verdicts are known by construction: "a" 0.5 below "b" in every
    trial (better), 0.5 above (worse), and the same plus noise around 0 (no difference);
    a reference given as a function of the comparison picks it per case."""
    rng = np.random.default_rng(0)
    base = 1.0 + 0.1 * rng.random(12)
    noise = 0.01 * rng.standard_normal(12)
    cases = [_toy_comparison({"a": base - 0.5, "b": base}, "b"),
             _toy_comparison({"a": base + 0.5, "b": base}, "b"),
             _toy_comparison({"a": base + noise, "b": base}, "b")]
    assert [c.outcome("a", "b") for c in cases] == ["better", "worse",
                                                   "no significant difference"]
    assert compare.tally(cases, "a", "b") == {"better": 1, "worse": 1,
                                              "no significant difference": 1,
                                              "not comparable": 0}
    assert compare.tally(cases[:2], "a", lambda c: c.reference) == {
        "better": 1, "worse": 1, "no significant difference": 0, "not comparable": 0}
    assert compare.tally([], "a", "b") == dict.fromkeys(
        compare.OUTCOMES + ("not comparable",), 0)
    one = _toy_comparison({"a": np.array([0.5]), "b": np.array([1.0])}, "b")
    assert compare.tally([one], "a", "b")["not comparable"] == 1


def test_an_interval_read_on_its_own_gives_the_harness_verdict():
    assert compare.interval_outcome(-0.3, -0.1) == "better"
    assert compare.interval_outcome(0.1, np.inf) == "worse"
    assert compare.interval_outcome(-0.1, 0.2) == "no significant difference"
    assert compare.interval_outcome(-0.1, 0.0) == "no significant difference"
    assert compare.interval_outcome(np.nan, 0.2) == "not comparable"
    with pytest.raises(ValueError, match="low <= high"):
        compare.interval_outcome(0.2, -0.1)
    for bad in (None, True, "0.1", np.array([0.1, 0.2])):
        with pytest.raises(ValueError, match="must be a number"):
            compare.interval_outcome(bad, 0.3)
    # the same words as Comparison.outcome on the same paired data
    rng = np.random.default_rng(1)
    for shift in (-0.4, 0.0, 0.4):
        b = 1.0 + rng.random(10)
        c = _toy_comparison({"a": b + shift + 0.02 * rng.standard_normal(10), "b": b}, "b")
        diff = c.difference("a", "b")
        assert compare.interval_outcome(diff.low, diff.high) == c.outcome("a", "b")


def test_a_markdown_table_has_one_line_per_row_and_refuses_ragged_rows():
    text = compare.markdown_table(["x", "y"], [[1, "a"], [2.5, None]])
    assert text.split("\n") == ["| x | y |", "|---|---|", "| 1 | a |", "| 2.5 | None |"]
    assert compare.markdown_table(["x"], []) == "| x |\n|---|"
    with pytest.raises(ValueError, match="row 1 has 1 cells, the header 2"):
        compare.markdown_table(["x", "y"], [[1, 2], [3]])
    # rows from a generator are all kept; a pipe or a line break cannot break the table
    rows = ((i, f"a|b\nc{i}") for i in range(2))
    assert compare.markdown_table(["i", "s"], rows).split("\n")[2:] == [
        "| 0 | a\\|b c0 |", "| 1 | a\\|b c1 |"]
    with pytest.raises(ValueError, match="header must be a sequence"):
        compare.markdown_table("xy", [[1, 2]])


def test_a_refused_step_is_halved_and_a_bound_is_not_an_edge():
    # eps_b must stay below 1: from 0.8 (0.5 beside it) the step 1.28 and its half 1.04 are
    # refused, 0.92 is scored; an optimum at 0.95 is then approached by halvings
    method = compare.Method("EnSF", "EnSF", grid={"eps_b": (0.2, 0.5, 0.8)}, widen=2)
    grid = method.tuning_grid()
    assert compare.step_beyond(method, grid, {"eps_b": 0.8}, "eps_b") == 0.92
    assert compare.step_beyond(method, grid, {"eps_b": 0.5}, "eps_b") is None  # interior
    assert compare.step_beyond(method, grid, {"eps_b": 0.2}, "eps_b") == 0.08
    calls = []

    def score(points):
        for p in points:
            calls.append(p["eps_b"])
            yield np.full(3, 1.0 + abs(p["eps_b"] - 0.95)), 100.0
    tuning = compare.search(method, score)
    # from 0.92 (0.8 beside it, less than 1.5 apart) the step is their difference: 1.04 is
    # refused, 0.98 scored; it ties 0.92 (both 0.03 from the optimum), and a tie goes to
    # the interior
    assert calls[3:] == [0.92, 0.98]
    assert tuning.chosen["eps_b"] == 0.92 and tuning.grid["eps_b"] == (0.2, 0.5, 0.8, 0.92, 0.98)
    compare.check_tuning(method, tuning)
    # bounds: inflation 1 (no deflation) and an additive knob at 0 have nothing beyond them
    letkf = compare.Method("LETKF", "LETKF", grid={"inflation": (1.0, 1.1),
                                                   "model_error": (0.0, 0.1)}, widen=0)
    g = letkf.tuning_grid()
    at_floor = {"inflation": 1.0, "model_error": 0.0}
    assert compare.step_beyond(letkf, g, at_floor, "inflation") is None
    assert compare.step_beyond(letkf, g, at_floor, "model_error") is None
    assert compare.at_bound_of(letkf, g, at_floor, "inflation")
    assert compare.at_bound_of(letkf, g, at_floor, "model_error")
    at_top = {"inflation": 1.1, "model_error": 0.1}
    assert compare.step_beyond(letkf, g, at_top, "inflation") == pytest.approx(1.2)
    assert not compare.at_bound_of(letkf, g, at_top, "model_error")
    with pytest.raises(ValueError, match="'radius' must be an axis"):
        compare.step_beyond(letkf, g, at_floor, "radius")
    with pytest.raises(ValueError, match="knob of the chosen point"):
        compare.step_beyond(letkf, g, {"inflation": 1.0}, "model_error")
    # an integer axis is never widened, and its edge is an edge, not a bound
    steps = compare.Method("EnSF", "EnSF", grid={"n_steps": (50, 100)}, widen=0)
    assert not compare.at_bound_of(steps, steps.tuning_grid(), {"n_steps": 50}, "n_steps")


def test_the_table_marks_a_bound_apart_from_an_edge():
    # the LETKF best at inflation 1 (a bound) and the largest model error (an edge, no
    # widening round left): ⊥ and †, each explained under the table
    method = compare.Method("LETKF", "LETKF", widen=0,
                            grid={"inflation": (1.0, 1.1), "model_error": (0.0, 0.1)})
    score = lambda p: 1.0 + p["inflation"] - p["model_error"]
    tuning = compare.search(method, lambda pts: ((np.full(3, score(p)), 100.0) for p in pts))
    ones = np.ones(10)
    result = compare.MethodResult(tuning.chosen, ones, ones, ones, ones[:5], np.zeros(3, int),
                                  np.full(10, -1))
    c = compare.Comparison("toy", "LETKF", {"LETKF": method}, {"LETKF": tuning},
                           {"LETKF": result}, (100, 101, 102), tuple(range(10)))
    assert c.edge_marks("LETKF") == {"inflation": "⊥", "model_error": "†"}
    table = c.table()
    assert "inflation 1 ⊥" in table and "model_error 0.1 †" in table
    assert "⊥ at a bound of the knob's range" in table and "† at the edge" in table
    # widened until interior (the optimum at model error 0.4): nothing beyond the bound
    wide = dataclasses_replace(method, widen=4)
    interior = compare.search(wide, lambda pts: (
        (np.full(3, 1.0 + p["inflation"] + 100 * (p["model_error"] - 0.4) ** 2), 100.0)
        for p in pts))
    assert interior.chosen["model_error"] == 0.4  # steps 0.1, then doubling from 0.1 to 0.2
    assert interior.grid["model_error"] == (0.0, 0.1, 0.2, 0.4, 0.8)
    wide_result = result._replace(knobs=interior.chosen)
    c = compare.Comparison("toy", "LETKF", {"LETKF": wide}, {"LETKF": interior},
                           {"LETKF": wide_result}, (100, 101, 102), tuple(range(10)))
    assert c.edge_marks("LETKF") == {"inflation": "⊥"} and "†" not in c.table()
    # counted over comparisons: one knob at a bound, one interior; a fixed method counts nothing
    fixed = compare.Method("ETKF", "ETKF", grid={})
    c.methods["ETKF"], c.tunings["ETKF"] = fixed, compare.Tuning([], np.zeros(0), {}, np.zeros(0, int), {})
    c.results["ETKF"] = result._replace(knobs={})
    assert compare.edge_counts([c]) == {"†": 0, "⊥": 1, "interior": 1}
