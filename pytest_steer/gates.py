"""Statistical gates: assertions on the results table that account for sampling noise.

A steered model is sampled, so a fixed threshold on a point estimate (``accuracy >= 0.8``) fails
about half the time when the true value sits at the threshold. These gates decide on a
confidence interval instead and, when they fail, say what was measured: metric, estimate,
interval, threshold and sample size.

Which gate to use:

- ``assert_at_least(rows, metric, threshold)``: an absolute floor for one config ("strict
  accuracy is at least 0.70"). Passes when the lower bound of the two-sided CI is >= threshold,
  i.e. the data show the metric clears the floor. Put the floor somewhat below the value you
  expect: with 48 examples x 5 trials and a true accuracy of 0.80, a 0.70 floor fails about 5% of
  runs (a point-estimate threshold of 0.80 fails 46%), and a model at exactly 0.70 gets through
  about 3% of runs. Bool metrics use the Wilson interval over examples x trials; float metrics a
  bootstrap that resamples examples with all their trials.
- ``assert_not_worse(df, config, metric, margin)``: steering may not cost more than ``margin``
  against the baseline (quality, loose accuracy, anything steering should leave alone). Paired on
  (example, trial), so it is far more sensitive than comparing two absolute numbers. Passes when
  the lower bound of the paired CI of (config - baseline) is > -margin.
- ``assert_better(df, config, metric)``: steering improves the metric, significantly. Bool
  metrics: exact McNemar p < level with more pairs gained than lost; float metrics: the paired
  (1 - level) CI of the difference lies above 0. Use it to back a claim, not as a regression guard:
  a small real gain fails it often.

All intervals are two-sided at ``confidence`` and the gates read one side, so each is a one-sided
test at (1 - confidence) / 2 (2.5% by default; ``assert_better`` at level / 2). Bootstraps are
seeded, so a gate gives the same verdict on the same table. The Wilson interval and McNemar test
treat every (example, trial) row as independent. For repeated runs on the same fixed examples
that is, if anything, cautious; as a claim about new prompts it is optimistic when examples differ
a lot in difficulty (a 0.70 floor then fails about 10% of runs instead of 5%). The bootstrap
intervals resample examples and do not have this problem.
"""

from __future__ import annotations

import pandas as pd

from pytest_steer.results import BASELINE
from pytest_steer.stats import (
    Comparison,
    Interval,
    NonInferiority,
    bootstrap_interval,
    compare_to_baseline,
    is_bool_metric,
    wilson_interval,
)

METRIC_LABELS = {"follow_all": "strict_prompt_accuracy", "loose_follow_all": "loose_prompt_accuracy"}


def assert_at_least(
    df_config_rows: pd.DataFrame, metric: str, threshold: float, *, confidence: float = 0.95
) -> Interval:
    """Fail unless the lower CI bound of `metric` for one config's rows is >= `threshold`.

    Bool metrics: Wilson interval over all examples x trials. Float metrics: percentile bootstrap
    of the mean resampling examples (with all their trials), seeded, since trials of one example
    are not independent and a t-interval over a handful of trials ignores example variance.
    """
    rows = df_config_rows
    config = _single_config(rows)
    values = _column(rows, metric)
    if is_bool_metric(values):
        ci = wilson_interval(int(values.sum()), len(values), confidence)
    else:
        ci = bootstrap_interval(values.to_numpy(dtype=float), cluster=rows["key"].to_numpy(), confidence=confidence)
    if not ci.low >= threshold:
        raise AssertionError(
            f"{_label(rows, metric)} for {config}: estimate {ci.estimate:.3f}, {_pct(confidence)} {ci.method} CI "
            f"[{ci.low:.3f}, {ci.high:.3f}] over n={ci.n} {_design(rows)}; "
            f"required lower bound >= {threshold:.3f}"
        )
    return ci


def assert_not_worse(
    df: pd.DataFrame,
    config: str,
    metric: str,
    margin: float,
    *,
    baseline: str = BASELINE,
    confidence: float = 0.95,
) -> Comparison:
    """Fail unless `config` is non-inferior to `baseline` on `metric` within `margin`.

    Non-inferior means the lower bound of the two-sided `confidence` paired example-bootstrap CI
    of mean(config - baseline) is > -margin (a one-sided test at (1 - confidence) / 2).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    comp = compare_to_baseline(df, config, metric, baseline, confidence=confidence)
    if not NonInferiority(comp.diff, margin).passed:
        raise AssertionError(
            f"{_diff_text(df, comp)}; required lower bound > {-margin:+.3f} (non-inferiority margin {margin:.3f})"
        )
    return comp


def assert_better(
    df: pd.DataFrame,
    config: str,
    metric: str,
    *,
    baseline: str = BASELINE,
    level: float = 0.05,
) -> Comparison:
    """Fail unless `config` improves `metric` over `baseline` significantly at `level`.

    Bool metrics: exact two-sided McNemar p < level and more pairs gained than lost. Float metrics:
    the paired (1 - level) example-bootstrap CI of mean(config - baseline) has its lower bound > 0.
    """
    comp = compare_to_baseline(df, config, metric, baseline, confidence=1 - level)
    if comp.mcnemar is not None:
        m = comp.mcnemar
        if not (m.pvalue < level and m.c > m.b):
            raise AssertionError(
                f"{_diff_text(df, comp)}; {m}; required p < {level:g} with more pairs gained than lost"
            )
    elif not comp.diff.low > 0:
        raise AssertionError(f"{_diff_text(df, comp)}; required lower bound > 0")
    return comp


def _diff_text(df: pd.DataFrame, comp: Comparison) -> str:
    d = comp.diff
    return (
        f"{_label(df, comp.metric)} for {comp.config} vs {comp.baseline}: diff {d.diff:+.3f} "
        f"({comp.estimate:.3f} vs {comp.baseline_estimate:.3f}), {_pct(d.confidence)} paired example-bootstrap CI "
        f"[{d.low:+.3f}, {d.high:+.3f}] over n={comp.n_pairs} pairs "
        f"({comp.n_examples} examples x {comp.n_trials} trials)"
    )


def _label(df: pd.DataFrame, metric: str) -> str:
    """Readable metric name: the IFEval name, or the quality scorer's name, then the column."""
    if metric == "quality" and "quality_name" in df.columns and df["quality_name"].nunique() == 1:
        return f"{df['quality_name'].iloc[0]} (quality)"
    name = METRIC_LABELS.get(metric)
    return f"{name} ({metric})" if name else metric


def _design(rows: pd.DataFrame) -> str:
    n_examples, n_trials = rows["key"].nunique(), rows["trial"].nunique()
    if n_examples * n_trials == len(rows):
        return f"({n_examples} examples x {n_trials} trials)"
    return f"({n_examples} examples, {n_trials} distinct trials, unbalanced)"


def _single_config(rows: pd.DataFrame) -> str:
    configs = rows["config"].unique()
    if len(configs) != 1:
        raise ValueError(f"expected the rows of exactly one config, got {sorted(map(str, configs))}")
    return str(configs[0])


def _column(rows: pd.DataFrame, metric: str) -> pd.Series:
    if metric not in rows.columns:
        raise KeyError(f"metric {metric!r} is not a column of the results table")
    return rows[metric]


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"
