"""The results table: one row per (example, config, trial), its files, and DataFrame views.

Every later stage (statistics, figures, report, stored baselines) reads this table, never the
objects that produced it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

BASELINE = "baseline"


def config_label(alpha: float | None) -> str:
    """Name of a steering config, usable in test ids and `-k` ("baseline", "alpha10", "alpha0.01")."""
    return BASELINE if alpha is None else f"alpha{alpha:g}"


def steering_strength(alpha: float | None) -> float:
    """How hard a config steers: |log alpha|, 0 for the baseline (alpha = 1 is a no-op)."""
    return 0.0 if alpha is None else abs(math.log(alpha))


@dataclass
class ResultRow:
    """One generated and scored response."""

    key: str
    instruction_id_list: list[str]
    config: str
    alpha: float | None  # None for the unsteered baseline
    trial: int
    seed: int  # the row's sampling seed, derived from (run seed, case, trial)
    prompt: str
    response: str
    n_tokens: int
    finish_reason: str  # "stop" or "length"
    follow_all: bool  # IFEval strict, prompt level
    follow_list: list[bool]  # IFEval strict, per instruction
    loose_follow_all: bool
    loose_follow_list: list[bool]
    quality: float  # reward or fluency, see quality_name
    quality_name: str  # e.g. "fluency" or "reward:OpenAssistant/reward-model-deberta-v3-large-v2"
    relevance: float | None = None
    run: str = ""  # id of the run spec (grid and settings) that produced the row
    strength: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.strength = steering_strength(self.alpha)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ResultRow":
        """Rebuild a row from `dataclasses.asdict` output (JSON files, xdist payloads); strength is derived."""
        return cls(**{k: v for k, v in d.items() if k != "strength"})


COLUMNS = [f.name for f in dataclasses.fields(ResultRow)]


def to_frame(rows: Iterable[ResultRow]) -> pd.DataFrame:
    """The results table as a DataFrame with the columns of `ResultRow`, in order."""
    return pd.DataFrame([dataclasses.asdict(r) for r in rows], columns=COLUMNS)


def write_jsonl(rows: Iterable[ResultRow], path: Path) -> None:
    """Write rows as JSON lines (lossless, human-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[ResultRow]:
    """Read rows written by `write_jsonl`."""
    out: list[ResultRow] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(ResultRow.from_dict(json.loads(line)))
    return out
