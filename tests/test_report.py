"""Report figures and HTML on synthetic results, including degenerate runs."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest

from pytest_steer.analysis import (
    config_summary,
    fixed_and_broken,
    recommend_alpha,
    trial_metrics,
    type_metrics,
)
from pytest_steer.report.figures import (
    pareto_figure,
    tradeoff_figure,
    type_delta_bars,
    type_heatmaps,
)
from pytest_steer.report.html import summary_html, write_standalone
from pytest_steer.results import ResultRow, config_label, steering_strength, to_frame

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert(1)</script>"
TYPES = ["punctuation:no_comma", "change_case:english_lowercase", "detectable_format:json_format"]


def make_results(
    alphas: list[float | None],
    *,
    n_trials: int = 2,
    n_keys: int = 6,
    types: list[str] = TYPES,
    quality_name: str = "fluency",
    response: str = "ok",
) -> pd.DataFrame:
    """Rows where steering changes which examples are followed (strong steering follows more)
    and quality falls with strength; deterministic."""
    rows = []
    for k in range(n_keys):
        ids = [types[k % len(types)]]
        for alpha in alphas:
            s = steering_strength(alpha)
            for trial in range(n_trials):
                follow = (k + trial + round(2 * s)) % 3 != 0 or (s > 2 and k % 2 == 0)
                rows.append(
                    ResultRow(
                        key=f"k{k}",
                        instruction_id_list=ids,
                        config=config_label(alpha),
                        alpha=alpha,
                        trial=trial,
                        seed=trial,
                        prompt=f"prompt {k} <b>bold</b>",
                        response=f"{response} {k}/{trial}",
                        n_tokens=5,
                        finish_reason="stop",
                        follow_all=follow,
                        follow_list=[follow],
                        loose_follow_all=follow,
                        loose_follow_list=[follow],
                        quality=-1.0 - 0.2 * s - 0.05 * ((k + trial) % 4),
                        quality_name=quality_name,
                    )
                )
    return to_frame(rows)


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE


CASES = {
    "full": dict(alphas=[None, 0.1, 2.0, 5.0, 10.0]),
    "one_trial": dict(alphas=[None, 2.0, 10.0], n_trials=1),
    "single_alpha_reward": dict(alphas=[None, 10.0], quality_name="reward:OpenAssistant/rm"),
    "single_type": dict(alphas=[None, 2.0, 10.0], types=["punctuation:no_comma"]),
    "only_baseline": dict(alphas=[None]),
}


@pytest.mark.parametrize("case", CASES)
def test_figures_write_png(case: str, tmp_path: Path) -> None:
    df = make_results(**CASES[case])
    summary, types = config_summary(df), type_metrics(df)
    paths = [
        tradeoff_figure(trial_metrics(df), tmp_path),
        type_heatmaps(types, tmp_path),
        pareto_figure(summary, tmp_path),
    ]
    assert [p.name for p in paths] == ["tradeoff.png", "heatmap_types.png", "pareto.png"]
    strongest = summary["config"].iloc[-1]  # "baseline" when nothing else ran: all-zero deltas
    paths.append(type_delta_bars(types, strongest, tmp_path))
    assert paths[-1].name == f"delta_by_type_{strongest}.png"
    for p in paths:
        assert_png(p)


def test_delta_bars_need_both_configs(tmp_path: Path) -> None:
    types = type_metrics(make_results([None, 2.0]))
    with pytest.raises(ValueError, match="alpha7"):
        type_delta_bars(types, "alpha7", tmp_path)


@pytest.fixture
def report(tmp_path: Path) -> str:
    df = make_results([None, 2.0, 10.0], n_keys=30, response=SCRIPT)
    summary = config_summary(df)
    rec = recommend_alpha(summary, max_quality_drop=1.0)
    figures = {"pareto <fig>": pareto_figure(summary, tmp_path)}
    fb = fixed_and_broken(df, "alpha10")
    assert len(fb) > 5  # enough to exercise the omission note below
    meta = {"model": "tiny <model>", "scorer": "fluency", "seed": "0"}
    return summary_html(summary, rec, figures, fb, meta, max_examples=5)


def test_html_escapes_data(report: str) -> None:
    assert SCRIPT not in report
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert "<b>bold</b>" not in report and "&lt;b&gt;bold&lt;/b&gt;" in report
    assert "tiny &lt;model&gt;" in report and "pareto &lt;fig&gt;" in report
    assert "<script" not in report.lower()


def test_html_shows_recommendation_and_tables(report: str) -> None:
    assert re.search(r"Recommended config: <b>alpha\d+</b>", report)
    assert '<tr class="recommended"><td>alpha' in report
    assert "Run details" in report and "fluency (mean log-lik/token)" in report
    m = re.search(r"showing 5, largest \|Δ quality\| first\. (\d+) more omitted", report)
    assert m and int(m.group(1)) > 0
    assert report.count('class="response"') == 2 * 5  # both responses, side by side


def test_html_embeds_images_as_data_uris(report: str) -> None:
    m = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report)
    assert m and base64.b64decode(m.group(1))[:8] == PNG_SIGNATURE
    assert 'src="/' not in report and "file:" not in report


def test_html_with_baseline_recommended_and_no_examples(tmp_path: Path) -> None:
    df = make_results([None])
    summary = config_summary(df)
    rec = recommend_alpha(summary, max_quality_drop=0.1)
    html = summary_html(summary, rec, {}, pd.DataFrame(columns=["config", "change"]), {})
    assert "<b>baseline</b>" in html and "No example changed" in html


def test_write_standalone(tmp_path: Path) -> None:
    path = write_standalone(tmp_path / "out" / "report.html", "<p>body</p>", "Steer <run>")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<p>body</p>" in text
    assert "<title>Steer &lt;run&gt;</title>" in text and 'charset="utf-8"' in text


def test_html_merged_columns_are_paired_and_escaped() -> None:
    summary = config_summary(make_results([None, 2.0])).assign(
        quality_ci_low=[0.1, 0.2], quality_ci_high=[0.3, 0.4], note=["<i>x</i>", "ok"]
    )
    html = summary_html(summary, recommend_alpha(summary, max_quality_drop=1.0), {},
                        pd.DataFrame(columns=["config", "change"]), {})
    assert "<th>quality_ci [low, high]</th>" in html and "[0.100, 0.300]" in html
    assert "<i>x</i>" not in html and "&lt;i&gt;x&lt;/i&gt;" in html
