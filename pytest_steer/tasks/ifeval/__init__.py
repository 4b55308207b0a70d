"""IFEval as one task package: its cases (`data`: the embedded set, a local file or a Hugging Face
dataset; selection and options), its scorer (`scorer`: strict and loose accuracy), and the task that
ties them together (`ifeval_task`), registered in `pytest_steer.tasks` by one line.

Nothing outside this package imports it but that registry line and the deprecated shims of its old
homes (`pytest_steer.cases`, `pytest_steer.metrics.instruction`); tests/test_layers.py checks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...errors import StartError
from ..base import Task
from .data import (
    EMBEDDED,
    FILE_SUFFIXES,
    HELD_OUT_PER_TYPE,
    IFEVAL_OPTIONS,
    SEED_INSTRUCTION_TYPES,
    CaseLoadError,
    ifeval_case,
    ifeval_split,
    load_case_set,
    load_cases,
    parse_types,
    select_cases,
)
from .offers import IFEVAL_OFFERS, InstructionOffers, ifeval_vector_keys

__all__ = [
    "EMBEDDED", "FILE_SUFFIXES", "HELD_OUT_PER_TYPE", "IFEVAL_OFFERS", "IFEVAL_OPTIONS", "SEED_INSTRUCTION_TYPES",
    "CaseLoadError", "InstructionOffers", "ifeval_vector_keys",
    "hub_sources", "ifeval_case", "ifeval_split", "ifeval_task", "load_case_set", "load_cases", "parse_types",
    "select_cases",
]


def ifeval_task() -> Task:
    """IFEval strict/loose accuracy over the embedded set or a Split-IFEval file; held out: unselected cases."""
    from .scorer import IFEvalScorer, score_response

    return Task("ifeval", (IFEvalScorer(),), "strict_prompt_accuracy", ifeval_split, IFEVAL_OPTIONS, IFEVAL_OFFERS,
                judge=lambda case, response: score_response(case, response).follow_all_instructions,
                judge_name="ifeval-strict")


def hub_sources(settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The Hub ids the run's settings name, as (id, option) pairs for the start-up check: the dataset
    when it is no local file (a file the loader checks itself) and not the embedded set."""
    dataset = str(settings.get("dataset") or "")
    if dataset and Path(dataset).suffix.lower() in FILE_SUFFIXES:  # a case file: that it is there, before any load
        _check_case_file(Path(dataset).expanduser())
    if not dataset or dataset == EMBEDDED or Path(dataset).suffix.lower() in FILE_SUFFIXES:
        return []
    return [(dataset, "--steer-dataset")]


def _check_case_file(path: Path) -> None:
    try:
        problem = None if path.is_file() else "no such file" if not path.exists() else "not a file"
    except OSError as exc:  # a name the system refuses, e.g. a part longer than 255 bytes
        problem = f"cannot be read ({exc.strerror or exc})"
    if problem:
        raise StartError(f"--steer-dataset {path}: {problem}; give a .jsonl, .json, .parquet or .csv file of cases, "
                         "a Hugging Face dataset id, or 'embedded'")
