"""Metrics that score generated responses."""

from __future__ import annotations

from pytest_steer.metrics.instruction import (
    InstructionAggregate,
    InstructionScore,
    StrictInstruction,
    aggregate,
    instruction_types,
    score_response,
    score_responses,
    validate_case,
)

__all__ = [
    "InstructionAggregate",
    "InstructionScore",
    "StrictInstruction",
    "aggregate",
    "instruction_types",
    "score_response",
    "score_responses",
    "validate_case",
]
