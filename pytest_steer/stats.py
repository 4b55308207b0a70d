"""Confidence intervals and paired tests: the array-level primitives that `reduce` applies to the
results table.

A steering run scores each case several times (trials) under every config. Sampling is seeded from
(seed, case, trial), so trial t of the baseline and trial t of a steered config are a *pair* on the
same case: comparisons pair rows on (key, trial) rather than comparing two independent means, which
removes the case-difficulty variance from the difference.

Trials of one case are not independent of each other (a case that is hard stays hard), so every
interval and test the report uses counts *cases*, not rows: the bootstrap resamples whole cases, the
sign-flip test flips whole cases, and a proportion's Wilson interval is widened by its design effect
(`clustered_wilson_interval`: n becomes the effective number of independent units). Each states what
it would be on new prompts like the evaluated ones. The exact McNemar test and the plain Wilson
interval, which treat rows as independent, remain as primitives for independent data.

One convention everywhere: intervals are two-sided at `confidence` (95%), and a one-sided question
("not worse by more than a margin") reads one bound of that interval, a test at (1 - confidence) / 2
(2.5%). Everything here is deterministic: resampling takes a seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

DEFAULT_RESAMPLES = 10_000
_CHUNK = 1_000


def _pct(confidence: float) -> str:
    return f"{confidence * 100:g}%"


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval.

    `method` names how the interval was made ("Wilson", "bootstrap", "case-bootstrap");
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

    `n_clusters` is the number of resampling units: cases when resampled by cluster, else pairs.
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
    """Non-inferiority of treated vs control within `margin`, read off the paired CI of the difference.

    `direction` says which way is good: +1 (higher is better) passes when the lower bound is above
    -margin, -1 (lower is better) when the upper bound is below +margin, and 0 (neither, e.g. a
    length ratio) when the whole interval lies within +-margin: no change beyond the margin either way.
    """

    diff: DiffResult
    margin: float
    direction: int = 1

    @property
    def passed(self) -> bool:
        low_ok, high_ok = self.diff.low > -self.margin, self.diff.high < self.margin
        return {1: low_ok, -1: high_ok}.get(self.direction, low_ok and high_ok)

    @property
    def requirement(self) -> str:
        if self.direction == 1:
            return f"required lower bound > {-self.margin:+.3f}"
        if self.direction == -1:
            return f"required upper bound < {self.margin:+.3f}"
        return f"required interval within [{-self.margin:+.3f}, {self.margin:+.3f}]"

    def __str__(self) -> str:
        verdict = "non-inferior" if self.passed else "not shown non-inferior"
        return f"{verdict}: {self.diff}; {self.requirement}"


@dataclass(frozen=True)
class SignFlipResult:
    """Paired sign-flip (randomisation) test of mean(treated - control) = 0, flipping whole clusters.

    Exact (every sign pattern enumerated) when there are few clusters, else `n_resamples` seeded
    random patterns; the p-value is two-sided.
    """

    diff: float
    pvalue: float
    n_clusters: int
    exact: bool

    def __str__(self) -> str:
        how = "exact" if self.exact else "sampled"
        return (f"sign-flip test ({how}, {self.n_clusters} clusters): diff {self.diff:+.3f}, "
                f"two-sided p={self.pvalue:.3g}")


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a proportion: sane near 0 and 1, unlike the normal interval."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n >= 1, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    ci = sps.binomtest(int(successes), int(n)).proportion_ci(confidence, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), int(n), confidence, "Wilson")


def design_effect(values: Sequence[float] | np.ndarray, cluster: Sequence | np.ndarray) -> float:
    """How many times the variance of a mean over clustered values exceeds that of independent ones.

    The variance of the ratio estimator sum(y) / sum(m) over clusters (cases) divided by the
    binomial/iid variance var(y) / n, clipped to [1, n / clusters]: 1 when trials of a case are no more
    alike than rows of different cases, n / clusters when they are identical. When the values do not vary
    at all (every row 0, or every row 1) it cannot be estimated and the worst case, n / clusters, is
    used, so a run of identical trials counts each case once.
    """
    y = np.asarray(values, dtype=float)
    labels = np.asarray(cluster)
    _check_same_length(y, labels)
    _, idx = np.unique(labels, return_inverse=True)
    k, n = int(idx.max()) + 1 if y.size else 0, y.size
    worst = n / k if k else 1.0
    var_iid = float(y.var())
    if k < 2 or var_iid == 0:
        return worst
    sums, sizes = np.bincount(idx, weights=y), np.bincount(idx).astype(float)
    mean = y.mean()
    var_cluster = k / (k - 1) * float(((sums - mean * sizes) ** 2).sum()) / n**2
    return float(min(worst, max(1.0, var_cluster / (var_iid / n))))


def clustered_wilson_interval(values: Sequence[float] | np.ndarray, cluster: Sequence | np.ndarray,
                              confidence: float = 0.95) -> Interval:
    """Wilson interval for a proportion observed on clustered rows (trials of cases): the Wilson
    interval at the effective sample size n / `design_effect`, keeping the observed proportion.

    Trials of one case are nearly identical when sampling is cool; counting each of them as a new
    observation would make the interval sqrt(trials) times too narrow as a statement about new prompts.
    """
    y = np.asarray(values, dtype=float)
    if y.size == 0:
        raise ValueError("clustered_wilson_interval needs at least one value")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("clustered_wilson_interval needs 0/1 values")
    deff = design_effect(y, cluster)
    n_eff, p = y.size / deff, float(y.mean())
    z = float(sps.norm.ppf(1 - (1 - confidence) / 2))
    centre = (p + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z / (1 + z * z / n_eff) * math.sqrt(p * (1 - p) / n_eff + z * z / (4 * n_eff**2))
    method = "Wilson" if deff == 1 else f"Wilson, design effect {deff:.2f}"
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), int(y.size), confidence, method)


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
    """Seeded expanded-percentile bootstrap CI for a mean.

    The plain percentile interval is too narrow with few units (about 9% false positives for a nominal
    5% at 16 cases), because the bootstrap spread uses the n-divisor and a normal quantile. The
    expanded percentile interval (Hesterberg 2015) reads the quantiles at the level whose normal
    quantile equals sqrt(n / (n - 1)) times Student's t with n - 1 degrees of freedom, n the number of
    resampled units; it approaches the plain interval as n grows.

    With `cluster` (one label per value, e.g. the case key) whole clusters are resampled with
    replacement and the statistic is the mean over all values of the drawn clusters, so that
    correlated values (trials of one case) count as one unit of evidence.
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
    alpha = _expanded_alpha(1 - confidence, sums.size)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    method = "bootstrap" if cluster is None else "case-bootstrap"
    return Interval(float(x.mean()), float(low), float(high), int(x.size), confidence, method)


