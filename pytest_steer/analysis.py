"""Decisions drawn from the reduced tables: the Pareto set, the recommended config within budgets
for its side effects (chosen by cross-fitting, see `select`), the power of the comparison, the cases
steering fixed or broke, and the files a report is rebuilt from.

Numbers come from `reduce.summary`; nothing here aggregates the results table itself, so the plugin,
the report and a notebook agree.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .files import REPORT_MANIFEST, read_manifest
from .reduce import config_order, means, paired_values
from .results import BASELINE, ResultRow, read_jsonl, write_atomically, write_jsonl
from .scores import Metric
from .stats import DiffResult, Power, paired_bootstrap_diff, paired_power

# Means over the same rows can differ in the last bits depending on summation order; comparisons
# of estimates and budget checks treat such differences as equal.
_TOL = 1e-9


def _directions(metrics: Sequence[Metric]) -> dict[str, int]:
    return {m.name: m.direction for m in metrics}


def pareto_front(summary: pd.DataFrame, x: str, y: str = "quality", *, metrics: Sequence[Metric] = ()) -> list[str]:
    """Configs no other config beats on both `x` and `y`, in summary order.

    Each axis is maximised, or minimised for a metric declared lower-is-better in `metrics`. Configs
    with identical scores do not dominate each other, so ties are all kept; configs with a missing
    score cannot be compared and are left out.
    """
    sign = _directions(metrics)
    pts = summary[["config", x, y]].dropna()
    xs = pts[x].to_numpy(float) * (-1.0 if sign.get(x) == -1 else 1.0)
    ys = pts[y].to_numpy(float) * (-1.0 if sign.get(y) == -1 else 1.0)
    front = []
    for config, xi, yi in zip(pts["config"], xs, ys, strict=True):
        ge = (xs >= xi - _TOL) & (ys >= yi - _TOL)
        gt = (xs > xi + _TOL) | (ys > yi + _TOL)
        if not (ge & gt).any():
            front.append(str(config))
    return front


@dataclass(frozen=True)
class Recommendation:
    """The config to use and why, for the report and the terminal summary."""

    config: str
    method: str
    value: float | str | None
    primary: str
    primary_value: float
    baseline_value: float
    budgets: dict[str, float]  # metric -> allowed worsening
    relative: tuple[str, ...]  # budget metrics measured as a share of the baseline's value
    directions: dict[str, int]  # budget metric -> its good direction
    worsening: dict[str, float]  # the recommended config's worsening per checked budget metric
    over_budget: dict[str, list[str]]  # config -> the budgets it broke, as text
    unchecked: list[str]  # budget metrics no config has a value for
    pareto: list[str]  # Pareto set of (primary, quality)
    reason: str
    selection: str = "point estimate on the evaluated cases"  # how the config was chosen, in words
    held_out: DiffResult | None = None  # cross-fitted effect on the primary metric (see `select`)

    def budget_text(self) -> str:
        """The budgets in words, e.g. "quality drop <= 10%, repetition rise <= 0.1"."""
        return ", ".join(_limit_text(n, b, n in self.relative, self.directions.get(n, 1))
                         for n, b in self.budgets.items()) or "none"


def _word(direction: int) -> str:
    return {1: "drop", -1: "rise"}.get(direction, "change")


def _amount(value: float, relative: bool) -> str:
    return f"{value:.0%}" if relative else f"{value:.3g}"


def _limit_text(name: str, budget: float, relative: bool, direction: int) -> str:
    return f"{name} {_word(direction)} <= {_amount(budget, relative)}"


def _within_text(name: str, worse: float, budget: float, relative: bool, direction: int) -> str:
    """"repetition rise 0.05 <= 0.1", or for a change in the good direction "quality better by 29%"."""
    if worse < -_TOL:
        return f"{name} better by {_amount(-worse, relative)}"
    return f"{name} {_word(direction)} {_amount(worse if worse > 0 else 0.0, relative)} <= {_amount(budget, relative)}"


def worsening(value: float, base: float, direction: int, relative: bool) -> float:
    """How much worse `value` is than `base` in the metric's bad direction (negative: better);
    for direction 0 any change counts; relative: as a share of |base|."""
    change = value - base
    w = -change if direction == 1 else change if direction == -1 else abs(change)
    if not relative:
        return w
    if base == 0:
        return 0.0 if abs(w) <= _TOL else math.copysign(math.inf, w)
    return w / abs(base)


def recommend(summary: pd.DataFrame, *, primary: str, budgets: Mapping[str, float], metrics: Sequence[Metric] = (),
              relative: Sequence[str] = ("quality",), quality: str = "quality",
              baseline: str = BASELINE) -> Recommendation:
    """The config with the best `primary` among those within every budget.

    `budgets` maps a metric to its allowed worsening against the baseline: for metrics in `relative`
    (by default the headline quality) a share of the baseline's value (0.1: at most 10% lower), for
    the others an absolute change in the bad direction of the metric (repetition: a rise; diversity:
    a drop; a metric without a good direction: any change). The baseline is always a candidate, so
    steering is only recommended when it helps. Ties go to the weaker steering. `pareto` is the Pareto
    set of (`primary`, `quality`), empty without a `quality` column. Budget metrics that
    no config has a value for are listed in `unchecked`; a config missing a checked value is over
    budget.
    """
    if baseline not in set(summary["config"]):
        raise ValueError("recommend needs the baseline config in the summary")
    if primary not in summary.columns:
        raise ValueError(f"primary metric {primary!r} is not in the summary")
    sign = _directions(metrics)
    s = summary.set_index("config").loc[config_order(summary, baseline)]
    base = s.loc[baseline]
    unchecked = [n for n in budgets if n not in s.columns or s[n].isna().all()]
    checked = {n: float(b) for n, b in budgets.items() if n not in unchecked}
    rel = tuple(n for n in budgets if n in relative)

    worse: dict[str, dict[str, float]] = {}
    over: dict[str, list[str]] = {}
    for config, row in s.iterrows():
        worse[str(config)] = {}
        for n, b in checked.items():
            w = 0.0 if config == baseline else worsening(float(row[n]), float(base[n]), sign.get(n, 1), n in rel)
            worse[str(config)][n] = w
            if math.isnan(w):
                over.setdefault(str(config), []).append(f"{n} not measured")
            elif w > b + _TOL:
                over.setdefault(str(config), []).append(
                    f"{n} {_word(sign.get(n, 1))} {_amount(w, n in rel)} > {_amount(b, n in rel)}")
    up = sign.get(primary, 1) != -1
    candidates = [c for c in s.index if c not in over and not math.isnan(float(s.at[c, primary]))]
    score = {c: float(s.at[c, primary]) * (1 if up else -1) for c in candidates}
    best = max(score.values()) if score else math.nan
    tied = [c for c in candidates if score[c] >= best - _TOL]
    config = str(min(tied, key=lambda c: (c != baseline, float(s.at[c, "strength"])))) if tied else baseline
    row = s.loc[config]
    reason = _reason(s, config, primary, baseline, over, worse, checked, rel, sign, candidates)
    value = row["value"]
    return Recommendation(
        config=config, method=str(row["method"]),
        value=None if value is None or (isinstance(value, float) and math.isnan(value)) else value,
        primary=primary, primary_value=float(row[primary]), baseline_value=float(base[primary]),
        budgets=dict(budgets), relative=rel, worsening=worse[config], over_budget=over, unchecked=unchecked,
        directions={n: sign.get(n, 1) for n in budgets},
        pareto=pareto_front(summary, primary, quality, metrics=metrics) if quality in summary.columns else [],
        reason=reason,
    )


def _reason(s: pd.DataFrame, config: str, primary: str, baseline: str, over: dict[str, list[str]],
            worse: dict[str, dict[str, float]], checked: dict[str, float], rel: tuple[str, ...],
            sign: dict[str, int], candidates: list[str]) -> str:
    base = float(s.at[baseline, primary])
    steered = [str(c) for c in s.index if c != baseline]
    if config != baseline:
        v = float(s.at[config, primary])
        within = ", ".join(_within_text(n, worse[config][n], b, n in rel, sign.get(n, 1)) for n, b in checked.items())
        return (f"{config}: {primary} {v:.3f} vs {base:.3f} at baseline ({v - base:+.3f})"
                + (f", within every budget ({within})" if within else ""))
    if not steered:
        return "baseline: no steered configs were run"
    ok = [c for c in candidates if c != baseline]
    if not ok:
        closest = min(steered, key=lambda c: len(over.get(c, [])))
        why = "; ".join(over.get(closest, [])) or f"no {primary} value"
        return f"baseline: no steered config stays within the budgets (closest: {closest}, {why})"
    runner_up = max(ok, key=lambda c: float(s.at[c, primary]) * (1 if sign.get(primary, 1) != -1 else -1))
    return (f"baseline: no steered config within the budgets beats its {primary} {base:.3f} "
            f"(best: {runner_up}, {float(s.at[runner_up, primary]):.3f})")


def halves(keys: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split case keys into two halves of (nearly) equal size by a hash of the key: deterministic,
    independent of the keys' order and of any outcome."""
    ranked = sorted(dict.fromkeys(map(str, keys)), key=lambda k: hashlib.sha256(k.encode()).hexdigest())
    return ranked[0::2], ranked[1::2]


