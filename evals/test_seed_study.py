"""The seed study as a test file: PASTA toward the instruction text, swept over alpha and trials.

`pytest evals/` runs it on the embedded SmolLM2-135M-Instruct with a small grid (see README).
The full study (Qwen2.5-1.5B-Instruct, alphas 5..50, 5 trials, 12 cases per type, 128 tokens,
OpenAssistant reward) is the command in the README: the grid comes from the command line, so this
file stays the same for both.
"""

from __future__ import annotations

import os

#: quality may drop at most this much from the paired baseline at the recommended strength;
#: the env var lets CI tighten or loosen it without editing the test.
MAX_QUALITY_DROP = float(os.environ.get("STEER_MAX_QUALITY_DROP", "1.0"))


def test_instruction_following(steer_result, alpha, trial):
    """One grid point: metrics become test properties (JUnit XML, HTML columns)."""
    assert 0.0 <= steer_result.strict_prompt_accuracy <= 1.0
    assert len(steer_result.records) == len(steer_result.baseline.records if steer_result.baseline else steer_result.records)
    # every response was generated and scored: nothing came back empty-handed
    assert all(r.n_tokens > 0 for r in steer_result.records)


def test_quality_within_budget(steer_result, alpha):
    """Plain-assert gate against the same trial's baseline: steering may cost some quality, not all of it."""
    if steer_result.is_baseline:
        return
    assert steer_result.quality >= steer_result.baseline.quality - MAX_QUALITY_DROP


def test_baseline_follows_some_instructions(steer_eval):
    """Statistical floor on the unsteered model, pooled over trials (Wilson lower bound)."""
    steer_eval.result(None).assert_at_least("loose_prompt_accuracy", 0.05)
