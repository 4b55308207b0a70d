"""Session end: gather every row (this process and xdist workers), then write the results files,
figures, HTML summary, terminal table and, if asked, the stored baseline.

Plain functions over the plugin's state, kept out of plugin.py so the hook layer stays thin.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from .results import BASELINE, ResultRow, to_frame


def rows_payload(plugin: Any) -> str:
    """What a worker sends the controller: its rows, the settings of its runs and its run details."""
    from .plugin import run_settings

    run = plugin.run
    return json.dumps({
        "rows": [dataclasses.asdict(r) for r in run.all_rows()],
        "settings": {s.key(): run_settings(run, s) for s in plugin.specs},
        "meta": {**run.meta(), "_generated": run.generated_rows, "_cached": run.cached_rows},
    }, allow_nan=True)


def gather(plugin: Any) -> tuple[list[ResultRow], dict[str, dict[str, Any]], dict[str, str]]:
    """All rows of the session, de-duplicated on (run, example, config, trial), with settings and details."""
    from .plugin import run_settings

    rows: list[ResultRow] = []
    settings: dict[str, dict[str, Any]] = dict(plugin.worker_settings)
    meta: dict[str, str] = {}
    if plugin._run is not None and plugin._run.all_rows():
        run = plugin._run
        rows += run.all_rows()
        settings.update({s.key(): run_settings(run, s) for s in plugin.specs})
        meta = run.meta()
    rows += [ResultRow.from_dict(d) for d in plugin.worker_rows]
    if plugin.worker_meta:
        meta = {k: v for k, v in plugin.worker_meta[0].items() if not k.startswith("_")}
        gen = sum(m["_generated"] for m in plugin.worker_meta)
        cached = sum(m["_cached"] for m in plugin.worker_meta)
        total = gen + cached
        meta["cache hit rate"] = f"{cached / total:.0%} of {total} rows" if total else "n/a"
        meta["workers"] = str(len(plugin.worker_meta))
    unique: dict[tuple, ResultRow] = {}
    for r in rows:
        unique.setdefault((r.run, r.key, r.config, r.trial), r)
    return list(unique.values()), settings, meta


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per-config means and stds over trials, with intervals and paired comparisons to the baseline."""
    from .analysis import config_summary
    from .stats import config_intervals

    summary = config_summary(df)
    intervals = config_intervals(df)
    # config_summary already has each metric's mean and std over trials, under IFEval's names
    shared = [c for c in intervals.columns
              if (c in summary.columns and c != "config") or c.endswith(("_mean", "_std"))]
    return summary.merge(intervals.drop(columns=shared), on="config", how="left")


def _steered_pick(summary: pd.DataFrame, rec: Any) -> str | None:
    """The config to show per-type changes for: the recommendation, else the strongest steering."""
    if rec.config != BASELINE:
        return rec.config
    steered = summary[summary["config"] != BASELINE]
    return None if steered.empty else str(steered.sort_values("strength").iloc[-1]["config"])


def report_one(df: pd.DataFrame, out_dir: Path, max_quality_drop: float, meta: dict[str, str]) -> tuple[str, list[str]]:
    """Files, figures, HTML fragment and terminal lines for one run spec's rows."""
    from .analysis import fixed_and_broken, recommend_alpha, trial_metrics, type_metrics, write_results
    from .report.figures import pareto_figure, tradeoff_figure, type_delta_bars, type_heatmaps
    from .report.html import summary_html

    summary = summarize(df)
    rec = recommend_alpha(summary, max_quality_drop=max_quality_drop)
    write_results(df, summary, out_dir)
    types = type_metrics(df)
    figures = {
        "Trade-off": tradeoff_figure(trial_metrics(df), out_dir),
        "Pareto frontier": pareto_figure(summary, out_dir),
        "By instruction type": type_heatmaps(types, out_dir),
    }
    pick = _steered_pick(summary, rec)
    if pick is not None:
        figures[f"Change from baseline by type at {pick}"] = type_delta_bars(types, pick, out_dir)
    steered = [c for c in summary["config"] if c != BASELINE]
    fb = pd.concat([fixed_and_broken(df, c) for c in steered], ignore_index=True) if steered and (df["config"] == BASELINE).any() \
        else pd.DataFrame()
    fragment = summary_html(summary, rec, figures, fb, meta)
    return fragment, terminal_table(summary, rec)


def terminal_table(summary: pd.DataFrame, rec: Any) -> list[str]:
    def fmt(mean: float, std: float) -> str:
        return f"{mean:.3f}" + ("" if std != std else f" ± {std:.3f}")

    qname = str(summary["quality_name"].iloc[0]) if "quality_name" in summary else "quality"
    lines = [f"{'config':<12}{'trials':>7}  {'strict acc':<17}{'loose acc':<17}{qname[:20]:<22}{'Δacc vs base':>13}"]
    for _, r in summary.iterrows():
        diff = r.get("follow_all_diff", math.nan)
        lines.append(
            f"{r['config']:<12}{int(r['n_trials']):>7}  {fmt(r['strict_prompt_accuracy'], r['strict_prompt_accuracy_std']):<17}"
            f"{fmt(r['loose_prompt_accuracy'], r['loose_prompt_accuracy_std']):<17}{fmt(r['quality'], r['quality_std']):<22}"
            f"{'' if diff != diff else f'{diff:+.3f}':>13}"
        )
    lines.append(f"recommended: {rec.config} ({rec.reason})")
    return lines


def build_report(plugin: Any) -> None:
    """Write everything for the session's rows; a no-op when no steering test ran."""
    from .report.html import write_standalone

    rows, settings, meta = gather(plugin)
    if not rows:
        return
    g = plugin.global_settings
    out = plugin.report_dir
    out.mkdir(parents=True, exist_ok=True)
    runs = list(dict.fromkeys(r.run for r in rows))
    fragments, lines = [], []
    for run_id in runs:
        df = to_frame([r for r in rows if r.run == run_id])
        sub = out if len(runs) == 1 else out / f"run-{run_id}"
        spec = next((s for s in plugin.specs if s.key() == run_id), None)
        drop = spec.max_quality_drop if spec is not None else g["max_quality_drop"]
        frag, tl = report_one(df, sub, drop, {**meta, "run": run_id, **_spec_meta(settings.get(run_id, {}))})
        fragments.append(frag)
        lines += ([f"run {run_id}:"] if len(runs) > 1 else []) + tl
    plugin.summary_fragment = "".join(fragments)
    write_standalone(out / "summary.html", plugin.summary_fragment, "pytest-steer summary")
    lines.append(f"report: {out}")
    if g["save_baseline"]:
        from .baselines import save_baseline

        path = save_baseline(g["save_baseline"], settings, rows, meta)
        lines.append(f"saved baseline: {path}")
    plugin.terminal_lines = lines


def _spec_meta(settings: dict[str, Any]) -> dict[str, str]:
    keys = ("seed", "batch_size", "alphas", "trials", "layers", "scale_position", "max_new_tokens", "temperature",
            "top_p", "top_k", "quality", "dataset", "per_type")
    return {k: str(settings[k]) for k in keys if k in settings}
