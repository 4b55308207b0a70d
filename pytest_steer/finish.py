"""Deprecated: `pytest_steer.finish` moved into `pytest_steer.session` (gathering a session's rows is
`SteerSession.finish`, the report path `pytest_steer.session.finish`). This shim re-exports the report
path's names and goes away in the next release."""

from __future__ import annotations

import warnings
from typing import Any

from .session.finish import Report, RunInfo, report_run, save_stored_baseline, terminal_table

__all__ = ["Report", "RunInfo", "report_run", "save_stored_baseline", "terminal_table"]

_MOVED = {"finish_session": "SteerSession.finish", "worker_payload": "SteerSession.payload"}

warnings.warn("pytest_steer.finish is deprecated and will be removed in the next release: import the report "
              "path from pytest_steer.session.finish; the session's own steps are SteerSession's methods",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    """The two functions that took the plugin object are the session's methods now: say so."""
    if name in _MOVED:
        raise AttributeError(f"pytest_steer.finish.{name} is now {_MOVED[name]} (pytest_steer.session)")
    raise AttributeError(f"module 'pytest_steer.finish' has no attribute {name!r}")
