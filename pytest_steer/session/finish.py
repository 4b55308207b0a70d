"""Session end: from the session's rows, write the results files, figures, HTML report, terminal
table and, if asked, the stored baseline. The one path every run's outputs take.

Plain functions over rows and metric declarations; `SteerSession.finish` gathers the rows (its own
and xdist workers') and calls `report_run`. Every step runs on its own: a figure that cannot be
drawn or a baseline path that cannot be written becomes one line in `Report.problems`, and the other
steps still happen, so a run's results are never lost to a reporting bug.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from ..files import REPORT_MANIFEST, RUN_MANIFEST, printable, read_manifest, write_manifest
from ..results import BASELINE, ResultRow, read_jsonl, to_frame
from ..scores import QUALITY_ROLE, Metric, with_role
from ..scores import budgets as declared_budgets

T = TypeVar("T")
#: settings longer than this are left out of the report's run details (e.g. the list of case hashes)
_MAX_SETTING_CHARS = 200


@dataclass(kw_only=True)
class RunInfo:
    """What the report needs besides the rows and their metric declarations (which carry the headline
    quality's role and the budgets). A run whose settings are in `settings` takes its primary metric from
    them (each run of a session may have its own task)."""

    meta: dict[str, str]  # run details shown in the report (model, device, cache hits, task, ...)
    primary: str = ""  # the task's primary metric, for runs without settings
    budgets: dict[str, float] = field(default_factory=dict)  # for declarations without budgets (older files)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # run key -> settings: baseline, details

    def for_run(self, run: str) -> RunInfo:
        s = self.settings.get(run)
        if not s:
            return self
        return replace(self, meta={**self.meta, "task": str(s.get("task", self.meta.get("task", "")))},
                       primary=str(s.get("primary") or self.primary))


@dataclass
class Report:
    fragment: str = ""  # HTML for pytest-html's summary section
    terminal_lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per step that failed
    kept: list[str] = field(default_factory=list)  # the line naming what was kept, also in terminal_lines


def _step(problems: list[str], what: str, fn: Callable[[], T]) -> T | None:
    """Run one reporting step; a failure becomes the line "could not <what>: <error>"."""
    try:
        return fn()
    except Exception as exc:  # any failure: one step must never lose the run's other outputs
        problems.append(f"could not {what}: {exc}")
        return None


def _fmt(value: float, spec: str = ".3g") -> str:
    return "–" if value != value else format(value, spec)


def terminal_table(summary: pd.DataFrame, metrics: Sequence[Metric], primary: str, *, quality: str | None = None,
                   significance: float = 0.05) -> list[str]:
    """Per config: the primary metric and the quality with their intervals (and, for steered configs,
    the difference from the baseline), plus every side-effect metric that moved significantly
    (Holm-adjusted p < `significance`, over every steered config x side effect) against the baseline, with
    whether that is better or worse."""
    from ..report.html import verdict

    by_name = {m.name: m for m in metrics}
    headline = quality or (m.name if (m := with_role(metrics, QUALITY_ROLE)) else None)
    heads = [n for n in dict.fromkeys((primary, headline)) if n and n in summary.columns]
    side = [m for m in metrics if m.side_effect and m.name in summary.columns and m.name not in heads]
    table = [["config", "rows", *(by_name[n].title if n in by_name else n for n in heads),
              f"side effects (Holm over configs x side effects, p < {significance:g})"]]
    for row in summary.to_dict("records"):
        cells = [str(row["config"]), str(row["n"])]
        for n in heads:
            text = f"{_fmt(row[n])} [{_fmt(row[f'{n}_low'])}, {_fmt(row[f'{n}_high'])}]"
            diff = row.get(f"{n}_diff", float("nan"))
            cells.append(text + ("" if diff != diff else f" {_fmt(diff, '+.3g')}"))
        moved = []
        for m in side:
            p = row.get(f"{m.name}_p_holm", row.get(f"{m.name}_p", float("nan")))
            diff = row.get(f"{m.name}_diff", float("nan"))
            if p == p and p < significance:
                moved.append(f"{m.name} {_fmt(diff, '+.3g')} ({verdict(m, diff, p) or 'no change'})")
        cells.append(", ".join(moved))
        table.append(cells)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1] for r in table]


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _run_meta(info: RunInfo, run: str) -> dict[str, str]:
    settings = {k: str(v) for k, v in info.settings.get(run, {}).items() if len(str(v)) <= _MAX_SETTING_CHARS}
    return {**info.meta, "run": run, **settings}


def _report_one(rows: list[ResultRow], metrics: Sequence[Metric], out_dir: Path, info: RunInfo, run: str,
                problems: list[str]) -> tuple[str, list[str]]:
    """Files, figures, HTML fragment and terminal lines for one run's rows."""
    from ..analysis import fixed_and_broken, matched_dose, power, select, write_results
    from ..reduce import summary as summarise
    from ..report.figures import dose_figure, pareto_figure, tag_delta_bars, tag_heatmaps, tradeoff_figure
    from ..report.html import summary_html

    names = {n for r in rows for n in r.scores}
    present = [m for m in metrics if m.name in names]
    by_name = {m.name: m for m in present}
    primary = info.primary if info.primary in by_name else (present[0].name if present else info.primary)
    headline = with_role(present, QUALITY_ROLE)
    quality = headline.name if headline is not None else None
    budgets = declared_budgets(present) or info.budgets
    frame = to_frame(rows, [m.name for m in present])
    summary = _step(problems, f"summarise run {run}", lambda: summarise(frame, present))
    _step(problems, f"write the results files to {out_dir}",
          lambda: write_results(rows, summary if summary is not None else pd.DataFrame(), present, out_dir))
    if summary is None:
        return "", []
    configs = list(summary["config"])
    rec = None
    if BASELINE in configs and primary in summary.columns:
        rec = _step(problems, "recommend a config", lambda: select(
            frame, summary, primary=primary, budgets=budgets, metrics=present, quality=quality or primary,
            relative=[quality] if quality else []))  # the headline's budget is a relative drop
    matched = None
    if "dose" in by_name and primary in summary.columns:
        matched = _step(problems, "compare the methods at matched dose", lambda: matched_dose(
            summary, frame, primary=primary, quality=quality or primary, metrics=present))
    power_line = None
    if BASELINE in configs and primary in by_name:
        power_line = _step(problems, "estimate the power", lambda: power(frame, by_name[primary])[1])

    figures: dict[str, Path] = {}
    per_tag = [m for m in present if m.per_tag][:1] or ([by_name[primary]] if primary in by_name else [])
    tagged = list(dict.fromkeys([*per_tag, *([by_name[quality]] if quality else [])]))
    has_tags = bool(frame["tags"].map(len).any())

    def add(title: str, draw: Callable[[], Path]) -> None:
        path = _step(problems, f"draw the figure {title!r}", draw)
        if path is not None:
            figures[title] = path

    add("Trade-off", lambda: tradeoff_figure(summary, present, out_dir, primary=primary, quality=quality or primary))
    if "dose" in by_name and len(summary) > 1:
        add("Dose: every method on one axis", lambda: dose_figure(summary, present, out_dir, primary=primary,
                                                                 quality=quality or primary))
    if "off_target_dose" in by_name and len(summary) > 1:
        add("Off-target dose (KL on neutral text)", lambda: dose_figure(
            summary, present, out_dir, primary=primary, quality=quality or primary, dose="off_target_dose"))
    if quality:
        add("Pareto frontier", lambda: pareto_figure(summary, present, out_dir, x=primary, y=quality))
    if tagged and has_tags:
        add("By tag", lambda: tag_heatmaps(frame, tagged, out_dir))
    steered = summary[summary["config"] != BASELINE]
    pick = rec.config if rec is not None and rec.config != BASELINE else (
        str(steered.sort_values("strength").iloc[-1]["config"]) if len(steered) else None)
    if pick is not None and BASELINE in configs and tagged and has_tags:
        add(f"Change from baseline by tag at {pick}", lambda: tag_delta_bars(frame, pick, tagged, out_dir))

    examples: dict[str, pd.DataFrame] = {}
    if BASELINE in configs and by_name.get(primary) is not None and by_name[primary].kind == "binary":
        for method, group in steered.groupby("method", sort=False):
            chosen = rec.config if rec is not None and rec.method == method else str(group.iloc[-1]["config"])
            fb = _step(problems, f"list the cases {chosen} fixed and broke", partial(
                fixed_and_broken, frame, chosen, follow=primary, show=[quality] if quality else []))
            if fb is not None:
                examples[str(method)] = fb
    fragment = _step(problems, f"render the HTML report of run {run}", lambda: summary_html(
        summary, present, recommendation=rec, figures=figures, examples=examples, meta=_run_meta(info, run),
        power=power_line, matched=matched,
        title=f"Steering evaluation ({info.settings.get(run, {}).get('task') or info.meta.get('task') or run})")) or ""
    lines = _step(problems, "format the terminal table",
                  lambda: terminal_table(summary, present, primary, quality=quality or primary)) or []
    if lines:
        from ..reduce import SCOPE
        lines.append(f"{SCOPE[0].upper()}{SCOPE[1:]}.")
    if rec is not None:
        lines.append(f"recommended: {rec.config} ({rec.reason})")
    if matched is not None:
        lines.append(f"matched dose: {matched.text}")
    if power_line is not None:
        lines.append(power_line)
    return fragment, lines


RUN_DIR_PREFIX = "run-"


def _files_of(folder: Path) -> dict[str, int]:
    """The plain files directly in `folder`, by name, with their inode: a file written atomically during a
    step gets a new inode, which is how `report_run` knows exactly which files it wrote."""
    try:
        return {p.name: p.stat().st_ino for p in folder.iterdir() if p.is_file() and not p.is_symlink()}
    except OSError:
        return {}


def _stamp(path: Path) -> list[int]:
    """A file's size, modification time, device and inode: what the run manifest records of each file it lists,
    so that a file the user has changed since (an annotated summary.csv) is no longer ours to delete, nor is a
    copy of it (`cp -a` and `tar` keep size and time, never the inode)."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino]


def _where(folder: Path) -> str:
    """The folder a manifest is written in, as the manifest records it: a folder moved elsewhere with its
    manifest (`mv run-x ../other-report/`) is the user's there, not ours."""
    return os.path.realpath(folder)  # the folder itself: the same through a link to it (`ln -s U R`)


def _vouched(folder: Path, manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The stamps a manifest of `folder` vouches for: none when the manifest was written in another folder."""
    return _stamps(manifest) if manifest is not None and _written_here(folder, manifest) else {}


def _stamps(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's stamps by file name; none when they are not a mapping (a manifest edited by hand)."""
    stamps = manifest.get("stamps")
    return stamps if isinstance(stamps, dict) else {}


def _written_here(folder: Path, manifest: dict[str, Any]) -> bool:
    return manifest.get("written_in") == _where(folder)


def _run_dir(run: str) -> str:
    return f"{RUN_DIR_PREFIX}{_file_safe(run)}"


#: what a run writes into its folder, besides `delta_by_tag_<config>.png` (named by report/figures.py)
RUN_FILES = ("results.jsonl", "summary.csv", "metrics.json", "tradeoff.png", "dose.png", "off-target-dose.png",
             "pareto.png", "heatmap_tags.png")
#: the report dir's own pages: the standalone summary, and pytest-html's when the plugin points it there
SUMMARY_PAGE, HTML_PAGE = "summary.html", "report.html"


def _run_names(configs: Iterable[str]) -> list[str]:
    return [*RUN_FILES, *(f"delta_by_tag_{_file_safe(c)}.png" for c in configs)]


def _stamp_or_none(path: Path) -> list[int] | None:
    """A plain file's `_stamp`; None when missing or not a plain file (a link or folder there is never ours)."""
    try:
        return None if path.is_symlink() or not path.is_file() else _stamp(path)
    except OSError:
        return None


def not_ours(out_dir: Path, runs: Mapping[str, Iterable[str]], *, html: bool = False) -> str | None:
    """Before a report is written into `out_dir`: the files there (and in the `run-<key>/` folders of several
    `runs`, run key -> config labels) that it would replace but that no manifest proves this package wrote as
    they are now, as one line; None when there are none. At the top, every name a run may write is checked,
    whether or not the session's runs share the report dir."""
    out_dir = Path(out_dir)
    pages = [SUMMARY_PAGE, *([HTML_PAGE] if html else [])]
    names = {out_dir: [*pages, *_run_names(c for configs in runs.values() for c in configs)]}
    if len(runs) > 1:
        names.update({out_dir / _run_dir(run): _run_names(configs) for run, configs in runs.items()})
    found = []
    for folder, listed in names.items():
        if folder != out_dir and folder.is_symlink():  # a link where a run folder goes: never written through
            found.append(folder.name)
            continue
        stamps = {**_vouched(folder, read_manifest(folder / RUN_MANIFEST)),
                  **_vouched(folder, read_manifest(folder / REPORT_MANIFEST))}
        for name in dict.fromkeys(listed):
            stamp = _stamp_or_none(folder / name)
            if os.path.lexists(folder / name) and (stamp is None or stamp != stamps.get(name)):
                found.append(str((folder / name).relative_to(out_dir)))
        for name in (RUN_MANIFEST, REPORT_MANIFEST):  # rewritten by every report: replaced only when ours
            path = folder / name
            if os.path.lexists(path) and (path.is_symlink() or read_manifest(path) is None):
                found.append(str(path.relative_to(out_dir)))
    if not found:
        return None
    them, are = ("them", "they are") if len(found) > 1 else ("it", "it is")
    return (f"{', '.join(found)} would be overwritten by the report, and no pytest-steer manifest shows that it "
            f"wrote {them} as {are}; choose another (or an empty) --steer-report-dir, or move {them} away (a "
            f"results.jsonl of a session that was killed holds its generations)")


def mark_pages(out_dir: Path, written: Iterable[str], runs: Mapping[str, str] | None = None) -> None:
    """Record in the report dir's manifest the pages just `written` there, keeping the earlier entries that
    still hold (the next session may replace them), and `runs` (the session's run folders; default: as recorded)."""
    out_dir = Path(out_dir)
    earlier = read_manifest(out_dir / REPORT_MANIFEST) or {}
    stamps = {n: s for n, s in _vouched(out_dir, earlier).items() if _stamp_or_none(out_dir / n) == s}
    stamps.update({n: _stamp(out_dir / n) for n in written})
    write_manifest(out_dir, REPORT_MANIFEST, runs=(earlier.get("runs") or {}) if runs is None else dict(runs),
                   files=sorted(stamps), stamps=stamps, written_in=_where(out_dir))


def _remove_replaced(out_dir: Path, kept: set[Path], problems: list[str],
                     units: set[Unit] | None = None) -> tuple[list[str], list[str]]:
    """Remove the `run-<key>/` folders of earlier sessions that this one replaced, and only those that are
    provably ours: a manifest this package wrote there (it names the folder's run, so a user's copy of the
    folder is not ours) lists their files, unchanged since, and they hold nothing else; and no results file of
    theirs holds rows that are not among this session's `units` (None: remove those too). Returns
    what was kept that is not provably ours (a folder without our manifest, e.g. one written before manifests, a
    copy, or one holding files of the user's or files the user changed, a link), and the folders of ours kept
    for their rows, one entry each, for a terminal line each."""
    if not out_dir.is_dir():
        return [], []
    left, earlier = [], []
    for sub in sorted(out_dir.glob(f"{RUN_DIR_PREFIX}*")):
        if sub.is_symlink() and sub.is_dir():
            left.append(f"{sub.name} (a link to a folder: never followed)")
            continue
        if sub in kept or sub.is_symlink() or not sub.is_dir():
            continue
        manifest = read_manifest(sub / RUN_MANIFEST)
        if manifest is None:
            left.append(f"{sub.name}/ (no pytest-steer manifest)")
            continue
        if sub.name != _run_dir(str(manifest.get("run"))):
            left.append(f"{sub.name}/ (a copy: its manifest is {_run_dir(str(manifest.get('run')))}'s)")
            continue
        if not _written_here(sub, manifest):
            left.append(f"{sub.name}/ (moved or copied here: its manifest was written in "
                        f"{manifest.get('written_in')})")
            continue
        stamps = _stamps(manifest)
        ours = set(stamps) | {RUN_MANIFEST}
        others = sorted(p.name + ("/" if p.is_dir() else "") for p in sub.iterdir()
                        if p.name not in ours or p.is_symlink() or not p.is_file())
        if others:
            left.append(f"{sub.name}/ (holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''})")
            continue
        changed = sorted(p.name for p in sub.iterdir() if p.name != RUN_MANIFEST and stamps.get(p.name) != _stamp(p))
        if changed:
            left.append(f"{sub.name}/ ({', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''} changed since "
                        "pytest-steer wrote it)")
            continue
        lost = _rows_not_again(sub, units) if units is not None else 0
        if lost:
            earlier.append(f"{sub.name}/ ({lost} rows)")
            continue

        def remove(sub: Path = sub) -> None:
            for p in sub.iterdir():
                if p.name != RUN_MANIFEST:
                    p.unlink()
            (sub / RUN_MANIFEST).unlink()  # last: an interrupted removal leaves a folder still marked ours
            sub.rmdir()

        _step(problems, f"remove the replaced report folder {sub}", remove)
    return left, earlier


def remove_report(out_dir: Path) -> str | None:
    """Delete the report in `out_dir` as far as it is provably ours (`make clean`): its `run-<key>/` folders
    as `_remove_replaced` would, the top-level files a manifest written there vouches for, unchanged, then the
    manifests and lock, and the folder if that empties it. Everything else stays; returns one line naming it
    (or saying that a session holds the report dir, so nothing was deleted), or None."""
    from ..cache import hold_lock
    from ..files import REPORT_LOCK

    out_dir = Path(out_dir)
    if out_dir.is_symlink() or not out_dir.is_dir():
        return f"kept {out_dir}: a link, never followed" if out_dir.is_symlink() else None
    lock = hold_lock(out_dir / REPORT_LOCK)
    if lock is None:
        return f"{out_dir}: a pytest session is writing its report there; nothing deleted, try again when it ends"
    with lock:
        problems: list[str] = []
        _remove_replaced(out_dir, set(), problems)  # what it keeps is listed below with the rest
        manifests = [out_dir / n for n in (RUN_MANIFEST, REPORT_MANIFEST)]
        for name, stamp in {k: v for m in manifests for k, v in _vouched(out_dir, read_manifest(m)).items()}.items():
            if "/" not in name and _stamp_or_none(out_dir / name) == stamp:
                (out_dir / name).unlink()
        for path in manifests:  # only one written here: a manifest copied in with a folder is the user's copy
            if not path.is_symlink() and (m := read_manifest(path)) is not None and _written_here(out_dir, m):
                path.unlink()
        lock_file = out_dir / REPORT_LOCK
        if lock_file.is_file() and not lock_file.is_symlink() and lock_file.stat().st_size == 0:
            lock_file.unlink()
    rest = sorted(p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in out_dir.iterdir())
    if not rest:
        out_dir.rmdir()
        return None
    return (f"kept in {out_dir}, not provably written by pytest-steer: {printable(', '.join(rest[:10]))}"
            f"{' ...' if len(rest) > 10 else ''}" + "".join(f"; {p}" for p in problems))


Unit = tuple[str, str, str, int]
RESULTS_FILE = "results.jsonl"


def _unit(row: ResultRow) -> Unit:
    return (row.run, row.key, row.config, row.trial)


#: a results file of ours: `results.jsonl`, or an earlier one `_keep_aside` renamed
_RESULTS = re.compile(r"results(-\d{8}T\d{6}(-\d+)?)?\.jsonl")


def _results_files(folder: Path) -> list[str]:
    """The results files in `folder` that its run manifest vouches for, as written. Each may be the only copy of
    its generations (the cache may be off, cleared since, another folder, or unwritable on an xdist worker),
    so none is deleted or replaced while it holds rows a session does not produce again."""
    stamps = _vouched(folder, read_manifest(folder / RUN_MANIFEST))
    return sorted(n for n in stamps if _RESULTS.fullmatch(n) and _stamp_or_none(folder / n) == stamps[n])


def _rows_not_again(folder: Path, units: set[Unit], names: Iterable[str] | None = None) -> int:
    """How many rows (distinct units) of the results files in `folder` (or of those `names`) are not among
    `units`, this session's rows: what deleting or replacing the files would lose. An unreadable file counts
    as one row."""
    lost: set[Unit] = set()
    unreadable = 0
    for name in _results_files(folder) if names is None else names:
        try:
            lost |= {u for r in read_jsonl(folder / name) if (u := _unit(r)) not in units}
        except (OSError, ValueError, TypeError):
            unreadable += 1
    return len(lost) + unreadable


def _keep_aside(folder: Path, units: set[Unit]) -> tuple[str, int]:
    """Before a run's report is written into `folder`: an earlier `results.jsonl` of ours there with rows this
    session does not produce again (it was interrupted, ran fewer trials, or another run) is renamed to
    `results-<its time>.jsonl`, never overwritten. Returns the new name and its rows not again, or ("", 0)."""
    path = folder / RESULTS_FILE
    if RESULTS_FILE not in _results_files(folder) or not (lost := _rows_not_again(folder, units, [RESULTS_FILE])):
        return "", 0
    when = time.strftime("%Y%m%dT%H%M%S", time.gmtime(path.stat().st_mtime))
    name, n = f"results-{when}.jsonl", 1
    while os.path.lexists(folder / name):
        name, n = f"results-{when}-{n}.jsonl", n + 1
    os.rename(path, folder / name)
    return name, lost


def _wrote_results(folder: Path, before: dict[str, int]) -> bool:
    """Whether this session's results file is in `folder`, vouched for by the manifest: a new file since `before`
    (a full disk leaves the earlier one, or none), as written."""
    ino = _files_of(folder).get(RESULTS_FILE)
    return ino is not None and ino != before.get(RESULTS_FILE) and RESULTS_FILE in _results_files(folder)


def _mark_written(folder: Path, run: str, before: dict[str, int], names: Collection[str]) -> None:
    """Write the run manifest of `folder`: the files this session wrote there (one of the run's `names` with a new
    inode since `before`: a file the user saved there meanwhile is not ours), and those an earlier session's
    manifest listed that are still as it wrote them, each with its `_stamp`."""
    earlier = _vouched(folder, read_manifest(folder / RUN_MANIFEST))
    stamps = {}
    for name, ino in _files_of(folder).items():
        if name != RUN_MANIFEST:
            stamp = _stamp(folder / name)
            if (name in names and before.get(name) != ino) or earlier.get(name) == stamp:
                stamps[name] = stamp
    write_manifest(folder, run=run, files=sorted(stamps), stamps=stamps, written_in=_where(folder))


def report_run(rows: Sequence[ResultRow], metrics: Sequence[Metric] | Mapping[str, Sequence[Metric]],
               out_dir: Path, info: RunInfo, *, save_baseline: Path | None = None) -> Report:
    """Everything for the session's rows: per run (rows of one settings key) the results files,
    figures and report fragment (in `out_dir`, or `out_dir/run-<key>` when there are several runs),
    then the standalone `summary.html` and the stored baseline; `run-<key>` folders of earlier
    sessions are removed when their manifest proves them ours (`_remove_replaced`), and each folder
    written gets a manifest of the files written there. Nothing is written in `out_dir` when it holds a
    file the report would replace that is not provably ours (`not_ours`). `metrics` is one list, or one
    per run key.
    Never raises: failures are in `Report.problems`, one line each."""
    report = Report()
    rows = list(rows)
    if not rows:
        return report
    out_dir = Path(out_dir)
    try:
        runs = list(dict.fromkeys(r.run for r in rows))
        # checked at start-up too; here again for an xdist controller (it starts nothing) and for late arrivals
        configs = {run: list(dict.fromkeys(r.config for r in rows if r.run == run)) for run in runs}
        theirs = not_ours(out_dir, configs)
        if theirs:
            raise RuntimeError(theirs)
        fragments = []
        subs = {run: out_dir if len(runs) == 1 else out_dir / _run_dir(run) for run in runs}
        units = {_unit(r) for r in rows}
        written: set[Unit] = set()  # the rows of runs whose results file is on disk: only those replace others
        for run in runs:
            ms = metrics[run] if isinstance(metrics, Mapping) else metrics
            run_info = info.for_run(run)
            before = _files_of(subs[run])
            aside = _step(report.problems, f"keep the earlier results in {subs[run]} (not written: it would "
                          "replace rows in no cache)", partial(_keep_aside, subs[run], units))
            if aside is None:
                continue
            if aside[0]:
                report.kept.append(f"kept in {subs[run]}: {aside[0]}, an earlier session's results.jsonl, for its "
                                   f"{aside[1]} rows this session did not produce again")
            fragment, lines = _report_one([r for r in rows if r.run == run], ms, subs[run], run_info, run,
                                          report.problems)
            _step(report.problems, f"mark {subs[run]} as written by pytest-steer", partial(
                _mark_written, subs[run], run, before, {*_run_names(configs[run]), aside[0]}))
            if _wrote_results(subs[run], before):
                written |= {_unit(r) for r in rows if r.run == run}
            fragments.append(fragment)
            task = run_info.meta.get("task")
            report.terminal_lines += ([f"run {run}" + (f" ({task}):" if task else ":")] if len(runs) > 1 else []) \
                + lines
        left, earlier = _remove_replaced(out_dir, set(subs.values()), report.problems, units=written)
        if earlier:
            report.kept.append(f"kept in {out_dir}, earlier sessions' run folders holding rows this session did not "
                               f"produce again (not in this summary; delete them yourself when no longer needed): "
                               f"{printable(', '.join(earlier))}")
        if left:
            report.kept.append(f"kept in {out_dir}, not provably written by pytest-steer (delete them yourself if "
                               f"they are not needed): {printable('; '.join(left))}")
        report.terminal_lines += report.kept
        report.fragment = "".join(fragments)
        from ..report.html import write_standalone

        page = _step(report.problems, f"write the standalone report {out_dir / SUMMARY_PAGE}",
                     lambda: write_standalone(out_dir / SUMMARY_PAGE, report.fragment, "pytest-steer summary"))
        if page:
            report.terminal_lines.append(f"report: {out_dir}")
        _step(report.problems, f"record this session's runs in {out_dir}", partial(
            mark_pages, out_dir, [SUMMARY_PAGE] if page else [],
            {run: "." if sub == out_dir else sub.name for run, sub in subs.items()}))
    except Exception as exc:  # any failure: the stored baseline below must still be written
        report.problems.append(f"could not build the report in {out_dir}: {exc}")
    if save_baseline is not None:
        line = save_stored_baseline(save_baseline, info.settings, rows, metrics)
        (report.terminal_lines if line.startswith("saved baseline: ") else report.problems).append(line)
    return report


def save_stored_baseline(path: Path, settings: Mapping[str, Mapping[str, Any]], rows: Sequence[ResultRow],
                         metrics: Sequence[Metric] | Mapping[str, Sequence[Metric]]) -> str:
    """Write the stored baseline (`baselines.save_baseline`) and return one line for the terminal:
    "saved baseline: <path>", or "could not write the stored baseline <path>: <error>". Never raises.

    `metrics` may be one list or a list per run key; declarations are merged by name (first wins).
    """
    from ..baselines import save_baseline

    merged: dict[str, Metric] = {}
    for ms in metrics.values() if isinstance(metrics, Mapping) else [metrics]:
        for m in ms:
            merged.setdefault(m.name, m)
    problems: list[str] = []
    saved = _step(problems, f"write the stored baseline {path}",
                  lambda: save_baseline(path, settings, rows, list(merged.values())))
    return f"saved baseline: {saved}" if saved is not None else problems[0]
