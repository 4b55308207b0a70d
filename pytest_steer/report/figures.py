"""PNG figures for the steering report, drawn from the tables of `pytest_steer.reduce`.

Figures are built on `matplotlib.figure.Figure` directly, never pyplot: no global backend switch,
no global figure registry, so this works headless, under xdist and from threads. Axis labels and
titles come from the `Metric` declarations.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pytest_steer.analysis import pareto_front
from pytest_steer.reduce import by_tag, config_order, tag_deltas
from pytest_steer.report.html import SIGNIFICANCE
from pytest_steer.results import BASELINE, write_atomically
from pytest_steer.scores import Metric

_DPI = 110
_BASE_STYLE: dict[str, Any] = {"color": "black", "marker": "*", "markersize": 14, "zorder": 5}


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return write_atomically(out_dir / name, buf.getvalue())


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _axis_label(metric: Metric) -> str:
    better = {1: " (higher is better)", -1: " (lower is better)"}.get(metric.direction, "")
    return metric.title + better


def _yerr(rows: pd.DataFrame, name: str) -> np.ndarray | None:
    """Asymmetric error bars from the summary's interval columns; None when there are none."""
    if f"{name}_low" not in rows or rows[f"{name}_low"].isna().all():
        return None
    est = rows[name].to_numpy(float)
    low = np.nan_to_num(est - rows[f"{name}_low"].to_numpy(float))
    high = np.nan_to_num(rows[f"{name}_high"].to_numpy(float) - est)
    return np.vstack([np.maximum(low, 0), np.maximum(high, 0)])


# Label positions tried in turn, in points from the data point: (dx, dy, horizontal alignment).
_LABEL_OFFSETS = [
    (5, 4, "left"), (5, -14, "left"), (-5, 4, "right"), (-5, -14, "right"),
    (5, 16, "left"), (5, -26, "left"),
]
_LABEL_FONTSIZE = 8
_Box = tuple[float, float, float, float]


def _label_box(px: float, py: float, label: str, offset: tuple, scale: float) -> _Box:
    """Approximate pixel extent of `label` placed at `offset` from the point (px, py)."""
    dx, dy, ha = offset
    w, h = _LABEL_FONTSIZE * 0.62 * len(label) * scale, _LABEL_FONTSIZE * 1.25 * scale
    x0 = px + dx * scale - (w if ha == "right" else 0)
    return x0, py + dy * scale, x0 + w, py + dy * scale + h


def _overlaps(a: _Box, b: _Box) -> bool:
    return not (a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1])


def _annotate(ax: Axes, xs: np.ndarray, ys: np.ndarray, labels: list[str]) -> None:
    """Label points, trying a few offsets so labels of nearby configs do not print over each
    other (text extents estimated from the font size; good enough for a handful of configs)."""
    ax.autoscale_view()  # settle the limits so data -> pixel positions are meaningful
    scale = ax.figure.dpi / 72
    placed: list[_Box] = []
    for x, y, label in zip(xs, ys, labels, strict=True):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        px, py = ax.transData.transform((x, y))
        offset = next(
            (o for o in _LABEL_OFFSETS if not any(_overlaps(_label_box(px, py, label, o, scale), p) for p in placed)),
            _LABEL_OFFSETS[0],
        )
        placed.append(_label_box(px, py, label, offset, scale))
        ax.annotate(label, (x, y), xytext=offset[:2], textcoords="offset points",
                    fontsize=_LABEL_FONTSIZE, ha=offset[2], va="bottom")


