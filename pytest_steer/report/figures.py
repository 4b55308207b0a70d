"""PNG figures for the steering report, drawn from the tables in `pytest_steer.analysis`.

Figures are built on `matplotlib.figure.Figure` directly, never pyplot: no global backend switch,
no global figure registry, so this works headless, under xdist and from threads.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from pytest_steer.analysis import config_order, pareto_front, quality_label
from pytest_steer.results import BASELINE

_DPI = 110
_BASE_STYLE = {"color": "black", "marker": "*", "markersize": 14, "zorder": 5}


def _quality_name(frame: pd.DataFrame) -> str:
    if "quality_name" not in frame:
        return ""
    return " / ".join(sorted(set(frame["quality_name"].dropna().astype(str))))


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    fig.savefig(path, format="png", dpi=_DPI)
    return path


def _err(std: pd.Series) -> np.ndarray | None:
    """Error bar half-widths; None when no config has a spread (a single trial)."""
    return None if std.isna().all() else std.fillna(0.0).to_numpy(float)


def _alpha_axis(ax: Axes, alphas: np.ndarray) -> None:
    """Log-scaled alpha axis ticked at the alphas run: alpha and 1/alpha sit symmetric about
    the no-op alpha = 1, which a categorical axis ordered by strength would interleave."""
    ax.set_xscale("log")
    if len(alphas):
        ax.set_xlim(alphas.min() / 1.6, alphas.max() * 1.6)
        ax.set_xticks(alphas, [f"{a:g}" for a in alphas])
    else:
        ax.set_xlim(0.5, 2.0)
        ax.set_xticks([])
        ax.text(0.5, 0.92, "no steered configs", transform=ax.transAxes, ha="center",
                color="gray")
    ax.minorticks_off()
    ax.set_xlabel("alpha (log scale)")


def _baseline_line(
    ax: Axes, mean: float, std: float, color: str, label: str, dash: str | tuple = "--"
) -> None:
    """The baseline has no alpha: a dashed level across the alpha axis, shaded by its std."""
    ax.axhline(mean, color=color, linestyle=dash, linewidth=1.4, label=label)
    if np.isfinite(std):
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.12, linewidth=0)


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
    for x, y, label in zip(xs, ys, labels):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        px, py = ax.transData.transform((x, y))
        offset = next(
            (o for o in _LABEL_OFFSETS
             if not any(_overlaps(_label_box(px, py, label, o, scale), p) for p in placed)),
            _LABEL_OFFSETS[0],
        )
        placed.append(_label_box(px, py, label, offset, scale))
        ax.annotate(label, (x, y), xytext=offset[:2], textcoords="offset points",
                    fontsize=_LABEL_FONTSIZE, ha=offset[2], va="bottom")


def _legend_below(ax: Axes) -> None:
    """Legends under the axes never cover data, whatever shape the curves take."""
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
              frameon=False)


def _branches(alpha: pd.Series) -> list[list[str]]:
    """Steered configs as paths of increasing strength away from the no-op alpha = 1:
    alpha > 1 and alpha < 1 ("exclude" mode) steer in different ways, so are never joined."""
    up = sorted((c for c, a in alpha.items() if a >= 1), key=lambda c: alpha[c])
    down = sorted((c for c, a in alpha.items() if a < 1), key=lambda c: -alpha[c])
    return [b for b in (up, down) if b]


def tradeoff_figure(trials_df: pd.DataFrame, out_dir: Path) -> Path:
    """`tradeoff.png`: accuracy vs alpha, quality vs alpha, and quality vs accuracy — the three
    views of what steering buys and what it costs. Error bars are std over trials."""
    metrics = {
        "strict_prompt_accuracy": "prompt-level (strict)",
        "strict_instruction_accuracy": "instruction-level (strict)",
    }
    cols = [*metrics, "quality"]
    g = trials_df.groupby("config")
    mean, std = g[cols].mean(), g[cols].std(ddof=1)
    alpha = g["alpha"].first().dropna()
    branches = _branches(alpha)
    steered = [c for b in branches for c in b]
    xs = np.sort(alpha.to_numpy(float))
    has_base = BASELINE in mean.index
    qlabel = quality_label(_quality_name(trials_df))

    fig = Figure(figsize=(15, 5.2), layout="constrained")
    ax_acc, ax_q, ax_tr = fig.subplots(1, 3)

    def along_alpha(ax: Axes, m: str, color: str, label: str, marker: dict) -> None:
        for i, b in enumerate(branches):
            ax.errorbar(alpha[b], mean.loc[b, m], yerr=_err(std.loc[b, m]), color=color,
                        capsize=3, label=label if i == 0 else None, **marker)

    # Prompt- and instruction-level accuracy coincide when every prompt has one instruction:
    # a hollow square around a dot and dash styles that interleave keep both visible.
    styles = [
        ({"marker": "o"}, "--"),
        ({"marker": "s", "markersize": 9, "mfc": "none"}, (0, (2, 3))),
    ]
    for i, ((m, label), (marker, dash)) in enumerate(zip(metrics.items(), styles)):
        along_alpha(ax_acc, m, f"C{i}", label, marker)
        if has_base:
            _baseline_line(ax_acc, mean.loc[BASELINE, m], std.loc[BASELINE, m], f"C{i}",
                           f"{label}, baseline", dash)
    _alpha_axis(ax_acc, xs)
    ax_acc.set_ylabel("IFEval accuracy")
    ax_acc.set_title("Instruction following vs alpha")

    along_alpha(ax_q, "quality", "C2", "steered", {"marker": "o"})
    if has_base:
        _baseline_line(ax_q, mean.loc[BASELINE, "quality"], std.loc[BASELINE, "quality"],
                       "black", "baseline")
    _alpha_axis(ax_q, xs)
    ax_q.set_ylabel(qlabel)
    ax_q.set_title("Quality vs alpha")

    acc = "strict_prompt_accuracy"
    for b in branches:
        path = [BASELINE, *b] if has_base else b
        ax_tr.plot(mean.loc[path, acc], mean.loc[path, "quality"], color="0.75", zorder=1)
    sx, sy = mean.loc[steered, acc], mean.loc[steered, "quality"]
    if steered:
        ax_tr.errorbar(sx, sy, xerr=_err(std.loc[steered, acc]),
                       yerr=_err(std.loc[steered, "quality"]), color="C2", marker="o",
                       linestyle="none", capsize=3, label="steered")
    if has_base:
        ax_tr.plot(mean.loc[BASELINE, acc], mean.loc[BASELINE, "quality"], linestyle="none",
                   label="baseline", **_BASE_STYLE)
    ax_tr.margins(0.15)
    _annotate(ax_tr, sx.to_numpy(), sy.to_numpy(), steered)
    ax_tr.set_xlabel("prompt-level accuracy (strict)")
    ax_tr.set_ylabel(qlabel)
    ax_tr.set_title("Quality vs accuracy (grey: path by strength)")
    for ax in (ax_acc, ax_q, ax_tr):
        _legend_below(ax)
    return _save(fig, out_dir, "tradeoff.png")


def _heatmap(ax: Axes, grid: pd.DataFrame, norm: Normalize, cmap: str, title: str) -> None:
    """One annotated heatmap, text colour chosen against the cell colour so values stay legible."""
    values = grid.to_numpy(float)
    image = ax.imshow(values, aspect="auto", cmap=cmap, norm=norm)
    ax.set_xticks(range(grid.shape[1]), grid.columns, rotation=45, ha="right")
    ax.set_yticks(range(grid.shape[0]), grid.index)
    colormap = image.get_cmap()
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            r, g, b, _ = colormap(norm(v))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color=color)
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def type_heatmaps(type_df: pd.DataFrame, out_dir: Path) -> Path:
    """`heatmap_types.png`: follow rate and mean quality per instruction type x config, to see
    which instructions steering helps and where it hurts the text."""
    if type_df.empty:
        raise ValueError("type_heatmaps needs at least one instruction type")
    order = config_order(type_df)
    follow = type_df.pivot(index="instruction_type", columns="config", values="follow_rate")[order]
    quality = type_df.pivot(index="instruction_type", columns="config", values="quality")[order]
    n_types, n_configs = follow.shape
    label_width = 0.07 * max(len(str(t)) for t in follow.index)
    width = 2 * (0.75 * n_configs + 1.6) + label_width
    fig = Figure(figsize=(max(width, 7.0), 1.9 + 0.32 * n_types), layout="constrained")
    ax_f, ax_q = fig.subplots(1, 2, sharey=True)
    _heatmap(ax_f, follow, Normalize(0.0, 1.0), "viridis", "Follow rate (strict)")
    q = quality.to_numpy(float)
    q_norm = Normalize(np.nanmin(q), np.nanmax(q)) if np.isfinite(q).any() else Normalize(0, 1)
    _heatmap(ax_q, quality, q_norm, "cividis", f"Mean {quality_label(_quality_name(type_df))}")
    ax_q.tick_params(axis="y", labelleft=False)
    return _save(fig, out_dir, "heatmap_types.png")


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def type_delta_bars(type_df: pd.DataFrame, config: str, out_dir: Path) -> Path:
    """`delta_by_type_<config>.png`: per instruction type, the change in follow rate and quality
    from baseline at `config` — the per-type view behind one recommended alpha."""
    configs = set(type_df["config"])
    if BASELINE not in configs or config not in configs:
        raise ValueError(f"type_delta_bars needs both {BASELINE!r} and {config!r} in the table")
    t = type_df.set_index(["config", "instruction_type"])
    cols = ["follow_rate", "quality"]
    delta = (t.loc[config, cols] - t.loc[BASELINE, cols]).dropna(how="all").sort_values(cols[0])
    n = len(delta)
    label_width = 0.07 * max((len(str(i)) for i in delta.index), default=10)
    fig = Figure(figsize=(9.0 + label_width, 1.6 + 0.3 * max(n, 1)), layout="constrained")
    ax_f, ax_q = fig.subplots(1, 2, sharey=True)
    ys = np.arange(n)
    for ax, col, xlabel in (
        (ax_f, "follow_rate", "Δ follow rate (strict)"),
        (ax_q, "quality", f"Δ {quality_label(_quality_name(type_df))}"),
    ):
        v = delta[col].fillna(0.0).to_numpy(float)
        ax.barh(ys, v, color=np.where(v >= 0, "tab:green", "tab:red"))
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel(xlabel)
    ax_f.set_yticks(ys, delta.index)
    ax_q.tick_params(axis="y", labelleft=False)
    fig.suptitle(f"{config} minus baseline, by instruction type")
    return _save(fig, out_dir, f"delta_by_type_{_file_safe(config)}.png")


def pareto_figure(
    summary: pd.DataFrame, out_dir: Path, *, x: str = "strict_prompt_accuracy"
) -> Path:
    """`pareto.png`: every config on accuracy vs quality, the Pareto frontier joined by a line:
    configs off the line are beaten on both axes by some other config."""
    front = pareto_front(summary, x=x)
    s = summary.set_index("config").loc[config_order(summary)]
    fig = Figure(figsize=(7, 5.2), layout="constrained")
    ax = fig.subplots()
    xerr = _err(s[f"{x}_std"]) if f"{x}_std" in s else None
    yerr = _err(s["quality_std"]) if "quality_std" in s else None
    ax.errorbar(s[x], s["quality"], xerr=xerr, yerr=yerr, linestyle="none", marker="o",
                color="C0", ecolor="0.75", capsize=2, label="config")
    if front:
        f = s.loc[front].sort_values(x)
        ax.plot(f[x], f["quality"], color="C3", linewidth=1.5, marker="o",
                label="Pareto frontier")
    if BASELINE in s.index:
        ax.plot(s.loc[BASELINE, x], s.loc[BASELINE, "quality"], linestyle="none",
                label="baseline", **_BASE_STYLE)
    ax.margins(0.15)
    _annotate(ax, s[x].to_numpy(), s["quality"].to_numpy(), list(s.index))
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(quality_label(_quality_name(summary)))
    ax.set_title("Accuracy vs quality (up and right is better)")
    ax.legend(fontsize="small", loc="best")
    return _save(fig, out_dir, "pareto.png")
