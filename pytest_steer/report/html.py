"""HTML for the steering report: one self-contained fragment for pytest-html's summary section,
and a standalone page for runs without pytest-html.

pytest-html inserts summary fragments unescaped, and responses are model output, so every value
taken from data (text, keys, config names, metadata) goes through `html.escape` here.
"""

from __future__ import annotations

import base64
import html
import math
import mimetypes
from pathlib import Path

import pandas as pd

from pytest_steer.analysis import METRICS, Recommendation, quality_label

_CSS = """
.steer-report { font-size: 13px; }
.steer-report table { border-collapse: collapse; margin: 6px 0 14px; }
.steer-report th, .steer-report td { border: 1px solid #ccc; padding: 3px 6px;
  vertical-align: top; }
.steer-report th { background: #f0f0f0; }
.steer-report td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.steer-report tr.recommended td { background: #e6f4e6; font-weight: bold; }
.steer-report .recommendation { border-left: 4px solid #2a8a2a; padding: 4px 10px; margin: 8px 0; }
.steer-report img { max-width: 100%; border: 1px solid #ddd; margin: 4px 0; }
.steer-report pre { white-space: pre-wrap; word-break: break-word; max-height: 22em; overflow: auto;
  margin: 0; font-size: 12px; }
.steer-report td.response { width: 40%; }
.steer-report .fixed { color: #2a8a2a; font-weight: bold; }
.steer-report .broken { color: #b22; font-weight: bold; }
"""

