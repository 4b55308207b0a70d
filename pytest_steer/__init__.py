"""pytest-steer: LLM steering evaluations (PASTA, activation steering, prompting; IFEval or your task) as pytest tests.

Heavy modules (torch, transformers) load on first use, so that `pytest` stays fast in projects
that have the plugin installed but don't run steering tests. Type checkers see every export as its
real type (the `TYPE_CHECKING` block below); at run time `__getattr__` imports it on first use.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .backends import register_backend
    from .backends.base import Backend
    from .errors import SteerError
    from .evaluation import EvalResult, MetricValue
    from .generation import Generation, GenerationEngine, GenerationRequest, GenerationSettings
    from .methods import MethodEntry, register_method
    from .methods.actadd import ActivationSteering
    from .methods.base import GridPoint, PrepareContext, SteeringError, SteeringMethod, user_turn
    from .methods.pasta import PASTA
    from .methods.prompt import PromptEmphasis
    from .metrics.responses import score_responses
    from .models import LoadedModel, ModelLoadError, load_model
    from .options import MarkerError, Option
    from .results import ResultRow
    from .scores import Metric, Sample, Score, Scorer, ScorerError, register_scorer, scorer
    from .session import StartError, SteerEval, SteerSession
    from .session.run import ModelSettings, SteerRun
    from .spec import RunSpec
    from .tasks import CaseSplit, Task, TaskError, register_task
    from .tasks.base import Case, CaseLoadError, CaseOffers, CaseSet

_EXPORTS = {
    # writing evals: what a test annotates, reads and catches
    "EvalResult": "evaluation",
    "MetricValue": "evaluation",
    "SteerEval": "session",
    "GridPoint": "methods.base",
    "Case": "tasks.base",
    "CaseSet": "tasks.base",
    "SteerError": "errors",
    "SteeringError": "methods.base",
    "TaskError": "tasks",
    "ScorerError": "scores",
    "CaseLoadError": "tasks.base",
    "ModelLoadError": "models",
    "MarkerError": "options",
    "StartError": "session",
    # extending: your own method, task, scorer and backend
    "SteeringMethod": "methods.base",
    "PrepareContext": "methods.base",
    "MethodEntry": "methods",
    "register_method": "methods",
    "user_turn": "methods.base",
    "Option": "options",
    "PASTA": "methods.pasta",
    "ActivationSteering": "methods.actadd",
    "PromptEmphasis": "methods.prompt",
    "Task": "tasks",
    "CaseSplit": "tasks",
    "CaseOffers": "tasks.base",
    "register_task": "tasks",
    "Metric": "scores",
    "Sample": "scores",
    "Score": "scores",
    "Scorer": "scores",
    "scorer": "scores",
    "register_scorer": "scores",
    "Backend": "backends.base",
    "register_backend": "backends",
    # scripting: a sweep without pytest
    "RunSpec": "spec",
    "SteerRun": "session.run",
    "SteerSession": "session",
    "ModelSettings": "session.run",
    "load_model": "models",
    "LoadedModel": "models",
    "GenerationEngine": "generation",
    "GenerationSettings": "generation",
    "GenerationRequest": "generation",
    "Generation": "generation",
    "ResultRow": "results",
    "score_responses": "metrics.responses",
}
#: old names, still served with a DeprecationWarning naming the new one
_DEPRECATED = {"Config": ("GridPoint", "it collides with pytest.Config")}

__all__ = [
    # writing evals
    "EvalResult", "MetricValue", "SteerEval", "GridPoint", "Case", "CaseSet",
    "SteerError", "SteeringError", "TaskError", "ScorerError", "CaseLoadError", "ModelLoadError", "MarkerError",
    "StartError",
    # extending
    "SteeringMethod", "PrepareContext", "MethodEntry", "register_method", "user_turn", "Option",
    "PASTA", "ActivationSteering", "PromptEmphasis",
    "Task", "CaseSplit", "CaseOffers", "register_task", "Metric", "Sample", "Score", "Scorer", "scorer",
    "register_scorer", "Backend", "register_backend",
    # scripting
    "RunSpec", "SteerRun", "SteerSession", "ModelSettings", "load_model", "LoadedModel", "GenerationEngine",
    "GenerationSettings", "GenerationRequest", "Generation", "ResultRow", "score_responses",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _DEPRECATED:
        new, why = _DEPRECATED[name]
        warnings.warn(f"pytest_steer.{name} is deprecated ({why}); use pytest_steer.{new}", DeprecationWarning,
                      stacklevel=2)
        name = new
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'pytest_steer' has no attribute {name!r}")
