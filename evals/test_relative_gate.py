"""Relative gates: each method's gentlest config must not make answers much worse than the unsteered
model on the same prompts and the same random draws (paired non-inferiority, 95% convention)."""

from __future__ import annotations

import pytest

#: absolute margins on the pooled means; headline quality is a probability-like score in [0, 1]
QUALITY_MARGIN = 0.05
REPETITION_MARGIN = 0.15


@pytest.mark.parametrize("method", ["pasta", "actadd", "prompt"])
def test_gentlest_config_keeps_quality(steer_eval, method):
    configs = [c for c in steer_eval.configs if c.method == method]
    if not configs:
        pytest.skip(f"{method} is not in this run's --steer-methods")
    gentlest = min(configs, key=lambda c: c.strength)
    pooled = steer_eval.result(gentlest)  # all trials pooled: the unit the interval is computed over
    pooled.assert_not_worse("quality", margin=QUALITY_MARGIN)
    pooled.assert_not_worse("repetition", margin=REPETITION_MARGIN)
