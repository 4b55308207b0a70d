"""Report figures, HTML and the session-end report on synthetic sweeps, including degenerate runs."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from pytest_steer import reduce
from pytest_steer.analysis import fixed_and_broken, recommend
from pytest_steer.baselines import load_baseline
from pytest_steer.files import RUN_MANIFEST, write_atomically
from pytest_steer.methods.base import BASELINE_CONFIG, GridPoint
from pytest_steer.report.figures import pareto_figure, tag_delta_bars, tag_heatmaps, tradeoff_figure
from pytest_steer.report.html import summary_html, write_standalone
from pytest_steer.results import to_frame
from pytest_steer.scores import Metric
from pytest_steer.session.finish import (
    RunInfo,
    not_ours,
    remove_report,
    report_run,
    save_stored_baseline,
    terminal_table,
)

from .factories import ACTADD4, METRICS, PASTA5, PASTA10, QUALITY, STRICT_INSTR, sweep_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCRIPT = "<script>alert(1)</script>"
BUDGETS = {"quality": 0.1, "repetition": 0.1, "diversity": 0.1}
NAMES = [m.name for m in METRICS]


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE


CASES = {
    "two_methods": dict(),
    "one_config_one_trial_one_type": dict(configs=[BASELINE_CONFIG, PASTA10], n_trials=1,
                                          types=["punctuation:no_comma"]),
    "only_baseline": dict(configs=[BASELINE_CONFIG]),
}


@pytest.mark.parametrize("case", CASES)
def test_figures_write_png(case: str, tmp_path: Path) -> None:
    frame = to_frame(sweep_rows(**CASES[case]), NAMES)
    summary = reduce.summary(frame, METRICS, n_resamples=200)
    paths = [
        tradeoff_figure(summary, METRICS, tmp_path, primary="strict_prompt_accuracy"),
        pareto_figure(summary, METRICS, tmp_path, x="strict_prompt_accuracy"),
        tag_heatmaps(frame, [STRICT_INSTR, QUALITY], tmp_path),
    ]
    strongest = summary["config"].iloc[-1]  # "baseline" when nothing else ran: all-zero deltas
    paths.append(tag_delta_bars(frame, strongest, [STRICT_INSTR, QUALITY], tmp_path))
    assert [p.name for p in paths] == ["tradeoff.png", "pareto.png", "heatmap_tags.png",
                                       f"delta_by_tag_{strongest}.png"]
    for p in paths:
        assert_png(p)


def test_delta_bars_need_both_configs(tmp_path: Path) -> None:
    frame = to_frame(sweep_rows(configs=[BASELINE_CONFIG, PASTA5]), NAMES)
    with pytest.raises(ValueError, match="pasta-alpha7"):
        tag_delta_bars(frame, "pasta-alpha7", [QUALITY], tmp_path)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> str:
    rows = sweep_rows(n_keys=30, response=SCRIPT)
    rows[0].details["flags"] = ["<img src=x onerror=alert(1)>"]  # a flag is data too
    frame = to_frame(rows, NAMES)
    summary = reduce.summary(frame, METRICS, n_resamples=500)
    rec = recommend(summary, primary="strict_prompt_accuracy", budgets={**BUDGETS, "quality": 0.5}, metrics=METRICS)
    figures = {"pareto <fig>": pareto_figure(summary, METRICS, tmp_path_factory.mktemp("fig"),
                                             x="strict_prompt_accuracy")}
    examples = {m: fixed_and_broken(frame, c, follow="strict_prompt_accuracy") for m, c in
                (("pasta", "pasta-alpha10"), ("actadd", "actadd-c4"))}
    assert len(examples["pasta"]) > 5  # enough to exercise the omission note below
    meta = {"model": "tiny <model>", "seed": "0"}
    return summary_html(summary, METRICS, recommendation=rec, figures=figures, examples=examples, meta=meta,
                        max_examples=5)


def test_html_escapes_data(report: str) -> None:
    assert SCRIPT not in report and "&lt;script&gt;alert(1)&lt;/script&gt;" in report
    assert "<b>bold</b>" not in report and "&lt;b&gt;bold&lt;/b&gt;" in report
    assert "tiny &lt;model&gt;" in report and "pareto &lt;fig&gt;" in report
    assert "<img src=x" not in report and '<span class="flag">&lt;img src=x onerror=alert(1)&gt;</span>' in report
    assert "<script" not in report.lower()


def test_html_side_effects_table(report: str) -> None:
    section = report[report.index("<h3>Side effects</h3>"):report.index("<h3>Figures</h3>")]
    assert section.count("<h4>") == 4  # one table per steered config
    strong = section[section.index("<h4>pasta-alpha10</h4>"):section.index("<h4>actadd-c2</h4>")]
    # repetition rises at pasta-alpha10 (strength 2.3 > 2.2 loops): significantly worse, highlighted red
    rep = re.search(r"<tr><td>rep-4</td><td>lower</td>.*?</tr>", strong).group(0)
    assert 'class="num bad">+0.' in rep and '<td class="bad">worse</td>' in rep
    div = re.search(r"<tr><td>diversity</td><td>higher</td>.*?</tr>", strong).group(0)
    assert '<td class="bad">worse</td>' in div
    weak = section[section.index("<h4>pasta-alpha5</h4>"):section.index("<h4>pasta-alpha10</h4>")]
    assert re.search(r"<tr><td>rep-4</td>.*?no significant change</td></tr>", weak)
    assert "<td>length ratio</td><td>neither</td>" in section


def test_html_shows_recommendation_with_budgets_and_examples(report: str) -> None:
    assert re.search(r"Recommended config: <b>[a-z]+-[a-z]+\d+</b>", report)
    assert "Budgets against the baseline: quality drop &lt;= 50%, repetition rise &lt;= 0.1, diversity drop " \
           "&lt;= 0.1." in report
    assert "Configs over budget (2)" in report and "repetition rise 0.195 &gt; 0.1" in report
    assert '<tr class="recommended"><td>' in report
    assert "<h4>pasta-alpha10 vs baseline</h4>" in report and "<h4>actadd-c4 vs baseline</h4>" in report
    m = re.search(r"showing 5, largest \|Δ quality\| first\. (\d+) more omitted", report)
    assert m and int(m.group(1)) > 0
    assert report.count('class="response"') == 2 * 2 * 5  # both responses, side by side, for two methods
    assert '<span class="flag">repetition</span>' in report and '<span class="flag">wrong language</span>' in report


def test_html_embeds_images_as_data_uris(report: str) -> None:
    m = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', report)
    assert m and base64.b64decode(m.group(1))[:8] == PNG_SIGNATURE
    assert 'src="/' not in report and "file:" not in report


def test_html_escapes_config_names_and_values_once() -> None:
    odd = GridPoint("m<1>", "<b>v</b>", "m<1>-<b>v</b>", 1.0)
    frame = to_frame(sweep_rows(configs=[BASELINE_CONFIG, odd], n_keys=3), NAMES)
    summary = reduce.summary(frame, METRICS, n_resamples=200)
    rec = recommend(summary, primary="strict_prompt_accuracy", budgets={}, metrics=METRICS)
    html = summary_html(summary, METRICS, recommendation=rec, figures={}, examples={}, meta={})
    assert "<b>v</b>" not in html and "m<1>" not in html
    assert '<td class="num">&lt;b&gt;v&lt;/b&gt;</td>' in html and "<h4>m&lt;1&gt;-&lt;b&gt;v&lt;/b&gt;</h4>" in html
    assert "&amp;lt;" not in html  # escaped exactly once


def test_html_with_only_the_baseline() -> None:
    frame = to_frame(sweep_rows(configs=[BASELINE_CONFIG]), NAMES)
    summary = reduce.summary(frame, METRICS, n_resamples=200)
    rec = recommend(summary, primary="strict_prompt_accuracy", budgets=BUDGETS, metrics=METRICS)
    html = summary_html(summary, METRICS, recommendation=rec, figures={}, examples={}, meta={})
    assert "<b>baseline</b> (unsteered)" in html and "no steered configs were run" in html
    assert "Side effects" not in html


def test_write_standalone(tmp_path: Path) -> None:
    path = write_standalone(tmp_path / "out" / "report.html", "<p>body</p>", "Steer <run>")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<p>body</p>" in text
    assert "<title>Steer &lt;run&gt;</title>" in text and 'charset="utf-8"' in text


def test_terminal_table_lists_significant_side_effects() -> None:
    frame = to_frame(sweep_rows(configs=[BASELINE_CONFIG, PASTA5, ACTADD4], n_keys=12), NAMES)
    summary = reduce.summary(frame, METRICS, n_resamples=500)
    lines = terminal_table(summary, METRICS, "strict_prompt_accuracy")
    assert lines[0].split()[:5] == ["config", "rows", "strict", "prompt", "accuracy"]
    assert "headline quality" in lines[0] and "side effects (Holm over configs x side effects, p < 0.05)" in lines[0]
    base, weak, strong = lines[1:]
    assert base.startswith("baseline") and base.rstrip().endswith("]")  # no differences for the baseline
    assert "repetition" not in weak  # pasta-alpha5 does not loop
    assert re.search(r"repetition \+0\.195 \(worse\)", strong) and re.search(r"diversity -0\.24 \(worse\)", strong)
    assert "coherence" not in strong  # unchanged side effects are left out


@pytest.fixture
def no_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    """Placeholder figures, for report_run tests about something else (drawing costs seconds)."""
    def stub(name: str) -> Callable[..., Path]:
        def draw(*args: object, **kwargs: object) -> Path:
            out = next(a for a in args if isinstance(a, Path))  # the report directory
            out.mkdir(parents=True, exist_ok=True)
            path = out / name.format(*args)  # the name the figure has: a run manifest lists no other
            return write_atomically(path, PNG_SIGNATURE)  # as the figures are: a new file, not the old one changed

        return draw

    for fn, name in (("tradeoff_figure", "tradeoff.png"), ("pareto_figure", "pareto.png"),
                     ("tag_heatmaps", "heatmap_tags.png"), ("tag_delta_bars", "delta_by_tag_{1}.png")):
        monkeypatch.setattr(f"pytest_steer.report.figures.{fn}", stub(name))


def _info() -> RunInfo:
    return RunInfo(meta={"model": "tiny"}, settings={"run1": {"task": "ifeval", "seed": 0}},
                   primary="strict_prompt_accuracy", budgets=BUDGETS)


def test_report_run_writes_everything(tmp_path: Path) -> None:
    rows = sweep_rows(n_keys=6)
    report = report_run(rows, METRICS, tmp_path / "out", _info(), save_baseline=tmp_path / "b" / "baseline.json")
    assert report.problems == []
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"results.jsonl", "summary.csv", "metrics.json", "summary.html", "tradeoff.png", "pareto.png",
            "heatmap_tags.png"} <= names
    assert report.fragment.startswith('<div class="steer-report">') and "Side effects" in report.fragment
    saved = tmp_path / "b" / "baseline.json"
    assert report.terminal_lines[-2:] == [f"report: {tmp_path / 'out'}", f"saved baseline: {saved}"]
    assert saved.is_file()
    assert any(line.startswith("recommended: ") for line in report.terminal_lines)
    power = [line for line in report.terminal_lines if line.startswith("power: at 6 cases x 2 trials")]
    assert len(power) == 1 and "+0.05 needs about" in power[0]
    assert html.escape(power[0]) in report.fragment and "How it was chosen: cross-fitted" in report.fragment
    assert "Holm p=" in report.fragment


@pytest.mark.usefixtures("no_figures")
def test_report_run_survives_an_unwritable_baseline_path(tmp_path: Path) -> None:
    rows = sweep_rows(n_keys=4, response=SCRIPT)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    report = report_run(rows, METRICS, tmp_path / "out", _info(), save_baseline=blocker / "b.json")
    assert len(report.problems) == 1
    assert report.problems[0].startswith(f"could not write the stored baseline {blocker / 'b.json'}: [Errno ")
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == len(rows)
    html = (tmp_path / "out" / "summary.html").read_text()
    assert "Per-config summary" in html and SCRIPT not in html
    assert not any(line.startswith("saved baseline") for line in report.terminal_lines)


def test_save_stored_baseline_merges_per_run_metrics(tmp_path: Path) -> None:
    valid = Metric("valid_json", "binary")
    rows = sweep_rows(configs=[BASELINE_CONFIG, PASTA5], n_keys=2)
    line = save_stored_baseline(tmp_path / "b.json", {"run1": {"task": "ifeval"}}, rows,
                                {"run1": METRICS, "run2": [QUALITY, valid]})
    assert line == f"saved baseline: {tmp_path / 'b.json'}"
    assert [m.name for m in load_baseline(tmp_path / "b.json").metrics] == [*NAMES, "valid_json"]
    line = save_stored_baseline(tmp_path / "b.json" / "x.json", {}, rows, METRICS)
    assert line.startswith(f"could not write the stored baseline {tmp_path / 'b.json' / 'x.json'}: ")


@pytest.mark.usefixtures("no_figures")
def test_report_run_keeps_going_when_a_step_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> Path:
        raise RuntimeError("no fonts <here>")

    monkeypatch.setattr("pytest_steer.report.figures.pareto_figure", broken)
    report = report_run(sweep_rows(n_keys=4), METRICS, tmp_path, _info())
    assert report.problems == ["could not draw the figure 'Pareto frontier': no fonts <here>"]
    assert (tmp_path / "tradeoff.png").is_file() and (tmp_path / "summary.html").is_file()
    assert "Trade-off" in report.fragment and "Pareto frontier" not in report.fragment


@pytest.mark.usefixtures("no_figures")
def test_report_run_splits_runs(tmp_path: Path) -> None:
    rows = sweep_rows(configs=[BASELINE_CONFIG, PASTA10], n_keys=3)
    second = sweep_rows(configs=[BASELINE_CONFIG, PASTA5], n_keys=3)
    for r in second:
        r.run = "run2"
    rows += second
    report = report_run(rows, METRICS, tmp_path, _info())
    assert report.problems == []
    assert (tmp_path / "run-run1" / "results.jsonl").is_file() and (tmp_path / "run-run2" / "summary.csv").is_file()
    assert report.terminal_lines[0] == "run run1 (ifeval):" and "run run2:" in report.terminal_lines
    assert report.fragment.count('<div class="steer-report">') == 2
    assert pd.read_csv(tmp_path / "run-run2" / "summary.csv")["config"].tolist() == ["baseline", "pasta-alpha5"]


def test_a_report_removes_the_run_folders_it_replaced_and_keeps_the_rest(tmp_path: Path) -> None:
    """Issue 21: old `run-<key>/` folders are cleaned; a folder that is not ours stays."""
    rows = sweep_rows(configs=[BASELINE_CONFIG, PASTA10], n_keys=3)
    second = sweep_rows(configs=[BASELINE_CONFIG, PASTA5], n_keys=3)
    for r in second:
        r.run = "run2"
    report_run([*rows, *second], METRICS, tmp_path, _info())
    (tmp_path / "run-mine").mkdir()
    (tmp_path / "run-mine" / "notes.txt").write_text("keep")
    report = report_run(rows, METRICS, tmp_path, _info())  # one run now: its files in the report dir itself
    assert report.problems == []
    assert not (tmp_path / "run-run1").exists()  # replaced by the top-level files
    assert (tmp_path / "run-mine" / "notes.txt").read_text() == "keep"
    assert (tmp_path / "results.jsonl").is_file()
    report_run([*rows, *second], METRICS, tmp_path, _info())  # two runs again: both folders, the top files stay
    assert (tmp_path / "run-run1" / "results.jsonl").is_file() and (tmp_path / "run-run2" / "results.jsonl").is_file()


def _two_runs() -> tuple[list, list]:
    rows = sweep_rows(configs=[BASELINE_CONFIG, PASTA10], n_keys=3)
    second = sweep_rows(configs=[BASELINE_CONFIG, PASTA5], n_keys=3)
    for r in second:
        r.run = "run2"
    return rows, second


@pytest.mark.usefixtures("no_figures")
def test_a_users_run_folder_is_kept_and_named(tmp_path: Path) -> None:
    """Issue 29: `run-friday-copy/` (a kept results.jsonl and the user's notes) was deleted by a one-run
    session; a run folder of ours that the user added a file to is kept too; both are named in one line."""
    rows, second = _two_runs()
    report_run([*rows, *second], METRICS, tmp_path, _info())
    (tmp_path / "run-run2" / "notes.txt").write_text("my notes on run2")
    copy = tmp_path / "run-friday-copy"
    copy.mkdir()
    (copy / "results.jsonl").write_bytes((tmp_path / "run-run1" / "results.jsonl").read_bytes())
    (copy / "notes.txt").write_text("friday")
    report = report_run(rows, METRICS, tmp_path, _info())  # one run now: the earlier run folders are replaced
    assert report.problems == []
    assert not (tmp_path / "run-run1").exists()  # ours and nothing else: removed
    assert (tmp_path / "run-run2" / "notes.txt").read_text() == "my notes on run2"
    assert (tmp_path / "run-run2" / "results.jsonl").is_file()
    assert sorted(p.name for p in copy.iterdir()) == ["notes.txt", "results.jsonl"]
    kept = [line for line in report.terminal_lines if line.startswith("kept in")]
    assert len(kept) == 1 and "run-friday-copy/ (no pytest-steer manifest)" in kept[0]
    assert "run-run2/ (holds notes.txt)" in kept[0]


@pytest.mark.usefixtures("no_figures")
def test_a_copied_or_edited_run_folder_is_kept(tmp_path: Path) -> None:
    """Probe of issue 29: `cp -r run-run1 run-friday` (the natural way to keep a run) copies our manifest, and
    the next session deleted the copy as ours; so it did with a run folder whose summary.csv the user had
    annotated. A manifest proves only the folder it names, and only files unchanged since they were written."""
    import os
    import shutil

    rows, second = _two_runs()
    report_run([*rows, *second], METRICS, tmp_path, _info())
    shutil.copytree(tmp_path / "run-run1", tmp_path / "run-friday")
    copied = (tmp_path / "run-friday" / "results.jsonl").read_bytes()
    edited = tmp_path / "run-run2" / "summary.csv"
    with open(edited, "a") as fh:
        fh.write("my annotation\n")
    os.utime(edited, ns=(1, 1))  # a coarse clock or an editor that keeps the time: the size still differs
    report = report_run(rows, METRICS, tmp_path, _info())  # one run now: the earlier run folders are replaced
    assert report.problems == []
    assert (tmp_path / "run-friday" / "results.jsonl").read_bytes() == copied
    assert edited.read_text().endswith("my annotation\n")
    assert not (tmp_path / "run-run1").exists()  # ours, as written: removed
    kept = [line for line in report.terminal_lines if line.startswith("kept in")]
    assert len(kept) == 1 and "run-friday/ (a copy: its manifest is run-run1's)" in kept[0]
    assert "run-run2/ (summary.csv changed since pytest-steer wrote it)" in kept[0]


@pytest.mark.usefixtures("no_figures")
@pytest.mark.parametrize("how", ["cp -a", "mv"])
def test_a_run_folder_brought_from_another_report_dir_is_kept(tmp_path: Path, how: str) -> None:
    """Probe round 5 of issue 29: `cp -a report-a/run-run2 report-b/` (or tar, which also keeps size and time)
    gave report-b a folder whose manifest named it and whose files matched its stamps, and the next session
    in report-b deleted it as its own. A manifest now vouches only for the folder it was written in, and its
    stamps for the very files (their inode). The same holds for a folder moved with `mv`."""
    import os
    import shutil

    a, b = tmp_path / "report-a", tmp_path / "report-b"
    rows, second = _two_runs()
    report_run([*rows, *second], METRICS, a, _info())
    report_run([*rows, *second], METRICS, b, _info())
    shutil.rmtree(b / "run-run2")  # what report-b's own session wrote there; the user brings report-a's instead
    if how == "mv":
        os.rename(a / "run-run2", b / "run-run2")
    else:
        shutil.copytree(a / "run-run2", b / "run-run2", copy_function=shutil.copy2)
    brought = {p.name: p.read_bytes() for p in (b / "run-run2").iterdir()}
    report = report_run(rows, METRICS, b, _info())  # one run now: b's run folders are replaced
    assert report.problems == []
    assert {p.name: p.read_bytes() for p in (b / "run-run2").iterdir()} == brought
    assert not (b / "run-run1").exists()  # b's own, as written: removed
    kept = [line for line in report.terminal_lines if line.startswith("kept in")]
    assert report.kept == kept and len(kept) == 1
    assert f"run-run2/ (moved or copied here: its manifest was written in {a / 'run-run2'})" in kept[0]


@pytest.mark.usefixtures("no_figures")
def test_files_copied_into_a_run_folder_are_not_vouched_for(tmp_path: Path) -> None:
    """Probe round 5 of issue 29: a file copied with its time where one a manifest lists was (a restore from a
    backup) matched its size and time stamps, so a later session replaced or removed it as its own; a copy has
    another inode."""
    import shutil

    rows, second = _two_runs()
    runs = {"run1": list(dict.fromkeys(r.config for r in rows)), "run2": list(dict.fromkeys(r.config for r in second))}
    report_run([*rows, *second], METRICS, tmp_path, _info())
    assert not_ours(tmp_path, runs) is None
    results = tmp_path / "run-run2" / "results.jsonl"
    results.rename(tmp_path / "saved.jsonl")
    shutil.copy2(tmp_path / "saved.jsonl", results)  # a copy back where it was: same bytes, size and time
    line = not_ours(tmp_path, runs)
    assert line is not None and line.startswith("run-run2/results.jsonl would be overwritten by the report")


@pytest.mark.usefixtures("no_figures")
def test_the_kept_line_names_a_users_folder_without_its_control_characters(tmp_path: Path) -> None:
    """Probe round 5 of issue 29: a folder named with an escape sequence was printed raw in the kept line, where
    it drives the terminal (here: clears the screen) and a newline breaks the one line in two."""
    rows = sweep_rows(n_keys=3)
    (tmp_path / "run-\x1b[2J\nmine").mkdir()
    report = report_run(rows, METRICS, tmp_path, _info())
    (kept,) = report.kept
    assert "\x1b" not in kept and "\n" not in kept and kept.isprintable()
    assert "run-\\x1b[2J\\nmine/ (no pytest-steer manifest)" in kept


@pytest.mark.usefixtures("no_figures")
def test_a_linked_run_folder_is_kept_untouched_and_named(tmp_path: Path) -> None:
    """Probe round 3 of issue 29: a `run-*` link to a folder (of ours or not) was kept, but silently; now it is
    named in the kept line, and neither it nor what it points to is touched."""
    import shutil

    report_dir, elsewhere = tmp_path / "report", tmp_path / "elsewhere"
    rows, second = _two_runs()
    report_run([*rows, *second], METRICS, report_dir, _info())
    shutil.copytree(report_dir / "run-run1", elsewhere, copy_function=shutil.copy2)
    (report_dir / "run-linked").symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    report = report_run(rows, METRICS, report_dir, _info())
    assert report.problems == []
    assert (report_dir / "run-linked").is_symlink() and sorted(p.name for p in elsewhere.iterdir()) == before
    kept = [line for line in report.terminal_lines if line.startswith("kept in") and "not provably" in line]
    assert len(kept) == 1 and "run-linked (a link to a folder: never followed)" in kept[0]


@pytest.mark.usefixtures("no_figures")
def test_run_folders_of_the_release_before_manifests_are_kept(tmp_path: Path) -> None:
    """A folder an earlier release wrote has no manifest: not provably ours, so it is named, never deleted."""
    rows, second = _two_runs()
    report_run([*rows, *second], METRICS, tmp_path, _info())
    (tmp_path / "run-run2" / ".pytest-steer-run.json").unlink()
    report = report_run(rows, METRICS, tmp_path, _info())
    assert (tmp_path / "run-run2" / "results.jsonl").is_file()
    assert any("run-run2/ (no pytest-steer manifest)" in line for line in report.terminal_lines)


def test_every_file_a_report_writes_is_checked_and_ours_until_changed(tmp_path: Path) -> None:
    """The start-up check predicts the report's file names: each one written is vouched for by a manifest (the next
    session replaces it), and each one changed since is named (its name is in the list, so no file escapes it)."""
    rows = sweep_rows(n_keys=6)
    assert report_run(rows, METRICS, tmp_path, _info()).problems == []
    runs = {"run1": list(dict.fromkeys(r.config for r in rows))}
    assert not_ours(tmp_path, runs) is None
    written = {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")}
    assert {"summary.html", "results.jsonl", "heatmap_tags.png"} <= written
    assert any(name.startswith("delta_by_tag_") for name in written)
    for name in written:
        with open(tmp_path / name, "ab") as fh:
            fh.write(b"mine")
    line = not_ours(tmp_path, runs)
    assert line is not None and set(line.split(" would be overwritten")[0].split(", ")) == written


@pytest.mark.usefixtures("no_figures")
def test_a_report_never_replaces_a_users_file(tmp_path: Path) -> None:
    """An xdist controller starts nothing, so no start-up check ran: the report itself refuses to replace a file it
    cannot prove it wrote (here a run folder's, the user's own), writes nothing there, and says so in one line."""
    rows, second = _two_runs()
    (tmp_path / "run-run2").mkdir()
    mine = tmp_path / "run-run2" / "results.jsonl"
    mine.write_text("my rows\n")
    report = report_run([*rows, *second], METRICS, tmp_path, _info(), save_baseline=tmp_path / "b.json")
    assert len(report.problems) == 1
    assert report.problems[0].startswith(f"could not build the report in {tmp_path}: run-run2/results.jsonl would "
                                         "be overwritten")
    assert mine.read_text() == "my rows\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.json", "results.jsonl", "run-run2"]  # only the baseline


@pytest.mark.usefixtures("no_figures")
def test_load_results_reads_the_last_session_or_says_where_it_is(tmp_path: Path) -> None:
    """After a session with several runs the report dir's top-level files are an earlier one-run session's:
    load_results used to return those rows silently."""
    from pytest_steer.analysis import load_results

    rows, second = _two_runs()
    report_run(rows, METRICS, tmp_path, _info())
    assert {r.run for r in load_results(tmp_path).rows} == {"run1"}
    report_run([*rows, *second], METRICS, tmp_path, _info())
    with pytest.raises(ValueError, match="run-run1.*run-run2"):
        load_results(tmp_path)
    assert {r.run for r in load_results(tmp_path / "run-run2").rows} == {"run2"}
    report_run(second, METRICS, tmp_path, _info())
    assert {r.run for r in load_results(tmp_path).rows} == {"run2"}
    manifest = tmp_path / ".pytest-steer-report.json"  # probe round 7: edited by hand, it raised AttributeError
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "runs": "run2"}))
    with pytest.raises(ValueError, match="changed by hand"):
        load_results(tmp_path)


def test_report_run_draws_the_dose_figure_when_rows_have_a_dose(tmp_path: Path) -> None:
    from pytest_steer.dose import DOSE
    from pytest_steer.report.figures import dose_figure

    rows = sweep_rows(n_keys=6)
    for r in rows:
        r.scores[DOSE.name] = 0.0 if r.config == "baseline" else 0.05 * r.strength + 0.01 * (r.trial + 1)
    report = report_run(rows, [*METRICS, DOSE], tmp_path / "out", _info())
    assert report.problems == []
    assert (tmp_path / "out" / "dose.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "Dose: every method on one axis" in report.fragment
    summary = reduce.summary(to_frame(rows, [*NAMES, DOSE.name]), [*METRICS, DOSE], n_resamples=200)
    assert summary.loc[summary["config"] == "baseline", "dose"].iloc[0] == 0.0
    with pytest.raises(ValueError, match="dose_figure needs 'dose'"):
        dose_figure(summary.drop(columns="dose"), METRICS, tmp_path, primary="strict_prompt_accuracy")


def test_report_run_compares_methods_at_matched_dose(tmp_path: Path) -> None:
    from pytest_steer.dose import DOSE

    rows = sweep_rows(n_keys=6)
    assert len({r.method for r in rows if r.config != "baseline"}) >= 2
    for r in rows:
        r.scores[DOSE.name] = 0.0 if r.config == "baseline" else 0.05 * r.strength + 0.01 * (r.trial + 1)
    report = report_run(rows, [*METRICS, DOSE], tmp_path / "out", _info())
    assert report.problems == []
    assert "<h3>Methods at matched dose</h3>" in report.fragment and "nats/token" in report.fragment
    line = next(x for x in report.terminal_lines if x.startswith("matched dose: "))
    assert "at matched dose (~" in line
    # without a dose there is no such comparison, and no failure
    plain = report_run(sweep_rows(n_keys=6), METRICS, tmp_path / "plain", _info())
    assert "Methods at matched dose" not in plain.fragment and plain.problems == []


@pytest.mark.usefixtures("no_figures")
def test_a_users_file_with_a_manifests_name_is_not_overwritten(tmp_path: Path) -> None:
    """Probe round 4 of issue 29: a file of the user's named `.pytest-steer-run.json` (no `written_by`) at the top of
    the report dir was replaced by the run manifest. The manifests are checked like every other name."""
    mine = tmp_path / RUN_MANIFEST
    mine.write_text('{"mine": 1}')
    rows = sweep_rows(n_keys=4)
    runs = {"run1": list(dict.fromkeys(r.config for r in rows))}
    line = not_ours(tmp_path, runs)
    assert line is not None and line.startswith(f"{RUN_MANIFEST} would be overwritten by the report")
    report = report_run(rows, METRICS, tmp_path, _info())
    assert len(report.problems) == 1 and RUN_MANIFEST in report.problems[0]
    assert mine.read_text() == '{"mine": 1}'
    mine.unlink()
    assert report_run(rows, METRICS, tmp_path, _info()).problems == []
    assert not_ours(tmp_path, runs) is None  # the manifests it wrote are its own


@pytest.mark.usefixtures("no_figures")
def test_a_link_where_a_run_folder_goes_is_not_written_through(tmp_path: Path) -> None:
    """Probe round 4 of issue 29: with `run-run2` a link to a folder of the user's, a two-run session wrote its eight
    files and a manifest into that folder. The report now refuses, in one line, and writes nothing there."""
    rows, second = _two_runs()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "mine.txt").write_text("mine")
    out = tmp_path / "out"
    out.mkdir()
    (out / "run-run2").symlink_to(elsewhere)
    report = report_run([*rows, *second], METRICS, out, _info())
    assert len(report.problems) == 1
    assert report.problems[0].startswith(f"could not build the report in {out}: run-run2 would be overwritten")
    assert [p.name for p in elsewhere.iterdir()] == ["mine.txt"]


@pytest.mark.usefixtures("no_figures")
def test_remove_report_deletes_only_the_reports_own_files(tmp_path: Path) -> None:
    """Probe round 7: `make clean` was `rm -rf steer-report`, losing the notes a user keeps beside the report.
    `remove_report` deletes what the manifests vouch for (a one-run session's top files, an earlier session's
    run folders) and keeps the user's files, an edited file and a user's `run-*` folder, named in one line."""
    rows, second = _two_runs()
    report_run([*rows, *second], METRICS, tmp_path, _info())
    report_run(rows, METRICS, tmp_path, _info())  # top-level files; the two run folders removed
    report_run([*rows, *second], METRICS, tmp_path, _info())  # run folders again; the top files stay, ours
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "run-mine").mkdir()
    (tmp_path / "run-mine" / "results.jsonl").write_text("kept run")
    with open(tmp_path / "run-run2" / "summary.csv", "a") as fh:
        fh.write("annotated\n")
    line = remove_report(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "run-mine", "run-run2"]
    assert (tmp_path / "run-mine" / "results.jsonl").read_text() == "kept run"
    assert (tmp_path / "run-run2" / "summary.csv").read_text().endswith("annotated\n")
    assert line is not None and "notes.txt, run-mine/, run-run2/" in line
    (tmp_path / "notes.txt").unlink()
    shutil.rmtree(tmp_path / "run-mine")
    shutil.rmtree(tmp_path / "run-run2")
    report_run(rows, METRICS, tmp_path / "fresh", _info())
    assert remove_report(tmp_path / "fresh") is None and not (tmp_path / "fresh").exists()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.usefixtures("no_figures")
@pytest.mark.parametrize("ours", [True, False])
def test_make_clean_keeps_a_users_files(tmp_path: Path, ours: bool) -> None:
    """`make clean` deletes the report's own files and only a venv the Makefile set up (marked `.installed`)."""
    rows, _ = _two_runs()
    report_run(rows, METRICS, tmp_path / "steer-report", _info())
    (tmp_path / "steer-report" / "notes.txt").write_text("mine")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ("installed" if not ours else ".installed")).write_text("")
    makefile = Path(__file__).resolve().parents[1] / "Makefile"
    done = subprocess.run(["make", "-f", str(makefile), "clean", f"PY={sys.executable}"], cwd=tmp_path,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "steer-report").iterdir()) == ["notes.txt"]
    assert "notes.txt" in done.stdout
    assert (tmp_path / ".venv").exists() is not ours


