"""Statistics checked against hand arithmetic, enumeration and published values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from pytest_steer.results import BASELINE
from pytest_steer.stats import (
    bootstrap_interval,
    compare_to_baseline,
    config_intervals,
    mcnemar_exact,
    mcnemar_paired,
    non_inferiority,
    paired_bootstrap_diff,
    trial_interval,
    wilson_interval,
)

from .factories import make_frame

Z95 = 1.959963984540054  # standard normal 97.5% quantile




# --- McNemar -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        # b+c = 6 discordant pairs, X ~ Bin(6, 1/2). P(X <= 1) = (C(6,0) + C(6,1)) / 2^6 = 7/64;
        # two-sided doubles the smaller tail: 14/64 = 0.21875.
        (1, 5, 14 / 64),
        (5, 1, 14 / 64),  # symmetric in b and c
        # P(X <= 0) = C(6,0) / 64 = 1/64, two-sided 2/64.
        (0, 6, 2 / 64),
        # b+c = 12: P(X <= 2) = (1 + 12 + 66) / 4096 = 79/4096, two-sided 158/4096.
        (2, 10, 158 / 4096),
        # b = c: the observed split is the most likely one, every outcome is as extreme -> 1.
        (3, 3, 1.0),
        (0, 0, 1.0),  # no discordant pairs: no evidence either way
    ],
)
def test_mcnemar_exact_matches_hand_computed(b: int, c: int, expected: float) -> None:
    result = mcnemar_exact(b, c)
    assert (result.b, result.c) == (b, c)
    assert result.pvalue == pytest.approx(expected, rel=1e-12)


def test_mcnemar_paired_counts_discordant_pairs_with_direction() -> None:
    control = [True, True, False, False, False, True]
    treated = [True, False, True, True, False, True]
    # (T,T) concordant, (T,F) lost -> b, (F,T) gained -> c twice, (F,F), (T,T): b=1, c=2.
    result = mcnemar_paired(treated, control)
    assert (result.b, result.c) == (1, 2)
    assert result.pvalue == pytest.approx(1.0)  # 2 * P(Bin(3, .5) <= 1) = 2 * 4/8 = 1
    assert "2 gained, 1 lost" in str(result)


def test_mcnemar_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 2)
    with pytest.raises(ValueError):
        mcnemar_paired([True, False], [True])


# --- bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_all_differences_equal_gives_degenerate_interval() -> None:
    treated = np.array([0.75, 1.0, 0.5, 0.25])
    result = paired_bootstrap_diff(treated, treated - 0.25, cluster=["a", "a", "b", "c"])
    assert result.diff == pytest.approx(0.25)
    assert result.low == pytest.approx(0.25)
    assert result.high == pytest.approx(0.25)
    assert (result.n_pairs, result.n_clusters) == (4, 3)


def _exact_bootstrap_quantile(values: list[float], q: float) -> float:
    """Inverse CDF of the uniform distribution over `values` (each enumerated resample equally likely)."""
    ordered = sorted(values)
    return ordered[math.ceil(q * len(ordered)) - 1]


@pytest.mark.parametrize("clustered", [True, False])
@pytest.mark.parametrize("confidence", [0.95, 0.8, 0.5])
def test_bootstrap_percentiles_match_full_enumeration(clustered: bool, confidence: float) -> None:
    if clustered:
        # Three examples with 2, 1 and 3 trials; the resampled statistic is sum / count over the drawn
        # examples' trials. Cluster sums and sizes: A (1.0, 2), B (0.5, 1), C (-1.0, 3).
        diffs = np.array([1.0, 0.0, 0.5, 0.0, 0.0, -1.0])
        cluster = np.array(["A", "A", "B", "C", "C", "C"])
        units = [(1.0, 2), (0.5, 1), (-1.0, 3)]
    else:
        diffs = np.array([0.9, 0.2, -0.4])
        cluster = None
        units = [(0.9, 1), (0.2, 1), (-0.4, 1)]
    # All 3^3 = 27 ordered resamples are equally likely under the bootstrap.
    exact = [
        sum(units[i][0] for i in draw) / sum(units[i][1] for i in draw)
        for draw in itertools.product(range(3), repeat=3)
    ]
    alpha = 1 - confidence
    # The quantile levels (e.g. 0.025 * 27 = 0.675) fall strictly inside a step of the exact CDF,
    # so a large resample lands on the same atom: agreement is exact, not just close.
    result = paired_bootstrap_diff(
        diffs, np.zeros_like(diffs), n_resamples=200_000, confidence=confidence, cluster=cluster
    )
    assert result.low == pytest.approx(_exact_bootstrap_quantile(exact, alpha / 2), abs=1e-12)
    assert result.high == pytest.approx(_exact_bootstrap_quantile(exact, 1 - alpha / 2), abs=1e-12)
    assert result.diff == pytest.approx(diffs.mean())


def test_bootstrap_is_reproducible_for_a_seed() -> None:
    rng = np.random.default_rng(1)
    treated, control = rng.normal(size=60), rng.normal(size=60)
    keys = np.repeat(np.arange(12), 5)
    first = paired_bootstrap_diff(treated, control, seed=7, cluster=keys, n_resamples=2000)
    again = paired_bootstrap_diff(treated, control, seed=7, cluster=keys, n_resamples=2000)
    other = paired_bootstrap_diff(treated, control, seed=8, cluster=keys, n_resamples=2000)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)


def test_cluster_bootstrap_is_wider_when_trials_of_an_example_agree() -> None:
    # Each example's 5 trials are identical, so there are really 12 observations, not 60.
    per_example = np.random.default_rng(2).normal(size=12)
    values = np.repeat(per_example, 5)
    keys = np.repeat(np.arange(12), 5)
    rows = bootstrap_interval(values)
    examples = bootstrap_interval(values, cluster=keys)
    assert examples.high - examples.low > 1.8 * (rows.high - rows.low)  # about sqrt(5) = 2.24 wider
    assert examples.method == "example-bootstrap"


def test_non_inferiority_uses_the_one_sided_interval() -> None:
    rng = np.random.default_rng(3)
    control = rng.normal(0.5, 0.1, size=200)
    treated = control - 0.02 + rng.normal(0, 0.01, size=200)
    ok = non_inferiority(treated, control, margin=0.05)
    assert ok.diff.confidence == pytest.approx(0.95)  # one convention: two-sided 95%, one-sided 2.5%
    assert ok.passed and ok.diff.low > -0.05
    bad = non_inferiority(treated, control, margin=0.01)
    assert not bad.passed
    assert "required lower bound > -0.010" in str(bad)
    with pytest.raises(ValueError):
        non_inferiority(treated, control, margin=-0.1)


def test_non_inferiority_and_the_gate_share_one_convention() -> None:
    """stats.non_inferiority and gates.assert_not_worse read the same interval on the same pairs."""
    from pytest_steer.gates import assert_not_worse
    from tests.factories import make_frame

    rng = np.random.default_rng(5)
    base_q = rng.normal(0.0, 1.0, size=(30, 3))
    frame = make_frame({"baseline": np.ones((30, 3), bool), "alpha5": np.ones((30, 3), bool)},
                       {"baseline": base_q, "alpha5": base_q - 0.1 + rng.normal(0, 0.2, size=(30, 3))})
    b = frame[frame["config"] == "baseline"].sort_values(["key", "trial"])
    t = frame[frame["config"] == "alpha5"].sort_values(["key", "trial"])
    ni = non_inferiority(t["quality"].to_numpy(float), b["quality"].to_numpy(float), margin=0.3,
                         cluster=t["key"].to_numpy())
    comp = assert_not_worse(frame, "alpha5", "quality", margin=0.3)
    assert (comp.diff.low, comp.diff.high, comp.diff.confidence) == pytest.approx((ni.diff.low, ni.diff.high, 0.95))
    margin = -ni.diff.low - 1e-6  # just inside the bound: both must fail
    assert not non_inferiority(t["quality"].to_numpy(float), b["quality"].to_numpy(float), margin=margin,
                               cluster=t["key"].to_numpy()).passed
    with pytest.raises(AssertionError):
        assert_not_worse(frame, "alpha5", "quality", margin=margin)


# --- Wilson and t ------------------------------------------------------------------------------


def test_wilson_matches_formula_by_hand() -> None:
    # 8/10 at 95%: p = 0.8, z^2/n = 0.384146, centre = (p + z^2/2n) / (1 + z^2/n) = 0.99207 / 1.38415
    # = 0.716738, half-width = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2) = 1.41601 * 0.160011
    # = 0.226578, so [0.490160, 0.943316].
    k, n, z = 8, 10, Z95
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    result = wilson_interval(k, n)
    assert result.estimate == pytest.approx(0.8)
    assert result.low == pytest.approx(centre - half, rel=1e-10)
    assert result.high == pytest.approx(centre + half, rel=1e-10)
    assert (round(result.low, 4), round(result.high, 4)) == (0.4902, 0.9433)


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no
    # continuity correction).
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_published_values(k: int, n: int, low: float, high: float) -> None:
    result = wilson_interval(k, n)
    assert (round(result.low, 4), round(result.high, 4)) == (low, high)


def test_wilson_rejects_empty_sample() -> None:
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_trial_interval_matches_hand_arithmetic() -> None:
    # mean 0.7; deviations -0.1, 0, 0.1 -> variance 0.02 / 2 = 0.01, std 0.1; sem = 0.1 / sqrt(3)
    # = 0.0577350; t(0.975, df=2) = 4.302653 -> half-width 0.248414: [0.451586, 0.948414].
    result = trial_interval([0.6, 0.7, 0.8])
    assert (result.estimate, result.n) == (pytest.approx(0.7), 3)
    assert result.std == pytest.approx(0.1)
    assert result.low == pytest.approx(0.7 - 4.302652729749462 * 0.1 / math.sqrt(3))
    assert result.low == pytest.approx(0.451586, abs=1e-6)
    assert result.high == pytest.approx(0.948414, abs=1e-6)


def test_trial_interval_with_one_trial_has_no_spread() -> None:
    result = trial_interval([0.75])
    assert result.estimate == 0.75
    assert math.isnan(result.std) and math.isnan(result.low) and math.isnan(result.high)


# --- DataFrame level ---------------------------------------------------------------------------


def _two_config_frame() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    base = rng.random((12, 3)) < 0.6
    steered = base.copy()
    steered[:6, 0] = True  # gains where the baseline failed
    steered[6:8, 1] = False  # losses where the baseline passed
    quality = {BASELINE: rng.normal(0.5, 0.1, (12, 3))}
    quality["alpha10"] = quality[BASELINE] - 0.05
    return make_frame({BASELINE: base, "alpha10": steered}, quality)


def test_compare_to_baseline_pairs_on_key_and_trial() -> None:
    df = _two_config_frame()
    base = df[df.config == BASELINE].set_index(["key", "trial"])["follow_all"]
    steered = df[df.config == "alpha10"].set_index(["key", "trial"])["follow_all"]
    comp = compare_to_baseline(df, "alpha10")
    assert comp.mcnemar is not None
    assert comp.mcnemar.b == int((base & ~steered).sum())
    assert comp.mcnemar.c == int((steered & ~base).sum())
    assert comp.diff.diff == pytest.approx(steered.mean() - base.mean())
    assert (comp.n_pairs, comp.n_examples, comp.n_trials) == (36, 12, 3)
    assert comp.diff.n_clusters == 12

    quality = compare_to_baseline(df, "alpha10", "quality")
    assert quality.mcnemar is None
    assert quality.diff.diff == pytest.approx(-0.05)
    assert quality.diff.low == pytest.approx(-0.05) and quality.diff.high == pytest.approx(-0.05)


def test_compare_to_baseline_ignores_row_order() -> None:
    df = _two_config_frame()
    shuffled = df.sample(frac=1.0, random_state=5).reset_index(drop=True)
    for metric in ("follow_all", "quality"):
        assert compare_to_baseline(shuffled, "alpha10", metric) == compare_to_baseline(df, "alpha10", metric)


def test_compare_to_baseline_reports_missing_pairs() -> None:
    df = _two_config_frame()
    missing = df[~((df.config == "alpha10") & (df.key == "case003") & (df.trial == 2))]
    with pytest.raises(ValueError, match=r"1 unpaired rows, e\.g\. \('case003', trial 2\) only in baseline"):
        compare_to_baseline(missing, "alpha10")
    with pytest.raises(ValueError, match="no rows for config 'alpha99'"):
        compare_to_baseline(df, "alpha99")
    with pytest.raises(ValueError, match="duplicate"):
        compare_to_baseline(pd.concat([df, df.iloc[:1]]), "alpha10")


def test_config_intervals_table() -> None:
    rng = np.random.default_rng(6)
    follow = {c: rng.random((10, 4)) < 0.7 for c in ("alpha10", BASELINE, "alpha2", "alpha0.5")}
    df = make_frame(follow, {c: rng.normal(size=(10, 4)) for c in follow})
    table = config_intervals(df, n_resamples=500)
    # |log 0.5| = |log 2| < |log 10|; ties go to the smaller alpha.
    assert list(table.config) == [BASELINE, "alpha0.5", "alpha2", "alpha10"]
    assert (table.n_trials == 4).all() and (table.n_examples == 10).all()
    assert "quality_wilson_low" not in table.columns and "quality_mcnemar_p" not in table.columns

    row = table.set_index("config").loc["alpha2"]
    per_trial = follow["alpha2"].mean(axis=0)
    expected = trial_interval(per_trial)
    assert row.follow_all_mean == pytest.approx(per_trial.mean())
    assert row.follow_all_std == pytest.approx(per_trial.std(ddof=1))
    assert (row.follow_all_ci_low, row.follow_all_ci_high) == pytest.approx((expected.low, expected.high))
    wilson = wilson_interval(int(follow["alpha2"].sum()), 40)
    assert (row.follow_all_wilson_low, row.follow_all_wilson_high) == pytest.approx((wilson.low, wilson.high))
    comp = compare_to_baseline(df, "alpha2", "loose_follow_all", n_resamples=500)
    assert row.loose_follow_all_diff == pytest.approx(comp.diff.diff)
    diff_ci = (row.loose_follow_all_diff_low, row.loose_follow_all_diff_high)
    assert diff_ci == pytest.approx((comp.diff.low, comp.diff.high))
    assert row.loose_follow_all_mcnemar_p == pytest.approx(comp.mcnemar.pvalue)

    base = table.iloc[0]
    assert math.isnan(base.follow_all_diff) and math.isnan(base.quality_diff_low)
    assert math.isnan(base.follow_all_mcnemar_p)
