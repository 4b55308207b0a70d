"""The result object a test receives: aggregate metrics as attributes, records, a DataFrame view,
the paired baseline, and statistical gates.

Metrics are `MetricValue`s: floats that remember their name, config and baseline, so a plain
`assert result.strict_prompt_accuracy >= 0.5` can explain itself when it fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import pandas as pd

from . import gates
from .results import BASELINE, ResultRow, to_frame

#: metric name -> column of the results table that the statistical gates test
GATE_COLUMNS = {
    "strict_prompt_accuracy": "follow_all",
    "loose_prompt_accuracy": "loose_follow_all",
    "quality": "quality",
    "mean_reward": "quality",
    "fluency": "quality",
}


class MetricValue(float):
    """A float metric that knows what it measures, for readable assertion failures."""

    name: str
    config: str
    trial: int | None
    n: int
    baseline: float | None

    def __new__(cls, value: float, *, name: str, config: str, trial: int | None, n: int,
                baseline: float | None = None) -> "MetricValue":
        obj = super().__new__(cls, value)
        obj.name, obj.config, obj.trial, obj.n, obj.baseline = name, config, trial, n, baseline
        return obj

    def describe(self) -> str:
        where = f"{self.config}, trial {self.trial}" if self.trial is not None else f"{self.config}, all trials"
        base = "" if self.baseline is None else f"; baseline {self.baseline:.4g}"
        return f"{self.name} = {float(self):.4g} ({where}, n={self.n}{base})"


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


@dataclass
class EvalResult:
    """Scored responses of one steering config: one trial, or all trials pooled (trial=None)."""

    config: str
    alpha: float | None
    trial: int | None
    rows: list[ResultRow]
    baseline: "EvalResult | None" = field(default=None, repr=False)

    @property
    def is_baseline(self) -> bool:
        return self.config == BASELINE

    @property
    def quality_name(self) -> str:
        return self.rows[0].quality_name if self.rows else "quality"

    @property
    def records(self) -> list[ResultRow]:
        return list(self.rows)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """One row per (example, trial) with prompt, response, per-instruction results and scores."""
        return to_frame(self.rows)

    def _raw(self) -> dict[str, float]:
        rows = self.rows
        strict = [f for r in rows for f in r.follow_list]
        loose = [f for r in rows for f in r.loose_follow_list]
        out = {
            "strict_prompt_accuracy": _mean([float(r.follow_all) for r in rows]),
            "strict_instruction_accuracy": _mean([float(f) for f in strict]),
            "loose_prompt_accuracy": _mean([float(r.loose_follow_all) for r in rows]),
            "loose_instruction_accuracy": _mean([float(f) for f in loose]),
            "quality": _mean([r.quality for r in rows]),
        }
        if any(r.relevance is not None for r in rows):
            out["relevance"] = _mean([r.relevance for r in rows if r.relevance is not None])
        return out

    @cached_property
    def metrics(self) -> dict[str, MetricValue]:
        """Every aggregate metric by name; the quality score is also under its own name (fluency / mean_reward)."""
        raw = self._raw()
        base = self.baseline._raw() if self.baseline is not None else {}
        if self.quality_name.startswith("reward"):
            raw["mean_reward"] = raw["quality"]
            base.setdefault("mean_reward", base.get("quality", math.nan))
        elif self.quality_name == "fluency":
            raw["fluency"] = raw["quality"]
            base.setdefault("fluency", base.get("quality", math.nan))
        return {
            k: MetricValue(v, name=k, config=self.config, trial=self.trial, n=len(self.rows), baseline=base.get(k))
            for k, v in raw.items()
        }

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("rows", "baseline", "config"):
            raise AttributeError(name)
        metrics = self.metrics
        if name in metrics:
            return metrics[name]
        raise AttributeError(f"EvalResult has no metric {name!r}; available: {', '.join(sorted(metrics))}")

    @property
    def per_type(self) -> dict[str, float]:
        """Strict follow rate by instruction type."""
        seen: dict[str, list[bool]] = {}
        for r in self.rows:
            for iid, ok in zip(r.instruction_id_list, r.follow_list):
                seen.setdefault(iid, []).append(ok)
        return {k: sum(v) / len(v) for k, v in sorted(seen.items())}

    def properties(self) -> list[tuple[str, float | int | str]]:
        """Primitive (name, value) pairs for `record_property` (JUnit XML) and the HTML table."""
        props: list[tuple[str, float | int | str]] = [
            ("steer_config", self.config),
            ("steer_alpha", "" if self.alpha is None else float(self.alpha)),
            ("steer_n", len(self.rows)),
            ("steer_quality_name", self.quality_name),
        ]
        if self.trial is not None:
            props.append(("steer_trial", int(self.trial)))
        props += [(k, round(float(v), 6)) for k, v in self.metrics.items()]
        props += [(f"follow_rate[{k}]", round(v, 6)) for k, v in self.per_type.items()]
        return props

    # -- statistical gates (see pytest_steer.gates for when to use which) ------------------------

    def _column(self, metric: str) -> str:
        if metric not in GATE_COLUMNS:
            raise ValueError(f"no statistical gate for {metric!r}; use one of {', '.join(GATE_COLUMNS)}")
        return GATE_COLUMNS[metric]

    def _paired_frame(self) -> pd.DataFrame:
        if self.baseline is None:
            raise ValueError(f"{self.config} has no baseline to compare with")
        return pd.concat([self.frame, self.baseline.frame], ignore_index=True)

    def assert_at_least(self, metric: str, threshold: float, *, confidence: float = 0.95) -> Any:
        """Pass when the lower confidence bound of `metric` is >= threshold."""
        return gates.assert_at_least(self.frame, self._column(metric), threshold, confidence=confidence)

    def assert_not_worse(self, metric: str, margin: float, *, confidence: float = 0.95) -> Any:
        """Non-inferiority against the paired baseline: the CI of (this - baseline) stays above -margin."""
        if self.is_baseline:
            return None
        return gates.assert_not_worse(self._paired_frame(), self.config, self._column(metric), margin, confidence=confidence)

    def assert_better(self, metric: str, *, level: float = 0.05) -> Any:
        """A significant improvement over the paired baseline (exact McNemar / bootstrap)."""
        return gates.assert_better(self._paired_frame(), self.config, self._column(metric), level=level)
