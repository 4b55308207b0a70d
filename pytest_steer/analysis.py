"""Tables derived from the results table: per-trial metrics, per-config summaries, per-type
breakdowns, the Pareto set, the recommended alpha, and the examples steering fixed or broke.

Everything here is plain pandas so that the plugin, the report and a notebook share one set of
numbers; figures and HTML only draw what these functions return.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pytest_steer.results import BASELINE, COLUMNS, ResultRow, read_jsonl, to_frame, write_jsonl

METRICS = [
    "strict_prompt_accuracy",
    "strict_instruction_accuracy",
    "loose_prompt_accuracy",
    "loose_instruction_accuracy",
    "quality",
]
TYPE_METRICS = ["follow_rate", "loose_follow_rate", "quality"]

# Means over the same trials can differ in the last bits depending on summation order; comparisons
# of accuracies and quality drops treat such differences as equal.
_TOL = 1e-9


def config_order(frame: pd.DataFrame) -> list[str]:
    """Configs of `frame` (which has config, alpha, strength columns): baseline first, then by
    steering strength (|log alpha|), then alpha, so alpha 0.1 and alpha 10 sit side by side."""
    first = frame.drop_duplicates("config")[["config", "alpha", "strength"]]
    keys = sorted(
        first.itertuples(index=False),
        key=lambda r: (
            r.config != BASELINE,
            r.strength,
            -math.inf if pd.isna(r.alpha) else r.alpha,
            r.config,
        ),
    )
    return [r.config for r in keys]


def _sort_configs(frame: pd.DataFrame, *within: str) -> pd.DataFrame:
    """`frame` sorted by `config_order`, then by the columns in `within`."""
    rank = {c: i for i, c in enumerate(config_order(frame))}
    return (
        frame.assign(_rank=frame["config"].map(rank))
        .sort_values(["_rank", *within], kind="stable")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


def quality_label(quality_name: str) -> str:
    """Display name of the quality score: its scale differs by scorer, so say which one it is."""
    if quality_name == "fluency":
        return "fluency (mean log-lik/token)"
    if quality_name.startswith("reward:"):
        return f"reward ({quality_name.split(':', 1)[1].rsplit('/', 1)[-1]})"
    return quality_name or "quality"


def _joined(values: pd.Series) -> str:
    """One label for the quality scorer(s) of a group; a run normally uses exactly one."""
    return " / ".join(sorted(set(values.dropna().astype(str))))


def trial_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (config, trial) with IFEval accuracies and mean quality.

    Trials are the unit of replication: their spread is what error bars in the report show.
    Instruction-level accuracy pools every instruction of every prompt, as IFEval does.
    """
    rows = df.assign(
        _follow=df["follow_all"].astype(float),
        _loose=df["loose_follow_all"].astype(float),
        _n_instr=df["follow_list"].map(len),
        _strict_instr=df["follow_list"].map(sum),
        _loose_instr=df["loose_follow_list"].map(sum),
    )
    out = (
        rows.groupby(["config", "trial"], sort=False)
        .agg(
            alpha=("alpha", "first"),
            strength=("strength", "first"),
            quality_name=("quality_name", _joined),
            n_examples=("key", "nunique"),
            strict_prompt_accuracy=("_follow", "mean"),
            loose_prompt_accuracy=("_loose", "mean"),
            _strict_instr=("_strict_instr", "sum"),
            _loose_instr=("_loose_instr", "sum"),
            _n_instr=("_n_instr", "sum"),
            quality=("quality", "mean"),
        )
        .reset_index()
    )
    n_instr = out.pop("_n_instr").astype(float)
    out["strict_instruction_accuracy"] = out.pop("_strict_instr") / n_instr
    out["loose_instruction_accuracy"] = out.pop("_loose_instr") / n_instr
    cols = ["config", "trial", "alpha", "strength", "quality_name", "n_examples", *METRICS]
    return _sort_configs(out[cols], "trial")


