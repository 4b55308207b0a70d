"""A relative gate: the gentlest steering in the sweep must not make answers much less fluent than
the unsteered model on the same prompts and the same random draws (paired non-inferiority)."""

from __future__ import annotations

from pytest_steer.results import steering_strength


def test_gentlest_steering_keeps_quality(steer_eval):
    gentlest = min(steer_eval.spec.alphas, key=steering_strength)
    pooled = steer_eval.result(gentlest)  # all trials pooled: the unit the interval is computed over
    pooled.assert_not_worse("quality", margin=1.0)
