"""The one reducer: every per-config, per-trial and per-tag number of a run comes from here.

The results table (`results.to_frame`) has one row per (case, config, trial) and one column per
score; `Metric` declarations say how to reduce each column. Gates, the result object a test sees,
the report, the terminal table and stored baselines all read these functions, so one run has one set
of numbers.

Units: a metric's unit of observation is the row, except for `per_tag` metrics whose rows carry one
result per tag in `details[name]` (IFEval's per-instruction results): those pool the tag results, so
instruction-level accuracy is followed instructions / all instructions, as IFEval defines it.

Intervals (two-sided, `confidence` 95% by default) and p-values count cases, not rows, since trials
(and tag slots) of one case are correlated: binary metrics get the Wilson interval widened by its design
effect (`stats.clustered_wilson_interval`), real metrics a seeded bootstrap that resamples cases with all
their trials. Against the baseline, units pair on (key, trial, tag slot); the difference gets a paired
case-bootstrap interval and a sign-flip test over cases (for binary and real metrics alike). All of them
estimate the same thing: the value, or the change, on new prompts like the evaluated cases (`SCOPE`).

Log scale: a metric declared with `scale="log"` (the offline headline quality) is reduced on log
values, each floored at `LOG_FLOOR`: its estimate and interval are a geometric mean and its interval,
so one heavy-tailed row cannot outweigh many ordinary ones, and a drop of x% is a ratio. Its
difference against the baseline is the difference of the paired geometric means, with the interval
and p-value of the paired log ratio (the baseline's geometric mean times exp(log ratio) - 1).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .results import BASELINE
from .scores import LOG_FLOOR, Metric
from .stats import (
    DEFAULT_RESAMPLES,
    DiffResult,
    Interval,
    SignFlipResult,
    bootstrap_interval,
    clustered_wilson_interval,
    holm,
    paired_bootstrap_diff,
    sign_flip_test,
)

#: columns that describe a config, copied into every reduced table
CONFIG_COLUMNS = ["method", "value", "config", "strength"]

#: what every interval and p-value of `summary` is about, in words for the report and the terminal
SCOPE = ("intervals and p-values count cases, not rows (trials of a case resampled or flipped together): "
         "they are about new prompts like these cases")


def config_order(frame: pd.DataFrame, baseline: str = BASELINE) -> list[str]:
    """The baseline first, then each method's configs in the order methods first appear, each
    method's configs by strength (ties keep their first-seen order)."""
    first = frame.drop_duplicates("config")
    steered = first[first["config"] != baseline]
    methods = list(dict.fromkeys(steered["method"]))
    out = [baseline] if (first["config"] == baseline).any() else []
    for method in methods:
        rows = steered[steered["method"] == method].sort_values("strength", kind="stable")
        out += [str(c) for c in rows["config"]]
    return out


def _details_list(details: object, name: str) -> list | None:
    value = details.get(name) if isinstance(details, Mapping) else None
    return list(value) if isinstance(value, (list, tuple)) else None


def _score_column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return frame[name].astype(float)
    return pd.Series(math.nan, index=frame.index, dtype=float)