@pytest.mark.usefixtures("no_figures")
def test_the_folders_of_runs_a_session_did_not_run_are_kept(tmp_path: Path) -> None:
    """Probe rounds 6 and 7 (P1): `pytest test_a.py` after a session that also ran `test_b.py` deleted `run-run2/`,
    and with the cache off (or cleared since, or unwritable on an xdist worker: round 8) its results.jsonl held
    the only copy of those generations. Such a folder stays, named in its own line."""
    rows, second = _two_runs()
    report_run([*rows, *second], METRICS, tmp_path, _info())
    before = (tmp_path / "run-run2" / "results.jsonl").read_bytes()
    report = report_run(rows, METRICS, tmp_path, _info())
    assert report.problems == []
    assert not (tmp_path / "run-run1").exists()  # its rows are all in this session's report
    assert "run2" not in (tmp_path / "summary.csv").read_text()
    assert (tmp_path / "run-run2" / "results.jsonl").read_bytes() == before
    assert report.kept == [f"kept in {tmp_path}, earlier sessions' run folders holding rows this session did not "
                           "produce again (not in this summary; delete them yourself when no longer needed): "
                           f"run-run2/ ({len(second)} rows)"]
    assert report.kept[0] in report.terminal_lines


@pytest.mark.usefixtures("no_figures")
def test_an_interrupted_session_never_replaces_rows_it_did_not_produce_again(tmp_path: Path) -> None:
    """Probe round 7 (D1): with the cache off, a session interrupted after trial 0 replaced the complete earlier
    report of the same run (trials 0 and 1) with its own half, and the earlier trial-1 rows were in no cache.
    The earlier results.jsonl is kept aside, named; it survives the next sessions, and goes only with
    `remove_report` (`make clean`); a session that produces every row again replaces it as usual."""
    rows, _ = _two_runs()
    report_run(rows, METRICS, tmp_path, _info())
    complete = (tmp_path / "results.jsonl").read_bytes()
    first_trial = [r for r in rows if r.trial == 0]
    report = report_run(first_trial, METRICS, tmp_path, _info())
    assert report.problems == []
    aside = [p for p in tmp_path.glob("results-*.jsonl")]
    assert len(aside) == 1 and aside[0].read_bytes() == complete
    lost = len(rows) - len(first_trial)
    assert report.kept == [f"kept in {tmp_path}: {aside[0].name}, an earlier session's results.jsonl, for its {lost} "
                           "rows this session did not produce again"]
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == len(first_trial)
    report = report_run([*rows, *_two_runs()[1]], METRICS, tmp_path, _info())  # two runs: folders, top stays
    report = report_run(first_trial, METRICS, tmp_path, _info())  # the half again: the top half is replaced
    assert [k for k in report.kept if ": results-" in k] == []  # the run folders of step 3 are kept, not this
    assert [p.read_bytes() for p in tmp_path.glob("results-*.jsonl")] == [complete]
    other = [r for r in _two_runs()[1]]  # another run, one-run: the same top-level files
    report_run(other, METRICS, tmp_path, _info())
    assert len(list(tmp_path.glob("results-*.jsonl"))) == 2  # the half of run1 kept aside too, with the first
    report_run([*rows, *other], METRICS, tmp_path / "sub", _info())
    report_run(rows, METRICS, tmp_path / "sub", _info())  # every row of run1 again: nothing kept aside
    assert not list((tmp_path / "sub").glob("results-*.jsonl"))
    remove_report(tmp_path)
    assert not tmp_path.exists() or not list(tmp_path.glob("results*.jsonl"))


