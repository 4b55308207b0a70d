"""Statistics checked against hand arithmetic, enumeration and published values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pytest_steer.stats import (
    bootstrap_interval,
    clustered_wilson_interval,
    design_effect,
    holm,
    mcnemar_exact,
    mcnemar_paired,
    non_inferiority,
    paired_bootstrap_diff,
    sign_flip_test,
    wilson_interval,
)

from .factories import QUALITY, REPETITION, grid_frame

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
    # The expanded percentile interval reads the tails at the level whose normal quantile is
    # sqrt(3 / 2) t_2 (3 resampled units). Those levels (e.g. 0.0209 * 27 = 0.56 at 80%) fall strictly
    # inside a step of the exact CDF, so a large resample lands on the same atom: agreement is exact.
    alpha = 2 * scipy_stats.norm.sf(math.sqrt(3 / 2) * scipy_stats.t.ppf(1 - (1 - confidence) / 2, 2))
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


def test_cluster_bootstrap_is_wider_when_trials_of_a_case_agree() -> None:
    # Each case's 5 trials are identical, so there are really 12 observations, not 60.
    per_example = np.random.default_rng(2).normal(size=12)
    values = np.repeat(per_example, 5)
    keys = np.repeat(np.arange(12), 5)
    rows = bootstrap_interval(values)
    examples = bootstrap_interval(values, cluster=keys)
    assert examples.high - examples.low > 1.8 * (rows.high - rows.low)  # about sqrt(5) = 2.24 wider
    assert examples.method == "case-bootstrap"


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


def test_non_inferiority_reads_the_bound_on_the_bad_side() -> None:
    control = np.zeros(50)
    rise = control + 0.02  # every pair 0.02 higher: the interval is the point [0.02, 0.02]
    assert non_inferiority(rise, control, 0.01, direction=1).passed  # higher is better: a rise is fine
    lower_better = non_inferiority(rise, control, 0.01, direction=-1)
    assert not lower_better.passed  # lower is better: a rise of 0.02 > 0.01 margin fails
    assert "required upper bound < +0.010" in str(lower_better)
    assert non_inferiority(rise, control, 0.03, direction=-1).passed
    assert not non_inferiority(-rise, control, 0.01, direction=0).passed  # neither: any change beyond the margin
    assert non_inferiority(-rise, control, 0.03, direction=0).passed
    with pytest.raises(ValueError, match="direction"):
        non_inferiority(rise, control, 0.01, direction=2)


def test_non_inferiority_and_the_gate_share_one_convention() -> None:
    """stats.non_inferiority and gates.assert_not_worse read the same interval on the same pairs."""
    from pytest_steer.gates import assert_not_worse

    rng = np.random.default_rng(5)
    base_q = rng.normal(0.0, 1.0, size=(30, 3))
    frame = grid_frame({"baseline": {"quality": base_q},
                        "pasta-alpha5": {"quality": base_q - 0.1 + rng.normal(0, 0.2, size=(30, 3))}})
    b = frame[frame["config"] == "baseline"].sort_values(["key", "trial"])
    t = frame[frame["config"] == "pasta-alpha5"].sort_values(["key", "trial"])
    args = (t["quality"].to_numpy(float), b["quality"].to_numpy(float))
    ni = non_inferiority(*args, margin=0.3, cluster=t["key"].to_numpy())
    comp = assert_not_worse(frame, "pasta-alpha5", QUALITY, margin=0.3)
    assert (comp.diff.low, comp.diff.high, comp.diff.confidence) == pytest.approx((ni.diff.low, ni.diff.high, 0.95))
    margin = -ni.diff.low - 1e-6  # just inside the bound: both must fail
    assert not non_inferiority(*args, margin=margin, cluster=t["key"].to_numpy()).passed
    with pytest.raises(AssertionError):
        assert_not_worse(frame, "pasta-alpha5", QUALITY, margin=margin)
    # Lower is better: the negated scores as repetition rise by what quality fell, so the gate reads
    # the upper bound, -ni.diff.low, against +margin.
    rep = frame.assign(repetition=-frame["quality"])
    assert assert_not_worse(rep, "pasta-alpha5", REPETITION, margin=-ni.diff.low + 1e-6).diff.high == pytest.approx(
        -ni.diff.low)
    with pytest.raises(AssertionError, match="required upper bound < "):
        assert_not_worse(rep, "pasta-alpha5", REPETITION, margin=-ni.diff.low - 1e-6)


# --- sign-flip test ----------------------------------------------------------------------------


def test_sign_flip_exact_matches_enumeration_by_hand() -> None:
    # Cluster sums: A 1.0 + 0.5 = 1.5, B 1.0, C -0.5; observed |sum| = 2.0. Of the 8 sign patterns,
    # |±1.5 ± 1.0 ± 0.5| >= 2.0 for (+,+,-), (+,+,+) = 3.0, and their mirror images: 4 of 8 -> p = 0.5.
    treated = np.array([1.0, 0.5, 1.0, -0.5])
    result = sign_flip_test(treated, np.zeros(4), cluster=["A", "A", "B", "C"])
    assert result.exact and result.n_clusters == 3
    assert result.pvalue == pytest.approx(0.5)
    assert result.diff == pytest.approx(0.5)
    # Five pairs all +1: only the all-plus and all-minus patterns reach |5|: p = 2/32.
    assert sign_flip_test(np.ones(5), np.zeros(5)).pvalue == pytest.approx(2 / 32)
    # No difference at all: every pattern ties, p = 1.
    assert sign_flip_test(np.ones(4), np.ones(4)).pvalue == 1.0


def test_sign_flip_sampled_is_seeded_and_close_to_exact() -> None:
    rng = np.random.default_rng(9)
    d = rng.normal(0.3, 1.0, size=16)
    exact = sign_flip_test(d, np.zeros(16), n_resamples=2**16)
    sampled = sign_flip_test(d, np.zeros(16), n_resamples=4000, seed=1)
    assert exact.exact and not sampled.exact
    assert sampled == sign_flip_test(d, np.zeros(16), n_resamples=4000, seed=1)
    assert sampled.pvalue == pytest.approx(exact.pvalue, abs=3 * math.sqrt(0.25 / 4000))
    assert sampled.pvalue > 0


# --- Wilson ----------------------------------------------------------------------------------


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


def test_design_effect_by_hand() -> None:
    keys = np.repeat(["a", "b", "c", "d"], 3)
    identical = np.repeat([1.0, 0.0, 1.0, 1.0], 3)
    assert design_effect(identical, keys) == 3.0  # trials copy each other: each case counts once
    balanced = np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0], float)
    assert design_effect(balanced, keys) == 1.0  # every case 1 of 3, as the pooled share: no clustering
    assert design_effect(np.ones(12), keys) == 3.0  # no variation: the worst case
    # case sums (3, 1, 0, 2), sizes 3, mean 0.5: var_cluster = 4/3 * (1.5^2 + .5^2 + 1.5^2 + .5^2) / 144
    # = 5/108; var_iid = 0.25 / 12 = 1/48; ratio 240/108 = 20/9
    mixed = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0], float)
    assert design_effect(mixed, keys) == pytest.approx(20 / 9)


def test_clustered_wilson_counts_cases_when_trials_agree() -> None:
    """4 cases x 3 identical trials, 3 of 4 cases pass: the Wilson interval over 4 cases, not 12 rows."""
    keys = np.repeat(["a", "b", "c", "d"], 3)
    ci = clustered_wilson_interval(np.repeat([1.0, 1.0, 1.0, 0.0], 3), keys)
    plain = wilson_interval(3, 4)
    assert (ci.estimate, ci.n) == (0.75, 12)
    assert (ci.low, ci.high) == pytest.approx((plain.low, plain.high))
    assert "design effect 3.00" in ci.method
    independent = clustered_wilson_interval(np.array([1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0], float), keys)
    plain = wilson_interval(4, 12)
    assert (independent.low, independent.high) == pytest.approx((plain.low, plain.high))
    with pytest.raises(ValueError, match="0/1"):
        clustered_wilson_interval([0.5, 1.0], ["a", "b"])


def test_sign_flip_counts_a_flipped_case_once_however_many_trials() -> None:
    """The issue's example: 4 cases flip in all 3 trials. Rows as independent pairs (McNemar) give
    p = 2 / 2^12; cases give 2 / 2^4 = 0.125."""
    keys = np.repeat(np.arange(4), 3)
    treated, control = np.ones(12), np.zeros(12)
    assert mcnemar_paired(treated, control).pvalue == pytest.approx(2 / 2**12)
    assert sign_flip_test(treated, control, cluster=keys).pvalue == pytest.approx(0.125)


def test_wilson_rejects_empty_sample() -> None:
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_holm_matches_a_hand_computation() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> max(0.06, 0.04)=0.06; NaN stays out of m
    assert holm([0.01, 0.04, 0.03, math.nan, 0.005]) == pytest.approx([0.03, 0.06, 0.06, math.nan, 0.02],
                                                                         nan_ok=True)
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([]) == []