def config_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per config (baseline first, then by strength): each metric's mean over trials and
    its std over trials (ddof=1, NaN with a single trial), plus n_trials and n_examples.

    Confidence intervals and paired tests live in `pytest_steer.stats`; the plugin merges them.
    """
    trials = trial_metrics(df)
    g = trials.groupby("config", sort=False)
    summary = g.agg(
        alpha=("alpha", "first"),
        strength=("strength", "first"),
        quality_name=("quality_name", _joined),
        n_trials=("trial", "nunique"),
    )
    summary["n_examples"] = df.groupby("config")["key"].nunique()
    for m in METRICS:
        summary[m] = g[m].mean()
        summary[f"{m}_std"] = g[m].std(ddof=1)
    return _sort_configs(summary.reset_index())


def type_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Follow rate and mean quality per (instruction type, config), mean and std over trials.

    A prompt with several instructions counts once for each of its types (its quality too), so a
    type's row says how prompts containing that instruction fared.
    """
    lists = ["instruction_id_list", "follow_list", "loose_follow_list"]
    cols = ["key", "config", "alpha", "strength", "trial", "quality", "quality_name", *lists]
    ex = df[cols].explode(lists).dropna(subset=["instruction_id_list"])
    ex = ex.rename(columns={"instruction_id_list": "instruction_type"}).assign(
        follow_rate=lambda d: d["follow_list"].astype(float),
        loose_follow_rate=lambda d: d["loose_follow_list"].astype(float),
    )
    per_trial = (
        ex.groupby(["instruction_type", "config", "trial"], sort=False)[TYPE_METRICS]
        .mean()
        .reset_index()
    )
    g = per_trial.groupby(["instruction_type", "config"], sort=False)
    out = g[TYPE_METRICS].mean()
    for m in TYPE_METRICS:
        out[f"{m}_std"] = g[m].std(ddof=1)
    out["n_trials"] = g["trial"].nunique()
    ex_g = ex.groupby(["instruction_type", "config"], sort=False)
    out["n_examples"] = ex_g["key"].nunique()
    out["alpha"] = ex_g["alpha"].first()
    out["strength"] = ex_g["strength"].first()
    out["quality_name"] = ex_g["quality_name"].agg(_joined)
    out = out.reset_index()
    cols = ["instruction_type", "config", "alpha", "strength", "quality_name", "n_trials"]
    cols += ["n_examples", *(c for m in TYPE_METRICS for c in (m, f"{m}_std"))]
    return _sort_configs(out[cols], "instruction_type")


def pareto_front(
    summary: pd.DataFrame, *, x: str = "strict_prompt_accuracy", y: str = "quality"
) -> list[str]:
    """Configs no other config beats on both `x` and `y` (both maximised), in summary order.

    Configs with identical scores do not dominate each other, so ties are all kept. Configs with a
    missing score cannot be compared and are left out.
    """
    pts = summary[["config", x, y]].dropna()
    xs, ys = pts[x].to_numpy(float), pts[y].to_numpy(float)
    front = []
    for config, xi, yi in zip(pts["config"], xs, ys):
        ge = (xs >= xi - _TOL) & (ys >= yi - _TOL)
        gt = (xs > xi + _TOL) | (ys > yi + _TOL)
        if not (ge & gt).any():
            front.append(config)
    return front


@dataclass(frozen=True)
class Recommendation:
    """The config to use and why, for the report and the plugin's terminal summary."""

    config: str
    alpha: float | None
    metric: str
    value: float  # the recommended config's `metric`
    baseline_value: float
    quality: float
    quality_drop: float  # baseline quality minus this config's; positive means worse
    max_quality_drop: float
    pareto: list[str]
    reason: str


def recommend_alpha(
    summary: pd.DataFrame, *, max_quality_drop: float, metric: str = "strict_prompt_accuracy"
) -> Recommendation:
    """The config with the best `metric` whose mean quality is at most `max_quality_drop` below
    the baseline's; the baseline itself is a candidate, so steering is only recommended when it
    helps. Ties go to the weaker steering (smaller |log alpha|): same gain, less disturbance.
    """
    if BASELINE not in set(summary["config"]):
        raise ValueError("recommend_alpha needs the baseline config in the summary")
    s = summary.set_index("config").loc[config_order(summary)]
    base = s.loc[BASELINE]
    drop = base["quality"] - s["quality"]
    steered = s.index != BASELINE
    ok = steered & (drop <= max_quality_drop + _TOL).to_numpy()
    candidates = s[ok | ~steered]
    best_value = candidates[metric].max()
    tied = candidates[candidates[metric] >= best_value - _TOL]
    config = str(tied.sort_values("strength", kind="stable").index[0])
    row = s.loc[config]
    pareto = pareto_front(summary, x=metric)

    def fmt(v: float) -> str:
        return f"{v:.3f}"

    if config != BASELINE:
        reason = (
            f"{config}: {metric} {fmt(row[metric])} vs {fmt(base[metric])} at baseline "
            f"({row[metric] - base[metric]:+.3f}), quality drop {fmt(drop[config])} "
            f"<= {max_quality_drop:g}"
        )
    elif not ok.any():
        if steered.any():
            least = drop[steered].idxmin() if drop[steered].notna().any() else None
            closest = f" (smallest: {least}, {fmt(drop[least])})" if least is not None else ""
            reason = (
                f"baseline: no steered config keeps the quality drop <= {max_quality_drop:g}"
                + closest
            )
        else:
            reason = "baseline: no steered configs were run"
    else:
        runner_up = s[ok][metric].idxmax()
        reason = (
            f"baseline: no steered config within the quality limit beats its {metric} "
            f"{fmt(base[metric])} (best: {runner_up}, {fmt(s.loc[runner_up, metric])})"
        )
    return Recommendation(
        config=config,
        alpha=None if pd.isna(row["alpha"]) else float(row["alpha"]),
        metric=metric,
        value=float(row[metric]),
        baseline_value=float(base[metric]),
        quality=float(row["quality"]),
        quality_drop=float(drop[config]),
        max_quality_drop=max_quality_drop,
        pareto=pareto,
        reason=reason,
    )


