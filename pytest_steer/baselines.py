"""Stored baselines: save a run's settings, metric declarations, summary and per-case rows to a JSON
file, and compare a later run with it, refusing when the settings differ.

Because every row is seeded from (seed, case, trial), rerunning the same model with the same
settings reproduces the stored rows, so a regression is a real change, not sampling noise.

File format 2::

    {"format": 2,
     "settings": {run id: {setting: value}},
     "metrics": [{"name": ..., "kind": ..., "direction": ..., ...}],
     "summary": {run id: [one `reduce.summary` record per config]},
     "rows": [one `ResultRow` as a dict per (case, config, trial)]}
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import reduce
from .errors import UsageError
from .results import ResultRow, to_frame, write_atomically
from .scores import Metric

FORMAT = 2
#: settings that must match for a comparison to mean anything
COMPARED_SETTINGS = (
    "task", "model_identity", "cases", "max_new_tokens", "temperature", "top_p", "top_k", "greedy", "seed",
    "quality", "reward_max_length",
)
_ROW_FIELDS = {f.name for f in dataclasses.fields(ResultRow)}
_REQUIRED_ROW_FIELDS = [f.name for f in dataclasses.fields(ResultRow)
                        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
#: how every file `save_baseline` writes begins (indent 1, sorted keys), in this format and the first one
_BASELINE_START = re.compile(rb'\{\n "format": [0-9]+,\n "(?:meta|metrics)": ')


class BaselineMismatch(UsageError):
    """The stored baseline cannot be used: missing, malformed, or made with other settings."""


@dataclass
class StoredBaseline:
    settings: dict[str, dict[str, Any]]  # run id -> settings
    metrics: list[Metric]
    summary: dict[str, list[dict[str, Any]]]  # run id -> summary records
    rows: list[ResultRow]


def _json_safe(value: Any) -> Any:
    """NaN and numpy scalars out of summary records: the file stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return _json_safe(value.item())
    return value


def save_baseline(path: str | Path, settings: Mapping[str, Mapping[str, Any]], rows: Iterable[ResultRow],
                  metrics: Sequence[Metric]) -> Path:
    """Write the file atomically (a crash never leaves half a baseline). Rows of several runs are
    summarised per run id. Raises BaselineMismatch, writing nothing, when `path` holds something that is not
    a stored baseline (`overwrite_problem`)."""
    path = Path(path)
    problem = overwrite_problem(path)
    if problem:
        raise BaselineMismatch(f"{path}: {problem}")
    rows = list(rows)
    summary = {}
    for run in dict.fromkeys(r.run for r in rows):
        mine = [r for r in rows if r.run == run]
        names = {n for r in mine for n in r.scores}
        present = [m for m in metrics if m.name in names]
        table = reduce.summary(to_frame(mine, [m.name for m in present]), present)
        summary[run] = [{k: _json_safe(v) for k, v in rec.items()} for rec in table.to_dict("records")]
    doc = {"format": FORMAT, "settings": {k: dict(v) for k, v in settings.items()},
           "metrics": [dataclasses.asdict(m) for m in metrics], "summary": summary,
           "rows": [dataclasses.asdict(r) for r in rows]}
    text = json.dumps(doc, indent=1, sort_keys=True, allow_nan=True, default=str)
    return write_atomically(path, text)


def overwrite_problem(path: str | Path) -> str | None:
    """Why saving a baseline to `path` would destroy something, or None: a path with nothing there, an empty
    file, or a stored baseline (saving again updates it) may be written; a file of the user's (a typo such as
    `--steer-save-baseline conftest.py`), a link or a device may not. Ours is told by how the file begins, so
    only its first bytes are read."""
    path = Path(path)
    what = "give a new path, or move it away"
    try:
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            return f"is a link, which saving would replace; give the path it points to, or {what}"
        if stat.S_ISDIR(mode):
            return "is a directory; give a file path"
        if not stat.S_ISREG(mode):
            return f"is not a plain file (a device or a pipe); {what}"
        with open(path, "rb") as fh:
            head = fh.read(64)
    except (FileNotFoundError, NotADirectoryError):  # nothing there to lose; writing says why it cannot
        return None
    except OSError as exc:
        return f"cannot be checked ({exc.strerror or exc}); {what}"
    if head and _BASELINE_START.match(head) is None:
        return f"exists and is not a stored baseline pytest-steer wrote, so saving would overwrite it; {what}"
    return None


def _shape_problem(doc: Any) -> str | None:
    """What is wrong with the parsed file's shape, or None."""
    if not isinstance(doc, dict):
        return f"it holds a JSON {type(doc).__name__}, not an object"
    if doc.get("format") != FORMAT:
        return f"it has format {doc.get('format')!r}, this pytest-steer reads format {FORMAT}"
    for key, kind in (("settings", dict), ("metrics", list), ("summary", dict), ("rows", list)):
        if not isinstance(doc.get(key), kind):
            return f"its {key!r} is missing or not a JSON {'object' if kind is dict else 'array'}"
    if not all(isinstance(v, dict) for v in doc["settings"].values()):
        return "its 'settings' are not one object per run"
    names = {f.name for f in dataclasses.fields(Metric)}
    for i, m in enumerate(doc["metrics"]):
        if not isinstance(m, dict) or "name" not in m or set(m) - names:
            return f"metric {i} is not a metric declaration"
        try:
            Metric(**m)
        except (TypeError, ValueError) as exc:
            return f"metric {i}: {exc}"
    for i, r in enumerate(doc["rows"]):
        if not isinstance(r, dict) or any(k not in r for k in _REQUIRED_ROW_FIELDS) or set(r) - _ROW_FIELDS:
            return f"row {i} is not a result row (needs {', '.join(_REQUIRED_ROW_FIELDS)})"
        if not isinstance(r.get("scores", {}), dict):
            return f"row {i} has no scores object"
    return None


