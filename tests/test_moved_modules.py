"""The modules the restructuring moved still import for one release, with a DeprecationWarning that names the
new home (scripts import them although they were never documented)."""

from __future__ import annotations

import importlib
import sys

import pytest


@pytest.mark.parametrize(("module", "names", "home"), [
    ("pytest_steer.cases", ["Case", "CaseSet", "CaseLoadError", "load_cases", "select_cases", "EMBEDDED",
                            "FILE_SUFFIXES", "SEED_INSTRUCTION_TYPES", "INSTRUCTIONS"], "pytest_steer.tasks"),
    ("pytest_steer.reporting", ["report_run", "RunInfo", "Report", "terminal_table", "save_stored_baseline"],
     "pytest_steer.session.finish"),
    ("pytest_steer.finish", ["report_run", "RunInfo", "Report", "save_stored_baseline"],
     "pytest_steer.session.finish"),
    ("pytest_steer.metrics.quality", ["SideEffectScorer", "Fluency", "Coherence", "quality_scorers"],
     "pytest_steer.metrics.scorers"),
    ("pytest_steer.metrics.side_effects", ["rep_n", "text_tokens", "detect_language", "headline_quality"],
     "pytest_steer.metrics.measures"),
])
def test_moved_module_warns_and_reexports(module: str, names: list[str], home: str) -> None:
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=f"{module} is deprecated.*{home}"):
        shim = importlib.import_module(module)
    for name in names:
        value = getattr(shim, name)
        origin = importlib.import_module(value.__module__) if hasattr(value, "__module__") else None
        assert origin is None or getattr(origin, name, value) is value  # the same object as at its new home


def test_finish_says_where_the_plugin_functions_went() -> None:
    sys.modules.pop("pytest_steer.finish", None)
    with pytest.warns(DeprecationWarning):
        shim = importlib.import_module("pytest_steer.finish")
    with pytest.raises(AttributeError, match="SteerSession.finish"):
        shim.finish_session  # noqa: B018
