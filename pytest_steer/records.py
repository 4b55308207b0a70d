"""The records every part of a run passes around, at the bottom of the package: it imports nothing of it.

A `Case` (one prompt, its tags and its task's data), a `GridPoint` (a method at one value, or the
baseline), a `Sample` (a generated response as a scorer sees it), a `Score` (what a scorer says of
it) and a `Metric` (one named score and how to read it). Tasks, methods, scorers, the engine and the
report all meet here, so none of them needs to import another to name what they share.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BASELINE", "BASELINE_CONFIG", "LOG_FLOOR", "QUALITY_ROLE", "Case", "GridPoint", "Kind", "Metric",
           "Sample", "Scale", "Score", "Value"]

BASELINE = "baseline"

Value = float | str


@dataclass(frozen=True)
class GridPoint:
    """One point of the grid: a method at one value, or the unsteered baseline (method "baseline").

    `parts` lists the (registered method, value) pairs the row applies when they are not just
    (method, value): a combined config ("prompt+actadd", every part at once) or a method's own
    setting shown as its own series ("actadd-removed"). `method` is then the row's series name.
    """

    method: str
    value: Value | None
    label: str
    strength: float = 0.0
    parts: tuple[tuple[str, Value], ...] = ()

    @property
    def is_baseline(self) -> bool:
        return self.method == BASELINE

    def steering(self) -> tuple[tuple[str, Value], ...]:
        """The (registered method, value) pairs this row is steered by; none for the baseline."""
        if self.is_baseline or self.value is None:
            return ()
        return self.parts or ((self.method, self.value),)

    def value_for(self, method: str) -> Value | None:
        """The value registered method `method` steers this row at (None: it leaves the row alone)."""
        return dict(self.steering()).get(method)


BASELINE_CONFIG = GridPoint(BASELINE, None, BASELINE, 0.0)


#: the old keyword arguments of `Case` (IFEval's fields), accepted for one release with a DeprecationWarning
_OLD_FIELDS = ("instructions", "instruction_id_list", "kwargs", "target")
#: row fields of the cache-key layout that `data` may not shadow
_RESERVED = frozenset({"key", "prompt", "tags", "data", "target", "instruction_id_list"})


@dataclass(frozen=True, init=False)
class Case:
    """One prompt to steer and score: a unique `key`, the `prompt`, `tags` (the categories the report
    breaks results down by: IFEval's instruction ids, a user task's groups), `data` (what the case's task
    and scorers read: IFEval's instruction sentences and kwargs) and `target` (a reference answer).

    The new fields are keyword-only: `Case("k", "Say hi.", tags=("greeting",), data={"lang": "en"})`.
    The old IFEval signature `Case(key, prompt, instructions, instruction_id_list, kwargs, target)`, by
    position or keyword, still works for one release and warns; it builds the same case. Treat `data`
    (and the dicts in it) as read-only: cases are shared.
    """

    key: str
    prompt: str
    tags: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    target: Any = None

    def __init__(self, key: str, prompt: str, *old: Any, tags: tuple[str, ...] | list[str] = (),
                 data: Mapping[str, Any] | None = None, target: Any = None, **old_kw: Any) -> None:
        if old or old_kw:
            tags, data, target = _from_old_fields(key, old, old_kw, tags, data, target)
        object.__setattr__(self, "key", key)
        object.__setattr__(self, "prompt", prompt)
        object.__setattr__(self, "tags", tuple(tags))
        object.__setattr__(self, "data", _normalised_data(key, data))
        object.__setattr__(self, "target", target)

    def __hash__(self) -> int:
        # the generated hash would fail on the data dicts; equal cases share these fields
        return hash((self.key, self.prompt, self.tags))

    # The old IFEval fields, read from `data` and `tags` for one release.
    @property
    def instructions(self) -> tuple[str, ...] | None:
        _deprecated("case.instructions", "the task's highlights (IFEval: case.data['instructions'])")
        return self.data.get("instructions")

    @property
    def instruction_id_list(self) -> tuple[str, ...]:
        _deprecated("case.instruction_id_list", "case.tags")
        return self.tags

    @property
    def kwargs(self) -> tuple[dict[str, Any], ...]:
        _deprecated("case.kwargs", "case.data['kwargs']")
        return tuple(self.data.get("kwargs", ()))

    @property
    def steerable(self) -> bool:
        _deprecated("case.steerable", "the task's highlights (Task.highlights(case))")
        return bool(self.data.get("instructions"))

    def to_dict(self) -> dict[str, Any]:
        """The case as one row, in the layout cache keys have always been computed from (Split-IFEval's:
        key, prompt, [instructions], instruction_id_list = the tags, kwargs, [target]); the other `data`
        entries are fields of their own. Changing this layout changes every cache key."""
        data = dict(self.data)
        row: dict[str, Any] = {"key": self.key, "prompt": self.prompt}
        if "instructions" in data:
            row["instructions"] = _plain(data.pop("instructions"))
        row["instruction_id_list"] = list(self.tags)
        row["kwargs"] = _plain(data.pop("kwargs", []))
        row.update({k: _plain(v) for k, v in data.items()})
        if self.target is not None:
            row["target"] = self.target
        return row

    def content_hash(self) -> str:
        """sha256 of a canonical JSON of all fields: a cache key that changes with the case."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _from_old_fields(key: str, old: tuple[Any, ...], old_kw: Mapping[str, Any], tags: Any,
                     data: Mapping[str, Any] | None, target: Any) -> tuple[Any, Mapping[str, Any], Any]:
    """tags, data and target from the old signature's positional and keyword arguments."""
    if len(old) > len(_OLD_FIELDS):
        raise TypeError(f"Case() takes at most {2 + len(_OLD_FIELDS)} positional arguments")
    unknown = set(old_kw) - set(_OLD_FIELDS)
    if unknown:
        raise TypeError(f"Case() got unexpected keyword argument(s) {sorted(unknown)}")
    given = dict(zip(_OLD_FIELDS, old, strict=False))
    twice = set(given) & set(old_kw)
    if twice:
        raise TypeError(f"Case() got multiple values for {sorted(twice)}")
    given.update(old_kw)
    warnings.warn("Case(key, prompt, instructions, instruction_id_list, kwargs) is deprecated and goes away in the "
                  "next release: write Case(key, prompt, tags=instruction_ids, data={'instructions': ..., "
                  "'kwargs': ...}), or pytest_steer.tasks.ifeval.ifeval_case(...)", DeprecationWarning, stacklevel=4)
    # old fields win over tags=/data= given with them, as `dataclasses.replace(case, instructions=...)` passes both
    new_data = dict(data or {})
    if "instructions" in given:
        new_data["instructions"] = None if given["instructions"] is None else tuple(given["instructions"])
    if "kwargs" in given:
        new_data["kwargs"] = tuple(given["kwargs"] or ())
    return tuple(given.get("instruction_id_list", tags)), new_data, given.get("target", target)


