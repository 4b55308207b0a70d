"""pytest glue: options, marker, fixtures, parametrization, xdist and pytest-html hooks.

The work lives in `session.SteerRun` and `reporting`; this module only translates between pytest
and them. It costs nothing where no steering test is collected: nothing heavier than `options` is
imported, and nothing is written, until a collected item uses a steering fixture or the marker.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .options import BUILTIN_QUALITY, OPTIONS, OPTIONS_BY_NAME, MarkerError, RunSpec, resolve, spec_from

if TYPE_CHECKING:
    from .evaluation import EvalResult
    from .methods import Config
    from .session import SteerRun

GRID_FIXTURES = {"steer_config", "alpha", "trial", "steer_result", "steer_baseline"}
STEER_FIXTURES = {"steer_eval", "steer_cases", "pasta", "steer_model"}
WORKER_KEY = "pytest_steer_rows"


@dataclass(frozen=True)
class SteerPoint:
    """One parametrized grid point of one test."""

    spec: RunSpec
    config: Config
    trial: int

    @property
    def id(self) -> str:
        return f"{self.config.label}-trial{self.trial}"


# -- options ------------------------------------------------------------------------------------------


def _argparse_type(parse: Any) -> Any:
    def convert(text: str) -> Any:
        return parse(text)  # parse_* raise argparse.ArgumentTypeError -> "argument --steer-x: ..."

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("steer", "pytest-steer: LLM steering evaluations")
    for o in OPTIONS:
        default = ",".join(map(str, o.default)) if isinstance(o.default, tuple) else o.default
        help_text = f"{o.help} (default: {default}; ini: {o.ini})"
        if o.flag:
            group.addoption(o.cli, action="store_true", default=None, dest=f"steer_{o.name}", help=help_text)
        else:
            group.addoption(o.cli, action="store", default=None, dest=f"steer_{o.name}", type=_argparse_type(o.parse),
                            metavar=o.name.upper(), help=help_text)
        parser.addini(o.ini, help=o.help, default=None)


class SteerPlugin:
    """Per-session state: resolved options, the run (created on first use), and the rows for the report."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        try:
            self.global_settings = resolve(self._cli, self._ini, {})
        except MarkerError as exc:
            raise pytest.UsageError(f"pytest-steer: {exc}") from None
        if self.global_settings["ray"] and (self.is_worker or getattr(config.option, "numprocesses", None)):
            raise pytest.UsageError("pytest-steer: --steer-ray and -n both spread generation over processes; use one "
                                    "(Ray replicas take the place of xdist workers)")
        self.report_dir = Path(config.invocation_params.dir) / self.global_settings["report_dir"]
        self._run: SteerRun | None = None
        self.specs: list[RunSpec] = []
        self.problems: dict[str, str] = {}  # test -> marker error found at collection, raised if the test is selected
        self.worker_rows: list[dict[str, Any]] = []
        self.worker_settings: dict[str, dict[str, Any]] = {}
        self.worker_meta: list[dict[str, Any]] = []
        self.worker_metrics: dict[str, list[dict[str, Any]]] = {}
        self.summary_fragment: str | None = None
        self.terminal_lines: list[str] = []
        self.stored: Any = None
        self.missing_in_stored: set[str] = set()
        self.notes: list[str] = []  # start-up warnings for the terminal summary (e.g. a read-only cache)
        self.report_lock: Any = None  # held from start-up to exit: one session per report dir
        self._progress_last = 0.0

    def _cli(self, name: str) -> Any:
        return self.config.getoption(f"steer_{name}")

    def _ini(self, name: str) -> Any:
        return self.config.getini(OPTIONS_BY_NAME[name].ini)

    @property
    def run(self) -> SteerRun:
        if self._run is None:
            from .session import ModelSettings, SteerRun, default_cache

            g = self.global_settings
            device = g["device"]
            if self.is_worker and g["devices"]:
                from .models import worker_device

                worker = str(getattr(self.config, "workerinput", {})["workerid"])
                device = worker_device(g["devices"], int(worker.removeprefix("gw")))
            cache = default_cache(g["cache"], g["cache_dir"])
            if g["clear_cache"] and not self.is_worker:
                cache.clear()
            settings = ModelSettings(g["model"], device, g["dtype"], g["attn"], g["trust_remote_code"])
            backend = None
            if g["ray"]:
                from .ray_backend import RayBackend, RaySettings

                backend = RayBackend(RaySettings(g["ray"], g["ray_replicas"], g["ray_cpus_per_replica"],
                                                 g["ray_gpus_per_replica"]))
            self._run = SteerRun(settings, cache, on_progress=self._progress, backend=backend)
        return self._run

    def spec_for(self, node: Any) -> RunSpec:
        """The test's settings; a bad marker raises MarkerError naming the test."""
        marker = node.get_closest_marker("steer")
        kwargs = dict(marker.kwargs) if marker else {}
        args = tuple(marker.args) if marker else ()
        try:
            spec = spec_from(resolve(self._cli, self._ini, kwargs, args))
            spec.configs()  # labels and values checked by the methods themselves
            return spec
        except (MarkerError, argparse.ArgumentTypeError, ValueError) as exc:
            raise MarkerError(f"{node.nodeid}: {exc}") from None

    # -- progress: plain lines in CI logs and under xdist, one updating line on a terminal -----------

    def _progress(self, p: Any) -> None:
        if self.config.get_verbosity() < 0:
            return
        now = time.monotonic()
        finished = p.done == p.total
        eta = f"{p.eta_s:.0f}s" if p.eta_s == p.eta_s else "?"
        line = f"steer: generated {p.done}/{p.total} rows, {p.tokens_per_s:.1f} tokens/s, ETA {eta}"
        if p.per_replica is not None:
            line += " (" + ", ".join(f"{name} {n}" for name, n in p.per_replica.items()) + ")"
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        tty = tr is not None and tr.isatty() and not self.is_worker
        if not tty and not finished and now - self._progress_last < 10:
            return
        self._progress_last = now
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        # capture owns fds 1 and 2 while a test runs; xdist workers inherit the controller's stderr
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            if self.is_worker and sys.__stderr__ is not None:
                sys.__stderr__.write(f"[{getattr(self.config, 'workerinput', {}).get('workerid')}] {line}\n")
                sys.__stderr__.flush()
            elif tr is not None and tty:
                tr.write("\r" + line.ljust(78), flush=True)
                if finished:
                    tr.write("\n")
            elif tr is not None:
                tr.write_line(line)


