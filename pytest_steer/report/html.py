"""HTML for the steering report: one self-contained fragment for pytest-html's summary section,
and a standalone page for runs without pytest-html.

pytest-html inserts summary fragments unescaped, and responses are model output, so every value
taken from data (responses, prompts, keys, tags, flags, config and metric names, reasons, metadata)
goes through `html.escape` here.
"""

from __future__ import annotations

import base64
import html
import math
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from pytest_steer.analysis import MatchedDose, Recommendation
from pytest_steer.reduce import SCOPE
from pytest_steer.results import BASELINE, write_atomically
from pytest_steer.scores import QUALITY_ROLE, Metric

#: a change against the baseline is "significant" below this p-value (two-sided)
SIGNIFICANCE = 0.05

_CSS = """
.steer-report { font-size: 13px; }
.steer-report table { border-collapse: collapse; margin: 6px 0 14px; }
.steer-report th, .steer-report td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }
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
.steer-report td.good { background: #e3f5e3; }
.steer-report td.bad { background: #fbe3e3; }
.steer-report td.changed { background: #fdf6d8; }
.steer-report .flag { display: inline-block; background: #b22; color: #fff; border-radius: 3px;
  padding: 0 5px; margin: 1px 2px; font-size: 11px; }
.steer-report small.diff { color: #555; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: object, spec: str = ".3g") -> str:
    """A number for a table cell (missing as a dash); anything else escaped."""
    if _missing(value):
        return "–"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(int(value), spec) if spec.endswith("d") else format(float(value), spec)
    return _e(value)


def _value(value: object) -> str:
    """A config's parameter value, unescaped: a number as %g, a variant name as is."""
    if _missing(value):
        return "–"
    return format(float(value), "g") if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _figures_html(figures: Mapping[str, Path]) -> str:
    parts = [f'<figure><img src="{_data_uri(path)}" alt="{_e(name)}"><figcaption>{_e(name)}</figcaption></figure>'
             for name, path in figures.items()]
    return "<h3>Figures</h3>" + "".join(parts) if parts else ""


def _interval_cell(row: Mapping[str, object], name: str) -> str:
    """"estimate [low, high]" and, for steered configs, the paired difference with its p-value."""
    text = _num(row.get(name))
    low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
    if not _missing(low) and not _missing(high):
        text += f" [{_num(low)}, {_num(high)}]"
    diff = row.get(f"{name}_diff")
    if not _missing(diff):
        text += (f'<br><small class="diff">Δ {_num(diff, "+.3g")}, p={_num(row.get(f"{name}_p"), ".2g")}, '
                 f'Holm p={_num(row.get(f"{name}_p_holm"), ".2g")}</small>')
    return f'<td class="num">{text}</td>'