_METRIC_LABELS = {
    "strict_prompt_accuracy": "strict prompt acc.",
    "strict_instruction_accuracy": "strict instruction acc.",
    "loose_prompt_accuracy": "loose prompt acc.",
    "loose_instruction_accuracy": "loose instruction acc.",
}
_LEADING = ["config", "alpha", "strength", "n_trials", "n_examples"]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(value: object, spec: str = ".3f") -> str:
    """A table cell's number (NaN, e.g. the baseline's alpha, as a dash); non-numbers escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return format(value, spec)
    return _e(value)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figures_html(figures: dict[str, Path]) -> str:
    parts = [
        f'<figure><img src="{_data_uri(path)}" alt="{_e(name)}">'
        f"<figcaption>{_e(name)}</figcaption></figure>"
        for name, path in figures.items()
    ]
    return "<h3>Figures</h3>" + "".join(parts) if parts else ""


def _extra_columns(columns: list[str]) -> list[tuple[str, list[str]]]:
    """Columns merged in by others (intervals, tests) as (header, source columns): a `x_low` /
    `x_high` pair becomes one "x [low, high]" column to keep the table narrow."""
    out = []
    for c in columns:
        if c.endswith("_high") and f"{c[:-5]}_low" in columns:
            continue
        if c.endswith("_low") and f"{c[:-4]}_high" in columns:
            out.append((f"{c[:-4]} [low, high]", [c, f"{c[:-4]}_high"]))
        else:
            out.append((c, [c]))
    return out


def _summary_table(summary: pd.DataFrame, rec: Recommendation) -> str:
    """Per-config table: each metric as mean ± std over trials, then any merged-in columns."""
    names = summary["quality_name"].dropna().astype(str) if "quality_name" in summary else []
    quality = quality_label(" / ".join(sorted(set(names))))
    metrics = [m for m in METRICS if m in summary]
    known = {*_LEADING, "quality_name", *metrics, *(f"{m}_std" for m in metrics)}
    extra = _extra_columns([c for c in summary.columns if c not in known])
    leading = [c for c in _LEADING if c in summary]
    header = [*leading, *(_METRIC_LABELS.get(m, quality) for m in metrics)]
    header += [*(h for h, _ in extra), "Pareto"]
    rows = []
    for row in summary.to_dict("records"):
        config = row["config"]
        cells = [f"<td>{_e(config)}</td>"]
        for c in leading[1:]:
            cells.append(f'<td class="num">{_num(row[c], "g" if c == "alpha" else ".3f")}</td>')
        for m in metrics:
            std = row.get(f"{m}_std")
            spread = "" if std is None or math.isnan(std) else f" ± {std:.3f}"
            cells.append(f'<td class="num">{_num(row[m])}{spread}</td>')
        for _, cols in extra:
            values = [_num(row[c]) for c in cols]
            text = values[0] if len(values) == 1 else f"[{values[0]}, {values[1]}]"
            cells.append(f'<td class="num">{text}</td>')
        cells.append(f"<td>{'★' if config in rec.pareto else ''}</td>")
        cls = ' class="recommended"' if config == rec.config else ""
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return (
        "<h3>Per-config summary</h3><p>Mean ± std over trials; ★ marks the Pareto set.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _recommendation_html(rec: Recommendation) -> str:
    alpha = "unsteered" if rec.alpha is None else f"alpha = {rec.alpha:g}"
    return (
        '<div class="recommendation">'
        f"<p>Recommended config: <b>{_e(rec.config)}</b> ({_e(alpha)}), "
        f"{_e(rec.metric)} {rec.value:.3f} (baseline {rec.baseline_value:.3f}), "
        f"quality drop {rec.quality_drop:.3f} (limit {rec.max_quality_drop:g}).</p>"
        f"<p>{_e(rec.reason)}</p>"
        f"<p>Pareto set ({_e(rec.metric)} vs quality): {_e(', '.join(rec.pareto) or 'none')}</p>"
        "</div>"
    )


def _examples_html(fixed_broken: pd.DataFrame, max_examples: int) -> str:
    """Paired examples, largest |quality delta| first: the ones where steering changed the most."""
    if fixed_broken.empty:
        return (
            "<h3>Fixed and broken examples</h3>"
            "<p>No example changed between baseline and the steered config.</p>"
        )
    config = fixed_broken["config"].iloc[0]
    counts = fixed_broken["change"].value_counts()
    order = fixed_broken["quality_delta"].abs().sort_values(ascending=False).index
    shown = fixed_broken.loc[order].head(max_examples)
    omitted = len(fixed_broken) - len(shown)
    note = f" {omitted} more omitted." if omitted else ""
    rows = []
    for r in shown.to_dict("records"):
        instructions = ", ".join(map(str, r["instruction_id_list"]))
        rows.append(
            "<tr>"
            f'<td><span class="{_e(r["change"])}">{_e(r["change"])}</span></td>'
            f"<td>{_e(r['key'])}<br>trial {_e(r['trial'])}<br><small>{_e(instructions)}</small>"
            f"<details><summary>prompt</summary><pre>{_e(r['prompt'])}</pre></details></td>"
            f'<td class="num">{_num(r["quality_delta"])}</td>'
            f'<td class="response"><pre>{_e(r["baseline_response"])}</pre>'
            f"<small>quality {_num(r['baseline_quality'])}</small></td>"
            f'<td class="response"><pre>{_e(r["steered_response"])}</pre>'
            f"<small>quality {_num(r['steered_quality'])}</small></td>"
            "</tr>"
        )
    return (
        f"<h3>Fixed and broken examples: {_e(config)} vs baseline</h3>"
        f"<p>{counts.get('fixed', 0)} fixed, {counts.get('broken', 0)} broken; "
        f"showing {len(shown)}, largest |Δ quality| first.{note}</p>"
        "<table><thead><tr><th>change</th><th>example</th><th>Δ quality</th>"
        f"<th>baseline response</th><th>{_e(config)} response</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _meta_html(meta: dict[str, str]) -> str:
    if not meta:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta.items())
    return f"<h3>Run details</h3><table>{rows}</table>"


def summary_html(
    summary_df: pd.DataFrame,
    recommendation: Recommendation,
    figures: dict[str, Path],
    fixed_broken: pd.DataFrame,
    meta: dict[str, str],
    *,
    max_examples: int = 20,
) -> str:
    """The whole steering report as one HTML fragment; figures are inlined as data URIs so the
    report stays a single shareable file."""
    return (
        f'<div class="steer-report"><style>{_CSS}</style><h2>Steering evaluation</h2>'
        + _recommendation_html(recommendation)
        + _summary_table(summary_df, recommendation)
        + _figures_html(figures)
        + _examples_html(fixed_broken, max_examples)
        + _meta_html(meta)
        + "</div>"
    )


def write_standalone(path: Path, fragment: str, title: str) -> Path:
    """Wrap `fragment` in a full page and write it, for runs without pytest-html."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title></head><body>{fragment}</body></html>\n",
        encoding="utf-8",
    )
    return path
