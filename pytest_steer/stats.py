"""Confidence intervals and paired tests for the results table.

A steering run scores each IFEval example several times (trials) under every config. Sampling is
seeded from (seed, case, trial), so trial t of the baseline and trial t of a steered config are a
*pair* on the same example: comparisons pair rows on (key, trial) rather than comparing two
independent means, which removes the example-difficulty variance from the difference.

Trials of one example are not independent of each other (an example that is hard stays hard), so
the bootstrap resamples *examples* (with all their trials), not rows. The exact McNemar test and
the Wilson interval treat rows as independent; they are the textbook tools for paired and single
proportions, but as statements about new prompts they are too narrow when trials of one example
are strongly correlated. Everything here is deterministic: bootstraps take a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from pytest_steer.results import BASELINE

DEFAULT_RESAMPLES = 10_000
_CHUNK = 1_000


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    `method` names how the interval was made ("t", "Wilson", "bootstrap", "example-bootstrap");
    `std` is the sample standard deviation (ddof=1) where that is meaningful, else nan.
    """

    estimate: float
    low: float
    high: float
    n: int
    confidence: float
    method: str
    std: float = math.nan

    def __str__(self) -> str:
        sd = "" if math.isnan(self.std) else f" (sd {self.std:.3f})"
        return (
            f"{self.estimate:.3f}{sd}, {_pct(self.confidence)} {self.method} CI "
            f"[{self.low:.3f}, {self.high:.3f}] over n={self.n}"
        )


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test on the discordant pairs of a paired binary outcome.

    For paired arrays, `b` counts pairs where the control succeeded and the treated failed (lost)
    and `c` pairs where the treated succeeded and the control failed (gained). The p-value is
    two-sided; the direction of an effect is the sign of `c - b`.
    """

    b: int
    c: int
    pvalue: float

    def __str__(self) -> str:
        return (
            f"exact McNemar: {self.c} gained, {self.b} lost of {self.b + self.c} discordant pairs, "
            f"two-sided p={self.pvalue:.3g}"
        )


@dataclass(frozen=True)
class DiffResult:
    """Mean paired difference (treated - control) with a percentile bootstrap CI.

    `n_clusters` is the number of resampling units: examples when resampled by cluster, else pairs.
    """

    diff: float
    low: float
    high: float
    confidence: float
    n_pairs: int
    n_clusters: int
    n_resamples: int

    def __str__(self) -> str:
        unit = "" if self.n_clusters == self.n_pairs else f" in {self.n_clusters} clusters"
        return (
            f"diff {self.diff:+.3f}, {_pct(self.confidence)} paired bootstrap CI "
            f"[{self.low:+.3f}, {self.high:+.3f}] over {self.n_pairs} pairs{unit}"
        )


@dataclass(frozen=True)
class NonInferiority:
    """Non-inferiority of treated vs control: passes when the CI's lower bound is above -margin."""

    diff: DiffResult
    margin: float

    @property
    def passed(self) -> bool:
        return self.diff.low > -self.margin

    def __str__(self) -> str:
        verdict = "non-inferior" if self.passed else "not shown non-inferior"
        return f"{verdict}: {self.diff}; required lower bound > {-self.margin:+.3f}"


@dataclass(frozen=True)
class Comparison:
    """One config against the baseline on one metric, paired on (key, trial)."""

    metric: str
    config: str
    baseline: str
    estimate: float  # mean of the config's rows
    baseline_estimate: float  # mean of the baseline's rows
    diff: DiffResult  # paired, examples resampled as clusters
    mcnemar: McNemarResult | None  # bool metrics only
    n_pairs: int
    n_examples: int
    n_trials: int

    def __str__(self) -> str:
        text = (
            f"{self.metric} {self.config} vs {self.baseline}: {self.estimate:.3f} vs "
            f"{self.baseline_estimate:.3f}, {self.diff}"
        )
        return text if self.mcnemar is None else f"{text}; {self.mcnemar}"


def trial_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """Student-t CI for the mean of per-trial values (e.g. one accuracy per trial).

    With one trial there is no spread to measure: std, low and high are nan rather than a
    misleading zero-width interval.
    """
    x = np.asarray(values, dtype=float)
    n = x.size
    if n == 0:
        raise ValueError("trial_interval needs at least one value")
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, confidence, "t", math.nan)
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, confidence, "t", std)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a proportion: sane near 0 and 1, unlike the normal interval."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n >= 1, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    ci = sps.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), int(n), confidence, "Wilson")


def mcnemar_exact(b: int, c: int) -> McNemarResult:
    """Exact two-sided McNemar test: a binomial test of b vs c with p = 0.5 (p = 1 when b + c = 0)."""
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    p = 1.0 if b + c == 0 else float(sps.binomtest(int(min(b, c)), int(b + c), 0.5).pvalue)
    return McNemarResult(int(b), int(c), p)


