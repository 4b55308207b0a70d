"""Deprecated: IFEval's scorer moved to `pytest_steer.tasks.ifeval.scorer`, with the rest of the IFEval task.
This shim re-exports its public names and goes away in the next release."""

from __future__ import annotations

import warnings

from ..tasks.ifeval.scorer import (
    IFEvalScorer,
    InstructionScore,
    instruction_types,
    score_response,
    validate_case,
)

__all__ = ["IFEvalScorer", "InstructionScore", "instruction_types", "score_response", "validate_case"]

warnings.warn("pytest_steer.metrics.instruction is deprecated and will be removed in the next release: import "
              "from pytest_steer.tasks.ifeval.scorer", DeprecationWarning, stacklevel=2)
