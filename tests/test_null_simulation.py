"""Null simulation: when steering changes nothing, how often does each test and gate the report uses
claim something anyway?

Data are drawn with the structure of a steering run: cases differ in difficulty, every (case, config)
has its own shift shared by all of its trials (so trials of one case are strongly correlated, and a
case that "flips" does so in every trial), and configs are exchangeable with the baseline (the null).
Binary and real metrics, 1 and 3 trials, 16 cases, a baseline and three steered configs. The checks run
the array-level functions that `reduce.summary`, the gates and the report call.

Every rate must be at most its nominal level plus three Monte-Carlo standard errors at that level.
The observed rates are printed in the suite's terminal summary and quoted in docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from pytest_steer.gates import better
from pytest_steer.reduce import paired_comparison, values_interval
from pytest_steer.scores import Metric
from pytest_steer.stats import NonInferiority, holm

SIMS, CASES, CONFIGS, RESAMPLES = 300, 16, 3, 500
BINARY = Metric("follows", "binary", 1)
REAL = Metric("score", "real", 1)


def _draw(rng: np.random.Generator, trials: int) -> tuple[np.ndarray, np.ndarray]:
    """(binary, real) values, shape [configs + 1, cases, trials]; config 0 is the baseline."""
    case = rng.normal(0, 1.5, size=(1, CASES, 1))
    shift = rng.normal(0, 1.0, size=(CONFIGS + 1, CASES, 1))
    binary = (rng.random((CONFIGS + 1, CASES, trials)) < 1 / (1 + np.exp(-(case + shift)))).astype(float)
    real = case + shift + rng.normal(0, 0.3, size=(CONFIGS + 1, CASES, trials))
    return binary, real


def _true_binary_mean() -> float:
    """E[logistic(case + shift)]: the share a new prompt like these follows (the headline's target)."""
    x = np.random.default_rng(1).normal(0, math.sqrt(1.5**2 + 1.0**2), 2_000_000)
    return float(np.mean(1 / (1 + np.exp(-x))))


def _rates(trials: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(100 + trials)
    truth = {"binary": _true_binary_mean(), "real": 0.0}
    keys = np.repeat(np.arange(CASES), trials)
    trial = np.tile(np.arange(trials), CASES)
    counts: dict[str, dict[str, int]] = {k: {} for k in ("binary", "real")}
    family_hits = 0
    for sim in range(SIMS):
        pvalues = []
        for kind, values in zip(("binary", "real"), _draw(rng, trials), strict=True):
            metric = BINARY if kind == "binary" else REAL
            c = counts[kind]
            ci = values_interval(values[0].ravel(), keys, metric, n_resamples=RESAMPLES, seed=sim)
            c["interval low above truth (at_least)"] = c.get("interval low above truth (at_least)", 0) + (
                ci.low >= truth[kind])
            c["interval high below truth (at_most)"] = c.get("interval high below truth (at_most)", 0) + (
                ci.high <= truth[kind])
            for j in range(1, CONFIGS + 1):
                comp = paired_comparison(values[j].ravel(), values[0].ravel(), keys, trial, metric,
                                         n_resamples=RESAMPLES, seed=sim)
                pvalues.append(comp.pvalue)
                for name, hit in (("p < 0.05 (summary)", comp.pvalue < 0.05),
                                  ("diff interval excludes 0", comp.diff.low > 0 or comp.diff.high < 0),
                                  ("assert_better", better(comp)),
                                  ("assert_not_worse, margin at the truth", NonInferiority(comp.diff, 0.0).passed)):
                    c[name] = c.get(name, 0) + int(hit)
        family_hits += min(holm(pvalues)) < 0.05
    out = {kind: {name: hits / (SIMS * (1 if name.startswith("interval") else CONFIGS)) for name, hits in c.items()}
           for kind, c in counts.items()}
    out["family"] = {"Holm over configs x metrics: any p < 0.05": family_hits / SIMS}
    return out


NOMINAL = {"interval low above truth (at_least)": 0.025, "interval high below truth (at_most)": 0.025,
           "p < 0.05 (summary)": 0.05, "diff interval excludes 0": 0.05, "assert_better": 0.025,
           "assert_not_worse, margin at the truth": 0.025, "Holm over configs x metrics: any p < 0.05": 0.05}


@pytest.mark.parametrize("trials", [1, 3])
def test_false_positive_rates_under_the_null_are_at_most_nominal(
        trials: int, summary_lines: Callable[[str, list[str]], None]) -> None:
    rates = _rates(trials)
    lines, over = [], []
    for kind, named in rates.items():
        for name, rate in named.items():
            nominal = NOMINAL[name]
            mc = math.sqrt(nominal * (1 - nominal) / SIMS)  # per simulation; pooled configs only make it smaller
            lines.append(f"{trials} trial(s) {kind:6} {name:40} {rate:.3f} (nominal {nominal:.3f}, MC se {mc:.3f})")
            if rate > nominal + 3 * mc:
                over.append(lines[-1])
    summary_lines("null simulation: observed false-positive rates", lines)
    assert not over, "false-positive rate above nominal:\n" + "\n".join(over)