def mcnemar_paired(treated: Sequence[bool] | np.ndarray, control: Sequence[bool] | np.ndarray) -> McNemarResult:
    """Exact McNemar test on paired binary outcomes (b = control-only successes, c = treated-only)."""
    t = _as_bool(treated, "treated")
    k = _as_bool(control, "control")
    _check_same_length(t, k)
    return mcnemar_exact(int(np.sum(k & ~t)), int(np.sum(t & ~k)))


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    *,
    cluster: Sequence | np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Seeded percentile bootstrap CI for a mean.

    With `cluster` (one label per value, e.g. the example key) whole clusters are resampled with
    replacement and the statistic is the mean over all values of the drawn clusters, so that
    correlated values (trials of one example) count as one unit of evidence.
    """
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("bootstrap_interval needs at least one value")
    if cluster is None:
        sums, counts = x, np.ones_like(x)
    else:
        labels = np.asarray(cluster)
        _check_same_length(x, labels)
        _, idx = np.unique(labels, return_inverse=True)
        sums, counts = np.bincount(idx, weights=x), np.bincount(idx).astype(float)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, _CHUNK):  # chunks bound memory at _CHUNK x clusters indices
        draws = rng.integers(0, sums.size, size=(min(_CHUNK, n_resamples - start), sums.size))
        means[start : start + len(draws)] = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    method = "bootstrap" if cluster is None else "example-bootstrap"
    return Interval(float(x.mean()), float(low), float(high), int(x.size), confidence, method)


def paired_bootstrap_diff(
    treated: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    cluster: Sequence | np.ndarray | None = None,
) -> DiffResult:
    """Seeded paired bootstrap CI of mean(treated - control).

    Pass `cluster` (the example key of each pair) to resample examples with all their trials,
    the honest unit when several trials share an example; without it pairs are resampled.
    """
    t = np.asarray(treated, dtype=float)
    k = np.asarray(control, dtype=float)
    _check_same_length(t, k)
    ci = bootstrap_interval(t - k, cluster=cluster, n_resamples=n_resamples, confidence=confidence, seed=seed)
    n_clusters = t.size if cluster is None else int(np.unique(np.asarray(cluster)).size)
    return DiffResult(ci.estimate, ci.low, ci.high, confidence, int(t.size), n_clusters, n_resamples)


def non_inferiority(
    treated: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    margin: float,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    cluster: Sequence | np.ndarray | None = None,
) -> NonInferiority:
    """Non-inferiority: is treated worse than control by less than `margin`?

    Passes when the lower bound of the two-sided `confidence` paired bootstrap CI of
    mean(treated - control) is > -margin: a one-sided test at (1 - confidence) / 2 (2.5% by
    default). This is the project's one convention, shared with `gates.assert_not_worse`.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diff = paired_bootstrap_diff(
        treated, control, n_resamples=n_resamples, confidence=confidence, seed=seed, cluster=cluster
    )
    return NonInferiority(diff, float(margin))