def _point_summary(frame: pd.DataFrame, metrics: Sequence[Metric], baseline: str) -> pd.DataFrame:
    """Per config only what `recommend` reads: the config columns and each metric's mean."""
    order = config_order(frame, baseline)
    first = frame.drop_duplicates("config").set_index("config")
    return pd.DataFrame([{"method": first.at[c, "method"], "value": first.at[c, "value"], "config": c,
                          "strength": float(first.at[c, "strength"]), **means(frame[frame["config"] == c], metrics)}
                         for c in order])


def select(frame: pd.DataFrame, summary: pd.DataFrame, *, primary: str, budgets: Mapping[str, float],
           metrics: Sequence[Metric] = (), relative: Sequence[str] = ("quality",), quality: str = "quality",
           baseline: str = BASELINE, confidence: float = 0.95, seed: int = 0) -> Recommendation:
    """The recommendation, chosen by cross-fitting so that a config better only by chance is not picked.

    The evaluated cases are split in two halves (`halves`). On each half, `recommend` picks the best
    config within budgets by point estimate; that pick is then measured, paired with the baseline, on
    the *other* half, whose outcomes played no part in choosing it. The two held-out measurements
    together cover every case once: `held_out` is their paired case-bootstrap interval, the effect of
    "pick the best config" as a procedure. A steered config is recommended only when both halves pick
    it, it is within budgets on all cases, and that interval excludes "no change" on the good side;
    otherwise the recommendation is the baseline, "no config is better than the baseline at this n".
    The maximum over many noisy arms wins on the cases it was picked on (the winner's curse); on the
    other half it regresses to its true effect. Everything else (budgets, Pareto set, over-budget
    list) is `recommend` on `summary`.
    """
    full = recommend(summary, primary=primary, budgets=budgets, metrics=metrics, relative=relative, quality=quality,
                     baseline=baseline)
    primary_metric = next((m for m in metrics if m.name == primary), Metric(primary, "real", 1))
    needed = [m for m in metrics if m.name in budgets and m.name != primary] + [primary_metric]
    up = primary_metric.direction != -1
    folds = halves(frame["key"].tolist())
    if not (folds[0] and folds[1]):
        return dataclasses.replace(full, selection="point estimate on the evaluated cases (one case: no halves)")
    picks: list[str] = []
    treated: list[np.ndarray] = []
    control: list[np.ndarray] = []
    clusters: list[np.ndarray] = []
    for chosen_on, measured_on in ((folds[1], folds[0]), (folds[0], folds[1])):
        pick = recommend(_point_summary(frame[frame["key"].isin(chosen_on)], needed, baseline), primary=primary,
                         budgets=budgets, metrics=metrics, relative=relative, quality=quality,
                         baseline=baseline).config
        picks.append(pick)
        # picking the baseline pairs it with itself: no change on these cases
        t, b, k = paired_values(frame[frame["key"].isin(measured_on)], pick, primary_metric, baseline)
        treated.append(t)
        control.append(b)
        clusters.append(k)
    how = (f"cross-fitted: each half of the cases ({len(folds[0])} + {len(folds[1])}) picks the best config within "
           f"budgets, measured on the other half (picks: {picks[1]} on the first half, {picks[0]} on the second)")
    t_all, b_all, k_all = np.concatenate(treated), np.concatenate(control), np.concatenate(clusters)
    if not t_all.size:
        return dataclasses.replace(full, selection=how)
    held = paired_bootstrap_diff(t_all, b_all, cluster=k_all, confidence=confidence, seed=seed)
    effect = (f"held-out {primary} change of picking the best config {held.diff:+.3f} "
              f"[{held.low:+.3f}, {held.high:+.3f}]")
    better = held.low > 0 if up else held.high < 0
    s = summary.set_index("config")
    if picks[0] == picks[1] and picks[0] != baseline and picks[0] not in full.over_budget and better:
        row = s.loc[picks[0]]
        value = row["value"]
        return dataclasses.replace(
            full, config=picks[0], method=str(row["method"]),
            value=None if value is None or (isinstance(value, float) and math.isnan(value)) else value,
            primary_value=float(row[primary]), selection=how, held_out=held,
            worsening={n: worsening(float(row[n]), float(s.at[baseline, n]), full.directions.get(n, 1),
                                    n in full.relative) for n in full.worsening},
            reason=f"{picks[0]}: both halves pick it; {effect}")
    why = ("the halves pick different configs" if picks[0] != picks[1] else
           "both halves pick the baseline" if picks[0] == baseline else
           f"{picks[0]} is over budget on all cases" if picks[0] in full.over_budget else
           "the held-out interval includes no change")
    base_row = s.loc[baseline]
    return dataclasses.replace(
        full, config=baseline, method=str(base_row["method"]), value=None, primary_value=float(base_row[primary]),
        worsening={n: 0.0 for n in full.worsening}, selection=how, held_out=held,
        reason=f"no config is better than the baseline at this n: {why}; {effect}; "
               f"by point estimate on all cases, {full.reason}")


