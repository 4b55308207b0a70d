"""The generic side of a task: a `Case`, the cases' set, what a case offers the steering methods, the
evaluated/held-out split, and `Task` itself (cases, options, scorers, offers).

A task (in the spirit of inspect_ai) is a dataset plus scorers. IFEval is built in (`tasks.ifeval`); a
user defines their own in a conftest.py or test module and runs it through the same fixtures, marker
and report:

    register_task(Task.from_cases("json", cases, [valid_json], primary="valid_json", held_out=spare))

Held-out cases are what a steering method may fit on (activation steering's vectors). They are
disjoint from the evaluated cases, checked here, so no evaluated case can leak into a steering vector.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..errors import TaskError
from ..options import Option, Settings
from ..records import Case
from ..scores import Scorer, _code_hash, metrics_of

__all__ = ["INSTRUCTIONS", "Case", "CaseLoadError", "CaseOffers", "CaseSet", "CaseSplit", "HighlightOffers", "Task",
           "TaskError", "VectorKey"]


class CaseLoadError(TaskError):
    """Cases could not be loaded; the message names the source (and row) and says what to do."""


@dataclass(frozen=True)
class VectorKey:
    """Which activation-steering direction steers one instruction (or one of its words), and how.

    `key` is the direction used when the held-out cases have it, `fallback` the group direction used
    otherwise (IFEval: the instruction type; `auto` picks one layer per group); `name` names the pair in
    the report's fallback notes. `per_word` keys follow the reference's keyword rule: each word's
    direction is added at weight sign x value x share, with sign -1 for a forbidden word, steered away
    from by its *inclusion* direction.
    """

    name: str
    key: str
    fallback: str
    sign: float = 1.0
    share: float = 1.0
    per_word: bool = False


@dataclass(frozen=True)
class Expectation:
    """What a case asks of its answer's form, so the damage score does not read compliance as damage.

    `language`: the language the answer must be in (ISO 639-1; None: the prompt's own). `echoes_prompt`:
    the case asks for the prompt said back, or for one of the options it lists, so text copied from the
    prompt is an answer. Nothing about length: the damage score never counts words.
    """

    language: str | None = None
    echoes_prompt: bool = False


class CaseOffers(Protocol):
    """What a task tells steering methods about its cases; methods ask it instead of reading fields.

    `highlights`: the exact substrings of the prompt to steer towards (PASTA highlights them, prompt
    emphasis restates or marks them, activation steering cuts them out for its paired prompt); empty
    when the case has none. `vector_keys`: per instruction, the directions its activation vectors are
    fitted and looked up by (`VectorKey`); empty when it has none.
    """

    def highlights(self, case: Case) -> tuple[str, ...]: ...

    def vector_keys(self, case: Case) -> list[list[VectorKey]]:
        """Per instruction of the case, the directions that steer it."""
        ...

    def language(self, case: Case) -> str | None:
        """The language the case asks the response to be in (None: the prompt's own), for `wrong_language`."""
        ...

    # Optional: `expectation(case) -> Expectation`, what the case asks of the answer's form (language,
    # prompt said back); offers without it are read as `Expectation(language=self.language(case))`.


@dataclass(frozen=True)
class HighlightOffers:
    """What a case offers when its task says nothing else: its `data["instructions"]` to highlight (the
    instruction sentences, exact substrings of the prompt) and one vector group per tag.
    A task with its own keying passes its own offers (IFEval: `tasks.ifeval.offers.IFEVAL_OFFERS`)."""

    def highlights(self, case: Case) -> tuple[str, ...]:
        return tuple(case.data.get("instructions") or ())

    def vector_keys(self, case: Case) -> list[list[VectorKey]]:
        return [[VectorKey(tag, tag, tag)] for tag in case.tags]

    def language(self, case: Case) -> str | None:
        """`data["language"]`, else the argument of a `language:response_language` tag (IFEval's layout, which
        `score_responses` and scorers called without a task still read: kept until they take the task)."""
        if case.data.get("language"):
            return str(case.data["language"])
        for tag, kw in zip(case.tags, case.data.get("kwargs", ()), strict=False):
            if tag == "language:response_language" and kw and kw.get("language"):
                return str(kw["language"])
        return None

    def expectation(self, case: Case) -> Expectation:
        """The language asked for; the prompt said back for the tags in `ECHO_TAGS` (IFEval's layout, read
        for scorers called without a task, as `language` is: kept until they take the task)."""
        return Expectation(self.language(case), bool(ECHO_TAGS & set(case.tags)))


#: IFEval types whose compliant answers copy the prompt: repeat the request first; pick one of the listed options
ECHO_TAGS = frozenset({"combination:repeat_prompt", "detectable_format:constrained_response"})

#: what a case offers when no task says otherwise
INSTRUCTIONS = HighlightOffers()


@dataclass(frozen=True)
class CaseSet:
    """The selected cases, as a fixture hands them to tests."""

    cases: tuple[Case, ...]
    source: str = "embedded"
    _index: dict[str, Case] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(self.cases))
        object.__setattr__(self, "_index", index_by_key(self.cases, self.source))

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> Case:
        return self.cases[index]

    @property
    def types(self) -> tuple[str, ...]:
        """Instruction types present, in order of first appearance."""
        return tuple(dict.fromkeys(t for c in self.cases for t in c.tags))

    def by_key(self, key: str) -> Case:
        try:
            return self._index[str(key)]
        except KeyError:
            raise KeyError(f"no case with key {key!r} in {self.source}") from None

    def of_type(self, instruction_type: str) -> tuple[Case, ...]:
        return tuple(c for c in self.cases if instruction_type in c.tags)


def index_by_key(cases: Iterable[Case], source: str) -> dict[str, Case]:
    index: dict[str, Case] = {}
    for c in cases:
        if c.key in index:
            raise CaseLoadError(f"{source}: duplicate case key {c.key!r}; keys must be unique.")
        index[c.key] = c
    return index


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
    each case offers the steering methods (`CaseOffers`: text to highlight, keys that group activation
    vectors). The default offers (`HighlightOffers`) highlight `data["instructions"]` and group vectors by
    tag; a task whose cases carry other data passes its own (IFEval keys per language and word)."""

    name: str
    scorers: tuple[Scorer, ...]
    primary: str
    load: Callable[[Settings], CaseSplit] = field(repr=False)
    #: the task's own settings (e.g. IFEval's dataset and selection), read by `load` as settings[name]
    options: tuple[Option, ...] = ()
    offers: CaseOffers = field(default=INSTRUCTIONS, repr=False)
    #: whether a response does what its case asks, (case, response) -> bool, with its name for cache keys:
    #: what activation steering's `auto` layer sweep scores held-out responses with (None: no sweep)
    judge: Callable[[Case, str], bool] | None = field(default=None, repr=False)
    judge_name: str = ""

    def highlights(self, case: Case) -> tuple[str, ...]:
        return tuple(self.offers.highlights(case))

    def vector_keys(self, case: Case) -> list[list[VectorKey]]:
        return list(self.offers.vector_keys(case))

    def language(self, case: Case) -> str | None:
        return self.offers.language(case)

    def expectation(self, case: Case) -> Expectation:
        """What the case asks of the answer's form (`Expectation`), from the offers where they say it."""
        expect = getattr(self.offers, "expectation", None)
        return expect(case) if callable(expect) else Expectation(self.offers.language(case))

    def __post_init__(self) -> None:
        names = [m.name for m in metrics_of(self.scorers)]
        if self.primary not in names:
            raise TaskError(f"task {self.name!r}: primary metric {self.primary!r} is not one its scorers declare "
                            f"({', '.join(names)})")

    @classmethod
    def from_cases(cls, name: str, cases: Sequence[Case], scorers: Sequence[Scorer], *, primary: str | None = None,
                   held_out: Sequence[Case] = (), options: Sequence[Option] = (),
                   highlights: Callable[[Case], Sequence[str]] | None = None,
                   vector_keys: Callable[[Case], Sequence[str]] | None = None,
                   judge: Callable[[Case, str], bool] | None = None, judge_name: str = "") -> Task:
        """A task over a fixed list of cases; `primary` defaults to the first declared metric.

        `highlights(case)`: the substrings of the prompt the methods steer towards; `vector_keys(case)`: the
        names that group its activation vectors. They default to `data["instructions"]` and the tags. `judge(case,
        response)`: whether a response does what its case asks, which activation steering's layer `auto`
        sweep needs; its cache name `judge_name` defaults to the function's module, name and a hash of its
        source, so editing the judge re-runs the sweep."""
        scorers = tuple(scorers)
        if not cases:
            raise TaskError(f"task {name!r} has no cases")
        split = CaseSplit(CaseSet(tuple(cases), source=name), tuple(held_out))
        first = metrics_of(scorers)[0].name if scorers and metrics_of(scorers) else ""
        offers = INSTRUCTIONS if highlights is None and vector_keys is None else \
            FunctionOffers(highlights or INSTRUCTIONS.highlights, vector_keys)
        if judge is not None and not callable(judge):
            raise TaskError(f"task {name!r}: judge must be a function (case, response) -> bool, not "
                            f"{type(judge).__name__}")
        if judge is not None and not judge_name:
            where = f"{getattr(judge, '__module__', '')}.{getattr(judge, '__qualname__', type(judge).__name__)}"
            judge_name = f"{where}:{_code_hash(judge)}"
        return cls(name, scorers, primary or first, lambda settings: split, tuple(options), offers, judge, judge_name)


@dataclass(frozen=True)
class FunctionOffers:
    """Case offers from two plain functions; a vector key without a coarser group falls back to itself."""

    highlight: Callable[[Case], Sequence[str]]
    keys: Callable[[Case], Sequence[str]] | None = None

    def highlights(self, case: Case) -> tuple[str, ...]:
        return tuple(self.highlight(case))

    def vector_keys(self, case: Case) -> list[list[VectorKey]]:
        if self.keys is None:
            return INSTRUCTIONS.vector_keys(case)
        return [[VectorKey(k, k, k)] for k in self.keys(case)]

    def language(self, case: Case) -> str | None:
        return INSTRUCTIONS.language(case)

    def expectation(self, case: Case) -> Expectation:
        return INSTRUCTIONS.expectation(case)