def _summary_table(summary: pd.DataFrame, metrics: Sequence[Metric], rec: Recommendation | None,
                   confidence: float) -> str:
    main = [m for m in metrics if not m.side_effect and m.name in summary.columns]
    head = ["config", "method", "value", "rows", "trials", *(m.title for m in main), "Pareto"]
    body = []
    for row in summary.to_dict("records"):
        config = str(row["config"])
        cells = [f"<td>{_e(config)}</td>", f"<td>{_e(row['method'])}</td>",
                 f'<td class="num">{_e(_value(row["value"]))}</td>', f'<td class="num">{_num(row["n"], "d")}</td>',
                 f'<td class="num">{_num(row["trials"], "d")}</td>']
        cells += [_interval_cell(row, m.name) for m in main]
        cells.append(f"<td>{'★' if rec is not None and config in rec.pareto else ''}</td>")
        cls = ' class="recommended"' if rec is not None and config == rec.config else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    header = "".join(f"<th>{_e(h)}</th>" for h in head)
    return (f"<h3>Per-config summary</h3><p>Estimate [{confidence:.0%} interval]; Δ: paired difference against "
            "the baseline with its two-sided p-value (sign-flip test over cases), unadjusted and adjusted by Holm "
            f"over the steered configs; ★ marks the Pareto set. Scope: {_e(SCOPE)}.</p>"
            f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def verdict(metric: Metric, diff: float, p: float) -> str:
    """"better", "worse", "changed" (a metric without a good direction) or "" (no significant change)."""
    if _missing(diff) or _missing(p) or p >= SIGNIFICANCE or diff == 0:
        return ""
    if metric.direction == 0:
        return "changed"
    return "better" if diff * metric.direction > 0 else "worse"


def _side_effects_html(summary: pd.DataFrame, metrics: Sequence[Metric], baseline: str) -> str:
    side = [m for m in metrics if m.side_effect and m.name in summary.columns]
    steered = summary[summary["config"] != baseline]
    if not side or steered.empty or not (summary["config"] == baseline).any():
        return ""
    base = summary[summary["config"] == baseline].iloc[0]
    parts = [f"<h3>Side effects</h3><p>Each side-effect metric against the baseline, paired on (case, trial); "
             f"changes with Holm-adjusted p &lt; {SIGNIFICANCE:g} are highlighted (Holm over the whole table, every "
             "steered config x every side effect, so that under no change any flag at all is raised at most "
             f"{SIGNIFICANCE:.0%} of the time): green in "
             "the metric's good direction, red in its "
             "bad one, yellow for metrics without a good direction.</p>"]
    headline = next((m for m in metrics if m.role == QUALITY_ROLE and m.description), None)
    if headline is not None:  # what the headline judges, and what it cannot
        parts.append(f"<p>Headline {_e(headline.title)}: {_e(headline.description)}.</p>")
    cls = {"better": "good", "worse": "bad", "changed": "changed"}
    for row in steered.to_dict("records"):
        lines = []
        for m in side:
            diff, p = row.get(f"{m.name}_diff"), row.get(f"{m.name}_p_holm", row.get(f"{m.name}_p"))
            v = verdict(m, diff, p)
            low, high = _num(row.get(f"{m.name}_diff_low"), "+.3g"), _num(row.get(f"{m.name}_diff_high"), "+.3g")
            good = {1: "higher", -1: "lower"}.get(m.direction, "neither")
            lines.append(
                f"<tr><td>{_e(m.title)}</td><td>{_e(good)}</td><td class=\"num\">{_num(base.get(m.name))}</td>"
                f'<td class="num">{_num(row.get(m.name))}</td>'
                f'<td class="num {cls.get(v, "")}">{_num(diff, "+.3g")} [{low}, {high}]</td>'
                f'<td class="num">{_num(p, ".2g")}</td>'
                f'<td class="{cls.get(v, "")}">{_e(v or "no significant change")}</td></tr>')
        parts.append(
            f"<h4>{_e(row['config'])}</h4><table><thead><tr><th>metric</th><th>better</th><th>{_e(baseline)}</th>"
            f"<th>{_e(row['config'])}</th><th>Δ [interval]</th><th>Holm p</th><th>change</th></tr></thead>"
            f"<tbody>{''.join(lines)}</tbody></table>")
    return "".join(parts)


def _recommendation_html(rec: Recommendation) -> str:
    what = "unsteered" if rec.config == BASELINE else f"{rec.method} at {_value(rec.value)}"
    over = "".join(f"<tr><td>{_e(c)}</td><td>{_e('; '.join(why))}</td></tr>" for c, why in rec.over_budget.items())
    unchecked = (f"<p>Not checked (no values): {_e(', '.join(rec.unchecked))}</p>" if rec.unchecked else "")
    return (
        '<div class="recommendation">'
        f"<p>Recommended config: <b>{_e(rec.config)}</b> ({_e(what)}), {_e(rec.primary)} "
        f"{_num(rec.primary_value)} (baseline {_num(rec.baseline_value)}).</p>"
        f"<p>Budgets against the baseline: {_e(rec.budget_text())}.</p>"
        f"<p>{_e(rec.reason)}</p>{unchecked}"
        f"<p>How it was chosen: {_e(rec.selection)}. p-values against the baseline are adjusted for the number "
        "of steered configs by Holm's method where they decide (side-effect verdicts); the summary table shows "
        "them unadjusted.</p>"
        + (f"<details><summary>Configs over budget ({len(rec.over_budget)})</summary><table>"
           f"<thead><tr><th>config</th><th>over budget</th></tr></thead><tbody>{over}</tbody></table></details>"
           if rec.over_budget else "")
        + f"<p>Pareto set: {_e(', '.join(rec.pareto) or 'none')}</p></div>"
    )


def _matched_html(matched: MatchedDose, metrics: Sequence[Metric]) -> str:
    """The "methods at matched dose" table: per method the config nearest the common dose, with intervals."""
    t = matched.table
    names = [c for c in t.columns if f"{c}_low" in t.columns and c != "dose"]
    titles = {m.name: m.title for m in metrics}
    head = "".join(f"<th>{_e(titles.get(n, n))} [95% CI]</th>" for n in names)

    def cell(r: Mapping[str, object], n: str) -> str:
        diff = r.get(f"{n}_diff")
        change = "" if _missing(diff) else (f" ({_num(diff, '+.3f')} [{_num(r.get(f'{n}_diff_low'), '+.3f')}, "
                                            f"{_num(r.get(f'{n}_diff_high'), '+.3f')}])")
        return f"<td>{_num(r.get(n))} [{_num(r.get(f'{n}_low'))}, {_num(r.get(f'{n}_high'))}]{change}</td>"

    body = "".join(
        f"<tr><td>{_e(r['method'])}</td><td>{_e(r['config'])}</td>"
        f"<td>{_num(r['dose'])} [{_num(r.get('dose_low'))}, {_num(r.get('dose_high'))}]</td>"
        f"<td>{'yes' if r['matched'] else _e(format(float(str(r['ratio'])), '.1f') + 'x away')}</td>"
        + "".join(cell(r, n) for n in names) + "</tr>"
        for r in t.to_dict("records"))
    return (f'<div class="matched-dose"><h3>Methods at matched dose</h3><p>{_e(matched.text)}. Each method\'s '
            f"config nearest a common dose of {_num(matched.reference)} nats/token (mean per-token KL from the "
            f"unsteered model); matched = within {matched.tolerance:g}x of it; in brackets, the change from "
            "the baseline.</p><table><thead><tr><th>method</th><th>config</th><th>dose [95% CI]</th>"
            f"<th>matched</th>{head}</tr></thead><tbody>{body}</tbody></table></div>")


def _flags(flags: object) -> str:
    items = list(flags) if isinstance(flags, (list, tuple)) else []
    return "".join(f'<span class="flag">{_e(f)}</span>' for f in items)


def _examples_table(fb: pd.DataFrame, max_examples: int) -> str:
    config = fb["config"].iloc[0]
    counts = fb["change"].value_counts()
    deltas = [c for c in fb.columns if c.endswith("_delta")]
    shown_metrics = [c.removesuffix("_delta") for c in deltas]
    order = fb[deltas[0]].abs().sort_values(ascending=False, kind="stable").index if deltas else fb.index
    shown = fb.loc[order].head(max_examples)
    omitted = len(fb) - len(shown)
    rows = []
    def scores(r: Mapping[str, object], side: str) -> str:
        return ", ".join(f"{_e(m)} {_num(r.get(f'{side}_{m}'))}" for m in shown_metrics)

    for r in shown.to_dict("records"):

        tags = ", ".join(map(str, r.get("tags") or []))
        rows.append(
            "<tr>"
            f'<td><span class="{_e(r["change"])}">{_e(r["change"])}</span></td>'
            f"<td>{_e(r['key'])}<br>trial {_e(r['trial'])}<br><small>{_e(tags)}</small>"
            f"<details><summary>prompt</summary><pre>{_e(r['prompt'])}</pre></details></td>"
            + "".join(f'<td class="num">{_num(r[d], "+.3g")}</td>' for d in deltas)
            + f'<td class="response">{_flags(r.get("baseline_flags"))}<pre>{_e(r["baseline_response"])}</pre>'
            f"<small>{scores(r, 'baseline')}</small></td>"
            f'<td class="response">{_flags(r.get("steered_flags"))}<pre>{_e(r["steered_response"])}</pre>'
            f"<small>{scores(r, 'steered')}</small></td>"
            "</tr>")
    note = f" {omitted} more omitted." if omitted else ""
    order_note = f", largest |Δ {_e(shown_metrics[0])}| first" if deltas else ""
    head = "".join(f"<th>Δ {_e(m)}</th>" for m in shown_metrics)
    return (
        f"<h4>{_e(config)} vs baseline</h4>"
        f"<p>{counts.get('fixed', 0)} fixed, {counts.get('broken', 0)} broken; "
        f"showing {len(shown)}{order_note}.{note}</p>"
        f"<table><thead><tr><th>change</th><th>case</th>{head}<th>baseline response</th>"
        f"<th>{_e(config)} response</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _examples_html(examples: Mapping[str, pd.DataFrame], max_examples: int) -> str:
    """Per method, the paired cases its shown config fixed and broke, with degeneration flags as badges."""
    if not examples:
        return ""
    parts = ["<h3>Fixed and broken cases</h3>"]
    for method, fb in examples.items():
        if fb.empty:
            parts.append(f"<h4>{_e(method)}</h4><p>No case changed between the baseline and this method's config.</p>")
        else:
            parts.append(_examples_table(fb, max_examples))
    return "".join(parts)


def _meta_html(meta: Mapping[str, str]) -> str:
    if not meta:
        return ""
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in meta.items())
    return f"<h3>Run details</h3><table>{rows}</table>"


def summary_html(summary: pd.DataFrame, metrics: Sequence[Metric], *, recommendation: Recommendation | None,
                 figures: Mapping[str, Path], examples: Mapping[str, pd.DataFrame], meta: Mapping[str, str],
                 title: str = "Steering evaluation", confidence: float = 0.95, max_examples: int = 10,
                 baseline: str = BASELINE, power: str | None = None, matched: MatchedDose | None = None) -> str:
    """The whole steering report of one run as an HTML fragment; figures are inlined as data URIs so
    the report stays a single shareable file. `examples` maps a method to its `fixed_and_broken` table;
    `matched` compares the methods at one common dose (`analysis.matched_dose`)."""
    return (
        f'<div class="steer-report"><style>{_CSS}</style><h2>{_e(title)}</h2>'
        + (_recommendation_html(recommendation) if recommendation is not None else "")
        + (f'<p class="power">{_e(power)}</p>' if power else "")
        + (_matched_html(matched, metrics) if matched is not None else "")
        + _summary_table(summary, metrics, recommendation, confidence)
        + _side_effects_html(summary, metrics, baseline)
        + _figures_html(figures)
        + _examples_html(examples, max_examples)
        + _meta_html(meta)
        + "</div>"
    )


def write_standalone(path: Path, fragment: str, title: str) -> Path:
    """Wrap `fragment` in a full page and write it, for runs without pytest-html."""
    return write_atomically(Path(path), "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                            f"<title>{_e(title)}</title></head><body>{fragment}</body></html>\n")
