"""Session end: gather every process's rows and hand them to the report, losing nothing finished.

Kept apart from the pytest glue so that the plugin module stays free of heavy imports; it reads the
plugin's state by attribute and imports nothing from it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from .results import ResultRow
from .scores import Metric


def _budgets(settings: dict[str, Any]) -> dict[str, float]:
    """One budget per phenomenon. The offline headline already pays for repetition (its diversity factor),
    so a repetition budget would fail a looping config twice; a reward model or fluency may not see
    loops, so there the repetition rise keeps its own budget. Diversity counts the same repeated
    n-grams as rep-4 and carries none."""
    budgets = {"quality": settings["max_quality_drop"]}
    if settings.get("quality", "offline") != "offline":
        budgets["repetition"] = settings["max_repetition_rise"]
    return budgets


def worker_payload(plugin: Any) -> str:
    """What an xdist worker sends the controller: its rows, each run's settings and metrics, its run details."""
    run = plugin.run
    return json.dumps({
        "rows": [dataclasses.asdict(r) for r in run.all_rows()],
        "settings": {s.key(): run.comparable_settings(s) for s in plugin.specs},
        "metrics": {s.key(): [dataclasses.asdict(m) for m in run.metrics(s)] for s in plugin.specs},
        "meta": {**run.meta(), "_generated": run.generated_rows, "_cached": run.cached_rows,
                 "_scorer_failures": run.scorer_failures},
    }, allow_nan=True)


def _gather(plugin: Any) -> tuple[list[ResultRow], dict[str, dict[str, Any]], dict[str, list[Metric]], dict[str, str]]:
    rows: list[ResultRow] = []
    settings: dict[str, dict[str, Any]] = dict(plugin.worker_settings)
    metrics = {k: [Metric(**m) for m in ms] for k, ms in plugin.worker_metrics.items()}
    meta: dict[str, str] = {}
    run = plugin._run
    if run is not None and run.all_rows():
        rows += run.all_rows()
        for s in plugin.specs:
            settings[s.key()] = run.comparable_settings(s)
            metrics[s.key()] = run.metrics(s)
        meta = run.meta()
    rows += [ResultRow.from_dict(d) for d in plugin.worker_rows]
    if plugin.worker_meta:
        meta = {k: v for k, v in plugin.worker_meta[0].items() if not k.startswith("_")}
        gen = sum(m["_generated"] for m in plugin.worker_meta)
        cached = sum(m["_cached"] for m in plugin.worker_meta)
        total = gen + cached
        meta["cache hit rate"] = f"{cached / total:.0%} of {total} rows" if total else "n/a"
        meta["workers"] = str(len(plugin.worker_meta))
    unique: dict[tuple[str, str, str, int], ResultRow] = {}
    for r in rows:
        unique.setdefault((r.run, r.key, r.config, r.trial), r)
    return list(unique.values()), settings, metrics, meta


def finish_session(plugin: Any) -> None:
    """Write results, figures, HTML and the stored baseline; each step on its own (see reporting)."""
    from .reporting import RunInfo, report_run, save_stored_baseline

    rows, settings, metrics, meta = _gather(plugin)
    if not rows:
        return
    out: Path = plugin.report_dir
    runs = list(dict.fromkeys(r.run for r in rows))
    fragments, lines = [], []
    for run_id in runs:
        s = settings[run_id]  # every run that produced rows sent its settings
        info = RunInfo(meta={**meta, "run": run_id, "task": str(s["task"])}, primary=s["primary"], budgets=_budgets(s))
        sub = out if len(runs) == 1 else out / f"run-{run_id}"
        report = report_run([r for r in rows if r.run == run_id], metrics[run_id], sub, info)
        fragments.append(report.fragment)
        lines += ([f"run {run_id} ({s['task']}):"] if len(runs) > 1 else []) + report.terminal_lines
        lines += report.problems
    plugin.summary_fragment = "".join(fragments)
    if len(runs) > 1:  # each run's page is in its folder; the session's page has them all
        from .report.html import write_standalone

        try:
            write_standalone(out / "summary.html", plugin.summary_fragment, "pytest-steer summary")
            lines.append(f"report: {out}")
        except OSError as exc:
            lines.append(f"could not write the standalone report {out / 'summary.html'}: {exc}")
    g = plugin.global_settings
    if len(plugin.worker_meta) > 1 and not g["cache"]:
        lines.append("--steer-cache false: xdist workers cannot share generations, so a trial whose tests ran on "
                     "several workers was generated on each of them")
    if g["save_baseline"]:
        lines.append(save_stored_baseline(Path(g["save_baseline"]), settings, rows, metrics))
    run = plugin._run
    failures = [*(run.scorer_failures if run is not None else []),
                *(f for m in plugin.worker_meta for f in m.get("_scorer_failures", []))]
    if failures:
        lines.append(f"scorers failed on {len(failures)} row(s); those scores are missing (the rows' "
                     f"details.scorer_errors say why) and were not cached. First: {failures[0]}")
    if run is not None and run.cache is not None and (run.cache.stats.corrupt or run.cache.stats.unwritable):
        st = run.cache.stats
        lines.append(f"cache: {st.corrupt} corrupt record(s) found and regenerated, {st.unwritable} record(s) could "
                     f"not be written ({run.cache.root})")
    plugin.terminal_lines = lines