def power(frame: pd.DataFrame, metric: Metric, *, baseline: str = BASELINE, delta: float = 0.05,
          alpha: float = 0.05, power: float = 0.8) -> tuple[Power, str]:
    """What this run could detect on `metric`, and the line that says so.

    The spread of paired differences comes from every steered config against the baseline, pooled
    (each config's differences centred on its own mean, so its effect does not count as noise).
    Returns the `Power` and e.g. "power: at 12 cases x 2 trials the smallest change in strict prompt
    accuracy detectable (...) is +0.21; +0.05 needs about 210 cases x 2 trials (or 190 x 4: ...)"; with
    one trial the line says that the trial-to-trial spread is not estimable instead of pricing more trials.
    """
    diffs, keys = [], []
    for config in config_order(frame, baseline):
        if config == baseline:
            continue
        t, b, k = paired_values(frame, config, metric, baseline)
        if t.size:
            diffs.append((t - b) - (t - b).mean())
            keys.append(np.array([f"{config}\x00{x}" for x in k]))
    if not diffs:
        raise ValueError(f"no steered config has {metric.name} values paired with {baseline}")
    d, k = np.concatenate(diffs), np.concatenate(keys)
    pooled = paired_power(d, k, alpha=alpha, power=power)
    base = frame[frame["config"] == baseline]
    n_cases = int(base["key"].nunique())
    p = dataclasses.replace(pooled, n_cases=n_cases, trials=max(1, int(base["trial"].nunique())))
    if p.case_variance(p.trials) == 0:
        return p, (f"power: paired differences in {metric.title} did not vary at {n_cases} cases x {p.trials} "
                   "trials, so the detectable change cannot be estimated")
    if p.within_known:
        more = (f" (or {p.cases_needed(delta, 2 * p.trials)} x {2 * p.trials}: more trials only shrink the "
                "trial-to-trial part of the spread)")
    else:
        more = (" (with one trial the trial-to-trial spread cannot be estimated, so whether more trials "
                "would help is unknown: run 2 or more to find out)")
    trials = f"{p.trials} trial" + ("s" if p.trials != 1 else "")
    return p, (f"power: at {n_cases} cases x {trials} the smallest change in {metric.title} detectable "
               f"(paired t on case means, {power:.0%} power, two-sided {alpha:g}) is {p.detectable:+.3f}; "
               f"{delta:+g} needs about {p.cases_needed(delta, p.trials)} cases x {trials}{more}")


