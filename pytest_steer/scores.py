"""Named scores: what a scorer returns, what each name means, and how users write their own.

A scorer judges a batch of `Sample`s and returns one `Score` per sample: named values plus optional
details (IFEval's per-instruction results). Every name is declared once as a `Metric`, which says
how to reduce it (binary -> proportion with a Wilson interval, real -> mean with a bootstrap
interval; scale "log" -> geometric mean, for positive scores with heavy tails) and which direction
is good. Everything downstream (reducer, gates, report, stored
baselines, JUnit properties) reads the names from the metrics, never from a hand-written list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .errors import ScorerError, UsageError
from .records import LOG_FLOOR, QUALITY_ROLE, Kind, Metric, Sample, Scale, Score

__all__ = ["LOG_FLOOR", "QUALITY_ROLE", "FunctionScorer", "Kind", "Metric", "Sample", "Scale", "Score", "Scorer",
           "ScorerError", "budgets", "metrics_of", "register_scorer", "registered_scorers", "scorer", "with_role"]

def with_role(metrics: Sequence[Metric], role: str) -> Metric | None:
    """The first metric declared with `role`, or None."""
    return next((m for m in metrics if m.role == role), None)


def budgets(metrics: Sequence[Metric]) -> dict[str, float]:
    """Metric name -> its declared budget, for the recommendation."""
    return {m.name: m.budget for m in metrics if m.budget is not None}


#: scorers every task gets, besides its own and the quality scorers (`register_scorer`)
_EXTRA: dict[str, Scorer] = {}


def register_scorer(scorer: Scorer) -> None:
    """Score every task's rows with `scorer` too (call it in a conftest.py); its metrics join the report,
    the gates and the stored baselines like the built-in ones. Re-registering a name replaces it."""
    if not getattr(scorer, "metrics", None):
        raise UsageError(f"scorer {getattr(scorer, 'name', scorer)!r} declares no metrics")
    _EXTRA[scorer.name] = scorer


def registered_scorers() -> list[Scorer]:
    return list(_EXTRA.values())


@runtime_checkable
class Scorer(Protocol):
    """Judges samples. `metrics` declares every name `score` returns."""

    name: str
    metrics: tuple[Metric, ...]

    def identity(self) -> str:
        """What the scores depend on besides the sample (model commit, version), for the score cache."""
        ...

    def check(self) -> None:
        """Fail fast (load models, try one pair) before any generation; raise with one clear line."""
        ...

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        ...


@dataclass
class FunctionScorer:
    """A scorer from a plain function `fn(sample) -> bool | float | dict[name, value]`."""

    fn: Callable[[Sample], Any]
    metrics: tuple[Metric, ...]
    name: str = ""
    version: str = "1"

    def __post_init__(self) -> None:
        self.name = self.name or getattr(self.fn, "__name__", "scorer")
        if not self.metrics:
            raise UsageError(f"scorer {self.name!r} declares no metrics")

    def identity(self) -> str:
        """Name, `version` and a hash of the function's code: editing the function re-scores cached rows.
        A change in something it calls is not seen; bump `version=` for that."""
        where = f"{self.fn.__module__}.{getattr(self.fn, '__qualname__', self.name)}"
        return f"{where}:{self.version}:{_code_hash(self.fn)}"

    def check(self) -> None:
        return None

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        return [self._one(s) for s in samples]

    def _one(self, sample: Sample) -> Score:
        out = self.fn(sample)
        if not isinstance(out, Mapping):
            if len(self.metrics) != 1:
                raise ScorerError(f"scorer {self.name!r} returned one value but declares "
                                  f"{len(self.metrics)} metrics; return a dict by name")
            out = {self.metrics[0].name: out}
        names = {m.name for m in self.metrics}
        unknown, missing = set(out) - names, names - set(out)
        if unknown:
            raise ScorerError(f"scorer {self.name!r} returned undeclared score(s) {sorted(unknown)}; "
                              f"declare them in metrics=")
        if missing:
            raise ScorerError(f"scorer {self.name!r} did not return {sorted(missing)}; return None for "
                              "'not applicable'")
        return Score({m.name: _number(self.name, m, out[m.name]) for m in self.metrics})


def _code_hash(fn: Callable[..., Any]) -> str:
    """The function's source (or, without source, its bytecode and constants), hashed."""
    import hashlib
    import inspect

    try:
        text = inspect.getsource(fn)
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        text = repr((code.co_code, code.co_consts)) if code is not None else repr(fn)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _number(scorer: str, metric: Metric, value: Any) -> float | None:
    """A score as a float (NaN and None: not applicable); text, infinities and a binary score other
    than 0/1 are errors, which would otherwise reach the results as `Infinity` or a proportion of 7."""
    if value is None:
        return None
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        x = float(value)
    except (TypeError, ValueError):
        raise ScorerError(f"scorer {scorer!r} gave {metric.name}={value!r}, which is not a number or bool") from None
    except OverflowError:  # an integer past float's range (10**400)
        raise ScorerError(f"scorer {scorer!r} gave {metric.name}={value!r}; scores must be finite") from None
    if math.isnan(x):
        return None
    if math.isinf(x):
        raise ScorerError(f"scorer {scorer!r} gave {metric.name}={value!r}; scores must be finite")
    if metric.kind == "binary" and x not in (0.0, 1.0):
        raise ScorerError(f"scorer {scorer!r} gave {metric.name}={value!r}; a binary metric takes 0/1 or a bool")
    return x


def scorer(*metrics: Metric | str, name: str = "",
           version: str = "1") -> Callable[[Callable[[Sample], Any]], FunctionScorer]:
    """Decorator: `@scorer("valid_json")` (binary by default for bare names) turns a function into a scorer."""
    declared = tuple(m if isinstance(m, Metric) else Metric(m, "binary") for m in metrics)

    def wrap(fn: Callable[[Sample], Any]) -> FunctionScorer:
        return FunctionScorer(fn, declared, name=name, version=version)

    return wrap


def metrics_of(scorers: Sequence[Scorer]) -> list[Metric]:
    """Every declared metric in scorer order; a name declared twice is an error."""
    out: dict[str, Metric] = {}
    for s in scorers:
        for m in s.metrics:
            if m.name in out:
                raise UsageError(f"metric {m.name!r} is declared by two scorers; rename one")
            out[m.name] = m
    return list(out.values())
