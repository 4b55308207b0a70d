"""Analysis tables on small hand-made results, with expected values worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pytest_steer.analysis import (
    config_summary,
    fixed_and_broken,
    load_results,
    pareto_front,
    recommend_alpha,
    trial_metrics,
    type_metrics,
    write_results,
)
from pytest_steer.results import ResultRow, config_label, to_frame

INSTRUCTIONS = {"k1": ["a:x"], "k2": ["a:x", "b:y"], "k3": ["b:y"]}


def make_row(
    key: str,
    alpha: float | None,
    trial: int,
    follow: list[bool],
    quality: float,
    *,
    loose: list[bool] | None = None,
    response: str | None = None,
) -> ResultRow:
    """A scored row; follow_all is derived from the per-instruction list as IFEval does."""
    loose = follow if loose is None else loose
    return ResultRow(
        key=key,
        instruction_id_list=INSTRUCTIONS[key],
        config=config_label(alpha),
        alpha=alpha,
        trial=trial,
        seed=100 * trial,
        prompt=f"prompt {key}",
        response=response if response is not None else f"{key} {config_label(alpha)} t{trial}",
        n_tokens=10,
        finish_reason="stop",
        follow_all=all(follow),
        follow_list=follow,
        loose_follow_all=all(loose),
        loose_follow_list=loose,
        quality=quality,
        quality_name="fluency",
    )


T, F = True, False


@pytest.fixture
def table() -> pd.DataFrame:
    """Baseline and three steered configs (alpha 2, 5 and 0.1), two trials, keys k1 and k2."""
    rows = [
        # baseline, trial 0: prompts 0/2, instructions 1/3, quality 1.5; loose all followed
        make_row("k1", None, 0, [F], 1.0, loose=[T]),
        make_row("k2", None, 0, [T, F], 2.0, loose=[T, T]),
        # baseline, trial 1: prompts 2/2, instructions 3/3, quality 2.0
        make_row("k1", None, 1, [T], 3.0),
        make_row("k2", None, 1, [T, T], 1.0),
    ]
    for alpha in (2.0, 5.0, 0.1):
        for trial in (0, 1):
            rows.append(make_row("k1", alpha, trial, [T], 1.0))
            rows.append(make_row("k2", alpha, trial, [T, T], 1.0))
    return to_frame(rows)


def test_trial_metrics_by_hand(table: pd.DataFrame) -> None:
    t = trial_metrics(table)
    assert len(t) == 8
    base = t[t["config"] == "baseline"].set_index("trial")
    assert base.loc[0, "strict_prompt_accuracy"] == 0.0
    assert base.loc[0, "strict_instruction_accuracy"] == pytest.approx(1 / 3)
    assert base.loc[0, "loose_prompt_accuracy"] == 1.0
    assert base.loc[0, "loose_instruction_accuracy"] == 1.0
    assert base.loc[0, "quality"] == pytest.approx(1.5)
    assert base.loc[1, "strict_prompt_accuracy"] == 1.0
    assert base.loc[1, "strict_instruction_accuracy"] == 1.0
    assert base.loc[1, "quality"] == pytest.approx(2.0)
    assert base["alpha"].isna().all() and (base["strength"] == 0).all()
    assert (base["n_examples"] == 2).all()


def test_config_summary_by_hand(table: pd.DataFrame) -> None:
    s = config_summary(table).set_index("config")
    b = s.loc["baseline"]
    assert b["strict_prompt_accuracy"] == pytest.approx(0.5)
    assert b["strict_prompt_accuracy_std"] == pytest.approx(math.sqrt(0.5))  # ddof=1 of {0, 1}
    assert b["strict_instruction_accuracy"] == pytest.approx(2 / 3)
    assert b["strict_instruction_accuracy_std"] == pytest.approx((2 / 3) / math.sqrt(2))
    assert b["loose_prompt_accuracy"] == 1.0 and b["loose_prompt_accuracy_std"] == 0.0
    assert b["quality"] == pytest.approx(1.75)
    assert b["quality_std"] == pytest.approx(0.5 / math.sqrt(2))
    assert b["n_trials"] == 2 and b["n_examples"] == 2
    assert s.loc["alpha5", "strict_prompt_accuracy"] == 1.0
    assert s.loc["alpha5", "quality_name"] == "fluency"


def test_config_summary_orders_by_strength_not_alpha(table: pd.DataFrame) -> None:
    # |log 0.1| = 2.30 > |log 5| = 1.61 > |log 2| = 0.69: alpha 0.1 is the strongest steering.
    assert list(config_summary(table)["config"]) == ["baseline", "alpha2", "alpha5", "alpha0.1"]
    order = list(trial_metrics(table)["config"].drop_duplicates())
    assert order == ["baseline", "alpha2", "alpha5", "alpha0.1"]


def test_single_trial_has_nan_std(table: pd.DataFrame) -> None:
    s = config_summary(table[table["trial"] == 0]).set_index("config")
    assert s["n_trials"].eq(1).all()
    assert s["strict_prompt_accuracy_std"].isna().all()


def test_type_metrics_explodes_instructions(table: pd.DataFrame) -> None:
    t = type_metrics(table).set_index(["instruction_type", "config"])
    # a:x in baseline: trial 0 k1 F, k2 T -> 0.5; trial 1 both T -> 1.0
    assert t.loc[("a:x", "baseline"), "follow_rate"] == pytest.approx(0.75)
    assert t.loc[("a:x", "baseline"), "follow_rate_std"] == pytest.approx(0.5 / math.sqrt(2))
    # b:y only in k2: trial 0 F, trial 1 T
    assert t.loc[("b:y", "baseline"), "follow_rate"] == pytest.approx(0.5)
    # quality of prompts containing the type: a:x -> mean(1.5, 2.0); b:y -> mean(2.0, 1.0)
    assert t.loc[("a:x", "baseline"), "quality"] == pytest.approx(1.75)
    assert t.loc[("b:y", "baseline"), "quality"] == pytest.approx(1.5)
    assert t.loc[("a:x", "baseline"), "n_examples"] == 2
    assert t.loc[("b:y", "alpha5"), "follow_rate"] == 1.0
    assert len(t) == 2 * 4


def _summary(points: dict[str, tuple[float | None, float, float]]) -> pd.DataFrame:
    """A summary from {config: (alpha, accuracy, quality)}."""
    return pd.DataFrame(
        [
            {
                "config": c,
                "alpha": math.nan if a is None else a,
                "strength": 0.0 if a is None else abs(math.log(a)),
                "strict_prompt_accuracy": acc,
                "quality": q,
            }
            for c, (a, acc, q) in points.items()
        ]
    )


def test_pareto_front_hand_cases() -> None:
    s = _summary(
        {
            "baseline": (None, 0.5, 1.0),
            "alpha2": (2.0, 0.7, 0.9),
            "alpha0.5": (0.5, 0.7, 0.9),  # identical to alpha2: neither dominates the other
            "alpha3": (3.0, 0.6, 0.8),  # dominated by alpha2
            "alpha10": (10.0, 0.9, 0.2),
            "alpha20": (20.0, 0.9, 0.1),  # same accuracy as alpha10, worse quality
            "alpha50": (50.0, 0.95, math.nan),  # cannot be compared
        }
    )
    assert pareto_front(s) == ["baseline", "alpha2", "alpha0.5", "alpha10"]
    assert pareto_front(s.iloc[:1]) == ["baseline"]


@pytest.fixture
def points() -> pd.DataFrame:
    return _summary(
        {
            "baseline": (None, 0.5, 1.0),
            "alpha2": (2.0, 0.7, 0.9),  # drop 0.1
            "alpha0.1": (0.1, 0.7, 0.95),  # same accuracy, stronger steering (|log 0.1| > |log 2|)
            "alpha5": (5.0, 0.7, 0.6),  # same accuracy, stronger, drop 0.4
            "alpha10": (10.0, 0.9, 0.2),  # best accuracy, drop 0.8
        }
    )


def test_recommend_respects_quality_limit_and_prefers_weaker(points: pd.DataFrame) -> None:
    rec = recommend_alpha(points, max_quality_drop=0.5)
    assert rec.config == "alpha2"
    assert rec.alpha == 2.0
    assert rec.value == pytest.approx(0.7) and rec.baseline_value == pytest.approx(0.5)
    assert rec.quality_drop == pytest.approx(0.1)
    assert "alpha2" in rec.reason
    assert set(rec.pareto) == {"baseline", "alpha0.1", "alpha10"}

    assert recommend_alpha(points, max_quality_drop=0.8).config == "alpha10"  # limit inclusive
    assert recommend_alpha(points, max_quality_drop=0.79).config == "alpha2"


def test_recommend_baseline_when_nothing_qualifies(points: pd.DataFrame) -> None:
    rec = recommend_alpha(points, max_quality_drop=0.01)
    assert rec.config == "baseline" and rec.alpha is None and rec.quality_drop == 0.0
    assert "no steered config keeps the quality drop" in rec.reason
    assert "alpha0.1" in rec.reason  # the closest miss (drop 0.05)


def test_recommend_baseline_when_steering_does_not_help() -> None:
    s = _summary(
        {"baseline": (None, 0.8, 1.0), "alpha2": (2.0, 0.8, 1.0), "alpha5": (5.0, 0.6, 1.0)}
    )
    rec = recommend_alpha(s, max_quality_drop=0.5)
    assert rec.config == "baseline"  # a tie with baseline goes to no steering
    assert "beats" in rec.reason
    assert recommend_alpha(s.iloc[:1], max_quality_drop=0.5).config == "baseline"


def test_recommend_needs_baseline(points: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="baseline"):
        recommend_alpha(points[points["config"] != "baseline"], max_quality_drop=0.5)


def test_fixed_and_broken_finds_planted_pairs() -> None:
    rows = []
    for key in ("k1", "k3"):
        for trial in (0, 1):
            fixed = (key, trial) == ("k1", 0)
            broken = (key, trial) == ("k3", 1)
            rows.append(make_row(key, None, trial, [broken], 2.0))
            rows.append(make_row(key, 10.0, trial, [fixed], 1.5 if fixed else 2.5))
    rows.append(make_row("k1", 5.0, 0, [T], 0.0))  # another config: must not leak in
    fb = fixed_and_broken(to_frame(rows), "alpha10")
    pairs = list(zip(fb["key"], fb["trial"], fb["change"]))
    assert pairs == [("k1", 0, "fixed"), ("k3", 1, "broken")]
    assert list(fb["quality_delta"]) == pytest.approx([-0.5, 0.5])
    assert list(fb["baseline_response"]) == ["k1 baseline t0", "k3 baseline t1"]
    assert list(fb["steered_response"]) == ["k1 alpha10 t0", "k3 alpha10 t1"]
    assert (fb["config"] == "alpha10").all()
    with pytest.raises(ValueError):
        fixed_and_broken(to_frame(rows), "baseline")


def test_write_and_load_round_trip(table: pd.DataFrame, tmp_path) -> None:
    summary = config_summary(table)
    paths = write_results(table, summary, tmp_path / "report")
    assert {"results.jsonl", "results.parquet", "summary.csv"} <= set(paths)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    results, loaded = load_results(tmp_path / "report")
    pd.testing.assert_frame_equal(results, table)
    pd.testing.assert_frame_equal(loaded, summary, check_dtype=False)
    assert len(pd.read_parquet(paths["results.parquet"])) == len(table)
