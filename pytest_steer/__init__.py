"""pytest-steer: LLM steering evaluations (PASTA, activation steering, prompting; IFEval or your task) as pytest tests.

Heavy modules (torch, transformers) load on first use, so that `pytest` stays fast in projects
that have the plugin installed but don't run steering tests.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "PASTA": "methods.pasta",
    "ActivationSteering": "methods.actadd",
    "PromptEmphasis": "methods.prompt",
    "SteeringMethod": "methods.base",
    "SteeringError": "methods.base",
    "Config": "methods.base",
    "PrepareContext": "methods.base",
    "user_turn": "methods.base",
    "register_method": "methods",
    "Option": "options",
    "Task": "tasks",
    "CaseSplit": "tasks",
    "register_task": "tasks",
    "Case": "cases",
    "CaseSet": "cases",
    "Metric": "scores",
    "Sample": "scores",
    "Score": "scores",
    "Scorer": "scores",
    "scorer": "scores",
    "RunSpec": "spec",
    "SteerRun": "session",
    "ModelSettings": "session",
    "load_model": "models",
    "LoadedModel": "models",
    "ModelLoadError": "models",
    "GenerationEngine": "generation",
    "GenerationSettings": "generation",
    "GenerationRequest": "generation",
    "Generation": "generation",
    "ResultRow": "results",
    "score_responses": "metrics.responses",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pytest_steer' has no attribute {name!r}")