def is_bool_metric(values: pd.Series) -> bool:
    """Whether a results column is a pass/fail metric (bool dtype, or object holding only bools)."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return True
    return values.dtype == object and len(values) > 0 and all(isinstance(v, (bool, np.bool_)) for v in values)


def compare_to_baseline(
    df: pd.DataFrame,
    config: str,
    metric: str = "follow_all",
    baseline: str = BASELINE,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> Comparison:
    """Pair `config` with `baseline` rows on (key, trial) and compare `metric`.

    The bootstrap resamples examples (keys); bool metrics also get an exact McNemar test. Raises
    ValueError when a row has no partner, since an unpaired comparison would silently mix examples.
    """
    if metric not in df.columns:
        raise KeyError(f"metric {metric!r} is not a column of the results table")
    treated = _config_rows(df, config, metric)
    control = _config_rows(df, baseline, metric)
    merged = treated.merge(control, on=["key", "trial"], how="outer", suffixes=("_t", "_c"), indicator="pairing")
    unpaired = merged[merged["pairing"] != "both"]
    if len(unpaired):
        side = {"left_only": f"only in {config}", "right_only": f"only in {baseline}"}
        shown = ", ".join(
            f"({r.key!r}, trial {r.trial}) {side[r.pairing]}" for r in unpaired.head(5).itertuples()
        )
        raise ValueError(
            f"cannot pair {config} with {baseline} on (key, trial): {len(unpaired)} unpaired rows, e.g. {shown}"
        )
    merged = merged.sort_values(["key", "trial"], kind="mergesort")
    t, k = merged[f"{metric}_t"], merged[f"{metric}_c"]
    is_bool = is_bool_metric(df[metric])
    diff = paired_bootstrap_diff(
        t.to_numpy(dtype=float),
        k.to_numpy(dtype=float),
        n_resamples=n_resamples,
        confidence=confidence,
        seed=seed,
        cluster=merged["key"].to_numpy(),
    )
    return Comparison(
        metric=metric,
        config=config,
        baseline=baseline,
        estimate=float(t.astype(float).mean()),
        baseline_estimate=float(k.astype(float).mean()),
        diff=diff,
        mcnemar=mcnemar_paired(t.to_numpy(), k.to_numpy()) if is_bool else None,
        n_pairs=len(merged),
        n_examples=int(merged["key"].nunique()),
        n_trials=int(merged["trial"].nunique()),
    )


def config_intervals(
    df: pd.DataFrame,
    metrics: Sequence[str] = ("follow_all", "loose_follow_all", "quality"),
    *,
    baseline: str = BASELINE,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per config (baseline first, then by strength) with every interval the report needs.

    Per metric: `{m}_mean`, `{m}_std`, `{m}_ci_low`, `{m}_ci_high` (t-CI over per-trial means,
    nan with one trial); bool metrics add `{m}_wilson_low`, `{m}_wilson_high` over
    examples x trials; non-baseline configs get `{m}_diff`, `{m}_diff_low`, `{m}_diff_high`
    (paired example-bootstrap vs baseline) and, for bool metrics, `{m}_mcnemar_p`. Columns that do
    not apply to a row (the baseline's diff, or no baseline in `df`) are nan.
    """
    for m in metrics:
        if m not in df.columns:
            raise KeyError(f"metric {m!r} is not a column of the results table")
    has_baseline = bool((df["config"] == baseline).any())
    out = []
    for config, rows in df.groupby("config", sort=False):
        alpha = rows["alpha"].iloc[0]
        rec: dict[str, object] = {
            "config": config,
            "alpha": math.nan if alpha is None else float(alpha),
            "strength": float(rows["strength"].iloc[0]),
            "n_trials": int(rows["trial"].nunique()),
            "n_examples": int(rows["key"].nunique()),
        }
        for m in metrics:
            is_bool = is_bool_metric(df[m])
            values = rows[m].astype(float)
            ti = trial_interval(values.groupby(rows["trial"]).mean().to_numpy(), confidence)
            rec.update({f"{m}_mean": ti.estimate, f"{m}_std": ti.std, f"{m}_ci_low": ti.low, f"{m}_ci_high": ti.high})
            if is_bool:
                wi = wilson_interval(int(values.sum()), len(values), confidence)
                rec.update({f"{m}_wilson_low": wi.low, f"{m}_wilson_high": wi.high})
            comp = None
            if has_baseline and config != baseline:
                comp = compare_to_baseline(
                    df, str(config), m, baseline, confidence=confidence, n_resamples=n_resamples, seed=seed
                )
            rec.update(
                {
                    f"{m}_diff": comp.diff.diff if comp else math.nan,
                    f"{m}_diff_low": comp.diff.low if comp else math.nan,
                    f"{m}_diff_high": comp.diff.high if comp else math.nan,
                }
            )
            if is_bool:
                rec[f"{m}_mcnemar_p"] = comp.mcnemar.pvalue if comp and comp.mcnemar else math.nan
        out.append(rec)
    table = pd.DataFrame(out)
    order = sorted(
        range(len(table)),
        key=lambda i: (
            table.at[i, "config"] != baseline,
            table.at[i, "strength"],
            np.nan_to_num(table.at[i, "alpha"]),
            str(table.at[i, "config"]),
        ),
    )
    return table.iloc[order].reset_index(drop=True)


def _config_rows(df: pd.DataFrame, config: str, metric: str) -> pd.DataFrame:
    rows = df.loc[df["config"] == config, ["key", "trial", metric]]
    if rows.empty:
        raise ValueError(f"no rows for config {config!r}; configs present: {sorted(df['config'].unique())}")
    dup = rows.duplicated(["key", "trial"])
    if dup.any():
        r = rows[dup].iloc[0]
        raise ValueError(
            f"config {config!r} has {int(dup.sum())} duplicate (key, trial) rows, e.g. ({r.key!r}, trial {r.trial})"
        )
    return rows


def _as_bool(values: Sequence[bool] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values)
    if x.dtype != bool:
        if not np.isin(x, [0, 1]).all():
            raise ValueError(f"{name} must be boolean (or 0/1)")
        x = x.astype(bool)
    return x


def _check_same_length(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired inputs must be 1-D and the same length, got shapes {a.shape} and {b.shape}")