def _legend_below(ax: Axes) -> None:
    """Legends under the axes never cover data, whatever shape the curves take."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)


def _value_text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return "" if value is None else str(value)


def tradeoff_figure(summary: pd.DataFrame, metrics: Sequence[Metric], out_dir: Path, *, primary: str,
                    quality: str = "quality", baseline: str = BASELINE) -> Path:
    """`tradeoff.png`: the primary metric and the quality against steering strength, one curve per
    method with its interval as error bars, the baseline as a level with its interval shaded. What
    steering buys and what it costs, side by side."""
    by_name = {m.name: m for m in metrics}
    shown = [by_name[n] for n in dict.fromkeys((primary, quality)) if n in by_name and n in summary]
    if not shown:
        raise ValueError(f"tradeoff_figure needs {primary!r} or {quality!r} in the summary")
    steered = summary[summary["config"] != baseline]
    base = summary[summary["config"] == baseline]
    fig = Figure(figsize=(6.5 * len(shown), 5.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    for ax, metric in zip(axes, shown, strict=True):
        for i, (method, rows) in enumerate(steered.groupby("method", sort=False)):
            rows = rows.sort_values("strength", kind="stable")
            ax.errorbar(rows["strength"], rows[metric.name], yerr=_yerr(rows, metric.name), color=f"C{i}",
                        marker="o", capsize=3, label=str(method))
            _annotate(ax, rows["strength"].to_numpy(float), rows[metric.name].to_numpy(float),
                      [_value_text(v) for v in rows["value"]])
        if len(base) and math.isfinite(float(base[metric.name].iloc[0])):
            b = base.iloc[0]
            ax.axhline(b[metric.name], color="black", linestyle="--", linewidth=1.4, label=baseline)
            low, high = b.get(f"{metric.name}_low", math.nan), b.get(f"{metric.name}_high", math.nan)
            if np.isfinite(low) and np.isfinite(high):
                ax.axhspan(low, high, color="black", alpha=0.08, linewidth=0)
        if steered.empty:
            ax.text(0.5, 0.92, "no steered configs", transform=ax.transAxes, ha="center", color="gray")
        ax.set_xlabel("steering strength (each method on its own scale)")
        ax.set_ylabel(_axis_label(metric))
        ax.set_title(f"{metric.title} vs strength")
        _legend_below(ax)
    return _save(fig, out_dir, "tradeoff.png")


def dose_figure(summary: pd.DataFrame, metrics: Sequence[Metric], out_dir: Path, *, primary: str,
                quality: str = "quality", dose: str = "dose", baseline: str = BASELINE) -> Path:
    """`dose.png`: the primary metric and the quality against the dose (mean per-token KL from the
    unsteered model, `pytest_steer.dose`), every method on the one axis, with both intervals: which
    method buys more at the same amount of change to the model. `dose="off_target_dose"` draws
    `off-target-dose.png`, the same against the KL on neutral text."""
    by_name = {m.name: m for m in metrics}
    shown = [by_name[n] for n in dict.fromkeys((primary, quality)) if n in by_name and n in summary]
    if not shown or dose not in summary or summary[dose].isna().all():
        raise ValueError(f"dose_figure needs {dose!r} and {primary!r} or {quality!r} in the summary")
    s = summary.set_index("config").loc[config_order(summary, baseline)].reset_index()
    fig = Figure(figsize=(6.5 * len(shown), 5.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    for ax, metric in zip(axes, shown, strict=True):
        for i, (method, rows) in enumerate(s[s["config"] != baseline].groupby("method", sort=False)):
            rows = rows.sort_values(dose, kind="stable")
            ax.errorbar(rows[dose], rows[metric.name], xerr=_yerr(rows, dose), yerr=_yerr(rows, metric.name),
                        color=f"C{i}", marker="o", capsize=3, label=str(method))
            _annotate(ax, rows[dose].to_numpy(float), rows[metric.name].to_numpy(float),
                      [_value_text(v) for v in rows["value"]])
        if (s["config"] == baseline).any():
            b = s[s["config"] == baseline].iloc[0]
            ax.errorbar([0.0], [b[metric.name]], yerr=_yerr(s[s["config"] == baseline], metric.name),
                        linestyle="none", capsize=3, label=baseline, **_BASE_STYLE)
        ax.set_xlabel(_axis_label(by_name.get(dose, Metric(dose))))
        ax.set_ylabel(_axis_label(metric))
        ax.set_title(f"{metric.title} vs dose")
        _legend_below(ax)
    return _save(fig, out_dir, "dose.png" if dose == "dose" else f"{dose.replace('_', '-')}.png")


def pareto_figure(summary: pd.DataFrame, metrics: Sequence[Metric], out_dir: Path, *, x: str,
                  y: str = "quality", baseline: str = BASELINE) -> Path:
    """`pareto.png`: every config on `x` vs `y` with both intervals, coloured by method, the Pareto
    frontier joined by a line: configs off the line are beaten on both axes by another config."""
    by_name = {m.name: m for m in metrics}
    mx, my = by_name.get(x, Metric(x)), by_name.get(y, Metric(y))
    front = pareto_front(summary, x, y, metrics=metrics)
    s = summary.set_index("config").loc[config_order(summary, baseline)].reset_index()
    fig = Figure(figsize=(7.5, 5.6), layout="constrained")
    ax = fig.subplots()
    for i, (method, rows) in enumerate(s[s["config"] != baseline].groupby("method", sort=False)):
        ax.errorbar(rows[x], rows[y], xerr=_yerr(rows, x), yerr=_yerr(rows, y), linestyle="none", marker="o",
                    color=f"C{i}", ecolor="0.8", capsize=2, label=str(method))
    if front:
        f = s.set_index("config").loc[front].sort_values(x)
        ax.plot(f[x], f[y], color="C3", linewidth=1.2, alpha=0.7, label="Pareto frontier")
    if (s["config"] == baseline).any():
        b = s[s["config"] == baseline].iloc[0]
        ax.plot(b[x], b[y], linestyle="none", label=baseline, **_BASE_STYLE)
    ax.margins(0.15)
    _annotate(ax, s[x].to_numpy(float), s[y].to_numpy(float), [str(c) for c in s["config"]])
    ax.set_xlabel(_axis_label(mx))
    ax.set_ylabel(_axis_label(my))
    ax.set_title(f"{mx.title} vs {my.title}")
    _legend_below(ax)
    return _save(fig, out_dir, "pareto.png")


def _heatmap(ax: Axes, grid: pd.DataFrame, norm: Normalize, cmap: str, title: str, spec: str) -> None:
    """One annotated heatmap, text colour chosen against the cell colour so values stay legible."""
    values = grid.to_numpy(float)
    image = ax.imshow(values, aspect="auto", cmap=cmap, norm=norm)
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns], rotation=45, ha="right")
    ax.set_yticks(range(grid.shape[0]), [str(t) for t in grid.index])
    colormap = image.get_cmap()
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            r, g, b, _ = colormap(norm(v))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, format(v, spec), ha="center", va="center", fontsize=7, color=color)
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def _norm(metric: Metric, values: np.ndarray) -> Normalize:
    if metric.kind == "binary" or metric.per_tag:
        return Normalize(0.0, 1.0)
    finite = values[np.isfinite(values)]
    if not finite.size or finite.min() == finite.max():
        centre = float(finite[0]) if finite.size else 0.0
        return Normalize(centre - 1, centre + 1)
    return Normalize(float(finite.min()), float(finite.max()))


def tag_heatmaps(frame: pd.DataFrame, metrics: Sequence[Metric], out_dir: Path, *,
                 baseline: str = BASELINE) -> Path:
    """`heatmap_tags.png`: each metric per tag (IFEval: instruction type) and config, one panel per
    metric, to see which tags steering helps and where it hurts. Colours run bad to good whatever
    the metric's direction (reversed for lower-is-better metrics)."""
    tables = [(m, by_tag(frame, m, baseline)) for m in metrics]
    tables = [(m, t) for m, t in tables if not t.empty]
    if not tables:
        raise ValueError("tag_heatmaps needs rows with tags")
    n_tags, n_configs = tables[0][1].shape
    label_width = 0.07 * max(len(str(t)) for _, t in tables for t in t.index)
    width = len(tables) * (0.75 * n_configs + 1.6) + label_width
    fig = Figure(figsize=(max(width, 7.0), 2.2 + 0.32 * n_tags), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tables), sharey=True))
    for i, (ax, (metric, table)) in enumerate(zip(axes, tables, strict=True)):
        cmap = "viridis_r" if metric.direction == -1 else "viridis"
        spec = ".2f" if metric.kind == "binary" or metric.per_tag else ".3g"
        _heatmap(ax, table, _norm(metric, table.to_numpy(float)), cmap, _axis_label(metric), spec)
        if i:
            ax.tick_params(axis="y", labelleft=False)
    return _save(fig, out_dir, "heatmap_tags.png")


