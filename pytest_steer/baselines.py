"""Stored baselines: save a run's settings and per-example rows to a JSON file, and compare a later
run with it, refusing when the settings differ.

Because every row is seeded from (seed, case, trial), rerunning the same model with the same
settings reproduces the stored rows, so a regression is a real change, not sampling noise.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .results import ResultRow

FORMAT = 1
#: settings that must match for a comparison to mean anything
COMPARED_SETTINGS = (
    "model_identity", "cases", "max_new_tokens", "temperature", "top_p", "top_k", "greedy", "seed",
    "quality", "reward_max_length",
)


class BaselineMismatch(ValueError):
    """The stored baseline was made with other settings; comparing would mix apples and oranges."""


@dataclass
class StoredBaseline:
    settings: dict[str, dict[str, Any]]  # run id -> settings
    rows: list[ResultRow]
    meta: dict[str, str]


def save_baseline(path: str | Path, settings: Mapping[str, Mapping[str, Any]], rows: Iterable[ResultRow],
                  meta: Mapping[str, str]) -> Path:
    """Write the file atomically (a crash never leaves half a baseline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "settings": {k: dict(v) for k, v in settings.items()}, "meta": dict(meta),
           "rows": [dataclasses.asdict(r) for r in rows]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True, allow_nan=True)
    os.replace(tmp, path)
    return path


def load_baseline(path: str | Path) -> StoredBaseline:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineMismatch(f"stored baseline {path} does not exist; create it with --steer-save-baseline {path}") from None
    except json.JSONDecodeError as exc:
        raise BaselineMismatch(f"stored baseline {path} is not valid JSON ({exc}); save it again with --steer-save-baseline") from None
    if doc.get("format") != FORMAT:
        raise BaselineMismatch(f"stored baseline {path} has format {doc.get('format')!r}, expected {FORMAT}; save it again")
    return StoredBaseline(doc["settings"], [ResultRow.from_dict(d) for d in doc["rows"]], doc.get("meta", {}))


def check_compatible(stored: StoredBaseline, current: Mapping[str, Any], path: str | Path) -> None:
    """Refuse to compare runs whose model, cases, generation or scoring settings differ.

    Steering settings (alphas, layers, scale position) may differ: they are what a regression gate tests.
    """
    def diffs(saved: Mapping[str, Any]) -> list[str]:
        return [f"{k}: stored {saved.get(k)!r}, now {current.get(k)!r}" for k in COMPARED_SETTINGS if saved.get(k) != current.get(k)]

    found = [diffs(saved) for saved in stored.settings.values()]
    if not found or all(found):
        detail = "; ".join(min(found, key=len)) if found else "the file has no runs"
        raise BaselineMismatch(
            f"cannot compare with stored baseline {path}: it was made with other settings ({detail}). "
            "Rerun with the same model, cases and generation settings, or save a new baseline with --steer-save-baseline."
        )


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(xs) / len(xs) if xs else math.nan


def regressions(stored: StoredBaseline, current: Iterable[ResultRow], *, config: str,
                trial: int | None, margin: float) -> list[str]:
    """Metrics of (config, trial) that fell more than `margin` below the stored run, paired on (example, trial).

    With per-row seeding a rerun of the same model and settings reproduces the stored rows exactly,
    so the margin only has to absorb hardware-level float differences, not sampling noise.
    """
    def pick(rows: Iterable[ResultRow]) -> dict[tuple[str, int], ResultRow]:
        return {(r.key, r.trial): r for r in rows if r.config == config and (trial is None or r.trial == trial)}

    now, then = pick(current), pick(stored.rows)
    pairs = sorted(set(now) & set(then))
    if not pairs:
        return [f"stored baseline has no rows for {config}" + ("" if trial is None else f" trial {trial}")]
    out = []
    for metric, get in (("strict_prompt_accuracy", lambda r: float(r.follow_all)), ("quality", lambda r: r.quality)):
        a, b = _mean([get(now[p]) for p in pairs]), _mean([get(then[p]) for p in pairs])
        if a - b < -margin:
            out.append(f"{metric} for {config}: {a:.4g} now vs {b:.4g} stored "
                       f"(change {a - b:+.4g}, allowed -{margin:g}, n={len(pairs)} paired examples)")
    return out
