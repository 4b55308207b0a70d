"""Gates pass and fail where they should, say why, and are less flaky than fixed thresholds."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import stats as sps

from pytest_steer.gates import assert_at_least, assert_better, assert_not_worse
from pytest_steer.results import BASELINE
from pytest_steer.stats import bootstrap_interval, wilson_interval

from .factories import make_frame

N_EXAMPLES, N_TRIALS = 48, 5




def follow_with(n_pass: int) -> np.ndarray:
    """A 48 x 5 pass/fail grid with exactly `n_pass` passes, spread over examples."""
    flat = np.zeros(N_EXAMPLES * N_TRIALS, dtype=bool)
    flat[np.random.default_rng(n_pass).permutation(flat.size)[:n_pass]] = True
    return flat.reshape(N_TRIALS, N_EXAMPLES).T


def change(base: np.ndarray, gained: int, lost: int) -> np.ndarray:
    """Copy of `base` that passes `gained` more (example, trial) cells and fails `lost` more."""
    out = base.copy().ravel()
    fails, passes = np.flatnonzero(~out), np.flatnonzero(out)
    out[fails[:gained]] = True
    out[passes[:lost]] = False
    return out.reshape(base.shape)


def quality_grid(shift: float, noise: float = 0.02) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    base = rng.normal(0.6, 0.15, (N_EXAMPLES, 1)) + rng.normal(0, 0.05, (N_EXAMPLES, N_TRIALS))
    return {BASELINE: base, "alpha10": base + shift + rng.normal(0, noise, base.shape)}


# --- assert_at_least ---------------------------------------------------------------------------


def test_at_least_bool_passes_when_wilson_lower_bound_clears() -> None:
    rows = make_frame({"alpha10": follow_with(216)})  # 0.90, Wilson low ~0.856
    ci = assert_at_least(rows, "follow_all", 0.85)
    assert ci.method == "Wilson" and ci.n == 240


def test_at_least_bool_failure_names_everything() -> None:
    rows = make_frame({"alpha10": follow_with(149)})  # 149/240 = 0.621
    wilson = wilson_interval(149, 240)
    with pytest.raises(AssertionError) as info:
        assert_at_least(rows, "follow_all", 0.70)
    assert str(info.value) == (
        f"strict_prompt_accuracy (follow_all) for alpha10: estimate 0.621, 95% Wilson CI "
        f"[{wilson.low:.3f}, {wilson.high:.3f}] over n=240 (48 examples x 5 trials); required lower bound >= 0.700"
    )


def test_at_least_point_estimate_above_threshold_is_not_enough() -> None:
    rows = make_frame({"alpha10": follow_with(173)})  # 0.721 > 0.70, but Wilson low ~0.66
    with pytest.raises(AssertionError, match="estimate 0.721"):
        assert_at_least(rows, "follow_all", 0.70)


def test_at_least_float_uses_example_bootstrap() -> None:
    q = quality_grid(0.0)
    rows = make_frame({BASELINE: follow_with(200)}, {BASELINE: q[BASELINE]})
    expected = bootstrap_interval(rows["quality"], cluster=rows["key"])
    assert assert_at_least(rows, "quality", expected.low - 0.01) == expected
    with pytest.raises(AssertionError) as info:
        assert_at_least(rows, "quality", 0.9)
    message = str(info.value)
    assert message.startswith(f"fluency (quality) for baseline: estimate {expected.estimate:.3f}, ")
    assert "95% example-bootstrap CI" in message
    assert f"[{expected.low:.3f}, {expected.high:.3f}] over n=240 (48 examples x 5 trials)" in message
    assert message.endswith("required lower bound >= 0.900")


def test_at_least_wants_one_config() -> None:
    df = make_frame({BASELINE: follow_with(200), "alpha10": follow_with(200)})
    with pytest.raises(ValueError, match="exactly one config"):
        assert_at_least(df, "follow_all", 0.5)


# --- assert_not_worse --------------------------------------------------------------------------


def test_not_worse_float_passes_within_margin_and_fails_beyond() -> None:
    small = make_frame({c: follow_with(200) for c in (BASELINE, "alpha10")}, quality_grid(-0.01))
    comp = assert_not_worse(small, "alpha10", "quality", margin=0.05)
    assert comp.diff.low > -0.05

    big = make_frame({c: follow_with(200) for c in (BASELINE, "alpha10")}, quality_grid(-0.10))
    with pytest.raises(AssertionError) as info:
        assert_not_worse(big, "alpha10", "quality", margin=0.05)
    message = str(info.value)
    assert message.startswith("fluency (quality) for alpha10 vs baseline: diff -0.10")
    assert re.search(r"95% paired example-bootstrap CI \[-0\.1\d\d, -0\.0\d\d\]", message)
    assert "over n=240 pairs (48 examples x 5 trials)" in message
    assert message.endswith("required lower bound > -0.050 (non-inferiority margin 0.050)")


def test_not_worse_bool() -> None:
    base = follow_with(180)
    df = make_frame({BASELINE: base, "alpha10": change(base, gained=4, lost=6)})
    assert_not_worse(df, "alpha10", "follow_all", margin=0.05)
    df = make_frame({BASELINE: base, "alpha10": change(base, gained=2, lost=40)})
    with pytest.raises(AssertionError, match=r"alpha10 vs baseline: diff -0\.158 \(0\.592 vs 0\.750\)"):
        assert_not_worse(df, "alpha10", "follow_all", margin=0.05)


# --- assert_better -----------------------------------------------------------------------------


def test_better_bool_passes_on_significant_gain() -> None:
    base = follow_with(150)
    df = make_frame({BASELINE: base, "alpha10": change(base, gained=20, lost=3)})
    comp = assert_better(df, "alpha10", "follow_all")
    assert comp.mcnemar is not None and comp.mcnemar.pvalue < 0.05


def test_better_bool_fails_on_insignificant_gain() -> None:
    base = follow_with(150)
    df = make_frame({BASELINE: base, "alpha10": change(base, gained=6, lost=3)})
    with pytest.raises(AssertionError) as info:
        assert_better(df, "alpha10", "follow_all")
    message = str(info.value)
    assert message.startswith("strict_prompt_accuracy (follow_all) for alpha10 vs baseline: ")
    assert "diff +0.013 (0.637 vs 0.625)" in message
    assert "over n=240 pairs (48 examples x 5 trials)" in message
    # 9 discordant pairs, X ~ Bin(9, 1/2): 2 * P(X <= 3) = 2 * (1 + 9 + 36 + 84) / 512 = 0.508
    assert "exact McNemar: 6 gained, 3 lost of 9 discordant pairs, two-sided p=0.508" in message
    assert message.endswith("required p < 0.05 with more pairs gained than lost")


def test_better_bool_fails_on_significant_loss() -> None:
    base = follow_with(150)
    df = make_frame({BASELINE: base, "alpha10": change(base, gained=3, lost=20)})
    with pytest.raises(AssertionError, match="3 gained, 20 lost"):
        assert_better(df, "alpha10", "follow_all")


def test_better_float() -> None:
    follow = {c: follow_with(200) for c in (BASELINE, "alpha10")}
    assert assert_better(make_frame(follow, quality_grid(+0.05)), "alpha10", "quality").diff.low > 0
    with pytest.raises(AssertionError, match=r"diff [+-]0\.0\d\d.*required lower bound > 0$"):
        assert_better(make_frame(follow, quality_grid(+0.002, noise=0.1)), "alpha10", "quality")


# --- how noisy is a gate? ----------------------------------------------------------------------


def test_noise_simulation_ci_gate_vs_fixed_threshold() -> None:
    """True accuracy 0.8 on 48 examples x 5 trials: how often does each gate fail a good model?

    Gates: a fixed threshold (estimate >= 0.80) and `assert_at_least(..., 0.70)` (Wilson lower
    bound >= 0.70). Three worlds: (a) every row independent, computed exactly from Bin(240, 0.8);
    (b) the same 48 examples every run with fixed, unequal per-example pass rates (Beta(4, 1)
    quantiles scaled to mean 0.8) and only sampling noise between runs -- a CI job on a fixed
    eval set; (c) the 48 examples themselves redrawn each run from that Beta(4, 1) population.
    """
    n = N_EXAMPLES * N_TRIALS
    wilson_low = np.array([wilson_interval(k, n).low for k in range(n + 1)])
    ci_fails = wilson_low < 0.70  # indexed by number of passes
    fixed_fails = np.arange(n + 1) < 0.8 * n

    pmf = sps.binom.pmf(np.arange(n + 1), n, 0.8)
    exact_ci, exact_fixed = pmf[ci_fails].sum(), pmf[fixed_fails].sum()
    false_pass_at_70 = sps.binom.pmf(np.arange(n + 1), n, 0.70)[~ci_fails].sum()

    rng = np.random.default_rng(0)
    runs = 20_000
    iid = rng.binomial(n, 0.8, size=runs)
    q = sps.beta.ppf((np.arange(N_EXAMPLES) + 0.5) / N_EXAMPLES, 4, 1)
    fixed_examples = rng.binomial(N_TRIALS, np.clip(q * 0.8 / q.mean(), 0, 1), size=(runs, N_EXAMPLES)).sum(axis=1)
    redrawn = rng.binomial(N_TRIALS, rng.beta(4, 1, size=(runs, N_EXAMPLES))).sum(axis=1)

    print(f"\ntrue accuracy 0.8, {N_EXAMPLES} examples x {N_TRIALS} trials: false-failure rate")
    print(f"  (a) independent rows, exact:  fixed 0.80 threshold {exact_fixed:.1%}, Wilson low >= 0.70 {exact_ci:.1%}")
    for name, k in (("(a) independent rows, sim.  ", iid), ("(b) fixed examples, sim.     ", fixed_examples),
                    ("(c) redrawn examples, sim.   ", redrawn)):
        print(f"  {name} fixed 0.80 threshold {fixed_fails[k].mean():.1%}, Wilson low >= 0.70 {ci_fails[k].mean():.1%}")
    print(f"  a model at exactly 0.70 passes the Wilson gate {false_pass_at_70:.1%} of runs (exact, independent rows)")

    assert exact_ci <= 0.05 and 0.40 < exact_fixed < 0.50
    mc_slack = 3 * np.sqrt(0.05 * 0.95 / runs)  # three Monte Carlo standard errors, ~0.5 points
    assert abs(ci_fails[iid].mean() - exact_ci) < mc_slack
    assert ci_fails[fixed_examples].mean() <= 0.05 + mc_slack
    assert false_pass_at_70 < 0.03
    # Redrawing examples adds between-example variance that the row-level Wilson interval ignores.
    assert ci_fails[redrawn].mean() > ci_fails[fixed_examples].mean()
