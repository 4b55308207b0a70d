"""The results table: one row per (case, config, trial), its files, and DataFrame views.

Every later stage (reducer, statistics, figures, report, stored baselines) reads this table, never
the objects that produced it. Scores are a mapping by name; `to_frame` spreads them into columns.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .files import write_atomically

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["BASELINE", "FIELDS", "ResultRow", "read_jsonl", "score_names", "to_frame", "write_atomically",
           "write_jsonl"]

BASELINE = "baseline"


@dataclass
class ResultRow:
    """One generated and scored response."""

    key: str
    tags: list[str]  # the case's categories (IFEval: its instruction ids), for per-tag views
    method: str  # "baseline", "pasta", "actadd", "prompt", ...
    value: float | str | None  # the method's parameter value; None for the baseline
    config: str  # unique label, e.g. "pasta-alpha10"
    strength: float  # the method's strength of `value`, 0 for the baseline
    trial: int
    seed: int  # sampling seed from (run seed, case, trial): equal across configs, so rows pair
    prompt: str
    response: str
    n_tokens: int
    finish_reason: str  # "stop" or "length"
    scores: dict[str, float | None] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    task: str = "ifeval"
    run: str = ""  # id of the run spec that produced the row

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ResultRow:
        """Rebuild a row from `dataclasses.asdict` output (JSON files, xdist payloads)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


FIELDS = [f.name for f in dataclasses.fields(ResultRow) if f.name not in ("scores", "details")]


def score_names(rows: Iterable[ResultRow]) -> list[str]:
    """Score names in first-seen order."""
    return list(dict.fromkeys(n for r in rows for n in r.scores))


def to_frame(rows: Sequence[ResultRow], names: Sequence[str] | None = None) -> pd.DataFrame:
    """The table as a DataFrame: the row fields, a `details` column, then one column per score."""
    import pandas as pd

    rows = list(rows)
    names = list(names) if names is not None else score_names(rows)
    records = []
    for r in rows:
        d = {f: getattr(r, f) for f in FIELDS}
        d["details"] = r.details
        for n in names:
            v = r.scores.get(n)
            d[n] = float("nan") if v is None else float(v)
        records.append(d)
    return pd.DataFrame(records, columns=[*FIELDS, "details", *names])


def write_jsonl(rows: Iterable[ResultRow], path: Path) -> None:
    """Write rows as JSON lines (lossless, human-readable), atomically."""
    write_atomically(path, "".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[ResultRow]:
    """Read rows written by `write_jsonl`."""
    with open(path, encoding="utf-8") as fh:
        return [ResultRow.from_dict(json.loads(line)) for line in fh if line.strip()]
