"""Scorers of generated responses: `scorers` (side effects and the headline quality, fluency, topic, reward:
the scorers `--steer-quality` builds), `measures` (the plain text measures and the headline formula they
feed), `responses` (the same scores for responses generated elsewhere). IFEval's scorer lives with its task
(`pytest_steer.tasks.ifeval.scorer`); its names are still found here for one release, with a
DeprecationWarning.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

_MOVED = ("IFEvalScorer", "InstructionScore", "instruction_types", "score_response", "validate_case")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"pytest_steer.metrics.{name} is deprecated and will be removed in the next release: import it "
                      "from pytest_steer.tasks.ifeval.scorer", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module("pytest_steer.tasks.ifeval.scorer"), name)
    raise AttributeError(f"module 'pytest_steer.metrics' has no attribute {name!r}")
