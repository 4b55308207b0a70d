"""One session object owns a pytest run's life: `SteerSession`.

start (every check that needs no generation, one usage error) -> the rows (`run.SteerRun`, per unit)
-> the worker payload (typed, xdist) -> gather on the controller -> `finish()` (results, figures,
HTML, stored baseline, through `finish.report_run`) -> `display()` (the terminal lines).
Importing this module is cheap (the plugin does at configure time); the engine loads on first use.

The plugin translates pytest's hooks into these calls and `StartError` into `pytest.UsageError`; it
holds no state of its own. Plain Python: no pytest import.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends import build_backend, unused_options
from ..errors import StartError, SteerError
from ..methods import GridPoint, method_entry, method_names
from ..options import MarkerError
from ..results import ResultRow, write_atomically
from ..scores import Metric
from ..spec import RunSpec, check_settings, resolve, spec_from

if TYPE_CHECKING:  # also what the plugin's fixtures are typed with
    from ..backends.base import Backend
    from ..cache import ResultCache
    from ..evaluation import EvalResult
    from ..generation import Progress
    from ..methods import SteeringMethod
    from ..methods.pasta import PASTA as PASTA
    from ..models import LoadedModel as LoadedModel
    from ..tasks.base import CaseSet as CaseSet
    from .run import SteerRun

__all__ = ["GridPoint", "RunSpec", "StartError", "SteerEval", "SteerPoint", "SteerSession", "WorkerPayload",
           "write_atomically"]
_LAZY = {"EvalResult": "..evaluation", "MetricValue": "..evaluation", "ModelSettings": ".run", "SteerRun": ".run"}


def __getattr__(name: str) -> Any:
    """The engine's types, imported on first use (they pull in torch and pandas)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class SteerPoint:
    """One parametrized grid point of one test."""

    spec: RunSpec
    config: GridPoint
    trial: int

    @property
    def id(self) -> str:
        return f"{self.config.label}-trial{self.trial}"