@dataclass(frozen=True)
class MatchedDose:
    """Methods compared at one common dose (`matched_dose`): per method the config nearest it."""

    reference: float  # the common dose (mean per-token KL, nats)
    tolerance: float  # a config is matched when its dose is within this factor of `reference`
    table: pd.DataFrame  # per method: config, dose, primary and quality with intervals, primary_diff, matched
    text: str  # one sentence for the recommendation
    paired: DiffResult | None = None  # best matched config minus the next one, paired on (case, trial)

    @property
    def matched(self) -> list[str]:
        """The configs within `tolerance` of the reference dose."""
        return [str(c) for c in self.table.loc[self.table["matched"], "config"]]


def matched_dose(summary: pd.DataFrame, frame: pd.DataFrame, *, primary: str, quality: str = "quality",
                 dose: str = "dose", baseline: str = BASELINE, tolerance: float = 2.0,
                 metrics: Sequence[Metric] = (), confidence: float = 0.95, seed: int = 0) -> MatchedDose | None:
    """Compare methods at matched dose: each method's config nearest (in log dose) one common dose.

    The common dose is the config dose that every method gets closest to in the worst case (it
    minimises, over candidate doses, the largest log-distance from any method to its nearest config),
    so no method is compared far outside the range it was run at. A method is *matched* when its
    nearest config is within a factor `tolerance` of it; the others are listed with their distance,
    not compared. Among matched configs the best by primary metric is named and compared with the next
    one directly: the two configs' rows in `frame` (the results table) share (case, trial), so their
    paired difference gets a case-bootstrap interval, and a method is called better only when that
    interval excludes 0 (overlap of two 95% intervals of the change from the baseline would be a test at
    about 0.5%). None with fewer than two methods that have a positive dose.
    """
    if dose not in summary or primary not in summary:
        return None
    steered = summary[(summary["config"] != baseline) & (summary[dose] > 0)]
    steered = steered[np.isfinite(steered[dose].to_numpy(float))]
    methods = list(dict.fromkeys(steered["method"]))
    if len(methods) < 2:
        return None
    logs = {m: np.log(steered.loc[steered["method"] == m, dose].to_numpy(float)) for m in methods}
    candidates = np.unique(np.concatenate(list(logs.values())))
    worst = [max(float(np.abs(v - c).min()) for v in logs.values()) for c in candidates]
    ref = float(candidates[int(np.argmin(worst))])
    rows = []
    for m in methods:
        group = steered[steered["method"] == m]
        at = int(np.abs(logs[m] - ref).argmin())
        r = group.iloc[at]
        shown = [f"{n}{suffix}" for n in dict.fromkeys((dose, primary, quality))
                 for suffix in ("", "_low", "_high", "_diff", "_diff_low", "_diff_high")]
        rows.append({"method": m, "config": r["config"], **{c: float(r.get(c, math.nan)) for c in shown},
                     "ratio": math.exp(abs(logs[m][at] - ref)),
                     "matched": bool(abs(logs[m][at] - ref) <= math.log(tolerance) + _TOL)})
    table = pd.DataFrame(rows)
    sign = -1.0 if _directions(metrics).get(primary) == -1 else 1.0
    on = table[table["matched"]].sort_values(primary, key=lambda v: -sign * v, kind="stable")
    reference = math.exp(ref)
    off = table[~table["matched"]]
    away = "; not at matched dose: " + ", ".join(f"{r.config} ({r.ratio:.1f}x away)" for r in off.itertuples()) \
        if len(off) else ""
    if len(on) < 2:
        text = (f"at matched dose (~{reference:.3g} nats/token, within {tolerance:g}x) fewer than two methods have a "
                f"config, so none are compared there{away}")
    else:
        best, second = str(on.iloc[0]["config"]), str(on.iloc[1]["config"])
        metric = next((m for m in metrics if m.name == primary), Metric(primary, "real", 1))
        t, b, keys = paired_values(frame, best, metric, second)
        listed = ", ".join(f"{r.config} {getattr(r, primary):.3f}" for r in on.itertuples(index=False))
        head = f"at matched dose (~{reference:.3g} nats/token, within {tolerance:g}x): {listed} in {primary}; "
        if not t.size:
            return MatchedDose(reference, tolerance, table, head + f"{best} and {second} share no (case, trial) "
                               f"rows, so they cannot be compared{away}")
        paired = paired_bootstrap_diff(t, b, cluster=keys, confidence=confidence, seed=seed)
        apart = paired.low > 0 if sign > 0 else paired.high < 0
        diff = (f"paired difference {best} - {second} {paired.diff:+.3f}, {confidence:.0%} case-bootstrap interval "
                f"[{paired.low:+.3f}, {paired.high:+.3f}] over {paired.n_clusters} cases")
        text = head + (f"{best} is better ({diff})" if apart else
                       f"no method is better at this dose ({diff} includes 0)") + away
        return MatchedDose(reference, tolerance, table, text, paired)
    return MatchedDose(reference, tolerance, table, text)


