"""The result object a test receives: every declared metric as an attribute, records, a DataFrame
view, the paired baseline, and statistical gates that work on every metric.

Metrics are `MetricValue`s: floats that remember their name, config and baseline, so a plain
`assert result.strict_prompt_accuracy >= 0.5` can explain itself when it fails. All numbers come
from `reduce`, the same reducer the report uses.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pandas as pd

from . import gates, reduce
from .errors import UsageError
from .methods.base import GridPoint
from .reduce import Comparison
from .results import BASELINE, ResultRow, to_frame
from .scores import Metric
from .stats import Interval

#: older attribute names that still mean something -> the metric they read
ALIASES = {"mean_reward": "reward"}
_OWN = frozenset({"config", "trial", "rows", "metrics", "baseline", "primary"})


class MetricValue(float):
    """A float metric that knows what it measures, for readable assertion failures."""

    name: str
    config: str
    trial: int | None
    n: int
    baseline: float | None
    direction: int

    def __new__(cls, value: float, *, name: str, config: str, trial: int | None, n: int,
                baseline: float | None = None, direction: int = 1) -> MetricValue:
        obj = super().__new__(cls, value)
        obj.name, obj.config, obj.trial, obj.n = name, config, trial, n
        obj.baseline, obj.direction = baseline, direction
        return obj

    def describe(self) -> str:
        where = f"{self.config}, trial {self.trial}" if self.trial is not None else f"{self.config}, all trials"
        base = "" if self.baseline is None else f"; baseline {self.baseline:.4g}"
        better = {1: "; higher is better", -1: "; lower is better"}.get(self.direction, "")
        return f"{self.name} = {float(self):.4g} ({where}, n={self.n}{base}{better})"


@dataclass
class EvalResult:
    """Scored responses of one config: one trial, or all trials pooled (trial=None).

    `metrics` are the task's declared metrics (every one becomes an attribute), `primary` the name of
    the task's headline metric (the first metric if not given), `baseline` the unsteered result of
    the same cases and trials, for the paired gates.
    """

    config: GridPoint | str
    trial: int | None
    rows: list[ResultRow]
    metrics: Sequence[Metric]
    baseline: EvalResult | None = field(default=None, repr=False)
    primary: str | None = None

    def __post_init__(self) -> None:
        self.metrics = list(self.metrics)
        if not self.metrics:
            raise ValueError("EvalResult needs at least one declared metric")
        if self.primary is None:
            self.primary = self.metrics[0].name

    @property
    def label(self) -> str:
        return self.config.label if isinstance(self.config, GridPoint) else str(self.config)

    @property
    def method(self) -> str:
        if isinstance(self.config, GridPoint):
            return self.config.method
        return self.rows[0].method if self.rows else (BASELINE if self.label == BASELINE else "")

    @property
    def value(self) -> float | str | None:
        if isinstance(self.config, GridPoint):
            return self.config.value
        return self.rows[0].value if self.rows else None

    @property
    def is_baseline(self) -> bool:
        return self.config.is_baseline if isinstance(self.config, GridPoint) else self.label == BASELINE

    @property
    def records(self) -> list[ResultRow]:
        return list(self.rows)

    @cached_property
    def frame(self) -> pd.DataFrame:
        """One row per (case, trial): prompt, response, tags, details and one column per metric."""
        return to_frame(self.rows, [m.name for m in self.metrics])

    @cached_property
    def by_name(self) -> dict[str, Metric]:
        return {m.name: m for m in self.metrics}

    def metric(self, name: str) -> Metric:
        """The declared metric called `name` (or an alias); KeyError lists what there is."""
        if name not in self.by_name and ALIASES.get(name) in self.by_name:
            name = ALIASES[name]
        if name not in self.by_name:
            raise KeyError(f"{self.label} has no metric {name!r}; available: {', '.join(self.by_name)}")
        return self.by_name[name]

    @cached_property
    def metric_values(self) -> dict[str, MetricValue]:
        """Every declared metric's mean over these rows, with the baseline's alongside."""
        mine = reduce.means(self.frame, self.metrics)
        base = reduce.means(self.baseline.frame, self.metrics) if self.baseline is not None else {}
        return {
            m.name: MetricValue(mine[m.name], name=m.name, config=self.label, trial=self.trial, n=len(self.rows),
                                baseline=base.get(m.name), direction=m.direction)
            for m in self.metrics
        }

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in _OWN:
            raise AttributeError(name)
        try:
            return self.metric_values[self.metric(name).name]
        except KeyError as exc:
            raise AttributeError(exc.args[0]) from None

    @property
    def per_type(self) -> dict[str, float]:
        """Rate per tag (IFEval: instruction type) of the first per_tag metric, else of the primary metric."""
        metric = self._tag_metric()
        table = reduce.by_tag(self.frame, metric)
        if table.empty or self.label not in table.columns:
            return {}
        return {str(t): float(v) for t, v in table[self.label].dropna().items()}

    def _tag_metric(self) -> Metric:
        return next((m for m in self.metrics if m.per_tag), self.metric(str(self.primary)))

    def properties(self) -> list[tuple[str, float | int | str]]:
        """Primitive (name, value) pairs for `record_property` (JUnit XML; xdist sends only primitives)."""
        value = self.value
        props: list[tuple[str, float | int | str]] = [
            ("steer_config", self.label),
            ("steer_method", self.method),
            ("steer_value", "" if value is None else value if isinstance(value, str) else float(value)),
            ("steer_trial", "" if self.trial is None else int(self.trial)),
            ("steer_n", len(self.rows)),
            ("steer_primary", str(self.primary)),
        ]
        props += [(k, _rounded(v)) for k, v in self.metric_values.items()]
        tagged = self._tag_metric().name  # named after the metric, whatever the task: "<metric>[<tag>]"
        props += [(f"{tagged}[{k}]", _rounded(v)) for k, v in self.per_type.items()]
        return props

    # -- statistical gates (see pytest_steer.gates for when to use which) ------------------------

    def _paired(self) -> tuple[pd.DataFrame, str]:
        """This result's rows with its baseline's, and the baseline's label."""
        if self.baseline is None:
            raise ValueError(f"{self.label} has no baseline to compare with")
        return pd.concat([self.frame, self.baseline.frame], ignore_index=True), self.baseline.label

    def assert_at_least(self, metric: str, threshold: float, *, confidence: float = 0.95) -> Interval:
        """Pass when the lower confidence bound of `metric` is >= threshold."""
        return gates.assert_at_least(self.frame, self.metric(metric), threshold, confidence=confidence)

    def assert_at_most(self, metric: str, threshold: float, *, confidence: float = 0.95) -> Interval:
        """Pass when the upper confidence bound of `metric` is <= threshold (e.g. repetition)."""
        return gates.assert_at_most(self.frame, self.metric(metric), threshold, confidence=confidence)

    def assert_not_worse(self, metric: str, margin: float, *, confidence: float = 0.95) -> Comparison | None:
        """Non-inferiority against the paired baseline in the metric's good direction; the baseline
        itself passes trivially (returns None)."""
        m = self.metric(metric)
        if self.is_baseline:
            return None
        frame, baseline = self._paired()
        return gates.assert_not_worse(frame, self.label, m, margin, baseline=baseline, confidence=confidence)

    def assert_better(self, metric: str, *, level: float = 0.05) -> Comparison:
        """A significant change in the metric's good direction over the paired baseline."""
        m = self.metric(metric)
        if self.is_baseline:
            raise ValueError("the baseline cannot be better than itself; call assert_better on a steered result")
        frame, baseline = self._paired()
        return gates.assert_better(frame, self.label, m, baseline=baseline, level=level)


def _rounded(v: float) -> float:
    return float(v) if math.isnan(v) else round(float(v), 6)


def check_metric_names(metrics: Sequence[Metric]) -> None:
    """Refuse a metric named like a row field, a reduced-table column or a result attribute
    (`value`, `trial`, `frame`, ...): its column and attribute would be the other thing's."""
    taken = ({f.name for f in dataclasses.fields(ResultRow)} | {"details", "n", "trials", "slot", "v"} | _OWN
             | {a for a in dir(EvalResult) if not a.startswith("_")})
    for m in metrics:
        if m.name in taken:
            raise UsageError(f"metric {m.name!r} has the name of a result field or attribute; rename it "
                             f"(e.g. {m.name + '_score'!r})")