def _expanded_alpha(alpha: float, n: int) -> float:
    """The tail level of the expanded percentile bootstrap at `n` resampled units (see `bootstrap_interval`)."""
    if n < 2:
        return alpha
    z = math.sqrt(n / (n - 1)) * float(sps.t.ppf(1 - alpha / 2, n - 1))
    return float(2 * sps.norm.sf(z))


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

    Pass `cluster` (the case key of each pair) to resample cases with all their trials,
    the honest unit when several trials share a case; without it pairs are resampled.
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
    direction: int = 1,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    cluster: Sequence | np.ndarray | None = None,
) -> NonInferiority:
    """Non-inferiority: is treated worse than control by less than `margin`?

    Reads one bound of the two-sided `confidence` paired bootstrap CI of mean(treated - control)
    (which bound: see `NonInferiority`): a one-sided test at (1 - confidence) / 2, 2.5% by default.
    This is the project's one convention, shared with `gates.assert_not_worse`.
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if direction not in (-1, 0, 1):
        raise ValueError(f"direction must be -1, 0 or 1, got {direction}")
    diff = paired_bootstrap_diff(
        treated, control, n_resamples=n_resamples, confidence=confidence, seed=seed, cluster=cluster
    )
    return NonInferiority(diff, float(margin), direction)


def sign_flip_test(
    treated: Sequence[float] | np.ndarray,
    control: Sequence[float] | np.ndarray,
    *,
    cluster: Sequence | np.ndarray | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> SignFlipResult:
    """Two-sided paired randomisation test for real-valued metrics.

    Under "steering changes nothing" the sign of each cluster's summed difference is a coin flip;
    the p-value is the share of sign patterns whose |sum| reaches the observed one. Clusters (the
    case key) keep the trials of one case together, as in `bootstrap_interval`. Every pattern is
    enumerated when 2^clusters <= n_resamples, so small tables get the exact p-value.
    """
    t = np.asarray(treated, dtype=float)
    k = np.asarray(control, dtype=float)
    _check_same_length(t, k)
    if t.size == 0:
        raise ValueError("sign_flip_test needs at least one pair")
    d = t - k
    if cluster is None:
        sums = d
    else:
        labels = np.asarray(cluster)
        _check_same_length(d, labels)
        sums = np.bincount(np.unique(labels, return_inverse=True)[1], weights=d)
    observed = abs(float(sums.sum()))
    tol = 1e-12 * max(1.0, float(np.abs(sums).sum()))  # rounding must not split ties
    n = sums.size
    exact = 2**n <= n_resamples
    if exact:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        hits, total = int(np.sum(np.abs(patterns @ sums) >= observed - tol)), 2**n
    else:
        rng = np.random.default_rng(seed)
        hits = 0
        for start in range(0, n_resamples, _CHUNK):
            signs = rng.integers(0, 2, size=(min(_CHUNK, n_resamples - start), n)) * 2 - 1
            hits += int(np.sum(np.abs(signs @ sums) >= observed - tol))
        hits, total = hits + 1, n_resamples + 1  # the observed pattern counts, so p > 0
    return SignFlipResult(float(d.mean()), min(1.0, hits / total), int(n), exact)


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


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for testing several configs against one baseline.

    Controls the chance of any false "better than baseline" among the m configs at the nominal
    level, without assuming the tests are independent. NaN entries are left out of m and stay NaN.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return [float(x) for x in out]


@dataclass(frozen=True)
class Power:
    """What a paired comparison at this size can detect, from the spread of its paired differences.

    The per-case mean difference has variance `between + within / trials`: `between` is the spread
    of the cases' true differences, `within` the trial-to-trial spread inside a case (0 with one
    trial). A two-sided test at `alpha` detects, with probability `power`, a true change of
    `detectable` at `n_cases` cases; `cases_needed(delta, trials)` inverts that for a wanted change.
    The test is a paired t-test on per-case means, so the quantiles are Student's t with cases - 1
    degrees of freedom (a normal z understates what 16 cases need). With one trial `within` cannot be
    estimated (`within_known` is False) and is 0 here: the spread of the cases includes it.
    """

    between: float
    within: float
    n_cases: int
    trials: int
    alpha: float = 0.05
    power: float = 0.8

    @property
    def within_known(self) -> bool:
        return self.trials > 1

    def _t(self, n_cases: int) -> float:
        df = max(1, n_cases - 1)
        return float(sps.t.ppf(1 - self.alpha / 2, df) + sps.t.ppf(self.power, df))

    def case_variance(self, trials: int) -> float:
        return self.between + self.within / trials

    @property
    def detectable(self) -> float:
        return self._t(self.n_cases) * math.sqrt(self.case_variance(self.trials) / self.n_cases)

    def cases_needed(self, delta: float, trials: int) -> int:
        if delta <= 0:
            raise ValueError(f"delta must be > 0, got {delta}")
        n = 2
        for _ in range(100):  # the t quantile depends on n: iterate to the fixed point (it converges fast)
            wanted = max(2, math.ceil((self._t(n) / delta) ** 2 * self.case_variance(trials)))
            if wanted == n:
                break
            n = wanted
        return n


def paired_power(diffs: Sequence[float] | np.ndarray, cluster: Sequence | np.ndarray, *,
                 alpha: float = 0.05, power: float = 0.8) -> Power:
    """`Power` from paired differences (one per (case, trial)), split into between- and within-case
    variance by a one-way random-effects decomposition (method of moments, clipped at 0)."""
    d = np.asarray(diffs, dtype=float)
    labels = np.asarray(cluster)
    _check_same_length(d, labels)
    _, idx = np.unique(labels, return_inverse=True)
    n = int(idx.max()) + 1 if d.size else 0
    if n < 2:
        raise ValueError("power needs paired differences on at least 2 cases")
    counts = np.bincount(idx)
    case_means = np.bincount(idx, weights=d) / counts
    trials = max(1, round(float(counts.mean())))
    resid = d - case_means[idx]
    dof = d.size - n
    within = float((resid**2).sum() / dof) if dof > 0 else 0.0
    between = max(0.0, float(np.var(case_means, ddof=1)) - within / trials)
    return Power(between, within, n, trials, alpha, power)
