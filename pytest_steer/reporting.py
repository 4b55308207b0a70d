"""Deprecated: `pytest_steer.reporting` moved into `pytest_steer.session.finish` (the one report path).
This shim re-exports the names it held and goes away in the next release."""

from __future__ import annotations

import warnings

from .session.finish import Report, RunInfo, report_run, save_stored_baseline, terminal_table

__all__ = ["Report", "RunInfo", "report_run", "save_stored_baseline", "terminal_table"]

warnings.warn("pytest_steer.reporting is deprecated and will be removed in the next release: import its names "
              "from pytest_steer.session.finish", DeprecationWarning, stacklevel=2)
