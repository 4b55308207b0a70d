"""Tasks: the cases to steer, their options, the scorers that judge them, the cases held apart for
fitting, and what each case offers the steering methods; the registry that names them.

A task (in the spirit of inspect_ai) is a dataset plus scorers. IFEval is built in; a user defines
their own in a conftest.py or test module and runs it through the same fixtures, marker and report:

    register_task(Task.from_cases("json", cases, [valid_json], primary="valid_json", held_out=spare))

Held-out cases are what a steering method may fit on (activation steering's vectors). They are
disjoint from the evaluated cases, checked here, so no evaluated case can leak into a steering vector.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..options import Option, nearest
from .base import (
    INSTRUCTIONS,
    Case,
    CaseOffers,
    CaseSet,
    CaseSplit,
    Expectation,
    FunctionOffers,
    InstructionOffers,
    Task,
    TaskError,
)
from .ifeval import (
    EMBEDDED,
    FILE_SUFFIXES,
    HELD_OUT_PER_TYPE,
    IFEVAL_OPTIONS,
    SEED_INSTRUCTION_TYPES,
    CaseLoadError,
    ifeval_split,
    load_case_set,
    load_cases,
    parse_types,
    select_cases,
)

__all__ = [
    "EMBEDDED", "FILE_SUFFIXES", "HELD_OUT_PER_TYPE", "IFEVAL_OPTIONS", "INSTRUCTIONS", "SEED_INSTRUCTION_TYPES",
    "Case", "CaseLoadError", "CaseOffers", "CaseSet", "CaseSplit", "Expectation", "FunctionOffers",
    "InstructionOffers", "Task",
    "TaskError", "get_task", "ifeval_split", "ifeval_task", "load_case_set", "load_cases", "parse_types",
    "register_task", "select_cases", "task_options",
]

def ifeval_task() -> Task:
    """IFEval strict/loose accuracy over the embedded set or a Split-IFEval file; held out: unselected cases."""
    from ..metrics.instruction import IFEvalScorer, score_response

    return Task("ifeval", (IFEvalScorer(),), "strict_prompt_accuracy", ifeval_split, IFEVAL_OPTIONS,
                judge=lambda case, response: score_response(case, response).follow_all_instructions,
                judge_name="ifeval-strict")


_TASKS: dict[str, Task | Callable[[], Task]] = {"ifeval": ifeval_task}
_BUILTIN_OPTIONS = {"ifeval": IFEVAL_OPTIONS}  # known without building the task (its scorer is not cheap)
_ORIGINS: dict[str, tuple[str, str]] = {}  # task name -> (module, file) that registered it
_CLASHES: dict[str, str] = {}  # task name -> why it cannot be used


def _loaded(origin: tuple[str, str]) -> bool:
    module = sys.modules.get(origin[0])
    return module is not None and getattr(module, "__file__", None) == origin[1]


def register_task(task: Task) -> None:
    """Make `task` selectable with `--steer-task` / `@pytest.mark.steer(task=...)`.

    The same name from two loaded modules is a clash: which one a test ran would depend on import
    order, so using that name fails at start-up. Re-registering from the same module (a re-import)
    replaces it.
    """
    caller = sys._getframe(1).f_globals
    origin = (str(caller.get("__name__")), str(caller.get("__file__")))
    old = _ORIGINS.get(task.name)
    if old is not None and old != origin and _loaded(old):
        _CLASHES[task.name] = (f"task {task.name!r} is registered by both {old[1]} and {origin[1]}; "
                               "give each task its own name")
    else:
        _CLASHES.pop(task.name, None)
    _TASKS[task.name] = task
    _ORIGINS[task.name] = origin


def get_task(name: str) -> Task:
    if name in _CLASHES:
        raise TaskError(_CLASHES[name])
    if name not in _TASKS:
        hint = nearest(name, _TASKS)
        raise TaskError(f"unknown task {name!r}; registered: {', '.join(_TASKS)}"
                        + (f"; did you mean {hint!r}?" if hint else "")
                        + " (register your own with pytest_steer.register_task in a conftest.py)")
    found = _TASKS[name]
    task = found if isinstance(found, Task) else found()
    _TASKS[name] = task
    return task



def task_options(name: str | None = None) -> tuple[Option, ...]:
    """The options of task `name` (none for an unknown name: `get_task` says so), or of every task."""
    names = list(_TASKS) if name is None else [name]
    out: dict[str, Option] = {}
    for n in names:
        found = _TASKS.get(n)
        for o in _BUILTIN_OPTIONS.get(n, ()) if not isinstance(found, Task) else found.options:
            out.setdefault(o.name, o)
    return tuple(out.values())