def _normalised_data(key: str, data: Mapping[str, Any] | None) -> dict[str, Any]:
    """A copy without empty IFEval entries (so old and new spellings of a case are equal), checked
    against the row layout's own field names."""
    out = dict(data or {})
    clash = _RESERVED & set(out)
    if clash:
        raise ValueError(f"case {key!r}: data may not use the field name(s) {sorted(clash)}; rename them")
    if out.get("instructions", ()) is None:
        del out["instructions"]
    if "kwargs" in out:
        if out["kwargs"]:
            out["kwargs"] = tuple(out["kwargs"])
        else:
            del out["kwargs"]
    if isinstance(out.get("instructions"), list):
        out["instructions"] = tuple(out["instructions"])
    return out


def _plain(value: Any) -> Any:
    """Tuples as lists and mappings as dicts, at any depth: the JSON a cache key is computed from."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} is deprecated and goes away in the next release: use {new}", DeprecationWarning,
                  stacklevel=3)


@dataclass(frozen=True)
class Sample:
    """One generated response as a scorer sees it."""

    case: Case
    config: GridPoint
    prompt: str  # the case's prompt (not the rendered chat, which a method may have changed)
    response: str
    n_tokens: int
    finish_reason: str  # "stop" or "length"
    baseline_n_tokens: int | None = None  # the same case's unsteered response in the same trial


@dataclass
class Score:
    """One sample's named values (None: not applicable) and details kept with the row."""

    values: dict[str, float | None]
    details: dict[str, Any] = field(default_factory=dict)


Kind = Literal["binary", "real"]
Scale = Literal["linear", "log"]
#: a "log"-scale metric's values are floored here before the log, so a zero counts as a hundredfold loss, not -inf
LOG_FLOOR = 0.01
#: the role of the headline quality metric (the trade-off's other axis)
QUALITY_ROLE = "quality"


@dataclass(frozen=True)
class Metric:
    """One named score and how to read it."""

    name: str
    kind: Kind = "real"
    direction: int = 1  # +1 higher is better, -1 lower is better, 0 neither (e.g. length ratio)
    label: str = ""  # for tables and axes; the name if empty
    side_effect: bool = False  # listed in the report's "Side effects" table
    per_tag: bool = False  # details[name] holds one bool per case tag (IFEval's per-instruction results)
    description: str = ""
    # "log": reduced on a log scale (geometric mean; differences are ratios), for positive heavy-tailed scores
    scale: Scale = "linear"
    #: what the report does with it: "quality" = the headline quality (the trade-off's other axis, the
    #: Pareto plot's y); "" = none. Tables, figures and the recommendation find metrics by role, not name.
    role: str = ""
    #: the recommendation's allowed worsening against the baseline (relative for a "log" metric), or None
    budget: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("binary", "real"):
            raise ValueError(f"metric {self.name!r}: kind must be 'binary' or 'real', not {self.kind!r}")
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"metric {self.name!r}: direction must be -1, 0 or 1, not {self.direction!r}")
        if self.scale not in ("linear", "log") or (self.scale == "log" and self.kind != "real"):
            raise ValueError(f"metric {self.name!r}: scale must be 'linear', or 'log' for a real metric, "
                             f"not {self.scale!r}")

    @property
    def title(self) -> str:
        return self.label or self.name