_PLUGIN = pytest.StashKey[SteerPlugin]()
_RESULT = pytest.StashKey[tuple[SteerPoint, Any]]()


def _plugin(config: pytest.Config) -> SteerPlugin:
    return config.stash[_PLUGIN]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "steer(**settings): grid and settings for one test, e.g. methods='pasta,prompt', alphas=[5, 10], trials=3, "
        "per_type=4, task='ifeval', include_baseline=False; the command line still wins",
    )
    config.stash[_PLUGIN] = SteerPlugin(config)


# -- parametrization and fixtures -------------------------------------------------------------------


def _own_params(metafunc: pytest.Metafunc) -> set[str]:
    """Names the test parametrizes itself: a user's own `alpha` parameter is not our grid."""
    names: set[str] = set()
    for mark in metafunc.definition.iter_markers("parametrize"):
        argnames = mark.args[0] if mark.args else mark.kwargs.get("argnames", "")
        names.update(n.strip() for n in argnames.split(",")) if isinstance(argnames, str) else names.update(argnames)
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not GRID_FIXTURES & set(metafunc.fixturenames) or GRID_FIXTURES & _own_params(metafunc):
        return
    plugin = _plugin(metafunc.config)
    try:
        spec = plugin.spec_for(metafunc.definition)
    except MarkerError as exc:
        plugin.problems[metafunc.definition.nodeid] = str(exc)
        metafunc.parametrize("steer_point", [pytest.param(None, id="invalid-steer-marker")], indirect=True)
        return
    configs = [c for c in spec.configs() if not c.is_baseline or spec.include_baseline]
    points = [SteerPoint(spec, c, t) for t in range(spec.trials) for c in configs]
    params = [
        # one xdist group per trial: `-n N --dist loadgroup` generates each trial once, on one worker
        pytest.param(p, id=p.id, marks=pytest.mark.xdist_group(f"steer-{spec.key()}-trial{p.trial}"))
        for p in points
    ]
    metafunc.parametrize("steer_point", params, indirect=True)