def fixed_and_broken(frame: pd.DataFrame, config: str, *, follow: str, show: Sequence[str] = ("quality",),
                     baseline: str = BASELINE) -> pd.DataFrame:
    """Cases, paired with the baseline on (key, trial), that `config` fixed (the baseline failed the
    binary `follow` metric, the steered response passed) or broke (the reverse), with both responses,
    the `show` scores of both and each side's degeneration flags (`details["flags"]`).

    Trials share sampling seeds across configs, so a (key, trial) pair differs only by steering.
    """
    if config == baseline:
        raise ValueError("fixed_and_broken compares a steered config with the baseline")
    if config not in set(frame["config"]):
        raise ValueError(f"config {config!r} is not in the results")
    shown = [m for m in show if m in frame.columns and m != follow]
    flags = frame["details"].map(lambda d: list(d.get("flags", [])) if isinstance(d, Mapping) else [])
    frame = frame.assign(flags=flags)
    cols = ["key", "trial", "response", "flags", follow, *shown]
    b = frame.loc[frame["config"] == baseline, ["tags", "prompt", *cols]]
    t = frame.loc[frame["config"] == config, cols]
    m = b.merge(t, on=["key", "trial"], suffixes=("_b", "_s"), validate="one_to_one")
    fb, fs = m[f"{follow}_b"].to_numpy(float), m[f"{follow}_s"].to_numpy(float)
    m["change"] = np.where((fs >= 0.5) & (fb < 0.5), "fixed", np.where((fb >= 0.5) & (fs < 0.5), "broken", ""))
    m = m[m["change"] != ""]
    out = pd.DataFrame({
        "config": config, "key": m["key"], "trial": m["trial"], "change": m["change"], "tags": m["tags"],
        "prompt": m["prompt"], "baseline_response": m["response_b"], "steered_response": m["response_s"],
        "baseline_flags": m["flags_b"], "steered_flags": m["flags_s"],
    })
    for name in shown:
        out[f"baseline_{name}"] = m[f"{name}_b"]
        out[f"steered_{name}"] = m[f"{name}_s"]
        out[f"{name}_delta"] = m[f"{name}_s"] - m[f"{name}_b"]
    return out.sort_values(["key", "trial"], kind="stable").reset_index(drop=True)


