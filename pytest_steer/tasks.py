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

from .cases import INSTRUCTIONS, SEED_INSTRUCTION_TYPES, Case, CaseOffers, CaseSet
from .options import Option, Settings, nearest, parse_int, parse_list, parse_positive_int
from .scores import Scorer, metrics_of

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
    """Cases (as a function of the run's settings), scorers, the metric that means "it worked", and what
    each case offers the steering methods (`cases.CaseOffers`: text to highlight, keys that group
    activation vectors). The default offers read the Split-IFEval layout (`instructions`,
    `instruction_id_list`); a task whose cases carry other data passes its own."""

    name: str
    scorers: tuple[Scorer, ...]
    primary: str
    load: Callable[[Settings], CaseSplit] = field(repr=False)
    #: the task's own settings (e.g. IFEval's dataset and selection), read by `load` as settings[name]
    options: tuple[Option, ...] = ()
    offers: CaseOffers = field(default=INSTRUCTIONS, repr=False)

    def highlights(self, case: Case) -> tuple[str, ...]:
        return tuple(self.offers.highlights(case))

    def vector_keys(self, case: Case) -> list[tuple[str, str]]:
        return list(self.offers.vector_keys(case))

    def __post_init__(self) -> None:
        names = [m.name for m in metrics_of(self.scorers)]
        if self.primary not in names:
            raise TaskError(f"task {self.name!r}: primary metric {self.primary!r} is not one its scorers declare "
                            f"({', '.join(names)})")

    @classmethod
    def from_cases(cls, name: str, cases: Sequence[Case], scorers: Sequence[Scorer], *, primary: str | None = None,
                   held_out: Sequence[Case] = (), options: Sequence[Option] = (),
                   highlights: Callable[[Case], Sequence[str]] | None = None,
                   vector_keys: Callable[[Case], Sequence[str]] | None = None) -> Task:
        """A task over a fixed list of cases; `primary` defaults to the first declared metric.

        `highlights(case)`: the substrings of the prompt the methods steer towards; `vector_keys(case)`: the
        names that group its activation vectors. Both default to the Split-IFEval fields."""
        scorers = tuple(scorers)
        if not cases:
            raise TaskError(f"task {name!r} has no cases")
        split = CaseSplit(CaseSet(tuple(cases), source=name), tuple(held_out))
        first = metrics_of(scorers)[0].name if scorers and metrics_of(scorers) else ""
        offers = INSTRUCTIONS if highlights is None and vector_keys is None else \
            FunctionOffers(highlights or INSTRUCTIONS.highlights, vector_keys)
        return cls(name, scorers, primary or first, lambda settings: split, tuple(options), offers)


@dataclass(frozen=True)
class FunctionOffers:
    """Case offers from two plain functions; a vector key without a coarser group falls back to itself."""

    highlight: Callable[[Case], Sequence[str]]
    keys: Callable[[Case], Sequence[str]] | None = None

    def highlights(self, case: Case) -> tuple[str, ...]:
        return tuple(self.highlight(case))

    def vector_keys(self, case: Case) -> list[tuple[str, str]]:
        if self.keys is None:
            return INSTRUCTIONS.vector_keys(case)
        return [(k, k) for k in self.keys(case)]


def parse_types(value: object) -> tuple[str, ...]:
    """Comma-separated instruction ids; "seed" = the seed study's four, "all" = no filter."""
    text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value).strip()
    if text == "seed":
        return SEED_INSTRUCTION_TYPES
    if text == "all":
        return ()
    return parse_list(text)


#: IFEval's own settings: where its cases come from and which are selected
IFEVAL_OPTIONS = (
    Option("dataset", str, "embedded",
           "cases: 'embedded', a .jsonl/.json/.parquet/.csv file or a Hugging Face dataset id"),
    Option("split", str, "train", "dataset split for Hugging Face datasets"),
    Option("types", parse_types, SEED_INSTRUCTION_TYPES,
           "instruction types to keep, comma-separated; 'seed' (the four of the seed study) or 'all'"),
    Option("per_type", parse_positive_int, 4, "cases sampled per instruction type"),
    Option("case_seed", parse_int, 123, "seed of the balanced case sampling"),
)


def _ifeval_split(settings: Settings) -> CaseSplit:
    from .cases import load_cases, select_cases

    dataset = settings["dataset"]
    every = load_cases(None if dataset == "embedded" else dataset, split=settings["split"])
    types = settings["types"] or None
    evaluated = CaseSet(tuple(select_cases(every, instruction_types=types, per_type=settings["per_type"],
                                           seed=settings["case_seed"])), source=dataset)
    chosen = {c.key for c in evaluated}
    held: list[Case] = []
    for t in evaluated.types:
        pool = [c for c in select_cases(every, instruction_types=[t], seed=settings["case_seed"])
                if c.key not in chosen]
        held += pool[:HELD_OUT_PER_TYPE]
    return CaseSplit(evaluated, tuple(held))


def ifeval_task() -> Task:
    """IFEval strict/loose accuracy over the embedded set or a Split-IFEval file; held out: unselected cases."""
    from .metrics.instruction import IFEvalScorer

    return Task("ifeval", (IFEvalScorer(),), "strict_prompt_accuracy", _ifeval_split, IFEVAL_OPTIONS)


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