@pytest.fixture
def steer_point(request: pytest.FixtureRequest) -> SteerPoint:
    """The grid point of this test item (set by parametrization)."""
    if not hasattr(request, "param"):
        raise pytest.UsageError("steer_point is set by pytest-steer's parametrization; ask for steer_config or trial")
    point: SteerPoint = request.param
    return point


@pytest.fixture
def steer_config(steer_point: SteerPoint) -> Config:
    """This item's config: `.method`, `.value`, `.label`, `.strength` (method "baseline" when unsteered)."""
    return steer_point.config


@pytest.fixture
def alpha(steer_point: SteerPoint) -> float | None:
    """PASTA's alpha of this item; None for the baseline and for other methods' configs."""
    c = steer_point.config
    return float(c.value) if c.method == "pasta" and c.value is not None else None


@pytest.fixture
def trial(steer_point: SteerPoint) -> int:
    return steer_point.trial


@pytest.fixture
def steer_result(request: pytest.FixtureRequest, steer_point: SteerPoint) -> EvalResult:
    """The scored result of this item's (config, trial), with its baseline; metrics become test properties."""
    result = _plugin(request.config).run.result(steer_point.spec, steer_point.config, steer_point.trial)
    for name, value in result.properties():
        request.node.user_properties.append((name, value))
    request.node.stash[_RESULT] = (steer_point, result)
    return result


@pytest.fixture
def steer_baseline(request: pytest.FixtureRequest, steer_point: SteerPoint) -> EvalResult:
    """The unsteered result of the same trial (same cases, same random draws)."""
    return _plugin(request.config).run.result(steer_point.spec, "baseline", steer_point.trial)


@pytest.fixture(scope="session")
def steer_model(pytestconfig: pytest.Config) -> Any:
    """The model under test (`LoadedModel`: .model, .tokenizer, .name, .identity), loaded once per process."""
    return _plugin(pytestconfig).run.model


@pytest.fixture
def steer_cases(request: pytest.FixtureRequest) -> Any:
    """The evaluated cases for this test's settings (`CaseSet`)."""
    plugin = _plugin(request.config)
    return plugin.run.cases(plugin.spec_for(request.node))


@pytest.fixture
def pasta(request: pytest.FixtureRequest) -> Any:
    """This test's PASTA method (layers, scale position), prepared on the model: `pasta.steer(...)`."""
    plugin = _plugin(request.config)
    spec = plugin.spec_for(request.node)
    from .methods import build_method

    return plugin.run.methods(spec).get("pasta") or build_method("pasta", spec)


class SteerEval:
    """Evaluation entry point for tests that look at the whole sweep rather than one grid point."""

    def __init__(self, plugin: SteerPlugin, spec: RunSpec) -> None:
        self._plugin, self.spec = plugin, spec

    @property
    def configs(self) -> list[Config]:
        return self.spec.configs()

    def result(self, config: str | Config, trial: int | None = None) -> EvalResult:
        """One config by label ("pasta-alpha10") or Config; `trial=None` pools all trials (the unit for gates)."""
        return self._plugin.run.result(self.spec, config, trial)

    def results(self, method: str | None = None) -> list[EvalResult]:
        """Every steered config's pooled result, optionally of one method."""
        return [self.result(c) for c in self.configs if not c.is_baseline and method in (None, c.method)]

    def rows(self) -> list[Any]:
        return [r for t in range(self.spec.trials) for r in self._plugin.run.rows(self.spec, t)]

    def frame(self) -> Any:
        """The whole sweep as a DataFrame, one row per (case, config, trial), one column per score."""
        from .results import to_frame

        return to_frame(self.rows())

    def summary(self) -> Any:
        """One row per config with every metric, its interval, and the paired difference to the baseline."""
        from .reduce import summary

        return summary(self.frame(), self._plugin.run.metrics(self.spec))


@pytest.fixture
def steer_eval(request: pytest.FixtureRequest) -> SteerEval:
    plugin = _plugin(request.config)
    return SteerEval(plugin, plugin.spec_for(request.node))


def _uses_steering(item: pytest.Item) -> bool:
    cs = getattr(item, "callspec", None)
    if cs is not None and "steer_point" in cs.params:
        return True
    return bool(set(getattr(item, "fixturenames", ())) & STEER_FIXTURES) or item.get_closest_marker("steer") is not None


