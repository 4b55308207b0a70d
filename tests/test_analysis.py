"""Pareto set, budgeted recommendation, fixed/broken cases and the results files, on hand-made tables."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pytest_steer import reduce
from pytest_steer.analysis import (
    fixed_and_broken,
    halves,
    load_results,
    matched_dose,
    pareto_front,
    power,
    recommend,
    select,
    write_results,
)
from pytest_steer.methods.base import BASELINE_CONFIG, GridPoint
from pytest_steer.results import to_frame

from .factories import METRICS, PASTA10, QUALITY, REPETITION, STRICT, grid_frame, make_row, sweep_rows

BUDGETS = {"quality": 0.1, "repetition": 0.1, "diversity": 0.1}


def _summary(points: dict[str, tuple[str, float, float, float, float, float]]) -> pd.DataFrame:
    """A summary from {config: (method, strength, accuracy, quality, repetition, diversity)}."""
    return pd.DataFrame([
        {"method": m, "value": None if m == "baseline" else st, "config": c, "strength": st,
         "strict_prompt_accuracy": acc, "quality": q, "repetition": rep, "diversity": div}
        for c, (m, st, acc, q, rep, div) in points.items()
    ])


def test_pareto_front_hand_cases() -> None:
    s = _summary({
        "baseline": ("baseline", 0, 0.5, 1.0, 0.0, 0.9),
        "pasta-a2": ("pasta", 1, 0.7, 0.9, 0.0, 0.9),
        "pasta-b2": ("pasta", 1, 0.7, 0.9, 0.0, 0.9),  # identical to pasta-a2: neither dominates
        "pasta-a3": ("pasta", 2, 0.6, 0.8, 0.0, 0.9),  # dominated by pasta-a2
        "actadd-c4": ("actadd", 4, 0.9, 0.2, 0.0, 0.9),
        "actadd-c8": ("actadd", 8, 0.9, 0.1, 0.0, 0.9),  # same accuracy as c4, worse quality
        "actadd-c9": ("actadd", 9, 0.95, math.nan, 0.0, 0.9),  # cannot be compared
    })
    assert pareto_front(s, "strict_prompt_accuracy") == ["baseline", "pasta-a2", "pasta-b2", "actadd-c4"]
    assert pareto_front(s.iloc[:1], "strict_prompt_accuracy") == ["baseline"]
    # lower-is-better axes are minimised: with repetition as y, less repetition at more accuracy wins
    r = _summary({"baseline": ("baseline", 0, 0.5, 1, 0.01, 1), "x": ("m", 1, 0.6, 1, 0.05, 1),
                  "y": ("m", 2, 0.6, 1, 0.20, 1)})
    assert pareto_front(r, "strict_prompt_accuracy", "repetition", metrics=[REPETITION]) == ["baseline", "x"]
    assert pareto_front(r, "strict_prompt_accuracy", "repetition") == ["y"]  # undeclared: maximised


@pytest.fixture
def points() -> pd.DataFrame:
    return _summary({
        "baseline": ("baseline", 0, 0.50, 1.00, 0.02, 0.90),
        "pasta-a2": ("pasta", 0.7, 0.70, 0.95, 0.02, 0.88),  # quality -5%: within every budget
        "pasta-a5": ("pasta", 1.6, 0.80, 0.85, 0.03, 0.85),  # quality -15%
        "actadd-c2": ("actadd", 2.0, 0.80, 0.92, 0.15, 0.85),  # repetition +0.13
        "actadd-c4": ("actadd", 4.0, 0.85, 0.95, 0.05, 0.75),  # diversity -0.15
        "actadd-c1": ("actadd", 1.0, 0.70, 0.99, 0.02, 0.90),  # ties pasta-a2 at 0.70 but steers harder
    })


def test_recommend_respects_every_budget(points: pd.DataFrame) -> None:
    rec = recommend(points, primary="strict_prompt_accuracy", budgets=BUDGETS, metrics=METRICS)
    # best accuracies (0.85, 0.80, 0.80) are each over one budget; 0.70 ties, the weaker steering wins
    assert rec.config == "pasta-a2" and rec.method == "pasta"
    assert rec.primary_value == 0.70 and rec.baseline_value == 0.50
    assert rec.worsening["quality"] == pytest.approx(0.05)  # relative: 5% below the baseline
    assert rec.over_budget == {
        "pasta-a5": ["quality drop 15% > 10%"],
        "actadd-c2": ["repetition rise 0.13 > 0.1"],
        "actadd-c4": ["diversity drop 0.15 > 0.1"],
    }
    assert rec.budget_text() == "quality drop <= 10%, repetition rise <= 0.1, diversity drop <= 0.1"
    assert "pasta-a2: strict_prompt_accuracy 0.700 vs 0.500 at baseline (+0.200)" in rec.reason
    assert "quality drop 5% <= 10%" in rec.reason
    better = _summary({"baseline": ("baseline", 0, 0.50, 1.00, 0.02, 0.90),
                       "prompt-x": ("prompt", 1, 0.60, 1.20, 0.02, 0.90)})
    reason = recommend(better, primary="strict_prompt_accuracy", budgets=BUDGETS, metrics=METRICS).reason
    assert "quality better by 20%" in reason and "drop -" not in reason
    # loosening one budget at a time lets the config it held back through
    assert recommend(points, primary="strict_prompt_accuracy", budgets={**BUDGETS, "diversity": 0.15},
                     metrics=METRICS).config == "actadd-c4"  # limits are inclusive
    assert recommend(points, primary="strict_prompt_accuracy", budgets={**BUDGETS, "quality": 0.2},
                     metrics=METRICS).config == "pasta-a5"  # actadd-c2, also 0.80, still breaks repetition
    assert recommend(points, primary="strict_prompt_accuracy", budgets={**BUDGETS, "repetition": 0.2},
                     metrics=METRICS).config == "actadd-c2"  # pasta-a5, also 0.80, still breaks quality
    both = recommend(points, primary="strict_prompt_accuracy", budgets={**BUDGETS, "quality": 0.2, "repetition": 0.2},
                     metrics=METRICS)
    assert both.config == "pasta-a5"  # a tie at 0.80 goes to the weaker steering (1.6 < 2.0)


def test_recommend_needs_directions_for_lower_is_better_budgets(points: pd.DataFrame) -> None:
    # without declarations every metric counts as higher-is-better: a repetition rise then looks fine
    rec = recommend(points, primary="strict_prompt_accuracy", budgets={"repetition": 0.1})
    assert rec.config == "actadd-c4"
    assert recommend(points, primary="strict_prompt_accuracy", budgets={"repetition": 0.005},
                     metrics=METRICS).config == "pasta-a2"
    assert recommend(points, primary="strict_prompt_accuracy", budgets={"repetition": 0.01},
                     metrics=METRICS).config == "pasta-a5"  # a rise of exactly the budget is within it


def test_recommend_baseline_when_nothing_qualifies(points: pd.DataFrame) -> None:
    rec = recommend(points, primary="strict_prompt_accuracy", budgets={"quality": 0.001}, metrics=METRICS)
    assert rec.config == "baseline" and rec.value is None and rec.worsening == {"quality": 0.0}
    assert rec.reason.startswith("baseline: no steered config stays within the budgets (closest: ")
    assert set(rec.over_budget) == set(points["config"]) - {"baseline"}


def test_recommend_baseline_when_steering_does_not_help() -> None:
    s = _summary({"baseline": ("baseline", 0, 0.8, 1.0, 0.0, 1.0), "m-1": ("m", 1, 0.8, 1.0, 0.0, 1.0),
                  "m-2": ("m", 2, 0.6, 1.0, 0.0, 1.0)})
    rec = recommend(s, primary="strict_prompt_accuracy", budgets=BUDGETS, metrics=METRICS)
    assert rec.config == "baseline"  # a tie with the baseline goes to no steering
    assert "beats" in rec.reason
    assert recommend(s.iloc[:1], primary="strict_prompt_accuracy", budgets=BUDGETS).reason == \
        "baseline: no steered configs were run"


def test_recommend_lists_unchecked_budgets_and_needs_baseline(points: pd.DataFrame) -> None:
    rec = recommend(points, primary="strict_prompt_accuracy", budgets={**BUDGETS, "coherence": 0.1}, metrics=METRICS)
    assert rec.unchecked == ["coherence"] and rec.config == "pasta-a2"
    with pytest.raises(ValueError, match="baseline"):
        recommend(points[points["config"] != "baseline"], primary="strict_prompt_accuracy", budgets=BUDGETS)


def test_fixed_and_broken_finds_planted_pairs() -> None:
    rows = []
    for key in ("k1", "k3"):
        for trial in (0, 1):
            fixed = (key, trial) == ("k1", 0)
            broken = (key, trial) == ("k3", 1)
            rows.append(make_row(key, BASELINE_CONFIG, trial, follow=[broken], scores={"quality": 2.0}))
            rows.append(make_row(key, PASTA10, trial, follow=[fixed], flags=["repetition"] if broken else [],
                                 scores={"quality": 1.5 if fixed else 2.5}))
    frame = to_frame(rows)
    fb = fixed_and_broken(frame, "pasta-alpha10", follow=STRICT.name)
    assert list(zip(fb["key"], fb["trial"], fb["change"], strict=True)) == [("k1", 0, "fixed"), ("k3", 1, "broken")]
    assert list(fb["quality_delta"]) == pytest.approx([-0.5, 0.5])
    assert list(fb["baseline_response"]) == ["k1 baseline t0", "k3 baseline t1"]
    assert list(fb["steered_response"]) == ["k1 pasta-alpha10 t0", "k3 pasta-alpha10 t1"]
    assert list(fb["steered_flags"]) == [[], ["repetition"]] and list(fb["baseline_flags"]) == [[], []]
    assert (fb["config"] == "pasta-alpha10").all() and list(fb["tags"]) == [["a:x"], ["a:x"]]
    with pytest.raises(ValueError):
        fixed_and_broken(frame, "baseline", follow=STRICT.name)
    with pytest.raises(ValueError, match="not in the results"):
        fixed_and_broken(frame, "pasta-alpha99", follow=STRICT.name)


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    rows = sweep_rows(n_keys=3, n_trials=2)
    summary = reduce.summary(to_frame(rows, [m.name for m in METRICS]), METRICS, n_resamples=200)
    paths = write_results(rows, summary, METRICS, tmp_path / "report")
    assert set(paths) == {"results.jsonl", "summary.csv", "metrics.json"}
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    loaded = load_results(tmp_path / "report")
    assert loaded.rows == rows and loaded.metrics == METRICS
    pd.testing.assert_frame_equal(loaded.summary.drop(columns="value"), summary.drop(columns="value"),
                                  check_dtype=False)
    assert json.loads(paths["metrics.json"].read_text())[0]["name"] == STRICT.name
    assert QUALITY.name in loaded.summary.columns


def _noise_arms(effect: float = 0.0, n_cases: int = 40, n_trials: int = 2, arms: int = 8,
                seed: int = 3) -> pd.DataFrame:
    """Baseline plus `arms` configs that follow at the baseline's rate (pure noise), the last one
    `effect` more often; quality is the same noise everywhere."""
    rng = np.random.default_rng(seed)
    grids = {"baseline": {STRICT.name: (rng.random((n_cases, n_trials)) < 0.5).astype(float),
                          QUALITY.name: rng.normal(1, 0.01, (n_cases, n_trials))}}
    for k in range(1, arms + 1):
        rate = 0.5 + (effect if k == arms else 0.0)
        grids[f"arm{k}"] = {STRICT.name: (rng.random((n_cases, n_trials)) < rate).astype(float),
                            QUALITY.name: rng.normal(1, 0.01, (n_cases, n_trials))}
    return grid_frame(grids)


def test_select_does_not_recommend_an_arm_better_only_by_chance() -> None:
    frame = _noise_arms()
    s = reduce.summary(frame, [STRICT, QUALITY], n_resamples=1000)
    naive = recommend(s, primary=STRICT.name, budgets={"quality": 0.1}, metrics=[STRICT, QUALITY])
    assert naive.config != "baseline"  # the maximum over 8 noise arms beats the baseline on these cases
    rec = select(frame, s, primary=STRICT.name, budgets={"quality": 0.1}, metrics=[STRICT, QUALITY])
    assert rec.config == "baseline" and rec.method == "baseline"
    assert rec.reason.startswith("no config is better than the baseline at this n")
    assert "cross-fitted" in rec.selection and rec.held_out is not None
    assert rec.held_out.low <= 0 <= rec.held_out.high


def test_select_recommends_an_arm_that_is_really_better() -> None:
    frame = _noise_arms(effect=0.4)
    s = reduce.summary(frame, [STRICT, QUALITY], n_resamples=1000)
    rec = select(frame, s, primary=STRICT.name, budgets={"quality": 0.1}, metrics=[STRICT, QUALITY])
    assert rec.config == "arm8" and rec.reason.startswith("arm8: both halves pick it")
    assert rec.held_out is not None and rec.held_out.low > 0
    # a budget the real arm breaks keeps it out on both halves
    worse = frame.copy()
    worse.loc[worse["config"] == "arm8", QUALITY.name] = 0.5
    s2 = reduce.summary(worse, [STRICT, QUALITY], n_resamples=1000)
    assert select(worse, s2, primary=STRICT.name, budgets={"quality": 0.1},
                  metrics=[STRICT, QUALITY]).config == "baseline"


def test_halves_are_balanced_and_ignore_order() -> None:
    keys = [f"k{i}" for i in range(11)]
    a, b = halves(keys)
    assert sorted(a + b) == sorted(keys) and {len(a), len(b)} == {5, 6}
    assert halves(list(reversed(keys))) == (a, b)


def test_power_line_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(0)
    n_cases, n_trials = 400, 3
    base = (rng.random((n_cases, n_trials)) < 0.5).astype(float)
    arm = (rng.random((n_cases, n_trials)) < 0.6).astype(float)
    frame = grid_frame({"baseline": {STRICT.name: base}, "arm1": {STRICT.name: arm}})
    p, line = power(frame, STRICT)
    assert (p.n_cases, p.trials) == (n_cases, n_trials)
    # independent Bernoulli arms: the paired difference has variance 0.25 + 0.24 per trial, none between cases
    assert p.within == pytest.approx(0.49, abs=0.04) and p.between < 0.02
    expected = 2.8016 * math.sqrt(0.49 / n_trials / n_cases)
    assert p.detectable == pytest.approx(expected, rel=0.1)
    assert p.cases_needed(p.detectable, n_trials) == pytest.approx(n_cases, rel=0.02)
    assert p.cases_needed(0.05, 2 * n_trials) < p.cases_needed(0.05, n_trials)
    assert line.startswith(f"power: at {n_cases} cases x {n_trials} trials") and "+0.05 needs about" in line
    with pytest.raises(ValueError, match="no steered config"):
        power(frame[frame["config"] == "baseline"], STRICT)


def test_power_uses_t_at_few_cases_and_says_one_trial_cannot_price_more_trials() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(0, 1, (16, 1))
    frame = grid_frame({"baseline": {QUALITY.name: base}, "arm1": {QUALITY.name: base + rng.normal(0, 0.2, (16, 1))}})
    p, line = power(frame, QUALITY)
    # paired t on 16 case means: t_{15} quantiles, not z (2.8016 would understate it by about 6%)
    t = scipy_stats.t.ppf(0.975, 15) + scipy_stats.t.ppf(0.8, 15)
    assert p.detectable == pytest.approx(t * math.sqrt(p.case_variance(1) / 16))
    assert not p.within_known and p.within == 0.0
    assert line.startswith("power: at 16 cases x 1 trial the smallest change")
    assert "with one trial the trial-to-trial spread cannot be estimated" in line and " (or " not in line
    # cases_needed solves n = ((t_{n-1} quantiles) / delta)^2 var at its own n
    n = p.cases_needed(p.detectable, 1)
    assert n == pytest.approx(16, abs=1)


def test_one_budget_per_phenomenon() -> None:
    """The offline quality already pays for repetition: no second repetition budget, and none on diversity.
    Budgets travel on the metric declarations, found by role."""
    from pytest_steer.metrics.scorers import _QUALITY, SIDE_EFFECTS
    from pytest_steer.scores import budgets
    from pytest_steer.session.run import with_budgets
    from pytest_steer.spec import RunSpec

    declared = [*SIDE_EFFECTS, _QUALITY["offline"]]
    settings = {"max_quality_drop": 0.1, "max_repetition_rise": 0.2}
    assert budgets(with_budgets(declared, RunSpec(**settings, quality="offline"))) == {"quality": 0.1}
    for headline in ("OpenAssistant/reward-model-deberta-v3-large-v2", "fluency"):
        assert budgets(with_budgets(declared, RunSpec(**settings, quality=headline))) == {
            "quality": 0.1, "repetition": 0.2}


def _dosed(points: dict[str, tuple[str, float, float, float, float]]) -> pd.DataFrame:
    """A summary from {config: (method, dose, accuracy, its change's low, its change's high)}; baseline 0.5."""
    rows = []
    for c, (m, dose, acc, lo, hi) in points.items():
        rows.append({"method": m, "value": None, "config": c, "strength": dose, "dose": dose,
                     "dose_low": dose * 0.9, "dose_high": dose * 1.1, "strict_prompt_accuracy": acc,
                     "strict_prompt_accuracy_low": acc - 0.1, "strict_prompt_accuracy_high": acc + 0.1,
                     "strict_prompt_accuracy_diff": acc - 0.5, "strict_prompt_accuracy_diff_low": lo,
                     "strict_prompt_accuracy_diff_high": hi, "quality": 1.0 - dose})
    return pd.DataFrame(rows)


def test_matched_dose_compares_each_method_at_the_config_nearest_one_common_dose() -> None:
    s = _dosed({
        "baseline": ("baseline", 0.0, 0.5, math.nan, math.nan),
        "pasta-a2": ("pasta", 0.01, 0.55, -0.1, 0.2),
        "pasta-a10": ("pasta", 0.2, 0.90, 0.25, 0.55),  # the best overall, but at over 3x the others' dose
        "actadd-c1": ("actadd", 0.05, 0.70, 0.05, 0.35),
        "actadd-c4": ("actadd", 0.8, 0.80, 0.1, 0.5),
        "prompt-restate": ("prompt", 0.06, 0.60, -0.05, 0.25),
        "prompt-system": ("prompt", 3.0, 0.95, 0.3, 0.6),
    })
    # actadd-c1 passes 8 of the 20 cases (both trials) that prompt-restate fails and loses none: their
    # intervals of the change from the baseline overlap (0.05..0.35 vs -0.05..0.25), the paired one does not
    frame = _two_methods(gained=8, lost=0)
    m = matched_dose(s, frame, primary="strict_prompt_accuracy", metrics=METRICS)
    assert m is not None
    # the common dose whose farthest method is nearest: 0.06 (pasta's nearest config, 0.2, is 3.3x away;
    # at 0.05 it would be 4x, at 0.2 actadd would be 4x)
    assert m.reference == pytest.approx(0.06)
    assert m.table.set_index("method")["config"].to_dict() == {
        "pasta": "pasta-a10", "actadd": "actadd-c1", "prompt": "prompt-restate"}
    assert m.matched == ["actadd-c1", "prompt-restate"]  # pasta's nearest is over 2x away: not compared
    assert "actadd-c1 0.700, prompt-restate 0.600" in m.text
    assert m.paired is not None and m.paired.diff == pytest.approx(0.4) and m.paired.n_clusters == 20
    assert m.paired.low > 0 and "actadd-c1 is better (paired difference actadd-c1 - prompt-restate +0.400" in m.text
    assert "pasta-a10 (3.3x away)" in m.text
    assert m.table.set_index("config").at["actadd-c1", "dose_high"] == pytest.approx(0.055)

    # 2 cases gained and 1 lost: the paired interval includes 0, whatever the summary's intervals say
    tie = matched_dose(s, _two_methods(gained=2, lost=1), primary="strict_prompt_accuracy")
    assert tie is not None and tie.paired is not None and tie.paired.low < 0 < tie.paired.high
    assert "no method is better at this dose (paired difference" in tie.text and "includes 0" in tie.text
    # fewer than two methods with a dose: nothing to match
    assert matched_dose(s[s["method"].isin(["baseline", "pasta"])], frame, primary="strict_prompt_accuracy") is None
    assert matched_dose(s.drop(columns="dose"), frame, primary="strict_prompt_accuracy") is None


def _two_methods(gained: int, lost: int) -> pd.DataFrame:
    """actadd-c1 and prompt-restate on 20 cases x 2 trials: prompt-restate passes cases 0-9; actadd-c1
    also passes the next `gained` cases and fails the first `lost`."""
    actadd, prompt = GridPoint("actadd", 1.0, "actadd-c1", 1.0), GridPoint("prompt", "restate", "prompt-restate", 1.0)
    rows = []
    for e in range(20):
        for t in range(2):
            rows.append(make_row(f"case{e:02d}", prompt, t, follow=[e < 10]))
            rows.append(make_row(f"case{e:02d}", actadd, t, follow=[lost <= e < 10 + gained]))
    return to_frame(rows, [STRICT.name])
