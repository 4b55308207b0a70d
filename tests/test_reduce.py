"""The reducer on a small hand-made table, with every expected value worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pytest_steer import reduce
from pytest_steer.methods.base import BASELINE_CONFIG, GridPoint
from pytest_steer.results import to_frame
from pytest_steer.stats import bootstrap_interval

from .factories import ACTADD2, LENGTH_RATIO, METRICS, PASTA5, PASTA10, QUALITY, STRICT, STRICT_INSTR, make_row

T, F = True, False
TAGS = {"k1": ["a:x"], "k2": ["a:x", "b:y"]}
Z95 = 1.959963984540054


def wilson(k: int, n: int) -> tuple[float, float]:
    p, z = k / n, Z95
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


@pytest.fixture
def table() -> pd.DataFrame:
    """Two cases (k2 has two tags) x two trials. Rows are listed pasta-alpha10 first, then actadd, then
    pasta-alpha5, then the baseline: the order must still come out baseline, pasta by strength, actadd."""
    follow = {
        PASTA10: {("k1", 0): [T], ("k2", 0): [T, T], ("k1", 1): [T], ("k2", 1): [T, T]},
        ACTADD2: {("k1", 0): [F], ("k2", 0): [F, F], ("k1", 1): [F], ("k2", 1): [T, F]},
        PASTA5: {("k1", 0): [F], ("k2", 0): [T, F], ("k1", 1): [T], ("k2", 1): [T, T]},
        BASELINE_CONFIG: {("k1", 0): [F], ("k2", 0): [T, F], ("k1", 1): [T], ("k2", 1): [T, T]},
    }
    quality = {("k1", 0): 1.0, ("k2", 0): 2.0, ("k1", 1): 3.0, ("k2", 1): 1.0}
    rows = [
        make_row(key, cfg, trial, tags=TAGS[key], follow=f,
                 scores={"quality": quality[key, trial] if cfg.is_baseline or cfg is PASTA5 else 1.0,
                         "length_ratio": None if cfg.is_baseline else 1.5})
        for cfg, cells in follow.items() for (key, trial), f in cells.items()
    ]
    return to_frame(rows, [m.name for m in METRICS])


def test_config_order_baseline_then_methods_first_seen_each_by_strength(table: pd.DataFrame) -> None:
    assert reduce.config_order(table) == ["baseline", "pasta-alpha5", "pasta-alpha10", "actadd-c2"]
    tie = GridPoint("pasta", 7.0, "pasta-tie", PASTA5.strength)  # same strength as alpha5, seen later
    rows = [make_row("k1", c, 0, follow=[T]) for c in (PASTA10, tie, PASTA5)]
    assert reduce.config_order(to_frame(rows)) == ["pasta-tie", "pasta-alpha5", "pasta-alpha10"]


def test_units_pool_per_tag_results(table: pd.DataFrame) -> None:
    u = reduce.units(table[table["config"] == "baseline"], STRICT_INSTR)
    assert len(u) == 6  # 1 + 2 tags, two trials
    assert sorted(u["slot"]) == [0, 0, 0, 0, 1, 1]
    # a per_tag row without its details list counts its row score once
    bare = make_row("k9", BASELINE_CONFIG, 0, tags=["a:x", "b:y"], scores={STRICT_INSTR.name: 0.5})
    u = reduce.units(to_frame([bare]), STRICT_INSTR)
    assert list(u["v"]) == [0.5] and list(u["slot"]) == [-1]


def test_per_trial_by_hand(table: pd.DataFrame) -> None:
    t = reduce.per_trial(table, [STRICT, STRICT_INSTR, QUALITY])
    assert list(t.columns) == ["method", "value", "config", "strength", "trial", "n", *(
        m.name for m in (STRICT, STRICT_INSTR, QUALITY))]
    assert list(zip(t["config"], t["trial"], strict=True))[:4] == [
        ("baseline", 0), ("baseline", 1), ("pasta-alpha5", 0), ("pasta-alpha5", 1)]
    base = t[t["config"] == "baseline"].set_index("trial")
    # trial 0: k1 fails, k2 follows one of two -> prompts 0/2, instructions 1/3, quality (1 + 2) / 2
    assert base.loc[0, "strict_prompt_accuracy"] == 0.0
    assert base.loc[0, "strict_instruction_accuracy"] == pytest.approx(1 / 3)
    assert base.loc[0, "quality"] == pytest.approx(1.5)
    assert (base.loc[1, "strict_prompt_accuracy"], base.loc[1, "strict_instruction_accuracy"]) == (1.0, 1.0)
    assert base.loc[1, "quality"] == pytest.approx(2.0)
    assert (base["n"] == 2).all() and base["value"].isna().all() and (base["strength"] == 0).all()


def test_summary_by_hand(table: pd.DataFrame) -> None:
    s = reduce.summary(table, [STRICT, STRICT_INSTR, QUALITY, LENGTH_RATIO]).set_index("config")
    assert list(s.index) == ["baseline", "pasta-alpha5", "pasta-alpha10", "actadd-c2"]
    b, p10, act = s.loc["baseline"], s.loc["pasta-alpha10"], s.loc["actadd-c2"]
    assert (b["n"], b["trials"], p10["method"], p10["value"]) == (4, 2, "pasta", 10.0)

    # strict prompt accuracy: baseline 2 of 4 rows, one pass per case, so the cases agree exactly
    # (design effect 1): the plain Wilson interval. pasta-alpha10 passes 4 of 4: every trial agrees,
    # the design effect is the worst case (2 trials), and the interval is Wilson over the 2 cases.
    assert b["strict_prompt_accuracy"] == 0.5
    assert (b["strict_prompt_accuracy_low"], b["strict_prompt_accuracy_high"]) == pytest.approx(wilson(2, 4))
    assert p10["strict_prompt_accuracy"] == 1.0
    assert (p10["strict_prompt_accuracy_low"], p10["strict_prompt_accuracy_high"]) == pytest.approx(wilson(2, 2))
    # paired: pasta-alpha10 gains one baseline failure in each case; sign flips of the case sums (1, 1)
    # reach |2| in 2 of 4 patterns: p = 0.5
    assert p10["strict_prompt_accuracy_diff"] == pytest.approx(0.5)
    assert p10["strict_prompt_accuracy_p"] == pytest.approx(0.5)
    # Holm over the steered configs: never below the raw p-value, NaN for the baseline
    steered = s.drop(index="baseline")
    assert (steered["strict_prompt_accuracy_p_holm"] >= steered["strict_prompt_accuracy_p"] - 1e-12).all()
    assert math.isnan(b["strict_prompt_accuracy_p_holm"])
    assert act["strict_prompt_accuracy_diff"] == pytest.approx(-0.5)  # loses both baseline passes
    assert math.isnan(b["strict_prompt_accuracy_diff"]) and math.isnan(b["strict_prompt_accuracy_p"])

    # instruction level pools the 6 instructions: baseline 4 / 6 (a mean of row fractions would say 0.625)
    assert b["strict_instruction_accuracy"] == pytest.approx(4 / 6)
    assert act["strict_instruction_accuracy"] == pytest.approx(1 / 6)
    # per-instruction differences sum to -1 in k1 and -2 in k2; sign flips of (-1, -2) reach |-3| in 2 of 4
    assert act["strict_instruction_accuracy_diff"] == pytest.approx(-0.5)
    assert act["strict_instruction_accuracy_p"] == pytest.approx(0.5)

    # quality: baseline mean 1.75; pasta-alpha10 1.0 everywhere. Cluster bootstrap of the paired
    # differences (k1: 0 and -2, k2: -1 and 0) over two cases takes the values -1, -0.75 and -0.5.
    assert b["quality"] == pytest.approx(1.75) and p10["quality_diff"] == pytest.approx(-0.75)
    assert (p10["quality_diff_low"], p10["quality_diff_high"]) == pytest.approx((-1.0, -0.5))
    rows = table[table["config"] == "baseline"]
    expected = bootstrap_interval(rows["quality"], cluster=rows["key"])
    assert (b["quality_low"], b["quality_high"]) == pytest.approx((expected.low, expected.high))
    assert s.loc["pasta-alpha5", "quality_diff"] == 0.0 and s.loc["pasta-alpha5", "quality_p"] == 1.0

    # length ratio has no baseline value: nothing to pair
    assert math.isnan(b["length_ratio"]) and p10["length_ratio"] == 1.5
    assert math.isnan(p10["length_ratio_diff"]) and math.isnan(p10["length_ratio_p"])


def test_summary_without_baseline_has_no_differences(table: pd.DataFrame) -> None:
    s = reduce.summary(table[table["config"] != "baseline"], [STRICT], n_resamples=200)
    assert list(s["config"]) == ["pasta-alpha5", "pasta-alpha10", "actadd-c2"]
    assert s["strict_prompt_accuracy_diff"].isna().all()
    assert list(s["strict_prompt_accuracy"]) == [0.5, 1.0, 0.0]


def test_by_tag_by_hand(table: pd.DataFrame) -> None:
    instr = reduce.by_tag(table, STRICT_INSTR)
    assert list(instr.columns) == ["baseline", "pasta-alpha5", "pasta-alpha10", "actadd-c2"]
    assert list(instr.index) == ["a:x", "b:y"] and instr.index.name == "tag"
    # a:x, baseline: k1 F, k2 T (trial 0), k1 T, k2 T (trial 1) -> 3/4; b:y: k2 F then T -> 1/2
    assert instr.loc["a:x", "baseline"] == 0.75 and instr.loc["b:y", "baseline"] == 0.5
    assert instr.loc["a:x", "actadd-c2"] == 0.25 and instr.loc["b:y", "actadd-c2"] == 0.0
    # a row-level metric counts the row once per tag: a:x sees all four rows, b:y only k2's
    q = reduce.by_tag(table, QUALITY)
    assert q.loc["a:x", "baseline"] == pytest.approx(1.75) and q.loc["b:y", "baseline"] == pytest.approx(1.5)
    prompt = reduce.by_tag(table, STRICT)
    assert prompt.loc["b:y", "baseline"] == 0.5  # k2 fails trial 0, passes trial 1


def test_compare_pairs_and_refuses_unpaired(table: pd.DataFrame) -> None:
    comp = reduce.compare(table, "pasta-alpha10", STRICT)
    assert (comp.test.n_clusters, comp.test.exact, comp.n_pairs, comp.n_cases, comp.n_trials) == (2, True, 4, 2, 2)
    shuffled = table.sample(frac=1.0, random_state=5).reset_index(drop=True)
    assert reduce.compare(shuffled, "pasta-alpha10", QUALITY) == reduce.compare(table, "pasta-alpha10", QUALITY)
    missing = table[~((table.config == "actadd-c2") & (table.key == "k2") & (table.trial == 1))]
    with pytest.raises(ValueError, match=r"1 unpaired rows, e\.g\. \('k2', trial 1\) only in baseline"):
        reduce.compare(missing, "actadd-c2", STRICT)
    with pytest.raises(ValueError, match="no rows for config 'pasta-alpha99'"):
        reduce.compare(table, "pasta-alpha99", STRICT)
    with pytest.raises(ValueError, match="duplicate"):
        reduce.compare(pd.concat([table, table.iloc[:1]]), "pasta-alpha10", STRICT)
    # the summary pairs what it can instead: of actadd's three remaining pairs only (k1, trial 1) changed
    s = reduce.summary(missing, [STRICT], n_resamples=200).set_index("config")
    assert s.loc["actadd-c2", "strict_prompt_accuracy_diff"] == pytest.approx(-1 / 3)


def test_means_skip_missing_values() -> None:
    rows = [make_row(f"k{i}", PASTA10, 0, scores={"quality": q}) for i, q in enumerate([1.0, None, 3.0])]
    means = reduce.means(to_frame(rows), [QUALITY, LENGTH_RATIO])
    assert means["quality"] == 2.0 and math.isnan(means["length_ratio"])


def test_log_scale_metric_is_a_geometric_mean(table: pd.DataFrame) -> None:
    """quality 1, 2, 3, 1 (baseline) against 1, 1, 1, 1 (pasta-alpha10): geometric means, a ratio-based
    difference, and a zero floored at LOG_FLOOR instead of -inf."""
    from dataclasses import replace

    from pytest_steer.scores import LOG_FLOOR

    geo = replace(QUALITY, scale="log")
    gm = 6 ** 0.25
    s = reduce.summary(table, [geo], n_resamples=500).set_index("config")
    assert s.at["baseline", "quality"] == pytest.approx(gm)
    assert s.at["baseline", "quality_low"] <= gm <= s.at["baseline", "quality_high"]
    assert s.at["pasta-alpha10", "quality"] == pytest.approx(1.0)
    # the difference of geometric means, from the paired log ratio: gm * (1/gm - 1) = 1 - gm
    assert s.at["pasta-alpha10", "quality_diff"] == pytest.approx(1.0 - gm)
    assert s.at["pasta-alpha10", "quality_diff_low"] <= 1.0 - gm <= s.at["pasta-alpha10", "quality_diff_high"]
    comp = reduce.compare(table, "pasta-alpha10", geo)
    assert (comp.estimate, comp.baseline_estimate) == (pytest.approx(1.0), pytest.approx(gm))
    assert reduce.means(table[table["config"] == "baseline"], [geo])["quality"] == pytest.approx(gm)
    trial0 = reduce.per_trial(table, [geo]).set_index(["config", "trial"]).at[("baseline", 0), "quality"]
    assert trial0 == pytest.approx(2 ** 0.5)
    zero = table.assign(quality=table["quality"].where(table["config"] != "baseline", 0.0))
    assert reduce.means(zero[zero["config"] == "baseline"], [geo])["quality"] == pytest.approx(LOG_FLOOR)
    with pytest.raises(ValueError, match="scale"):
        replace(STRICT, scale="log")  # a proportion is not reduced on a log scale


def test_tag_deltas_pair_per_tag_with_case_intervals_and_holm_over_tags(table: pd.DataFrame) -> None:
    """pasta-alpha10 against the baseline, per tag: a:x is carried by k1 and k2, b:y by k2 only.
    a:x: k1 gains trial 0 (F -> T), k2 keeps T in both trials -> diff 1/4; b:y: k2 gains trial 0 -> 1/2."""
    t = reduce.tag_deltas(table, "pasta-alpha10", STRICT_INSTR, n_resamples=500)
    assert list(t.index) == ["a:x", "b:y"]
    assert t.loc["a:x", "n"] == 2 and t.loc["b:y", "n"] == 1
    assert t.loc["a:x", "diff"] == pytest.approx(0.25) and t.loc["b:y", "diff"] == pytest.approx(0.5)
    assert (t["low"] <= t["diff"]).all() and (t["diff"] <= t["high"]).all()
    # sign flips: a:x has one non-zero case sum (k1: +1): p = 1; b:y one case: p = 1
    assert t.loc["a:x", "p"] == 1.0 and (t["p_holm"] >= t["p"]).all()
