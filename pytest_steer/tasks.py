"""Tasks: the cases to steer, the scorers that judge them, and the cases held apart for fitting.

A task (in the spirit of inspect_ai) is a dataset plus scorers. IFEval is built in; a user defines
their own in a conftest.py or test module and runs it through the same fixtures, marker and report:

    register_task(Task.from_cases("json", cases, [valid_json], primary="valid_json", held_out=spare))

Held-out cases are what a steering method may fit on (activation steering's vectors). They are
disjoint from the evaluated cases, checked here, so no evaluated case can leak into a steering vector.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .cases import Case, CaseSet
from .scores import Scorer, metrics_of

if TYPE_CHECKING:
    from .options import RunSpec

#: held-out IFEval cases per instruction type for fitting (activation-steering vectors)
HELD_OUT_PER_TYPE = 8


class TaskError(ValueError):
    """A task is unknown or inconsistent; the message says what to do."""


@dataclass(frozen=True)
class CaseSplit:
    """The evaluated cases and the held-out ones, which never overlap (by key or by prompt)."""

    evaluated: CaseSet
    held_out: tuple[Case, ...] = ()

    def __post_init__(self) -> None:
        keys = {c.key for c in self.evaluated}
        prompts = {c.prompt for c in self.evaluated}
        leaked = [c.key for c in self.held_out if c.key in keys or c.prompt in prompts]
        if leaked:
            raise TaskError(f"held-out case(s) {leaked[:3]} are also evaluated; a steering method must not "
                            "fit on the cases it is judged on")


@dataclass(frozen=True)
class Task:
    """Cases (as a function of the run's settings), scorers, and the metric that means "it worked"."""

    name: str
    scorers: tuple[Scorer, ...]
    primary: str
    load: Callable[[RunSpec], CaseSplit] = field(repr=False)

    def __post_init__(self) -> None:
        names = [m.name for m in metrics_of(self.scorers)]
        if self.primary not in names:
            raise TaskError(f"task {self.name!r}: primary metric {self.primary!r} is not one its scorers declare "
                            f"({', '.join(names)})")

    @classmethod
    def from_cases(cls, name: str, cases: Sequence[Case], scorers: Sequence[Scorer], *, primary: str | None = None,
                   held_out: Sequence[Case] = ()) -> Task:
        """A task over a fixed list of cases; `primary` defaults to the first declared metric."""
        scorers = tuple(scorers)
        if not cases:
            raise TaskError(f"task {name!r} has no cases")
        split = CaseSplit(CaseSet(tuple(cases), source=name), tuple(held_out))
        first = metrics_of(scorers)[0].name if scorers and metrics_of(scorers) else ""
        return cls(name, scorers, primary or first, lambda spec: split)


def _ifeval_split(spec: RunSpec) -> CaseSplit:
    from .cases import load_cases, select_cases

    source = None if spec.dataset == "embedded" else spec.dataset
    every = load_cases(source, split=spec.split)
    types = spec.types or None
    evaluated = CaseSet(tuple(select_cases(every, instruction_types=types, per_type=spec.per_type,
                                           seed=spec.case_seed)), source=spec.dataset)
    chosen = {c.key for c in evaluated}
    held: list[Case] = []
    for t in evaluated.types:
        pool = [c for c in select_cases(every, instruction_types=[t], seed=spec.case_seed) if c.key not in chosen]
        held += pool[:HELD_OUT_PER_TYPE]
    return CaseSplit(evaluated, tuple(held))


def ifeval_task() -> Task:
    """IFEval strict/loose accuracy over the embedded set or a Split-IFEval file; held out: unselected cases."""
    from .metrics.instruction import IFEvalScorer

    return Task("ifeval", (IFEvalScorer(),), "strict_prompt_accuracy", _ifeval_split)


_TASKS: dict[str, Task | Callable[[], Task]] = {"ifeval": ifeval_task}
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
        from .methods.base import nearest

        hint = nearest(name, _TASKS)
        raise TaskError(f"unknown task {name!r}; registered: {', '.join(_TASKS)}"
                        + (f"; did you mean {hint!r}?" if hint else "")
                        + " (register your own with pytest_steer.register_task in a conftest.py)")
    found = _TASKS[name]
    task = found if isinstance(found, Task) else found()
    _TASKS[name] = task
    return task