class SavedResults(NamedTuple):
    rows: list[ResultRow]
    summary: pd.DataFrame
    metrics: list[Metric]


def write_results(rows: Sequence[ResultRow], summary: pd.DataFrame, metrics: Sequence[Metric],
                  out_dir: Path) -> dict[str, Path]:
    """Write `results.jsonl` (every row, lossless), `summary.csv` (`reduce.summary`) and `metrics.json`
    (the metric declarations), so that a report can be rebuilt from the files alone.

    Returns the written paths by file name.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in ("results.jsonl", "summary.csv", "metrics.json")}
    write_jsonl(rows, paths["results.jsonl"])
    write_atomically(paths["summary.csv"], summary.to_csv(index=False))
    write_atomically(paths["metrics.json"], json.dumps([dataclasses.asdict(m) for m in metrics], indent=1) + "\n")
    return paths


def load_results(out_dir: Path) -> SavedResults:
    """(rows, summary, metrics) as written by `write_results`, e.g. to re-render a report.

    A report dir whose last session had several runs keeps them in `run-<key>/` folders (its top-level
    files, if any, are an earlier session's): that raises ValueError naming the folders to load instead."""
    out_dir = Path(out_dir)
    runs = (read_manifest(out_dir / REPORT_MANIFEST) or {}).get("runs") or {}
    if not isinstance(runs, dict) or not all(isinstance(f, str) for f in runs.values()):
        raise ValueError(f"{out_dir / REPORT_MANIFEST} was changed by hand: its runs are not run keys and folders; "
                         "delete it to load the results files at the top of the folder")
    if runs and "." not in runs.values():
        folders = ", ".join(str(out_dir / f) for f in runs.values())
        raise ValueError(f"the last session in {out_dir} wrote {len(runs)} runs, each in its own folder: "
                         f"load one of {folders}; the results files at the top of {out_dir}, if any, are an "
                         "earlier session's")
    rows = read_jsonl(out_dir / "results.jsonl")
    summary = pd.read_csv(out_dir / "summary.csv")
    metrics = [Metric(**d) for d in json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))]
    return SavedResults(rows, summary, metrics)
