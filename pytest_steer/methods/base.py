"""The steering-method protocol: what the engine, the session and the report need from a method.

A method owns the meaning of its one parameter (PASTA's alpha, activation steering's coefficient,
prompt emphasis's variant): which values are valid, which is the no-op, how strong a value is for
plots, and the label that names it in test ids. The engine and the session know nothing else of it.

    class Shout:                      # a user's own method, see docs/extending.md
        name, param, noop = "shout", "level", 0
        def check(self, value): ...   # validate once, return the normalised value
        ...
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..errors import UsageError
from ..options import nearest

# re-exported: the "did you mean" hint of every method's errors, and the grid's records
__all__ = ["BASELINE", "BASELINE_CONFIG", "INSTRUCTIONS", "CaseOffers", "GridPoint", "Value", "nearest"]

from ..records import BASELINE, BASELINE_CONFIG, GridPoint, Value
from ..tasks.base import INSTRUCTIONS, CaseOffers

if TYPE_CHECKING:
    from ..prompts import EncodedBatch
    from ..records import Case

class SteeringError(UsageError):
    """Bad steering input, raised before any generation starts."""


@dataclass
class PrepareContext:
    """What a method may use once before generation: the model, the cases it will steer, and the
    cases held apart for fitting (never evaluated), plus a store for what it fits (e.g. vectors)."""

    model: Any  # LoadedModel: .model, .tokenizer, .identity
    steered: Sequence[Case]
    held_out: Sequence[Case]
    store: Any = None  # ResultCache or None
    on_missing: str = "error"
    options: Mapping[str, Any] = field(default_factory=dict)
    task: CaseOffers = INSTRUCTIONS  # what each case offers to steer by (the run's task)


def no_highlights(case: Case, method: str, what: str) -> SteeringError:
    """The one error for a case that offers nothing to steer towards."""
    return SteeringError(f"case {case.key!r} offers no text to {what} (its task gives it no highlights, e.g. "
                         f"IFEval's `instructions`), so {method} cannot steer it; give the task highlights= or "
                         "run only the baseline for it")


@runtime_checkable
class SteeringMethod(Protocol):
    """A steering method. mypy checks the built-in ones against this protocol (tests/typing_methods.py)."""

    name: ClassVar[str]  # id prefix and grid key: "pasta", "actadd", "prompt"
    param: ClassVar[str]  # what the value means: "alpha", "coefficient", "variant"
    noop: ClassVar[Value]  # the value that leaves the model unchanged

    def check(self, value: Any) -> Value:
        """Validate one grid value (once, at start-up) and return it normalised; raise SteeringError."""
        ...

    def label(self, value: Value, grid: Sequence[Value]) -> str:
        """A -k friendly id part, unique among the `grid` values: "alpha10", "c4", "restate"."""
        ...

    def strength(self, value: Value) -> float:
        """How hard `value` steers, >= 0 and 0 for the no-op, for plots and "gentlest config" choices."""
        ...

    def identity(self) -> dict[str, Any]:
        """Everything besides the value that changes the output, for cache keys."""
        ...

    def prepare(self, ctx: PrepareContext) -> None:
        """Check the model and cases and fit what the method needs; raise SteeringError on bad input."""
        ...

    def render(self, case: Case, value: Value | None) -> list[dict[str, str]]:
        """The chat messages for `case` (value None: this method does not steer the row)."""
        ...

    def steer(self, model: Any, batch: EncodedBatch, cases: Sequence[Case],
              values: Sequence[Value | None]) -> contextlib.AbstractContextManager[None]:
        """Steer every forward pass inside the block; row i at values[i] (None: leave the row alone)."""
        ...


def user_turn(case: Case) -> list[dict[str, str]]:
    """The unsteered rendering: the case's prompt as one user turn."""
    return [{"role": "user", "content": case.prompt}]


def number_label(prefix: str, value: float, others: Sequence[float] = ()) -> str:
    """`prefix` + the shortest decimal that tells `value` apart from every other grid value.

    `alpha10` for 10, but 10 and 10.0000001 become `alpha10` and `alpha10.0000001`, never the same id.
    """
    for digits in range(6, 18):
        text = f"{value:.{digits}g}"
        if all(f"{o:.{digits}g}" != text for o in others if o != value):
            return prefix + text
    return prefix + repr(float(value))


def finite_number(method: str, param: str, value: Any) -> float:
    """`value` as a float, refusing bools, NaN and infinities with one line naming the method."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SteeringError(f"{method} {param} {value!r} is not a number")
    try:
        x = float(value)
    except ValueError:
        raise SteeringError(f"{method} {param} {value!r} is not a number") from None
    except OverflowError:  # an integer past float's range: 400 digits on the command line, 10**400 in a marker
        raise SteeringError(f"{method} {param} {value!r} is too large") from None
    if not math.isfinite(x):
        raise SteeringError(f"{method} {param} {value!r} must be finite")
    return x


def config(method: SteeringMethod, value: Any, grid: Sequence[Any] = ()) -> GridPoint:
    """The grid point of `method` at `value` (checked), labelled uniquely among the `grid` values."""
    v = method.check(value)
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float, str)):
        # None is how `steer` marks an unsteered row; a bool is not a strength or a name
        raise SteeringError(f"{method.name} grid value {value!r} must be a number or a name (None is the "
                            "unsteered baseline, always included)")
    others = [method.check(g) for g in grid]
    series = getattr(method, "series", None)
    name = series(v) if callable(series) else method.name  # e.g. "actadd-removed": a setting shown as its own series
    label = f"{method.name}-{method.label(v, others)}"
    return GridPoint(name, v, label, method.strength(v), () if name == method.name else ((method.name, v),))
