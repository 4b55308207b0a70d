"""Synthetic results tables for the reducer, statistics, gates, analysis and report tests.

Metric declarations mirror what the built-in scorers declare (IFEval and the quality scorers), so
the tests exercise the same names, kinds and directions without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pytest_steer.methods.base import BASELINE_CONFIG, GridPoint
from pytest_steer.results import ResultRow, to_frame
from pytest_steer.scores import Metric

STRICT = Metric("strict_prompt_accuracy", "binary", 1, label="strict prompt accuracy")
LOOSE = Metric("loose_prompt_accuracy", "binary", 1, label="loose prompt accuracy")
STRICT_INSTR = Metric("strict_instruction_accuracy", "real", 1, per_tag=True)
LOOSE_INSTR = Metric("loose_instruction_accuracy", "real", 1, per_tag=True)
QUALITY = Metric("quality", "real", 1, label="headline quality", role="quality", budget=0.1)
FLUENCY = Metric("fluency", "real", 1, side_effect=True)
COHERENCE = Metric("coherence", "real", 1, side_effect=True)
DIVERSITY = Metric("diversity", "real", 1, side_effect=True)
REPETITION = Metric("repetition", "real", -1, label="rep-4", side_effect=True)
WRONG_LANGUAGE = Metric("wrong_language", "binary", -1, label="wrong language", side_effect=True)
TRUNCATED = Metric("truncated", "binary", -1, side_effect=True)
LENGTH_RATIO = Metric("length_ratio", "real", 0, label="length ratio", side_effect=True)

IFEVAL = [STRICT, LOOSE, STRICT_INSTR, LOOSE_INSTR]
SIDE_EFFECTS = [FLUENCY, COHERENCE, DIVERSITY, REPETITION, WRONG_LANGUAGE, TRUNCATED, LENGTH_RATIO]
METRICS = [*IFEVAL, QUALITY, *SIDE_EFFECTS]
BY_NAME = {m.name: m for m in METRICS}

PASTA5 = GridPoint("pasta", 5.0, "pasta-alpha5", math.log(5))
PASTA10 = GridPoint("pasta", 10.0, "pasta-alpha10", math.log(10))
ACTADD2 = GridPoint("actadd", 2.0, "actadd-c2", 2.0)
ACTADD4 = GridPoint("actadd", 4.0, "actadd-c4", 4.0)
CONFIGS = {c.label: c for c in (BASELINE_CONFIG, PASTA5, PASTA10, ACTADD2, ACTADD4)}
TYPES = ["punctuation:no_comma", "change_case:english_lowercase", "detectable_format:json_format"]


def make_row(key: str, config: GridPoint, trial: int, *, tags: Sequence[str] = ("a:x",),
             follow: Sequence[bool] | None = None, loose: Sequence[bool] | None = None,
             scores: Mapping[str, float | None] | None = None, flags: Sequence[str] = (),
             prompt: str | None = None, response: str | None = None, run: str = "run1") -> ResultRow:
    """One scored row. `follow` (one bool per tag) fills the IFEval scores and per-tag details the way
    the IFEval scorer does; `scores` adds or overrides any score by name."""
    values: dict[str, float | None] = {}
    details: dict[str, Any] = {"flags": list(flags)}
    if follow is not None:
        loose = follow if loose is None else loose
        values.update({
            STRICT.name: float(all(follow)), LOOSE.name: float(all(loose)),
            STRICT_INSTR.name: sum(follow) / len(follow), LOOSE_INSTR.name: sum(loose) / len(loose),
        })
        details.update({STRICT_INSTR.name: list(follow), LOOSE_INSTR.name: list(loose)})
    values.update(scores or {})
    return ResultRow(
        key=key, tags=list(tags), method=config.method, value=config.value, config=config.label,
        strength=config.strength, trial=trial, seed=1000 * trial,
        prompt=prompt if prompt is not None else f"prompt {key}",
        response=response if response is not None else f"{key} {config.label} t{trial}",
        n_tokens=5, finish_reason="length" if "truncated" in flags else "stop",
        scores=values, details=details, run=run,
    )


def config_of(label: str) -> GridPoint:
    """A known config, or one of a made-up method "m" whose strength is the number in the label."""
    if label in CONFIGS:
        return CONFIGS[label]
    digits = "".join(ch for ch in label if ch.isdigit() or ch == ".")
    return GridPoint("m", float(digits or 1), label, float(digits or 1))


def grid_frame(grids: Mapping[str, Mapping[str, np.ndarray]], *, tags: Sequence[str] = ("a:x",)) -> pd.DataFrame:
    """A results table from {config label: {metric name: (cases, trials) array}}: one row per cell."""
    rows = []
    for label, by_metric in grids.items():
        shape = next(iter(by_metric.values())).shape
        for e, t in np.ndindex(shape):
            scores = {name: float(a[e, t]) for name, a in by_metric.items()}
            rows.append(make_row(f"case{e:03d}", config_of(label), t, tags=tags, scores=scores))
    return to_frame(rows, [m for m in dict.fromkeys(n for g in grids.values() for n in g)])


def sweep_rows(configs: Sequence[GridPoint] = tuple(CONFIGS.values()), *, n_keys: int = 6, n_trials: int = 2,
               types: Sequence[str] = TYPES, response: str = "ok") -> list[ResultRow]:
    """Deterministic rows of a sweep over two methods: stronger steering follows more instructions,
    costs quality and diversity and repeats more; strong configs loop and get flagged."""
    rows = []
    for k in range(n_keys):
        tags = [types[k % len(types)], *([types[(k + 1) % len(types)]] if k % 3 == 2 and len(types) > 1 else [])]
        for c in configs:
            s = c.strength
            for trial in range(n_trials):
                follow = [(k + trial + round(2 * s) + i) % 3 != 0 or (s > 2 and k % 2 == 0) for i in range(len(tags))]
                loops = s > 2.2 and (k + trial) % 2 == 0
                flags = ["repetition"] if loops else []
                if s > 3 and k == 1:
                    flags.append("wrong language")
                rows.append(make_row(
                    f"k{k}", c, trial, tags=tags, follow=follow, flags=flags,
                    prompt=f"prompt {k} <b>bold</b>", response=f"{response} {k}/{trial}",
                    scores={
                        QUALITY.name: 0.05 * (1 - 0.1 * s) - 0.002 * ((k + trial) % 4),
                        FLUENCY.name: -3.0 - 0.2 * s - 0.05 * ((k + trial) % 4),
                        COHERENCE.name: 0.5 - 0.01 * ((k * 7 + trial) % 5),
                        DIVERSITY.name: 0.9 - (0.5 if loops else 0.02 * ((k + trial) % 3)),
                        REPETITION.name: 0.4 if loops else 0.01 * ((k + trial) % 3),
                        WRONG_LANGUAGE.name: float("wrong language" in flags),
                        TRUNCATED.name: 0.0,
                        LENGTH_RATIO.name: None if c.is_baseline else 1.0 + 0.1 * s,
                    },
                ))
    return rows


def sweep_frame(**kwargs: Any) -> pd.DataFrame:
    return to_frame(sweep_rows(**kwargs), [m.name for m in METRICS])