def units(frame: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """The metric's observations: columns config, key, trial, slot, v; missing values dropped.

    One per row (slot 0), or for a per_tag metric one per entry of `details[name]` (slot = the tag's
    position); a per_tag row without that list counts its row score once (slot -1). A log-scale
    metric's v is log(max(value, LOG_FLOOR)).
    """
    base = frame[["config", "key", "trial"]]
    score = _score_column(frame, metric.name)
    if metric.per_tag and "details" in frame.columns:
        lists = frame["details"].map(lambda d: _details_list(d, metric.name))
        has = lists.notna().to_numpy()
        exploded = base[has].assign(v=lists[has], slot=lists[has].map(lambda xs: list(range(len(xs)))))
        exploded = exploded.explode(["v", "slot"])
        rest = base[~has].assign(v=score[~has], slot=-1)
        out = pd.concat([exploded, rest], ignore_index=True)
    else:
        out = base.assign(v=score, slot=0).reset_index(drop=True)
    out = out.dropna(subset=["v"]).astype({"v": float, "slot": int})
    if metric.scale == "log":
        out["v"] = np.log(np.maximum(out["v"].to_numpy(), LOG_FLOOR))
    return out


def _natural(metric: Metric, x: float) -> float:
    """A reduced value back on the metric's own scale (exp for log-scale metrics)."""
    return math.exp(x) if metric.scale == "log" and not math.isnan(x) else x


def means(frame: pd.DataFrame, metrics: Sequence[Metric]) -> dict[str, float]:
    """Each metric's mean over all of `frame` (NaN-skipping; per_tag metrics pool their tags; log-scale
    metrics: the geometric mean)."""
    out = {}
    for m in metrics:
        if m.per_tag and "details" in frame.columns:
            values: list[float] = []
            for d, row in zip(frame["details"], _score_column(frame, m.name), strict=True):
                tags = _details_list(d, m.name)
                values += [float(x) for x in tags] if tags is not None else ([] if math.isnan(row) else [row])
            out[m.name] = sum(values) / len(values) if values else math.nan
        else:  # the same as the mean of units(), without building the units table (this runs per test)
            v = _score_column(frame, m.name).dropna()
            if m.scale == "log":
                v = np.log(np.maximum(v.to_numpy(), LOG_FLOOR))
            out[m.name] = _natural(m, float(v.mean())) if len(v) else math.nan
    return out


def per_trial(frame: pd.DataFrame, metrics: Sequence[Metric], baseline: str = BASELINE) -> pd.DataFrame:
    """One row per (config, trial): method, value, config, strength, trial, n (rows), then each
    metric's mean. Trials are the unit of replication a reader can see spread over."""
    order = config_order(frame, baseline)
    keys = frame.drop_duplicates(["config", "trial"])[[*CONFIG_COLUMNS, "trial"]]
    n = frame.groupby(["config", "trial"]).size().rename("n")
    out = keys.merge(n.reset_index(), on=["config", "trial"])
    for m in metrics:
        u = units(frame, m)
        mean = u.groupby(["config", "trial"])["v"].mean().map(lambda x, m=m: _natural(m, x)).rename(m.name)
        mean = mean.reset_index()
        out = out.merge(mean, on=["config", "trial"], how="left")
    out["_rank"] = out["config"].map({c: i for i, c in enumerate(order)})
    out = out.sort_values(["_rank", "trial"], kind="stable").drop(columns="_rank")
    return out.reset_index(drop=True)


def _is_01(v: np.ndarray) -> bool:
    return bool(np.isin(v, (0.0, 1.0)).all())


@dataclass(frozen=True)
class _Obs:
    """One config's units of one metric as arrays; `ids` number (key, trial, slot) across configs."""

    ids: np.ndarray
    v: np.ndarray
    keys: np.ndarray
    trials: np.ndarray


def _by_config(u: pd.DataFrame) -> dict[str, _Obs]:
    """Split a metric's units by config once, so pairing is an array intersection, not a merge per config."""
    ids = u.groupby(["key", "trial", "slot"], sort=True).ngroup().to_numpy()
    v, keys, trials = u["v"].to_numpy(float), u["key"].to_numpy(), u["trial"].to_numpy()
    return {str(c): _Obs(ids[i], v[i], keys[i], trials[i]) for c, i in u.groupby("config", sort=False).indices.items()}


def values_interval(values: np.ndarray, keys: np.ndarray, metric: Metric, *, confidence: float = 0.95,
                    n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """The metric's estimate and interval from its unit values and their case keys (the array-level
    core of `interval` and `summary`): design-effect Wilson for 0/1 binary values, else a case bootstrap."""
    if metric.kind == "binary" and _is_01(values):
        return clustered_wilson_interval(values, keys, confidence)
    ci = bootstrap_interval(values, cluster=keys, n_resamples=n_resamples, confidence=confidence, seed=seed)
    if metric.scale == "log":
        return dataclasses.replace(ci, estimate=_natural(metric, ci.estimate), low=_natural(metric, ci.low),
                                   high=_natural(metric, ci.high), method=f"{ci.method} (geometric mean)",
                                   std=math.nan)
    return ci


def _interval(obs: _Obs, metric: Metric, confidence: float, n_resamples: int, seed: int) -> Interval:
    return values_interval(obs.v, obs.keys, metric, confidence=confidence, n_resamples=n_resamples, seed=seed)


def interval(rows: pd.DataFrame, metric: Metric, *, confidence: float = 0.95,
             n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Interval:
    """The metric's estimate and two-sided interval over `rows` (normally one config's rows)."""
    u = units(rows, metric)
    if u.empty:
        raise ValueError(f"{metric.name} has no values in these rows")
    obs = _Obs(np.zeros(len(u), int), u["v"].to_numpy(float), u["key"].to_numpy(), u["trial"].to_numpy())
    return _interval(obs, metric, confidence, n_resamples, seed)


@dataclass(frozen=True)
class Comparison:
    """One config against the baseline on one metric, paired on (key, trial[, tag])."""

    metric: Metric
    config: str
    baseline: str
    estimate: float  # mean of the config's paired units
    baseline_estimate: float
    diff: DiffResult  # config - baseline, cases resampled as clusters
    test: SignFlipResult  # flips whole cases, for binary and real metrics alike
    n_pairs: int
    n_cases: int
    n_trials: int

    @property
    def pvalue(self) -> float:
        return self.test.pvalue

    def __str__(self) -> str:
        return (f"{self.metric.name} {self.config} vs {self.baseline}: {self.estimate:.3f} vs "
                f"{self.baseline_estimate:.3f}, {self.diff}; {self.test}")


def _check_pairing(frame: pd.DataFrame, config: str, baseline: str) -> None:
    """Every (key, trial) row of `config` has exactly one partner in `baseline` and vice versa."""
    present = sorted(map(str, frame["config"].unique()))
    for c in (config, baseline):
        rows = frame.loc[frame["config"] == c, ["key", "trial"]]
        if rows.empty:
            raise ValueError(f"no rows for config {c!r}; configs present: {present}")
        dup = rows.duplicated()
        if dup.any():
            r = rows[dup].iloc[0]
            raise ValueError(f"config {c!r} has {int(dup.sum())} duplicate (key, trial) rows, "
                             f"e.g. ({r.key!r}, trial {r.trial})")
    t = frame.loc[frame["config"] == config, ["key", "trial"]]
    b = frame.loc[frame["config"] == baseline, ["key", "trial"]]
    merged = t.merge(b, on=["key", "trial"], how="outer", indicator="pairing")
    unpaired = merged[merged["pairing"] != "both"]
    if len(unpaired):
        side = {"left_only": f"only in {config}", "right_only": f"only in {baseline}"}
        shown = ", ".join(f"({r.key!r}, trial {r.trial}) {side[r.pairing]}" for r in unpaired.head(5).itertuples())
        raise ValueError(f"cannot pair {config} with {baseline} on (key, trial): {len(unpaired)} unpaired rows, "
                         f"e.g. {shown}")


def paired_comparison(tv: np.ndarray, bv: np.ndarray, keys: np.ndarray, trials: np.ndarray, metric: Metric, *,
                      config: str = "config", baseline: str = BASELINE, confidence: float = 0.95,
                      n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Comparison:
    """The comparison from paired unit values (config's, baseline's) with their case keys and trials (the
    array-level core of `compare` and `summary`): a case-bootstrap interval of the mean paired difference
    and a sign-flip test that flips whole cases, so a case that changed counts once however many trials
    it has."""
    diff = paired_bootstrap_diff(tv, bv, cluster=keys, n_resamples=n_resamples, confidence=confidence, seed=seed)
    test = sign_flip_test(tv, bv, cluster=keys, n_resamples=n_resamples, seed=seed)
    estimate, base = _natural(metric, float(tv.mean())), _natural(metric, float(bv.mean()))
    if metric.scale == "log":  # the log-ratio interval, as a difference of geometric means
        diff = dataclasses.replace(diff, diff=base * math.expm1(diff.diff), low=base * math.expm1(diff.low),
                                   high=base * math.expm1(diff.high))
    return Comparison(metric, config, baseline, estimate, base, diff, test, int(tv.size), len(set(keys)),
                      len(set(trials)))


def _compare(obs: Mapping[str, _Obs], config: str, baseline: str, metric: Metric, confidence: float,
             n_resamples: int, seed: int) -> Comparison:
    t, b = obs.get(config), obs.get(baseline)
    it = ib = np.zeros(0, int)
    if t is not None and b is not None:
        _, it, ib = np.intersect1d(t.ids, b.ids, return_indices=True)
    if t is None or b is None or not it.size:
        raise ValueError(f"{metric.name}: no (key, trial) pairs of {config} and {baseline} with values on both sides")
    return paired_comparison(t.v[it], b.v[ib], t.keys[it], t.trials[it], metric, config=config, baseline=baseline,
                             confidence=confidence, n_resamples=n_resamples, seed=seed)


def compare(frame: pd.DataFrame, config: str, metric: Metric, *, baseline: str = BASELINE,
            confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> Comparison:
    """`config` against `baseline` on `metric`, paired on (key, trial).

    Raises ValueError when a row has no partner (or is duplicated): an unpaired comparison would
    silently mix cases. Pairs where either side has no value for the metric are left out.
    """
    _check_pairing(frame, config, baseline)
    return _compare(_by_config(units(frame, metric)), config, baseline, metric, confidence, n_resamples, seed)


def summary(frame: pd.DataFrame, metrics: Sequence[Metric], *, confidence: float = 0.95,
            baseline: str = BASELINE, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """One row per config in `config_order`: method, value, config, strength, n (rows), trials, and
    per metric `m`, `m_low`, `m_high` and, against the baseline, `m_diff`, `m_diff_low`, `m_diff_high`,
    `m_p` (NaN for the baseline itself, without a baseline, or without paired values) and `m_p_holm`:
    `m_p` adjusted by Holm's method over every comparison the report reads together. For a metric of its
    own that is its steered configs; the side effects (`Metric.side_effect`) form one family, configs x
    side effects, since the report flags any side effect of any config: Holm over the whole table keeps
    the chance of flagging one under "nothing changed" at the nominal level.

    Differences pair on whatever (key, trial) rows both configs have; `compare` insists on all.
    """
    order = config_order(frame, baseline)
    first = frame.drop_duplicates("config").set_index("config")
    counts = frame.groupby("config")["trial"].agg(["size", "nunique"])
    observed = {m.name: _by_config(units(frame, m)) for m in metrics}
    has_baseline = baseline in order
    records = []
    for config in order:
        rec: dict[str, object] = {
            "method": first.at[config, "method"], "value": first.at[config, "value"], "config": config,
            "strength": float(first.at[config, "strength"]), "n": int(counts.at[config, "size"]),
            "trials": int(counts.at[config, "nunique"]),
        }
        for m in metrics:
            obs = observed[m.name]
            ci = _interval(obs[config], m, confidence, n_resamples, seed) if config in obs else None
            rec[m.name] = ci.estimate if ci else math.nan
            rec[f"{m.name}_low"] = ci.low if ci else math.nan
            rec[f"{m.name}_high"] = ci.high if ci else math.nan
            comp = None
            if has_baseline and config != baseline:
                try:
                    comp = _compare(obs, config, baseline, m, confidence, n_resamples, seed)
                except ValueError:  # no pairs with values on both sides: nothing to compare
                    comp = None
            rec[f"{m.name}_diff"] = comp.diff.diff if comp else math.nan
            rec[f"{m.name}_diff_low"] = comp.diff.low if comp else math.nan
            rec[f"{m.name}_diff_high"] = comp.diff.high if comp else math.nan
            rec[f"{m.name}_p"] = comp.pvalue if comp else math.nan
        records.append(rec)
    columns = ["method", "value", "config", "strength", "n", "trials"]
    suffixes = ("", "_low", "_high", "_diff", "_diff_low", "_diff_high", "_p", "_p_holm")
    columns += [f"{m.name}{s}" for m in metrics for s in suffixes]
    out = pd.DataFrame(records, columns=columns)
    for m in metrics:
        if not m.side_effect:
            out[f"{m.name}_p_holm"] = holm(out[f"{m.name}_p"].to_numpy(float))
    side = [f"{m.name}_p" for m in metrics if m.side_effect]
    if side:  # one family: configs x side effects, adjusted together
        table = out[side].to_numpy(float)
        adjusted = np.asarray(holm(table.ravel()), dtype=float).reshape(table.shape)
        for j, column in enumerate(side):
            out[f"{column}_holm"] = adjusted[:, j]
    return out


def paired_values(frame: pd.DataFrame, config: str, metric: Metric,
                  baseline: str = BASELINE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(config's values, baseline's values, case keys) of the units both have, paired on
    (key, trial, slot); empty arrays when they share none."""
    obs = _by_config(units(frame, metric))
    t, b = obs.get(config), obs.get(baseline)
    if t is None or b is None:
        return np.zeros(0), np.zeros(0), np.zeros(0, dtype=object)
    _, it, ib = np.intersect1d(t.ids, b.ids, return_indices=True)
    return t.v[it], b.v[ib], t.keys[it]


def by_tag(frame: pd.DataFrame, metric: Metric, baseline: str = BASELINE) -> pd.DataFrame:
    """The metric per tag (index `tag`, sorted) and config (one column each, in `config_order`).

    A per_tag metric uses the entry of `details[name]` aligned with each tag; any other metric counts
    the row's score once for each of the row's tags (how cases carrying that tag fared).
    """
    order = config_order(frame, baseline)
    ex = _tag_units(frame, metric)
    table = ex.groupby(["tag", "config"])["v"].mean().unstack("config") if len(ex) else pd.DataFrame()
    table = table.reindex(columns=order)
    table.index.name, table.columns.name = "tag", None
    return table


def _tag_units(frame: pd.DataFrame, metric: Metric) -> pd.DataFrame:
    """One value per (config, key, trial, tag): a per_tag metric's entry for that tag, else the row's score."""
    score = _score_column(frame, metric.name)
    details = frame["details"] if "details" in frame.columns else pd.Series(None, index=frame.index)
    tag_lists, values = [], []
    for tags, detail, s in zip(frame["tags"], details, score, strict=True):
        tags = [] if tags is None else list(tags)
        listed = _details_list(detail, metric.name) if metric.per_tag else None
        tag_lists.append(tags)
        values.append(listed if listed is not None and len(listed) == len(tags) else [s] * len(tags))
    d = pd.DataFrame({"config": frame["config"].to_numpy(), "key": frame["key"].to_numpy(),
                      "trial": frame["trial"].to_numpy(), "tag": tag_lists, "v": values})
    ex = d.explode(["tag", "v"]).dropna(subset=["tag", "v"])
    return ex.astype({"v": float})


def tag_deltas(frame: pd.DataFrame, config: str, metric: Metric, *, baseline: str = BASELINE,
               confidence: float = 0.95, n_resamples: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """Per tag (index `tag`): `n` (cases carrying it), `diff` (config - baseline, paired on (key, trial)),
    its case-bootstrap `low` and `high`, the sign-flip `p` over those cases, and `p_holm`, adjusted by
    Holm over the tags: a run has a few cases per tag and many tags, so an unadjusted per-tag p-value
    would flag some tag in most runs where steering changed nothing."""
    ex = _tag_units(frame, metric)
    t = ex[ex["config"] == config].drop(columns="config")
    b = ex[ex["config"] == baseline].drop(columns="config")
    pairs = t.merge(b, on=["key", "trial", "tag"], suffixes=("_t", "_b"))
    records = []
    for tag, g in pairs.groupby("tag", sort=True):
        keys = g["key"].to_numpy()
        comp = paired_comparison(g["v_t"].to_numpy(float), g["v_b"].to_numpy(float), keys, g["trial"].to_numpy(),
                                 metric, config=config, baseline=baseline, confidence=confidence,
                                 n_resamples=n_resamples, seed=seed)
        records.append({"tag": tag, "n": comp.n_cases, "diff": comp.diff.diff, "low": comp.diff.low,
                        "high": comp.diff.high, "p": comp.pvalue})
    out = pd.DataFrame(records, columns=["tag", "n", "diff", "low", "high", "p"]).set_index("tag")
    out["p_holm"] = holm(out["p"].to_numpy(float))
    return out
