"""Deprecated: `pytest_steer.cases` moved to `pytest_steer.tasks` (base.py: the generic Case, CaseSet and
what a case offers; ifeval.py: IFEval's loader and seed types). This shim re-exports the names it held
and goes away in the next release."""

from __future__ import annotations

import warnings

from .tasks.base import INSTRUCTIONS, Case, CaseOffers, CaseSet
from .tasks.ifeval import (
           EMBEDDED,
           FILE_SUFFIXES,
           SEED_INSTRUCTION_TYPES,
           CaseLoadError,
           InstructionOffers,
           load_cases,
           select_cases,
)

__all__ = ["EMBEDDED", "FILE_SUFFIXES", "INSTRUCTIONS", "SEED_INSTRUCTION_TYPES", "Case", "CaseLoadError",
           "CaseOffers", "CaseSet", "InstructionOffers", "load_cases", "select_cases"]

warnings.warn("pytest_steer.cases is deprecated and will be removed in the next release: import Case, CaseSet "
              "from pytest_steer (or pytest_steer.tasks.base), and load_cases, select_cases from "
              "pytest_steer.tasks.ifeval", DeprecationWarning, stacklevel=2)