def tag_delta_bars(frame: pd.DataFrame, config: str, metrics: Sequence[Metric], out_dir: Path, *,
                   baseline: str = BASELINE) -> Path:
    """`delta_by_tag_<config>.png`: per tag, each metric's change from the baseline at `config` with its
    paired case-bootstrap interval and the number of cases per tag (`reduce.tag_deltas`). Only changes
    significant after Holm over the tags are coloured (green: the metric's good direction, red: its bad
    one); the rest are grey, since a tag has only a few cases and most bars are noise."""
    configs = set(frame["config"])
    if baseline not in configs or config not in configs:
        raise ValueError(f"tag_delta_bars needs both {baseline!r} and {config!r} in the table")
    deltas = []
    for m in metrics:
        t = tag_deltas(frame, config, m, baseline=baseline)
        if not t.empty:
            deltas.append((m, t))
    if not deltas:
        raise ValueError("tag_delta_bars needs rows with tags")
    first = deltas[0][1]
    order = first["diff"].sort_values(kind="stable").index
    n = len(order)
    labels = [f"{t} (n={int(first.at[t, 'n'])})" for t in order]
    label_width = 0.07 * max((len(x) for x in labels), default=10)
    fig = Figure(figsize=(4.5 * len(deltas) + label_width, 1.8 + 0.3 * max(n, 1)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(deltas), sharey=True))
    ys = np.arange(n)
    for i, (ax, (metric, table)) in enumerate(zip(axes, deltas, strict=True)):
        t = table.reindex(order)
        v = t["diff"].fillna(0.0).to_numpy(float)
        err = np.vstack([v - t["low"].fillna(0.0).to_numpy(float), t["high"].fillna(0.0).to_numpy(float) - v])
        significant = (t["p_holm"] < SIGNIFICANCE).to_numpy()
        good = v * (metric.direction or 1) >= 0
        colours = np.where(~significant, "tab:gray", np.where(good, "tab:green", "tab:red") if metric.direction
                           else "tab:olive")
        ax.barh(ys, v, color=colours, xerr=np.maximum(err, 0.0), error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(f"Δ {metric.title}")
        if i == 0:
            ax.set_yticks(ys, labels)
        else:
            ax.tick_params(axis="y", labelleft=False)
    fig.text(0.01, 0.005, f"bars: paired change, 95% case-bootstrap interval; coloured only when Holm p over the "
             f"tags < {SIGNIFICANCE:g}", fontsize=7)
    fig.suptitle(f"{config} minus {baseline}, by tag")
    return _save(fig, out_dir, f"delta_by_tag_{_file_safe(config)}.png")