@dataclass
class WorkerPayload:
    """What an xdist worker sends the controller: its rows, each run's settings and metrics, its run details."""

    rows: list[ResultRow] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # run key -> comparable settings
    metrics: dict[str, list[Metric]] = field(default_factory=dict)  # run key -> declarations
    meta: dict[str, str] = field(default_factory=dict)
    generated: int = 0
    cached: int = 0
    scorer_failures: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({
            "rows": [dataclasses.asdict(r) for r in self.rows], "settings": self.settings,
            "metrics": {k: [dataclasses.asdict(m) for m in ms] for k, ms in self.metrics.items()},
            "meta": self.meta, "generated": self.generated, "cached": self.cached,
            "scorer_failures": self.scorer_failures,
        }, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> WorkerPayload:
        d = json.loads(text)
        return cls([ResultRow.from_dict(r) for r in d["rows"]], d["settings"],
                   {k: [Metric(**m) for m in ms] for k, ms in d["metrics"].items()}, d["meta"],
                   int(d["generated"]), int(d["cached"]), list(d["scorer_failures"]))


def _check_writable(option: str, path: Path, *, is_dir: bool) -> None:
    """Fail at start-up, not after generating, when a path the run will write to cannot be written."""
    import tempfile

    target = path if is_dir else path.parent
    probe = target
    problem = None
    try:
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if is_dir and path.exists() and not path.is_dir():
            problem = "is a file, not a directory"
        elif not is_dir and path.is_dir():
            problem = "is a directory; give a file path"
        elif not probe.is_dir():
            problem = f"{probe} is not a directory"
        else:
            with tempfile.TemporaryFile(dir=probe):
                pass
    except OSError as exc:  # not writable, or a name the system refuses (a part longer than 255 bytes)
        problem = f"cannot be written ({exc.strerror or exc})"
    if problem:
        raise StartError(f"{option} {path}: {problem}")


def _check_overwrite(option: str, path: Path) -> None:
    """Fail at start-up, not after generating, when saving the baseline would replace a file of the user's."""
    from ..baselines import overwrite_problem

    problem = overwrite_problem(path)
    if problem:
        raise StartError(f"{option} {path}: {problem}")


class SteerSession:
    """A pytest session's steering state: settings, the run (created on first use), gathered rows, the report.

    `get_cli(name)` / `get_ini(name)` read one option's command-line / ini value (None when unset).
    """

    def __init__(self, get_cli: Callable[[str], Any], get_ini: Callable[[str], Any], invocation_dir: Path, *,
                 worker: Mapping[str, Any] | None = None, xdist: bool = False,
                 on_progress: Callable[[Progress], None] | None = None) -> None:
        self._get_cli, self._get_ini = get_cli, get_ini
        self.worker = dict(worker) if worker is not None else None  # xdist's workerinput on a worker
        self.on_progress = on_progress
        try:
            self.settings = resolve(get_cli, get_ini, {})
            check_settings(self.settings)
            self.backend: Backend = build_backend(self.settings)  # where rows are generated; starts nothing
            self.backend.check(xdist=worker is not None or xdist)
            unused = unused_options(self.settings)
        except (MarkerError, ValueError, SteerError) as exc:
            raise StartError(str(exc)) from None
        self.report_dir = Path(invocation_dir) / self.settings["report_dir"]
        self._run: SteerRun | None = None
        self.specs: list[RunSpec] = []
        self.problems: dict[str, str] = {}  # test -> marker error found at collection, raised if it is selected
        self.gathered: list[WorkerPayload] = []
        self.summary_fragment: str | None = None
        self.terminal_lines: list[str] = []
        self.alerts: list[str] = []  # the part of terminal_lines that `-q` still shows
        self.stored: Any = None  # baselines.StoredBaseline with --steer-compare
        self.missing_in_stored: set[str] = set()
        self._warned_markers: set[str] = set()  # tests whose marker sets options of methods they do not run
        self.notes: list[str] = [unused] if unused else []  # start-up warnings for the terminal summary
        self._report_lock: Any = None  # held from start-up to close(): one session per report dir
        self.html_page: Path | None = None  # the pytest-html page the plugin points into the report dir
        self._cleared = False  # --steer-clear-cache done (once per session)

    @property
    def is_worker(self) -> bool:
        return self.worker is not None

    @property
    def started(self) -> bool:
        return self._run is not None or bool(self.gathered)

    @property
    def run(self) -> SteerRun:
        if self._run is None:
            from .run import ModelSettings, SteerRun, default_cache

            g = self.settings
            device = g["device"]
            if self.worker is not None and g["devices"]:
                from ..models import worker_device

                device = worker_device(g["devices"], int(str(self.worker["workerid"]).removeprefix("gw")))
            cache = default_cache(g["cache"], g["cache_dir"])
            self.clear_cache(cache)
            settings = ModelSettings(g["model"], device, g["dtype"], g["attn"], g["trust_remote_code"])
            self._run = SteerRun(settings, cache, on_progress=self.on_progress, backend=self.backend)
        return self._run

    def clear_cache(self, cache: ResultCache | None = None) -> None:
        """--steer-clear-cache: delete the cache's own records once, naming what it kept. A plain session does
        it when its run starts; under xdist the controller does, before the workers start (it starts no run
        of its own, and a worker clearing would delete the records its siblings just wrote)."""
        if not self.settings["clear_cache"] or self.is_worker or self._cleared:
            return
        from .run import default_cache

        self._cleared = True
        kept = (cache or default_cache(self.settings["cache"], self.settings["cache_dir"])).clear()
        if kept:
            self.notes.append(kept)

    def spec_for(self, nodeid: str, marker_kwargs: Mapping[str, Any], marker_args: tuple[Any, ...] = ()) -> RunSpec:
        """A test's settings; a bad marker raises MarkerError naming the test."""
        try:
            spec = spec_from(resolve(self._get_cli, self._get_ini, marker_kwargs, marker_args))
            spec.configs()  # labels and values checked by the methods themselves
        except (MarkerError, ValueError) as exc:
            raise MarkerError(f"{nodeid}: {exc}") from None
        self._warn_unused(nodeid, marker_kwargs, spec)
        return spec

    def _warn_unused(self, nodeid: str, marker_kwargs: Mapping[str, Any], spec: RunSpec) -> None:
        """A marker setting an option of a method the test does not run has no effect: warn (once per test),
        since it usually means the method was meant to be in `methods=`."""
        owned = {o.name for o in spec.owned_options()}
        unused: dict[str, list[str]] = {}
        for method in method_names():
            entry = method_entry(method)
            for name in [o.name for o in (entry.grid, *entry.options)]:
                if name in marker_kwargs and name not in owned:
                    unused.setdefault(name, []).append(method)
        if unused and nodeid not in self._warned_markers:
            self._warned_markers.add(nodeid)
            what = "; ".join(f"{name} (of {', '.join(methods)})" for name, methods in unused.items())
            warnings.warn(f"pytest-steer: {nodeid}: @pytest.mark.steer sets {what}, but the test runs only "
                          f"{', '.join(spec.methods)}, so it has no effect; add the method to methods= or drop "
                          "the setting", UserWarning, stacklevel=2)

    # -- start ---------------------------------------------------------------------------------------

    def note_partial_selection(self, selected: Mapping[RunSpec, set[str]], whole: set[RunSpec]) -> None:
        """`-k baseline` selects some configs' tests, but a unit is every config of a trial (one set of shared
        batches, paired on one baseline), so all of them are generated: say so rather than surprise."""
        for spec, labels in selected.items():
            every = [c.label for c in spec.configs()]
            if spec not in whole and not set(every) <= labels | {"baseline"}:
                self.notes.append(f"the selected tests read {len(labels)} of the {len(every)} configs, but every "
                                  "config of a trial is generated together (shared batches, paired on one "
                                  "baseline): all of them are generated, or read from the cache, and reported")

    def start(self, specs: Iterable[RunSpec], say: Callable[[str], None] = lambda line: None, *,
              html: bool = False) -> None:
        """Start-up checks in order of cost: paths, device, model source, stored baseline, then load and
        prepare. Raises StartError (one line); `say` shows a warning now (it is also kept for the summary).
        `html`: the plugin will point pytest-html's page into the report dir (`html_page`)."""
        from ..cache import default_cache_dir
        from ..models import ModelLoadError, check_device, check_source, split_cpu_threads
        from ..options import BUILTIN_QUALITY
        from ..tasks import hub_sources, task_options

        self.specs = list(dict.fromkeys(specs))
        g = self.settings
        if not self.is_worker:
            _check_writable("--steer-report-dir", self.report_dir, is_dir=True)
            self._lock_report_dir()
            self._check_report_files(html)
            self._check_baseline_path()
        cache_dir = Path(g["cache_dir"]) if g["cache_dir"] else default_cache_dir()
        try:
            if g["cache"] and cache_dir.exists() and not cache_dir.is_dir():
                raise StartError(f"--steer-cache-dir {cache_dir}: is a file, not a directory")
        except OSError as exc:  # a name the system refuses, e.g. a part longer than 255 bytes
            raise StartError(f"--steer-cache-dir {cache_dir}: cannot be used ({exc.strerror or exc})") from None
        if self.run.cache is not None:
            reason = self.run.cache.check_writable()
            if reason:
                self.notes.append(reason)
        try:
            check_device(g["device"])
            # hub ids: a typo, a gated repo or a missing revision fails here, before any model loads; an
            # unreachable hub is found once and the run goes on from the local HF cache, saying so
            notes = [check_source(g["model"])]
            for spec in self.specs:
                if spec.quality not in BUILTIN_QUALITY:
                    notes.append(check_source(spec.quality, option="--steer-quality"))
                task_settings = {o.name: spec[o.name] for o in task_options(spec.task)}
                for source, option in hub_sources(spec.task, task_settings):  # the task says which it needs
                    notes.append(check_source(source, option=option, kind="dataset"))
        except ModelLoadError as exc:
            raise StartError(str(exc)) from None
        for note in filter(None, notes):
            self.notes.append(note)
            if not self.is_worker:
                say(note)
        if self.worker is not None and not str(g["device"]).startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                split_cpu_threads(int(self.worker.get("workercount", 1)))
        self._prepare()

    def _lock_report_dir(self) -> None:
        """One session per report dir: two would overwrite each other's files, the last one silently winning."""
        from ..cache import hold_lock
        from ..files import REPORT_LOCK

        try:
            self.report_dir.mkdir(parents=True, exist_ok=True)
            self._report_lock = hold_lock(self.report_dir / REPORT_LOCK)
        except OSError as exc:
            reason = (f"a link to {os.readlink(self.report_dir)}, which does not exist"
                      if self.report_dir.is_symlink() and not self.report_dir.exists() else exc.strerror or exc)
            raise StartError(f"--steer-report-dir {self.report_dir}: cannot be written ({reason})") from None
        if self._report_lock is None:
            raise StartError(f"--steer-report-dir {self.report_dir}: another pytest session is writing its report "
                             "there; wait for it, or give this run its own --steer-report-dir")

    def check_paths(self, specs: Iterable[RunSpec], *, html: bool = False) -> None:
        """The start-up checks of the paths a run writes, with no side effect: `--collect-only` refuses what a
        run would refuse. Raises StartError."""
        self.specs = list(dict.fromkeys(specs))
        _check_writable("--steer-report-dir", self.report_dir, is_dir=True)
        self._check_report_files(html)
        self._check_baseline_path()

    def _check_baseline_path(self) -> None:
        path = self.settings["save_baseline"]
        if path:
            _check_writable("--steer-save-baseline", Path(path), is_dir=False)
            _check_overwrite("--steer-save-baseline", Path(path))

    def _check_report_files(self, html: bool) -> None:
        """A user's file with a name the report writes (`--steer-report-dir .`, a kept results.jsonl) would be
        replaced silently at the end: refuse now, before any work, unless a manifest proves the file ours."""
        from .finish import HTML_PAGE, not_ours

        theirs = not_ours(self.report_dir, {s.key(): [c.label for c in s.configs()] for s in self.specs}, html=html)
        if theirs:
            raise StartError(f"--steer-report-dir {self.report_dir}: {theirs}")
        self.html_page = self.report_dir / HTML_PAGE if html else None

    def page_written(self, path: Path) -> None:
        """pytest-html wrote `path`: when it is `html_page`, record it as ours, so the next session may replace it."""
        if self.html_page is None or Path(path).resolve() != self.html_page.resolve():
            return
        from .finish import mark_pages

        try:
            mark_pages(self.report_dir, [self.html_page.name])
        except OSError as exc:
            self.notes.append(f"could not record {path} as written by pytest-steer in {self.report_dir}: {exc}")

    def _prepare(self) -> None:
        from ..baselines import check_compatible, load_baseline

        g = self.settings
        try:
            if g["compare"]:
                self.stored = load_baseline(g["compare"])
            self.run.prepare(self.specs)
            if not self.is_worker:  # the terminal says which layer(s) activation steering uses, and its fallbacks
                self.notes.extend(self.run.method_notes())
            if self.stored is not None:
                for spec in self.specs:
                    check_compatible(self.stored, self.run.comparable_settings(spec), g["compare"])
            self._start_backend()
        except (SteerError, ValueError) as exc:  # ValueError: library checks not moved into the family yet
            raise StartError(str(exc)) from None

    def _start_backend(self) -> None:
        """Start the backend now (a cluster: reach it, load the replicas): a failure is one line here."""
        try:
            self.backend.start(self.run)
        except SteerError:
            self.backend.close()
            raise

    def close(self) -> None:
        """Stop the backend, and release the report dir: the next session (another process, or pytester's
        next run) may write."""
        if self._run is not None:
            self.backend.close()
        if self._report_lock is not None:
            self._report_lock.close()
            self._report_lock = None

    # -- during the run --------------------------------------------------------------------------------

    def methods(self, spec: RunSpec) -> dict[str, SteeringMethod]:
        """Every registered method built from `spec`'s settings; the spec's own methods prepared on the model."""
        from ..methods import build_method, method_names

        prepared = self.run.methods(spec)
        return {name: prepared.get(name) or build_method(name, spec) for name in method_names()}

    def result(self, point: SteerPoint) -> EvalResult:
        return self.run.result(point.spec, point.config, point.trial)

    def regressions(self, point: SteerPoint, result: EvalResult) -> list[str]:
        """With --steer-compare: one line per metric of this point that regressed against the stored baseline.

        A config the stored file does not have is not a regression: it is noted for the summary instead."""
        if self.stored is None:
            return []
        from ..baselines import regressions, stored_configs

        if point.config.label not in stored_configs(self.stored):
            self.missing_in_stored.add(point.config.label)
            return []
        return regressions(self.stored, result.rows, config=point.config.label, trial=point.trial,
                           margin=self.settings["compare_margin"], metrics=result.metrics)

    # -- xdist: workers send their payload, the controller gathers it ----------------------------------

    def payload(self) -> WorkerPayload:
        run = self.run
        return WorkerPayload(
            rows=run.all_rows(), settings={s.key(): run.comparable_settings(s) for s in self.specs},
            metrics={s.key(): run.metrics(s) for s in self.specs}, meta=run.meta(), generated=run.generated_rows,
            cached=run.cached_rows, scorer_failures=list(run.scorer_failures))

    def gather(self, payload: WorkerPayload) -> None:
        self.gathered.append(payload)

    # -- finish and display ----------------------------------------------------------------------------

    def _rows(self) -> tuple[list[ResultRow], dict[str, dict[str, Any]], dict[str, list[Metric]], dict[str, str]]:
        rows: list[ResultRow] = []
        settings: dict[str, dict[str, Any]] = {}
        metrics: dict[str, list[Metric]] = {}
        meta: dict[str, str] = {}
        for p in self.gathered:
            settings.update(p.settings)
            metrics.update(p.metrics)
        run = self._run
        if run is not None and run.all_rows():
            rows += run.all_rows()
            for s in self.specs:
                settings[s.key()] = run.comparable_settings(s)
                metrics[s.key()] = run.metrics(s)
            meta = run.meta()
        rows += [r for p in self.gathered for r in p.rows]
        if self.gathered:
            meta = dict(self.gathered[0].meta)
            gen, cached = sum(p.generated for p in self.gathered), sum(p.cached for p in self.gathered)
            total = gen + cached
            meta["cache hit rate"] = f"{cached / total:.0%} of {total} rows" if total else "n/a"
            meta["workers"] = str(len(self.gathered))
        unique: dict[tuple[str, str, str, int], ResultRow] = {}
        for r in rows:
            unique.setdefault((r.run, r.key, r.config, r.trial), r)
        return list(unique.values()), settings, metrics, meta

    def finish(self) -> None:
        """Write results, figures, HTML and the stored baseline (each step on its own: see `finish`)."""
        from .finish import RunInfo, report_run

        rows, settings, metrics, meta = self._rows()
        if not rows:
            return
        g = self.settings
        save = Path(g["save_baseline"]) if g["save_baseline"] else None
        report = report_run(rows, metrics, self.report_dir, RunInfo(meta=meta, settings=settings), save_baseline=save)
        self.summary_fragment = report.fragment
        lines = [*report.terminal_lines, *report.problems]
        must_act: list[str] = []  # shown under `-q` too, with the kept files and failed steps
        if len(self.gathered) > 1 and not g["cache"]:
            lines.append("--steer-cache false: xdist workers cannot share generations, so a trial whose tests ran "
                         "on several workers was generated on each of them")
        run = self._run
        failures = [*(run.scorer_failures if run is not None else []),
                    *(f for p in self.gathered for f in p.scorer_failures)]
        if failures:
            must_act.append(f"scorers failed on {len(failures)} row(s); those scores are missing (the rows' "
                          f"details.scorer_errors say why) and were not cached. First: {failures[0]}")
        if run is not None and run.cache is not None and (run.cache.stats.corrupt or run.cache.stats.unwritable):
            st = run.cache.stats
            must_act.append(f"cache: {st.corrupt} corrupt record(s) found and regenerated, {st.unwritable} record(s) "
                          f"could not be written ({run.cache.root})")
        self.terminal_lines = [*lines, *must_act]
        self.alerts = [*report.kept, *report.problems, *must_act]

    def html_columns(self) -> list[tuple[str, str]]:
        """The per-test HTML table's columns: the grid point, then every declared metric that is not a side
        effect (the task's metrics, the headline quality, a reward, the dose), as (property, title). Known
        once the session has started (pytest-html draws its header then); an xdist controller learns the
        declarations only from its workers, so its table names each row's primary metric instead."""
        declared: dict[str, Metric] = {}
        run = self._run
        if run is not None:
            for spec in self.specs:
                for m in run.metrics(spec):
                    declared.setdefault(m.name, m)
        columns = [("steer_config", "Config"), ("steer_trial", "Trial")]
        if not declared:
            return [*columns, ("steer_primary", "Primary metric")]
        return [*columns, *((m.name, m.title) for m in declared.values() if not m.side_effect)]

    @staticmethod
    def explain(op: str, left: Any, right: Any) -> list[str] | None:
        """`assert result.strict_prompt_accuracy >= 0.5` explained: the metric, threshold and baseline."""
        import sys

        if "pytest_steer.evaluation" not in sys.modules or op not in (">=", ">", "<=", "<", "==", "!="):
            return None  # no result was ever made: no MetricValue can be in the comparison
        from ..evaluation import MetricValue

        metric, other = (left, right) if isinstance(left, MetricValue) else (right, left)
        if not isinstance(metric, MetricValue):
            return None
        lines = [f"{metric.name} {op} threshold failed" if metric is left else f"threshold {op} {metric.name} failed",
                 metric.describe(), f"threshold: {other!r}"]
        if isinstance(other, MetricValue):
            lines[-1] = f"other: {other.describe()}"
        return lines

    def display(self, quiet: bool = False) -> list[str]:
        """The lines of the terminal summary's pytest-steer section; `quiet` (`-q`): only the warnings and what
        the user must act on (files kept, steps that failed), not the tables."""
        if quiet:
            return [*self.notes, *self.alerts]
        lines = [*self.notes, *self.terminal_lines]
        if self.missing_in_stored:
            lines.append(f"not in the stored baseline, not compared: {', '.join(sorted(self.missing_in_stored))}")
        return lines


class SteerEval:
    """Evaluation entry point for tests that look at the whole sweep rather than one grid point."""

    def __init__(self, run: SteerRun, spec: RunSpec) -> None:
        self._run, self.spec = run, spec

    @property
    def configs(self) -> list[GridPoint]:
        return self.spec.configs()

    def result(self, config: str | GridPoint, trial: int | None = None) -> EvalResult:
        """One config by label ("pasta-alpha10") or GridPoint; `trial=None` pools all trials (the unit for gates)."""
        return self._run.result(self.spec, config, trial)

    def results(self, method: str | None = None) -> list[EvalResult]:
        """Every steered config's pooled result, optionally of one method."""
        return [self.result(c) for c in self.configs if not c.is_baseline and method in (None, c.method)]

    def rows(self) -> list[ResultRow]:
        return [r for t in range(self.spec.trials) for r in self._run.rows(self.spec, t)]

    def frame(self) -> Any:
        """The whole sweep as a DataFrame, one row per (case, config, trial), one column per score."""
        from ..results import to_frame

        return to_frame(self.rows())

    def summary(self) -> Any:
        """One row per config with every metric, its interval, and the paired difference to the baseline."""
        from ..reduce import summary

        return summary(self.frame(), self._run.metrics(self.spec))

