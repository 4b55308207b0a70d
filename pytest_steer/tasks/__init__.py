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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..options import Option, nearest
from .base import (
    INSTRUCTIONS,
    Case,
    CaseOffers,
    CaseSet,
    CaseSplit,
    Expectation,
    FunctionOffers,
    HighlightOffers,
    Task,
    TaskError,
)
from .ifeval import (
    EMBEDDED,
    FILE_SUFFIXES,
    HELD_OUT_PER_TYPE,
    IFEVAL_OFFERS,
    IFEVAL_OPTIONS,
    SEED_INSTRUCTION_TYPES,
    CaseLoadError,
    InstructionOffers,
    ifeval_split,
    ifeval_task,
    load_case_set,
    load_cases,
    parse_types,
    select_cases,
)
from .ifeval import hub_sources as ifeval_hub_sources

__all__ = [
    "EMBEDDED", "FILE_SUFFIXES", "HELD_OUT_PER_TYPE", "IFEVAL_OFFERS", "IFEVAL_OPTIONS", "INSTRUCTIONS",
    "SEED_INSTRUCTION_TYPES", "BuiltinTask", "Case", "CaseLoadError", "CaseOffers", "CaseSet", "CaseSplit",
    "Expectation", "FunctionOffers", "HighlightOffers",
    "InstructionOffers", "Task", "TaskError", "get_task", "hub_sources", "ifeval_split", "ifeval_task",
    "load_case_set", "load_cases", "parse_types", "register_task", "select_cases", "task_options",
]


@dataclass(frozen=True)
class BuiltinTask:
    """A built-in task as the registry knows it before building it (building may load a scorer's models)."""

    build: Callable[[], Task]
    #: its options, known without building it: `pytest --help` lists them
    options: tuple[Option, ...]
    #: the Hub ids its settings name, as (id, option) pairs, checked at start-up before any model loads
    hub_sources: Callable[[Mapping[str, Any]], list[tuple[str, str]]]


#: one line per built-in task (its package holds the rest)
BUILTIN: dict[str, BuiltinTask] = {
    "ifeval": BuiltinTask(ifeval_task, IFEVAL_OPTIONS, ifeval_hub_sources),
}

_TASKS: dict[str, Task] = {}  # built-in tasks once built, and every registered task
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
    if name not in _TASKS and name in BUILTIN:
        _TASKS[name] = BUILTIN[name].build()
    if name not in _TASKS:
        known = list(dict.fromkeys([*BUILTIN, *_TASKS]))
        hint = nearest(name, known)
        raise TaskError(f"unknown task {name!r}; registered: {', '.join(known)}"
                        + (f"; did you mean {hint!r}?" if hint else "")
                        + " (register your own with pytest_steer.register_task in a conftest.py)")
    return _TASKS[name]



def task_options(name: str | None = None) -> tuple[Option, ...]:
    """The options of task `name` (none for an unknown name: `get_task` says so), or of every task."""
    names = list(dict.fromkeys([*BUILTIN, *_TASKS])) if name is None else [name]
    out: dict[str, Option] = {}
    for n in names:
        found = _TASKS.get(n)
        builtin = BUILTIN.get(n)
        for o in found.options if found is not None else builtin.options if builtin is not None else ():
            out.setdefault(o.name, o)
    return tuple(out.values())


def hub_sources(name: str, settings: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The Hub ids task `name` needs checked at start-up for these settings of its (none for a user's task)."""
    builtin = BUILTIN.get(name)
    if builtin is None or name in _ORIGINS:  # a user's task, or a user's task registered under a built-in name
        return []
    return builtin.hub_sources(settings)