def _check_writable(option: str, path: Path, *, is_dir: bool) -> None:
    """Fail at start-up, not after generating, when a path the run will write to cannot be written."""
    import tempfile

    target = path if is_dir else path.parent
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    problem = None
    if is_dir and path.exists() and not path.is_dir():
        problem = "is a file, not a directory"
    elif not is_dir and path.is_dir():
        problem = "is a directory; give a file path"
    elif not probe.is_dir():
        problem = f"{probe} is not a directory"
    else:
        try:
            with tempfile.TemporaryFile(dir=probe):
                pass
        except OSError as exc:
            problem = f"cannot be written ({exc.strerror or exc})"
    if problem:
        raise pytest.UsageError(f"pytest-steer: {option} {path}: {problem}")


def _lock_report_dir(plugin: SteerPlugin) -> None:
    """One session per report dir: two would overwrite each other's files, the last one silently winning."""
    from .cache import hold_lock

    try:
        plugin.report_dir.mkdir(parents=True, exist_ok=True)
        plugin.report_lock = hold_lock(plugin.report_dir / ".pytest-steer.lock")
    except OSError as exc:
        raise pytest.UsageError(f"pytest-steer: --steer-report-dir {plugin.report_dir}: cannot be written "
                                f"({exc.strerror or exc})") from None
    if plugin.report_lock is None:
        raise pytest.UsageError(f"pytest-steer: --steer-report-dir {plugin.report_dir}: another pytest session is "
                                "writing its report there; wait for it, or give this run its own --steer-report-dir")


