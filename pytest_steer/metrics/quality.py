"""Deprecated: `pytest_steer.metrics.quality` moved to `pytest_steer.metrics.scorers` (the scorers that
`--steer-quality` builds), so the module's name says what it holds. This shim hands out the names it held and
goes away in the next release."""

from __future__ import annotations

import warnings
from typing import Any

from . import scorers as _moved


def __getattr__(name: str) -> Any:
    return getattr(_moved, name)


warnings.warn("pytest_steer.metrics.quality is deprecated and will be removed in the next release: import from "
              "pytest_steer.metrics.scorers", DeprecationWarning, stacklevel=2)
