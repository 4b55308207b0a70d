"""Gates pass and fail where they should, say why, and are less flaky than fixed thresholds."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import stats as sps

from pytest_steer.evaluation import EvalResult, MetricValue
from pytest_steer.gates import assert_at_least, assert_at_most, assert_better, assert_not_worse
from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.results import BASELINE
from pytest_steer.scores import Metric
from pytest_steer.stats import bootstrap_interval, clustered_wilson_interval, wilson_interval

from .factories import LENGTH_RATIO, METRICS, PASTA10, QUALITY, REPETITION, STRICT, TRUNCATED, grid_frame, make_row

N_CASES, N_TRIALS = 48, 5
STEERED = "pasta-alpha10"


def follow_with(n_pass: int) -> np.ndarray:
    """A 48 x 5 pass/fail grid with exactly `n_pass` passes, spread over cases."""
    flat = np.zeros(N_CASES * N_TRIALS, dtype=bool)
    flat[np.random.default_rng(n_pass).permutation(flat.size)[:n_pass]] = True
    return flat.reshape(N_TRIALS, N_CASES).T


def change(base: np.ndarray, gained: int, lost: int) -> np.ndarray:
    """Copy of `base` that passes `gained` more (case, trial) cells and fails `lost` more."""
    out = base.copy().ravel()
    fails, passes = np.flatnonzero(~out), np.flatnonzero(out)
    out[fails[:gained]] = True
    out[passes[:lost]] = False
    return out.reshape(base.shape)


def quality_grid(shift: float, noise: float = 0.02) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    base = rng.normal(0.6, 0.15, (N_CASES, 1)) + rng.normal(0, 0.05, (N_CASES, N_TRIALS))
    return {BASELINE: base, STEERED: base + shift + rng.normal(0, noise, base.shape)}


def strict(grids: dict[str, np.ndarray]) -> object:
    return grid_frame({c: {STRICT.name: g} for c, g in grids.items()})


def quality(grids: dict[str, np.ndarray], name: str = QUALITY.name) -> object:
    return grid_frame({c: {name: g} for c, g in grids.items()})


# --- assert_at_least / assert_at_most ----------------------------------------------------------


def test_at_least_binary_passes_when_wilson_lower_bound_clears() -> None:
    rows = strict({STEERED: follow_with(216)})  # 0.90, Wilson low ~0.856
    ci = assert_at_least(rows, STRICT, 0.85)
    assert ci.method.startswith("Wilson") and ci.n == 240


def test_at_least_binary_failure_names_everything() -> None:
    rows = strict({STEERED: follow_with(149)})  # 149/240 = 0.621
    wilson = clustered_wilson_interval(rows[STRICT.name].to_numpy(float), rows["key"].to_numpy())
    with pytest.raises(AssertionError) as info:
        assert_at_least(rows, STRICT, 0.70)
    assert str(info.value) == (
        f"strict prompt accuracy (strict_prompt_accuracy) for {STEERED}: estimate 0.621, 95% {wilson.method} CI "
        f"[{wilson.low:.3f}, {wilson.high:.3f}] over n=240 (48 cases x 5 trials); required lower bound >= 0.700"
    )


def test_at_least_point_estimate_above_threshold_is_not_enough() -> None:
    rows = strict({STEERED: follow_with(173)})  # 0.721 > 0.70, but Wilson low ~0.66
    with pytest.raises(AssertionError, match="estimate 0.721"):
        assert_at_least(rows, STRICT, 0.70)


def test_at_least_real_uses_case_bootstrap() -> None:
    rows = quality({BASELINE: quality_grid(0.0)[BASELINE]})
    expected = bootstrap_interval(rows["quality"], cluster=rows["key"])
    assert assert_at_least(rows, QUALITY, expected.low - 0.01) == expected
    with pytest.raises(AssertionError) as info:
        assert_at_least(rows, QUALITY, 0.9)
    message = str(info.value)
    assert message.startswith(f"headline quality (quality) for baseline: estimate {expected.estimate:.3f}, ")
    assert "95% case-bootstrap CI" in message
    assert f"[{expected.low:.3f}, {expected.high:.3f}] over n=240 (48 cases x 5 trials)" in message
    assert message.endswith("required lower bound >= 0.900")


def test_at_most_reads_the_upper_bound() -> None:
    rows = quality({STEERED: np.full((N_CASES, N_TRIALS), 0.02)}, REPETITION.name)
    assert assert_at_most(rows, REPETITION, 0.05).high == pytest.approx(0.02)
    with pytest.raises(AssertionError, match=r"rep-4 \(repetition\) for pasta-alpha10: .*upper bound <= 0.010"):
        assert_at_most(rows, REPETITION, 0.01)


def test_at_least_wants_one_config() -> None:
    df = strict({BASELINE: follow_with(200), STEERED: follow_with(200)})
    with pytest.raises(ValueError, match="exactly one config"):
        assert_at_least(df, STRICT, 0.5)


# --- assert_not_worse --------------------------------------------------------------------------


def test_not_worse_real_passes_within_margin_and_fails_beyond() -> None:
    comp = assert_not_worse(quality(quality_grid(-0.01)), STEERED, QUALITY, margin=0.05)
    assert comp.diff.low > -0.05

    with pytest.raises(AssertionError) as info:
        assert_not_worse(quality(quality_grid(-0.10)), STEERED, QUALITY, margin=0.05)
    message = str(info.value)
    assert message.startswith(f"headline quality (quality) for {STEERED} vs baseline: diff -0.10")
    assert re.search(r"95% paired case-bootstrap CI \[-0\.1\d\d, -0\.0\d\d\]", message)
    assert "over n=240 pairs (48 cases x 5 trials)" in message
    assert message.endswith("required lower bound > -0.050 (non-inferiority margin 0.050, higher is better)")


def test_not_worse_binary() -> None:
    base = follow_with(180)
    assert_not_worse(strict({BASELINE: base, STEERED: change(base, gained=4, lost=6)}), STEERED, STRICT, margin=0.05)
    df = strict({BASELINE: base, STEERED: change(base, gained=2, lost=40)})
    with pytest.raises(AssertionError, match=rf"{STEERED} vs baseline: diff -0\.158 \(0\.592 vs 0\.750\)"):
        assert_not_worse(df, STEERED, STRICT, margin=0.05)


def test_not_worse_is_direction_aware() -> None:
    """Repetition rising by 0.10 is worse; falling by 0.10 is not, whatever the margin."""
    base = np.random.default_rng(2).uniform(0.0, 0.2, (N_CASES, N_TRIALS))
    rise = quality({BASELINE: base, STEERED: base + 0.10}, REPETITION.name)
    fall = quality({BASELINE: base, STEERED: base - 0.10}, REPETITION.name)
    with pytest.raises(AssertionError, match=r"diff \+0\.100 .*required upper bound < \+0\.050 .*lower is better"):
        assert_not_worse(rise, STEERED, REPETITION, margin=0.05)
    assert assert_not_worse(fall, STEERED, REPETITION, margin=0.0).diff.diff == pytest.approx(-0.10)
    assert assert_not_worse(rise, STEERED, REPETITION, margin=0.11).diff.high == pytest.approx(0.10)
    # Read as higher-is-better, the same tables swap verdicts.
    assert_not_worse(rise.rename(columns={"repetition": "quality"}), STEERED, QUALITY, margin=0.0)
    with pytest.raises(AssertionError):
        assert_not_worse(fall.rename(columns={"repetition": "quality"}), STEERED, QUALITY, margin=0.05)
    # No good direction: any change beyond the margin fails.
    ratio = quality({BASELINE: np.ones((N_CASES, N_TRIALS)), STEERED: np.full((N_CASES, N_TRIALS), 0.8)},
                    LENGTH_RATIO.name)
    with pytest.raises(AssertionError, match=r"required interval within \[-0\.100, \+0\.100\]"):
        assert_not_worse(ratio, STEERED, LENGTH_RATIO, margin=0.1)
    assert_not_worse(ratio, STEERED, LENGTH_RATIO, margin=0.25)


def test_not_worse_refuses_unpaired_rows() -> None:
    df = strict({BASELINE: follow_with(100), STEERED: follow_with(100)})
    missing = df[~((df.config == STEERED) & (df.key == "case003") & (df.trial == 2))]
    with pytest.raises(ValueError, match=r"1 unpaired rows, e\.g\. \('case003', trial 2\) only in baseline"):
        assert_not_worse(missing, STEERED, STRICT, margin=0.1)


# --- assert_better -----------------------------------------------------------------------------


def test_better_binary_passes_on_significant_gain() -> None:
    base = follow_with(150)
    comp = assert_better(strict({BASELINE: base, STEERED: change(base, gained=20, lost=3)}), STEERED, STRICT)
    assert comp.pvalue < 0.05 and comp.diff.diff > 0


def test_better_binary_fails_on_insignificant_gain() -> None:
    base = follow_with(150)
    with pytest.raises(AssertionError) as info:
        assert_better(strict({BASELINE: base, STEERED: change(base, gained=6, lost=3)}), STEERED, STRICT)
    message = str(info.value)
    assert message.startswith(f"strict prompt accuracy (strict_prompt_accuracy) for {STEERED} vs baseline: ")
    assert "diff +0.013 (0.637 vs 0.625)" in message
    assert "over n=240 pairs (48 cases x 5 trials)" in message
    assert "sign-flip test (sampled, 48 clusters): diff +0.013" in message
    assert "required p < 0.05 with a change > 0 (higher is better)" in message


def test_better_binary_fails_on_significant_loss() -> None:
    base = follow_with(150)
    with pytest.raises(AssertionError, match=r"diff -0\.071 .* required p < 0\.05 with a change > 0"):
        assert_better(strict({BASELINE: base, STEERED: change(base, gained=3, lost=20)}), STEERED, STRICT)


def test_better_for_a_lower_is_better_binary_metric_means_fewer() -> None:
    base = follow_with(150)
    fewer = grid_frame({c: {TRUNCATED.name: g} for c, g in {BASELINE: base, STEERED: change(base, 3, 20)}.items()})
    assert assert_better(fewer, STEERED, TRUNCATED).diff.diff == pytest.approx(-17 / 240)
    more = grid_frame({c: {TRUNCATED.name: g} for c, g in {BASELINE: base, STEERED: change(base, 20, 3)}.items()})
    with pytest.raises(AssertionError, match="with a change < 0 .lower is better."):
        assert_better(more, STEERED, TRUNCATED)
    with pytest.raises(ValueError, match="no better direction"):
        assert_better(more, STEERED, LENGTH_RATIO)


def test_better_real() -> None:
    assert assert_better(quality(quality_grid(+0.05)), STEERED, QUALITY).diff.low > 0
    with pytest.raises(AssertionError, match=r"diff [+-]0\.0\d\d.*required p < 0\.05 with a change > 0"):
        assert_better(quality(quality_grid(+0.002, noise=0.1)), STEERED, QUALITY)
    down = quality({c: -g for c, g in quality_grid(+0.05).items()}, REPETITION.name)
    assert assert_better(down, STEERED, REPETITION).diff.high < 0


# --- the result object a test receives ---------------------------------------------------------


def _results(rep_shift: float) -> EvalResult:
    """Baseline and pasta-alpha10 over 20 cases x 2 trials; steering follows more, repetition shifts."""
    rows = {BASELINE: [], STEERED: []}
    for k in range(20):
        for t in range(2):
            for cfg in (BASELINE_CONFIG, PASTA10):
                steered = cfg is PASTA10
                follow = [k % 2 == 0 or (steered and k % 4 == 1), k % 3 != 0]
                rep = 0.05 + 0.01 * (k % 5) + (rep_shift if steered else 0.0)
                rows[cfg.label].append(make_row(f"k{k}", cfg, t, tags=["a:x", "b:y"], follow=follow,
                                                scores={"quality": 0.5 - 0.01 * (k % 3), "repetition": rep,
                                                        "reward": 1.0 + (k % 2)}))
    metrics = [*METRICS, Metric("reward")]
    base = EvalResult(BASELINE_CONFIG, None, rows[BASELINE], metrics, primary=STRICT.name)
    return EvalResult(PASTA10, None, rows[STEERED], metrics, baseline=base, primary=STRICT.name)


def test_result_attributes_come_from_the_reducer() -> None:
    res = _results(0.0)
    # strict prompt: both tags followed. k even and k % 3 != 0: k in {2, 4, 8, 10, 14, 16} -> 6 of 20 at baseline;
    # steered adds k % 4 == 1 and k % 3 != 0: {1, 5, 13, 17} -> 10 of 20.
    assert res.strict_prompt_accuracy == pytest.approx(0.5)
    assert res.baseline.strict_prompt_accuracy == pytest.approx(0.3)
    assert isinstance(res.strict_prompt_accuracy, MetricValue)
    assert res.strict_prompt_accuracy.baseline == pytest.approx(0.3)
    # instruction level pools 40 instructions: baseline a:x 10 + b:y 13 (k % 3 != 0 for 13 of 20) = 23 / 40
    assert res.baseline.strict_instruction_accuracy == pytest.approx(23 / 40)
    assert res.mean_reward == res.reward == pytest.approx(1.5)  # the old name still reads the reward
    # per tag, steered: a:x followed for k even (10) or k % 4 == 1 (5) = 15 / 20; b:y for k % 3 != 0, 13 / 20
    assert res.per_type == {"a:x": pytest.approx(0.75), "b:y": pytest.approx(13 / 20)}
    assert "repetition = 0.07 (pasta-alpha10, all trials, n=40; baseline 0.07; lower is better)" == \
        res.repetition.describe()
    with pytest.raises(AttributeError, match=r"no metric 'strict_acc'; available: strict_prompt_accuracy, "):
        _ = res.strict_acc


def test_result_properties_are_primitives() -> None:
    props = dict(_results(0.0).properties())
    assert props["steer_config"] == STEERED and props["steer_method"] == "pasta" and props["steer_value"] == 10.0
    assert props["steer_trial"] == "" and props["steer_n"] == 40 and props["steer_primary"] == STRICT.name
    assert props["strict_prompt_accuracy"] == 0.5 and props["strict_instruction_accuracy[a:x]"] == 0.75
    assert {type(v) for v in props.values()} <= {str, int, float}
    assert {m.name for m in METRICS} <= set(props)


def test_result_gates_work_on_every_metric_and_know_directions() -> None:
    worse = _results(+0.1)
    with pytest.raises(AssertionError, match=r"repetition\) for pasta-alpha10 vs baseline: diff \+0\.100"):
        worse.assert_not_worse("repetition", 0.05)
    worse.assert_not_worse("quality", 0.01)  # unchanged quality is not worse
    assert _results(-0.1).assert_not_worse("repetition", 0.0).diff.diff == pytest.approx(-0.1)
    assert _results(-0.1).assert_better("repetition").diff.high < 0
    assert worse.assert_at_least("strict_instruction_accuracy", 0.5).method == "case-bootstrap"
    assert worse.baseline.assert_not_worse("repetition", 0.0) is None  # the baseline against itself
    with pytest.raises(KeyError, match="available: strict_prompt_accuracy"):
        worse.assert_not_worse("strict", 0.1)


# --- how noisy is a gate? ----------------------------------------------------------------------


def test_noise_simulation_ci_gate_vs_fixed_threshold() -> None:
    """True accuracy 0.8 on 48 examples x 5 trials: how often does each gate fail a good model?

    Gates: a fixed threshold (estimate >= 0.80) and `assert_at_least(..., 0.70)` (Wilson lower
    bound >= 0.70). Three worlds: (a) every row independent, computed exactly from Bin(240, 0.8);
    (b) the same 48 examples every run with fixed, unequal per-example pass rates (Beta(4, 1)
    quantiles scaled to mean 0.8) and only sampling noise between runs -- a CI job on a fixed
    eval set; (c) the 48 examples themselves redrawn each run from that Beta(4, 1) population.
    """
    n = N_CASES * N_TRIALS
    wilson_low = np.array([wilson_interval(k, n).low for k in range(n + 1)])
    ci_fails = wilson_low < 0.70  # indexed by number of passes
    fixed_fails = np.arange(n + 1) < 0.8 * n

    pmf = sps.binom.pmf(np.arange(n + 1), n, 0.8)
    exact_ci, exact_fixed = pmf[ci_fails].sum(), pmf[fixed_fails].sum()
    false_pass_at_70 = sps.binom.pmf(np.arange(n + 1), n, 0.70)[~ci_fails].sum()

    rng = np.random.default_rng(0)
    runs = 20_000
    iid = rng.binomial(n, 0.8, size=runs)
    q = sps.beta.ppf((np.arange(N_CASES) + 0.5) / N_CASES, 4, 1)
    fixed_examples = rng.binomial(N_TRIALS, np.clip(q * 0.8 / q.mean(), 0, 1), size=(runs, N_CASES)).sum(axis=1)
    redrawn = rng.binomial(N_TRIALS, rng.beta(4, 1, size=(runs, N_CASES))).sum(axis=1)

    print(f"\ntrue accuracy 0.8, {N_CASES} examples x {N_TRIALS} trials: false-failure rate")
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
