"""One family for every error pytest-steer raises on purpose, at the bottom of the package (it imports
nothing of it): catch `SteerError` to catch them all.

Each message is one line that says what was wrong and what to do. The subclasses say whose fault it is:
the user's settings (`UsageError`), a task or its cases (`TaskError`), a scorer (`ScorerError`), a model
(`ModelError`), or a start-up check (`StartError`). Every module's own error (`SteeringError`,
`CaseLoadError`, `ModelLoadError`, ...) is one of these, and keeps the built-in base it always had
(ValueError or RuntimeError), so old `except ValueError:` clauses still catch it.
"""

from __future__ import annotations

__all__ = ["ModelError", "ScorerError", "StartError", "SteerError", "TaskError", "UsageError"]


class SteerError(Exception):
    """Any error pytest-steer raises on purpose; the message is the one line the user sees."""


class UsageError(SteerError, ValueError):
    """Bad settings: an option, a marker argument, a method's value, a stored baseline that does not fit."""


class TaskError(SteerError, ValueError):
    """A task is unknown or inconsistent, or its cases cannot be loaded; the message says what to do."""


class ScorerError(SteerError, RuntimeError):
    """A scorer cannot run; the message says why and what to do."""


class ModelError(SteerError, RuntimeError):
    """A model cannot be found, loaded or run; the message names it and says what to do."""


class StartError(SteerError, ValueError):
    """A start-up check failed; the message is the one line the user sees."""
