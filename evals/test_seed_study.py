"""The seed study as a test file: steering toward the instruction text, swept over methods,
strengths and trials, each steered row paired with the unsteered row of the same case and seed.

`pytest evals/` runs it on the embedded SmolLM2-135M-Instruct with the small grid in pyproject.toml
(PASTA, instruction activation steering and prompt emphasis). The full study (Qwen2.5-1.5B-Instruct,
alphas 5..50, 5 trials, 12 cases per type, a reward model) is the command in the README: the grid
comes from the command line, so this file stays the same for both.
"""

from __future__ import annotations

import math
import os

#: relative drop of the headline quality allowed against the same trial's baseline; the env var lets
#: CI tighten or loosen it without editing the test
MAX_QUALITY_DROP = float(os.environ.get("STEER_MAX_QUALITY_DROP", "0.8"))


def test_instruction_following(steer_result, steer_cases, steer_config, trial):
    """One grid point: every case answered and scored once, paired with its baseline row by seed."""
    rows = steer_result.records
    assert sorted(r.key for r in rows) == sorted(c.key for c in steer_cases)
    assert all(r.config == steer_config.label and r.trial == trial for r in rows)
    primary = steer_result.primary
    assert all(r.scores[primary] in (0.0, 1.0) for r in rows), "IFEval's strict result is pass/fail per case"
    if steer_result.baseline is not None:
        base = {r.key: r.seed for r in steer_result.baseline.records}
        assert {r.key: r.seed for r in rows} == base, "steered rows must share the baseline's random draws"


def test_quality_within_budget(steer_result):
    """Plain-assert gate against the same trial's baseline: steering may cost some quality, not most of it."""
    if steer_result.baseline is None:
        return
    assert steer_result.quality >= (1 - MAX_QUALITY_DROP) * steer_result.baseline.quality


def test_summary_has_one_row_per_config(steer_eval):
    """The report's table: one row per config of the grid, the baseline first, every metric present."""
    summary = steer_eval.summary()
    assert list(summary["config"]) == [c.label for c in steer_eval.configs]
    assert summary["strict_prompt_accuracy"].between(0, 1).all()
    assert not summary["quality"].isna().any()
    base = summary.iloc[0]
    assert base["config"] == "baseline" and math.isnan(base["strict_prompt_accuracy_diff"])


def test_baseline_follows_some_instructions(steer_eval):
    """Statistical floor on the unsteered model, pooled over trials (Wilson lower bound)."""
    steer_eval.result("baseline").assert_at_least("loose_prompt_accuracy", 0.05)
