"""Relative gates: each method's gentlest config must not make answers much worse than the unsteered
model on the same prompts and the same random draws (paired non-inferiority, 95% convention)."""

from __future__ import annotations

import pytest

from pytest_steer import GridPoint
from pytest_steer.spec import RunSpec

#: margins on the pooled means that catch a collapse, not a small cost: the headline quality (a geometric
#: mean) may not fall by QUALITY_DROP of the baseline's own value, the same share the earlier absolute 0.12
#: allowed on the earlier headline's baseline of 0.133 (activation steering at coefficient 4 fell 94%);
#: repetition (worst-window share) may not rise by REPETITION_MARGIN where the headline is a reward model or
#: fluency: the offline headline already pays for repetition, and gating it twice would fail a config twice
#: for one phenomenon (the recommendation's budgets follow the same rule).
QUALITY_DROP = 0.9
REPETITION_MARGIN = 0.3


def gentlest_per_series(configs: list[GridPoint], method: str) -> list[GridPoint]:
    """The gentlest steering config of each series `method` runs alone: a profiled PASTA
    ("pasta-profiled") or the removed setting ("actadd-removed") is its own series, so matching the
    series name to the method would skip them. Strength 0 (`actadd-removed-c0`) steers nothing."""
    alone = [c for c in configs if c.strength > 0 and {m for m, _ in c.steering()} == {method}]
    return [min((c for c in alone if c.method == s), key=lambda c: c.strength)
            for s in dict.fromkeys(c.method for c in alone)]


@pytest.mark.parametrize("method", ["pasta", "actadd", "prompt"])
def test_gentlest_config_keeps_quality(steer_eval, method):
    gentlest = gentlest_per_series(steer_eval.configs, method)
    if not gentlest:
        pytest.skip(f"{method} is not in this run's --steer-methods")
    for config in gentlest:
        pooled = steer_eval.result(config)  # all trials pooled: the unit the interval is computed over
        baseline_quality = pooled.metric_values["quality"].baseline or 0.0
        pooled.assert_not_worse("quality", margin=QUALITY_DROP * baseline_quality)
        if steer_eval.spec.quality != "offline":
            pooled.assert_not_worse("repetition", margin=REPETITION_MARGIN)


def test_gate_covers_profiled_and_removed_series():
    """Under --steer-layers profile PASTA's configs are the series "pasta-profiled": a gate that matched
    the series name to "pasta" skipped PASTA. The combined config belongs to no one method."""
    configs = RunSpec(methods=("pasta", "actadd", "prompt"), alphas=(5, 10), actadd_coefs=(1, 2),
                      layers="profile", actadd_setting=("kept", "removed"),
                      combine=("prompt-restate+actadd-c1",)).configs()
    chosen = {m: [c.label for c in gentlest_per_series(configs, m)] for m in ("pasta", "actadd", "prompt")}
    assert chosen == {"pasta": ["pasta-profiled-alpha5"], "actadd": ["actadd-c1", "actadd-removed-c1"],
                      "prompt": ["prompt-restate"]}
