"""Scorers of generated responses: IFEval (`instruction`), side effects and headline quality (`quality`).

`quality` imports torch at module level, so only the torch-free IFEval names are re-exported here.
"""

from __future__ import annotations

from pytest_steer.metrics.instruction import (
    IFEvalScorer,
    InstructionScore,
    instruction_types,
    score_response,
    validate_case,
)

__all__ = [
    "IFEvalScorer",
    "InstructionScore",
    "instruction_types",
    "score_response",
    "validate_case",
]