def _start_html(config: pytest.Config, session: pytest.Session, report_dir: Path) -> None:
    """Switch pytest-html on into the report dir, now that a steering test is known to run."""
    try:
        from pytest_html import plugin as html_plugin
        from pytest_html.basereport import BaseReport
    except ImportError:
        return
    config.option.htmlpath = str(report_dir / "report.html")
    config.option.self_contained_html = True
    before = set(config.pluginmanager.get_plugins())
    html_plugin.pytest_configure(config)
    for report in set(config.pluginmanager.get_plugins()) - before:
        if isinstance(report, BaseReport):  # it missed the session start: give it the call it expects
            report.pytest_sessionstart(session)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail fast: everything that can be checked without generating is checked once the selection is known."""
    plugin = _plugin(config)
    steering = [it for it in items if _uses_steering(it)]
    if not steering or config.option.collectonly:
        return
    tests = dict.fromkeys(it.nodeid.split("[")[0] for it in steering)
    bad = [plugin.problems[n] for n in tests if n in plugin.problems]
    if bad:
        raise pytest.UsageError("pytest-steer: " + bad[0])
    specs = []
    try:
        for it in steering:
            cs = getattr(it, "callspec", None)
            specs.append(cs.params["steer_point"].spec if cs and "steer_point" in cs.params else plugin.spec_for(it))
    except MarkerError as exc:
        raise pytest.UsageError(f"pytest-steer: {exc}") from None
    plugin.specs = list(dict.fromkeys(specs))
    _note_partial_selection(plugin, steering)
    _start(plugin, session)


def _note_partial_selection(plugin: SteerPlugin, items: list[pytest.Item]) -> None:
    """`-k baseline` selects some configs' tests, but a unit is every config of a trial (one set of shared
    batches, paired on one baseline), so all of them are generated: say so rather than surprise."""
    selected: dict[RunSpec, set[str]] = {}
    whole: set[RunSpec] = set()  # specs a whole-sweep test (steer_eval, ...) needs every config of anyway
    for it in items:
        cs = getattr(it, "callspec", None)
        if cs is not None and "steer_point" in cs.params:
            selected.setdefault(cs.params["steer_point"].spec, set()).add(cs.params["steer_point"].config.label)
        else:
            whole.add(plugin.spec_for(it))
    for spec, labels in selected.items():
        every = [c.label for c in spec.configs()]
        if spec not in whole and not set(every) <= labels | {"baseline"}:
            plugin.notes.append(f"the selected tests read {len(labels)} of the {len(every)} configs, but every config "
                                "of a trial is generated together (shared batches, paired on one baseline): all of "
                                "them are generated, or read from the cache, and reported")


def _start(plugin: SteerPlugin, session: pytest.Session) -> None:
    """Start-up checks in order of cost: paths, device, model source, stored baseline, then load and prepare."""
    from .cache import default_cache_dir
    from .cases import FILE_SUFFIXES
    from .models import ModelLoadError, check_device, check_source, split_cpu_threads

    g, config = plugin.global_settings, plugin.config
    if not plugin.is_worker:
        _check_writable("--steer-report-dir", plugin.report_dir, is_dir=True)
        _lock_report_dir(plugin)
        if g["save_baseline"]:
            _check_writable("--steer-save-baseline", Path(g["save_baseline"]), is_dir=False)
    cache_dir = Path(g["cache_dir"]) if g["cache_dir"] else default_cache_dir()
    if g["cache"] and cache_dir.exists() and not cache_dir.is_dir():
        raise pytest.UsageError(f"pytest-steer: --steer-cache-dir {cache_dir}: is a file, not a directory")
    if plugin.run.cache is not None:
        reason = plugin.run.cache.check_writable()
        if reason:
            plugin.notes.append(reason)
    try:
        check_device(g["device"])
        # hub ids: a typo, a gated repo or a missing revision fails here, before any model loads; an unreachable
        # hub is found once and the run goes on from the local HF cache, saying so (one line, now and at the end)
        notes = [check_source(g["model"])]
        for spec in plugin.specs:
            if spec.quality not in BUILTIN_QUALITY:
                notes.append(check_source(spec.quality, option="--steer-quality"))
            if Path(spec.dataset).suffix.lower() not in FILE_SUFFIXES:  # a file is for the case loader to check
                notes.append(check_source(spec.dataset, option="--steer-dataset", kind="dataset"))
    except ModelLoadError as exc:
        raise pytest.UsageError(f"pytest-steer: {exc}") from None
    for note in filter(None, notes):
        plugin.notes.append(note)
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None and not plugin.is_worker:
            reporter.write_line(f"pytest-steer: {note}", yellow=True)
    if plugin.is_worker and not str(g["device"]).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            split_cpu_threads(int(getattr(config, "workerinput", {}).get("workercount", 1)))
    from .baselines import BaselineMismatch, check_compatible, load_baseline
    from .cases import CaseLoadError
    from .methods import SteeringError
    from .metrics.quality import QualityScorerError
    from .scores import ScorerError
    from .tasks import TaskError

    try:
        if g["compare"]:
            plugin.stored = load_baseline(g["compare"])
        plugin.run.prepare(plugin.specs)
        if not plugin.is_worker:  # the terminal says which layer(s) activation steering uses, and its fallbacks
            plugin.notes.extend(plugin.run.method_notes())
        if plugin.stored is not None:
            for spec in plugin.specs:
                check_compatible(plugin.stored, plugin.run.comparable_settings(spec), g["compare"])
        if g["ray"]:
            _start_ray(plugin)
    except (ModelLoadError, CaseLoadError, QualityScorerError, ScorerError, SteeringError, TaskError,
            BaselineMismatch, ValueError) as exc:
        raise pytest.UsageError(f"pytest-steer: {exc}") from None
    if g["html"] and not plugin.is_worker and not getattr(config.option, "htmlpath", None) \
            and hasattr(config.option, "htmlpath"):
        _start_html(config, session, plugin.report_dir)
    if not plugin.is_worker:
        _guard_html(plugin)


def _start_ray(plugin: SteerPlugin) -> None:
    """Reach the cluster and load the replicas now: an unreachable or too small cluster is one line here."""
    from .ray_backend import RayBackend, RayBackendError

    backend = plugin.run.backend
    assert isinstance(backend, RayBackend)
    try:
        backend.start(plugin.run)
    except RayBackendError as exc:
        backend.close()
        raise pytest.UsageError(f"pytest-steer: {exc}") from None


def _guard_html(plugin: SteerPlugin) -> None:
    """pytest-html writes its page in place and raises at session end when the disk is full or read-only
    (a traceback, a 0-byte page, no pass/fail line, rc 1). Have it write atomically, and make a failure
    one line in our summary: the tests' outcome and exit code stand."""
    try:
        from pytest_html.basereport import BaseReport
    except ImportError:
        return
    from .results import write_atomically

    manager = plugin.config.pluginmanager
    for report in [p for p in manager.get_plugins() if isinstance(p, BaseReport)]:
        def write(rendered: str, report: Any = report) -> None:
            try:
                write_atomically(report._report_path, rendered)
            except OSError as exc:
                plugin.notes.append(f"could not write the HTML report {report._report_path}: {exc}")
                manager.unregister(report)  # nor claim "Generated html report" in the summary

        report._write_report = write


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """With --steer-compare, a test whose config regressed against the stored baseline fails.

    A config the stored file does not have is not a regression: its comparison is skipped, and the
    terminal summary names it.
    """
    result = yield
    plugin = _plugin(item.config)
    if plugin.stored is not None and _RESULT in item.stash:
        from .baselines import regressions, stored_configs

        point, res = item.stash[_RESULT]
        if point.config.label not in stored_configs(plugin.stored):
            plugin.missing_in_stored.add(point.config.label)
            return result
        found = regressions(plugin.stored, res.rows, config=point.config.label, trial=point.trial,
                            margin=plugin.global_settings["compare_margin"], metrics=res.metrics)
        if found:
            raise AssertionError("regressed against stored baseline " + plugin.global_settings["compare"] + ":\n  "
                                 + "\n  ".join(found))
    return result


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """`assert result.strict_prompt_accuracy >= 0.5` explains the metric, threshold and baseline."""
    if "pytest_steer.evaluation" not in sys.modules:
        return None
    from .evaluation import MetricValue

    if op not in (">=", ">", "<=", "<", "==", "!="):
        return None
    metric, other = (left, right) if isinstance(left, MetricValue) else (right, left)
    if not isinstance(metric, MetricValue):
        return None
    lines = [f"{metric.name} {op} threshold failed" if metric is left else f"threshold {op} {metric.name} failed",
             metric.describe(), f"threshold: {other!r}"]
    if isinstance(other, MetricValue):
        lines[-1] = f"other: {other.describe()}"
    return lines


