"""Statistical gates: assertions on the results table that account for sampling noise.

A steered model is sampled, so a fixed threshold on a point estimate (``accuracy >= 0.8``) fails
about half the time when the true value sits at the threshold. These gates decide on a confidence
interval instead and, when they fail, say what was measured: metric, estimate, interval, threshold
and sample size. Every gate works on every declared metric; the `Metric` says whether it is binary
or real and which direction is good.

Which gate to use:

- ``assert_at_least(rows, metric, threshold)`` / ``assert_at_most``: an absolute floor (ceiling) for
  one config ("strict accuracy is at least 0.70", "repetition is at most 0.05"). Passes when the
  lower (upper) bound of the two-sided CI clears the threshold, i.e. the data show it. Put the floor
  somewhat below the value you expect (a threshold at the true value fails about half the runs); a
  model exactly at the threshold gets through at most 2.5% of runs. Binary metrics use the Wilson
  interval widened by its design effect (trials of one case count as one case when they agree); real
  metrics a bootstrap that resamples cases with all their trials.
- ``assert_not_worse(df, config, metric, margin)``: steering may not cost more than ``margin``
  against the baseline. Paired on (case, trial), so far more sensitive than comparing two absolute
  numbers. Direction-aware: for a higher-is-better metric the lower bound of the paired CI of
  (config - baseline) must be > -margin; for a lower-is-better one (repetition) the upper bound must
  be < +margin; for a metric with no good direction (length ratio) the interval must lie within
  +-margin.
- ``assert_better(df, config, metric)``: steering improves the metric, significantly, in its good
  direction: the sign-flip test over cases (binary and real metrics alike) has p < level and the
  paired change is on the good side. Use it to back a claim, not as a regression guard: a small real
  gain fails it often.

All intervals are two-sided at ``confidence`` and the gates read one side, so each is a one-sided
test at (1 - confidence) / 2 (2.5% by default; ``assert_better`` at level / 2). Bootstraps are
seeded, so a gate gives the same verdict on the same table. Every gate counts cases, not rows: a
case whose trials all agree is one piece of evidence, not `trials` of them, and each verdict is a
claim about new prompts like the evaluated cases. `tests/test_null_simulation.py` checks their
false-positive rates under a null with correlated trials.
"""

from __future__ import annotations

import pandas as pd

from . import reduce
from .reduce import Comparison
from .results import BASELINE
from .scores import Metric
from .stats import Interval, NonInferiority


def _bound(rows: pd.DataFrame, metric: Metric, confidence: float) -> tuple[str, Interval]:
    config = _single_config(rows)
    if metric.name not in rows.columns:
        raise KeyError(f"metric {metric.name!r} is not a column of the results table")
    return config, reduce.interval(rows, metric, confidence=confidence)


def assert_at_least(rows: pd.DataFrame, metric: Metric, threshold: float, *, confidence: float = 0.95) -> Interval:
    """Fail unless the lower CI bound of `metric` over one config's rows is >= `threshold`."""
    config, ci = _bound(rows, metric, confidence)
    if not ci.low >= threshold:
        raise AssertionError(f"{_interval_text(rows, metric, config, ci)}; required lower bound >= {threshold:.3f}")
    return ci


def assert_at_most(rows: pd.DataFrame, metric: Metric, threshold: float, *, confidence: float = 0.95) -> Interval:
    """Fail unless the upper CI bound of `metric` over one config's rows is <= `threshold`."""
    config, ci = _bound(rows, metric, confidence)
    if not ci.high <= threshold:
        raise AssertionError(f"{_interval_text(rows, metric, config, ci)}; required upper bound <= {threshold:.3f}")
    return ci


def assert_not_worse(df: pd.DataFrame, config: str, metric: Metric, margin: float, *, baseline: str = BASELINE,
                     confidence: float = 0.95) -> Comparison:
    """Fail unless `config` is non-inferior to `baseline` on `metric` within `margin` (direction-aware,
    see `stats.NonInferiority`): one bound of the two-sided `confidence` paired case-bootstrap CI."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    comp = reduce.compare(df, config, metric, baseline=baseline, confidence=confidence)
    verdict = NonInferiority(comp.diff, float(margin), metric.direction)
    if not verdict.passed:
        raise AssertionError(f"{_diff_text(df, comp)}; {verdict.requirement} (non-inferiority margin {margin:.3f}, "
                             f"{_direction_text(metric)})")
    return comp


def assert_better(df: pd.DataFrame, config: str, metric: Metric, *, baseline: str = BASELINE,
                  level: float = 0.05) -> Comparison:
    """Fail unless `config` moves `metric` in its good direction against `baseline`, significantly at `level`.

    The two-sided sign-flip test over cases (`reduce.Comparison.test`) must have p < level and the
    mean paired change must be on the good side: a one-sided test at level / 2.
    """
    if metric.direction == 0:
        raise ValueError(f"{metric.name} has no better direction (direction 0); use assert_not_worse with a margin")
    comp = reduce.compare(df, config, metric, baseline=baseline, confidence=1 - level)
    if not better(comp, level):
        side = "> 0" if metric.direction > 0 else "< 0"
        raise AssertionError(f"{_diff_text(df, comp)}; {comp.test}; required p < {level:g} with a change {side} "
                             f"({_direction_text(metric)})")
    return comp


def better(comp: Comparison, level: float = 0.05) -> bool:
    """`assert_better`'s verdict on a comparison: sign-flip p < `level` with the change in the good direction."""
    good = comp.test.diff * comp.metric.direction > 0
    return bool(comp.test.pvalue < level and good)


def label(metric: Metric) -> str:
    """`title (name)` when the metric has a label, else its name."""
    return f"{metric.label} ({metric.name})" if metric.label and metric.label != metric.name else metric.name


def _direction_text(metric: Metric) -> str:
    return {1: "higher is better", -1: "lower is better"}.get(metric.direction, "no better direction")


def _interval_text(rows: pd.DataFrame, metric: Metric, config: str, ci: Interval) -> str:
    return (f"{label(metric)} for {config}: estimate {ci.estimate:.3f}, {_pct(ci.confidence)} {ci.method} CI "
            f"[{ci.low:.3f}, {ci.high:.3f}] over n={ci.n} {_design(rows)}")


def _diff_text(df: pd.DataFrame, comp: Comparison) -> str:
    d = comp.diff
    return (f"{label(comp.metric)} for {comp.config} vs {comp.baseline}: diff {d.diff:+.3f} "
            f"({comp.estimate:.3f} vs {comp.baseline_estimate:.3f}), {_pct(d.confidence)} paired case-bootstrap CI "
            f"[{d.low:+.3f}, {d.high:+.3f}] over n={comp.n_pairs} pairs "
            f"({comp.n_cases} cases x {comp.n_trials} trials)")


def _design(rows: pd.DataFrame) -> str:
    n_cases, n_trials = rows["key"].nunique(), rows["trial"].nunique()
    if n_cases * n_trials == len(rows):
        return f"({n_cases} cases x {n_trials} trials)"
    return f"({n_cases} cases, {n_trials} distinct trials, unbalanced)"


def _single_config(rows: pd.DataFrame) -> str:
    configs = rows["config"].unique()
    if len(configs) != 1:
        raise ValueError(f"expected the rows of exactly one config, got {sorted(map(str, configs))}")
    return str(configs[0])


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"
