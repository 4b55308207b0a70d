"""Relative gates: each method's gentlest config must not make answers much worse than the unsteered
model on the same prompts and the same random draws (paired non-inferiority, 95% convention)."""

from __future__ import annotations

import pytest

#: absolute margins on the pooled means. The embedded model's baseline quality is about 0.15 and its
#: repetition (rep-4) about 0.21 (make eval, see README): these catch a collapse, e.g. activation steering
#: at coefficient 4 (quality -0.125, 95% CI [-0.229, -0.027]; repetition +0.44), not a small cost.
QUALITY_MARGIN = 0.12
REPETITION_MARGIN = 0.3


@pytest.mark.parametrize("method", ["pasta", "actadd", "prompt"])
def test_gentlest_config_keeps_quality(steer_eval, method):
    configs = [c for c in steer_eval.configs if c.method == method]
    if not configs:
        pytest.skip(f"{method} is not in this run's --steer-methods")
    gentlest = min(configs, key=lambda c: c.strength)
    pooled = steer_eval.result(gentlest)  # all trials pooled: the unit the interval is computed over
    pooled.assert_not_worse("quality", margin=QUALITY_MARGIN)
    pooled.assert_not_worse("repetition", margin=REPETITION_MARGIN)