# -- xdist: workers send rows, the controller reports ---------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    out = getattr(node, "workeroutput", {}).get(WORKER_KEY)
    if out:
        plugin = _plugin(node.config)
        data = json.loads(out)
        plugin.worker_rows.extend(data["rows"])
        plugin.worker_settings.update(data["settings"])
        plugin.worker_metrics.update(data["metrics"])
        plugin.worker_meta.append(data["meta"])


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Workers hand their rows to the controller; the controller writes results, figures and the report
    before pytest-html writes its page (its hook is trylast)."""
    plugin = _plugin(session.config)
    if plugin._run is None and not plugin.worker_rows:
        return  # no steering test ran: import nothing, write nothing
    from .finish import finish_session, worker_payload

    if plugin.is_worker:
        if plugin._run is not None:
            getattr(session.config, "workeroutput", {})[WORKER_KEY] = worker_payload(plugin)
        return
    finish_session(plugin)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.stash.get(_PLUGIN, None)
    if plugin is not None and plugin._run is not None and plugin._run.backend is not None:
        from .ray_backend import RayBackend

        if isinstance(plugin._run.backend, RayBackend):
            plugin._run.backend.close()
    if plugin is not None and plugin.report_lock is not None:
        plugin.report_lock.close()  # the next session (another process, or pytester's next run) may write
        plugin.report_lock = None


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    plugin = _plugin(config)
    lines = [*plugin.notes, *plugin.terminal_lines]
    if plugin.missing_in_stored:
        lines.append(f"not in the stored baseline, not compared: {', '.join(sorted(plugin.missing_in_stored))}")
    if lines and config.get_verbosity() >= 0:
        terminalreporter.section("pytest-steer")
        for line in lines:
            terminalreporter.write_line(line)


# -- pytest-html ------------------------------------------------------------------------------------

_HTML_COLUMNS = [("steer_config", "Config"), ("steer_trial", "Trial"), ("steer_primary", "Primary metric"),
                 ("quality", "Quality")]


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list[str]) -> None:
    for i, (_, title) in enumerate(_HTML_COLUMNS):
        cells.insert(2 + i, f"<th>{title}</th>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: Any, cells: list[str]) -> None:
    import html

    props = dict(getattr(report, "user_properties", ()))
    primary = props.get("steer_primary")
    for i, (name, _) in enumerate(_HTML_COLUMNS):
        v = props.get(name, "")
        if name == "steer_primary" and primary:
            v = props.get(primary, "")
            v = f"{primary} {v:.3f}" if isinstance(v, float) else v
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        cells.insert(2 + i, f"<td>{html.escape(text)}</td>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    plugin = _plugin(session.config)
    if plugin.summary_fragment:
        postfix.append(plugin.summary_fragment)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "pytest-steer report"


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # fork-safety under xdist