def load_baseline(path: str | Path) -> StoredBaseline:
    """Read and validate a stored baseline; BaselineMismatch (one line: the path, what is wrong, what
    to do) when it is missing, not JSON, or not shaped like a format-2 file."""
    path = Path(path)
    again = f"save a new one with --steer-save-baseline {path}"
    try:
        if os.path.exists(path) and not path.is_file():  # a folder, or a device or pipe that would never end
            raise BaselineMismatch(f"stored baseline {path} is not a file (a directory, a device or a pipe); give "
                                   "the .json file --steer-save-baseline wrote")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineMismatch(f"stored baseline {path} does not exist; "
                               f"create it with --steer-save-baseline {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineMismatch(f"cannot read stored baseline {path} ({exc}); {again}") from None
    except json.JSONDecodeError as exc:
        raise BaselineMismatch(f"stored baseline {path} is not valid JSON ({exc}); {again}") from None
    problem = _shape_problem(doc)
    if problem:
        raise BaselineMismatch(f"stored baseline {path} is not a pytest-steer baseline file: {problem}; {again}")
    rows = [ResultRow.from_dict(d) for d in doc["rows"]]
    return StoredBaseline(doc["settings"], [Metric(**m) for m in doc["metrics"]], doc["summary"], rows)


def check_compatible(stored: StoredBaseline, current: Mapping[str, Any], path: str | Path) -> None:
    """Refuse to compare runs whose task, model, cases, generation or scoring settings differ.

    Steering settings (methods, values, layers) may differ: they are what a regression gate tests.
    Passes when any stored run matches on every compared setting.
    """
    def diffs(saved: Mapping[str, Any]) -> list[str]:
        return [f"{k}: stored {saved.get(k)!r}, now {current.get(k)!r}" for k in COMPARED_SETTINGS
                if saved.get(k) != current.get(k)]

    found: list[list[str]] = [diffs(saved) for saved in stored.settings.values()]
    if not found or all(found):
        closest: list[str] = min(found, key=len) if found else ["the file has no runs"]
        detail = "; ".join(closest)
        raise BaselineMismatch(
            f"cannot compare with stored baseline {path}: it was made with other settings ({detail}). "
            "Rerun with the same model, cases and generation settings, "
            "or save a new baseline with --steer-save-baseline."
        )


def stored_configs(stored: StoredBaseline) -> set[str]:
    """The config labels the stored file has rows for."""
    return {r.config for r in stored.rows}


def regressions(stored: StoredBaseline, rows: Iterable[ResultRow], *, config: str, trial: int | None,
                margin: float, metrics: Sequence[Metric]) -> list[str]:
    """One line per metric of (config, trial) that got worse than the stored run by more than `margin`.

    Rows pair on (case, trial); every metric that both `metrics` and the stored file declare is
    checked in its bad direction (a drop for higher-is-better metrics, a rise for lower-is-better
    ones; metrics without a good direction are not checked). With per-row seeding a rerun of the same
    model and settings reproduces the stored rows exactly, so the margin only has to absorb
    hardware-level float differences, not sampling noise.

    A config the stored file has no rows for is not a regression: callers skip it (check
    `stored_configs` first, and say it was skipped). Likewise, rows with no stored partner (a trial
    the stored run did not have) are left out, and with no pairs at all the list is empty.
    """
    stored_names = {m.name for m in stored.metrics}
    checked = [m for m in metrics if m.name in stored_names and m.direction != 0]

    def pick(rs: Iterable[ResultRow]) -> dict[tuple[str, int], ResultRow]:
        return {(r.key, r.trial): r for r in rs if r.config == config and (trial is None or r.trial == trial)}

    now, then = pick(rows), pick(stored.rows)
    pairs = sorted(set(now) & set(then))
    if not pairs or not checked:
        return []
    names = [m.name for m in checked]
    now_means = reduce.means(to_frame([now[p] for p in pairs], names), checked)
    then_means = reduce.means(to_frame([then[p] for p in pairs], names), checked)
    out = []
    for m in checked:
        a, b = now_means[m.name], then_means[m.name]
        change = a - b
        if math.isnan(change) or change * m.direction >= -margin:
            continue
        allowed = f"-{margin:g}" if m.direction > 0 else f"+{margin:g}"
        out.append(f"{m.title} for {config}: {a:.4g} now vs {b:.4g} stored (change {change:+.4g}, allowed {allowed}, "
                   f"n={len(pairs)} paired rows)")
    return out