@pytest.mark.usefixtures("no_figures")
def test_a_file_the_user_saves_while_the_report_is_written_is_not_ours(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe round 7 (C3): the run manifest listed every file with a new inode since the report began, so a file
    the user saved in the report dir meanwhile was vouched for as ours, and a later clean-up deleted it."""
    from pytest_steer.session import finish

    original = finish._report_one

    def and_the_user_saves_a_file(*args: object, **kwargs: object) -> tuple[str, list[str]]:
        done = original(*args, **kwargs)  # type: ignore[arg-type]
        (tmp_path / "notes.txt").write_text("saved meanwhile")
        return done

    monkeypatch.setattr(finish, "_report_one", and_the_user_saves_a_file)
    rows, _ = _two_runs()
    assert report_run(rows, METRICS, tmp_path, _info()).problems == []
    manifest = json.loads((tmp_path / RUN_MANIFEST).read_text())
    assert "notes.txt" not in manifest["files"] and "results.jsonl" in manifest["files"]
    remove_report(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.usefixtures("no_figures")
def test_a_report_dir_reached_through_a_link_is_the_same_folder(tmp_path: Path) -> None:
    """Probe round 7: a report written through `R -> U` was not vouched for when the next session named `U`
    itself (the manifest recorded the path, not the folder), so that session refused every file."""
    rows, _ = _two_runs()
    (tmp_path / "U").mkdir()
    (tmp_path / "R").symlink_to(tmp_path / "U")
    assert report_run(rows, METRICS, tmp_path / "R", _info()).problems == []
    assert not_ours(tmp_path / "U", {"run1": list(dict.fromkeys(r.config for r in rows))}) is None


def test_remove_report_leaves_a_report_dir_a_session_is_writing(tmp_path: Path) -> None:
    """Probe round 8: `make clean` during a session ended in a traceback; it says so in one line, deleting nothing."""
    from pytest_steer.cache import hold_lock
    from pytest_steer.files import REPORT_LOCK

    (tmp_path / "summary.csv").write_text("x")
    lock = hold_lock(tmp_path / REPORT_LOCK)
    try:
        assert remove_report(tmp_path) == (f"{tmp_path}: a pytest session is writing its report there; nothing "
                                           "deleted, try again when it ends")
    finally:
        lock.close()
    assert (tmp_path / "summary.csv").read_text() == "x"


@pytest.mark.usefixtures("no_figures")
def test_a_full_disk_never_costs_the_rows_of_an_earlier_run_folder(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Probe round 9 (D1): a one-run session on a full disk could not write its results.jsonl, then removed the
    earlier session's `run-run1/` as replaced, and its rows (in no cache) were gone. A folder is replaced only by
    results this session has on disk."""
    import errno

    from pytest_steer import analysis

    rows, second = _two_runs()
    report_run([*rows, *second], METRICS, tmp_path, _info())
    earlier = (tmp_path / "run-run1" / "results.jsonl").read_bytes()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(analysis, "write_results", full)
    report = report_run(rows, METRICS, tmp_path, _info())
    assert any("No space left on device" in p for p in report.problems)
    assert (tmp_path / "run-run1" / "results.jsonl").read_bytes() == earlier