def fixed_and_broken(df: pd.DataFrame, config: str, *, follow: str = "follow_all") -> pd.DataFrame:
    """Examples, paired with the baseline by (key, trial), that `config` fixed (baseline failed,
    steered followed) or broke (the reverse), with both responses and the quality change.

    Trials share sampling seeds across configs, so a (key, trial) pair differs only by steering.
    """
    if config == BASELINE:
        raise ValueError("fixed_and_broken compares a steered config with the baseline")
    if config not in set(df["config"]):
        raise ValueError(f"config {config!r} is not in the results")
    base = df.loc[
        df["config"] == BASELINE,
        ["key", "trial", "instruction_id_list", "prompt", "response", follow, "quality"],
    ]
    steer = df.loc[df["config"] == config, ["key", "trial", "response", follow, "quality"]]
    m = base.merge(steer, on=["key", "trial"], suffixes=("_b", "_s"), validate="one_to_one")
    b, s = m[f"{follow}_b"].astype(bool), m[f"{follow}_s"].astype(bool)
    m["change"] = np.where(s & ~b, "fixed", np.where(b & ~s, "broken", ""))
    m = m[m["change"] != ""].rename(
        columns={
            "response_b": "baseline_response",
            "response_s": "steered_response",
            "quality_b": "baseline_quality",
            "quality_s": "steered_quality",
        }
    )
    m["quality_delta"] = m["steered_quality"] - m["baseline_quality"]
    m.insert(0, "config", config)
    cols = [
        "config", "key", "trial", "change", "instruction_id_list", "prompt",
        "baseline_response", "steered_response", "baseline_quality", "steered_quality",
        "quality_delta",
    ]
    return m[cols].sort_values(["key", "trial"], kind="stable").reset_index(drop=True)


def _to_rows(df: pd.DataFrame) -> list[ResultRow]:
    """Rows back from a results frame; NaN alpha/relevance (from None in `to_frame`) become None."""
    fields = [c for c in COLUMNS if c != "strength"]
    out = []
    for rec in df[fields].to_dict("records"):
        for name in ("alpha", "relevance"):
            if isinstance(rec[name], float) and math.isnan(rec[name]):
                rec[name] = None
        for name in ("instruction_id_list", "follow_list", "loose_follow_list"):
            rec[name] = list(rec[name])
        out.append(ResultRow(**rec))
    return out


def write_results(df: pd.DataFrame, summary: pd.DataFrame, report_dir: Path) -> dict[str, Path]:
    """Write `results.jsonl` (lossless, what `load_results` reads), `results.parquet` for
    analysis elsewhere (`results.csv` if pyarrow is missing) and `summary.csv`.

    Returns the written paths by file name.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: report_dir / name for name in ("results.jsonl", "summary.csv")}
    write_jsonl(_to_rows(df), paths["results.jsonl"])
    try:
        df.to_parquet(report_dir / "results.parquet", index=False)
        paths["results.parquet"] = report_dir / "results.parquet"
    except ImportError:
        df.to_csv(report_dir / "results.csv", index=False)
        paths["results.csv"] = report_dir / "results.csv"
    summary.to_csv(paths["summary.csv"], index=False)
    return paths


def load_results(report_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, summary) as written by `write_results`, e.g. to re-render a report or compare
    with a stored run. Results come from the JSONL so list columns and None survive intact."""
    report_dir = Path(report_dir)
    results = to_frame(read_jsonl(report_dir / "results.jsonl"))
    summary = pd.read_csv(report_dir / "summary.csv")
    return results, summary
