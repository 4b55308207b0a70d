"""pytest glue: options, marker, fixtures, parametrization, xdist and pytest-html hooks.

The work lives in `session.SteerRun`; this module only translates between pytest and it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from .options import OPTIONS, OPTIONS_BY_NAME, RunSpec, resolve, spec_from

GRID_FIXTURES = {"alpha", "trial", "steer_result", "steer_baseline"}
WORKER_KEY = "pytest_steer_rows"


@dataclass(frozen=True)
class SteerPoint:
    """One parametrized grid point of one test."""

    spec: RunSpec
    alpha: float | None
    trial: int

    @property
    def id(self) -> str:
        return f"{'baseline' if self.alpha is None else f'alpha{self.alpha:g}'}-trial{self.trial}"


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
    """Per-session state, stored on the config: resolved options, the run, and the rows for the report."""

    def __init__(self, config: pytest.Config) -> None:
        from .session import ModelSettings

        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        try:
            self.global_settings = resolve(self._cli, self._ini, {})
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"pytest-steer ini option: {exc}") from None
        g = self.global_settings
        device = g["device"]
        if self.is_worker:
            from .models import split_cpu_threads, worker_device

            index = int(str(config.workerinput["workerid"]).removeprefix("gw"))
            if g["devices"]:
                device = worker_device(g["devices"], index)
            if not str(device).startswith("cuda") and not (device == "auto" and _cuda_available()):
                split_cpu_threads(int(config.workerinput.get("workercount", 1)))
        self.model_settings = ModelSettings(g["model"], device, g["dtype"], g["attn"], g["trust_remote_code"])
        self.report_dir = Path(config.invocation_params.dir) / g["report_dir"]
        self._run: Any = None
        self.specs: list[RunSpec] = []
        self.worker_rows: list[dict[str, Any]] = []
        self.worker_settings: dict[str, dict[str, Any]] = {}
        self.worker_meta: list[dict[str, str]] = []
        self.summary_fragment: str | None = None
        self.terminal_lines: list[str] = []
        self.stored: Any = None
        self._progress_last = 0.0

    def _cli(self, name: str) -> Any:
        return self.config.getoption(f"steer_{name}")

    def _ini(self, name: str) -> Any:
        return self.config.getini(OPTIONS_BY_NAME[name].ini)

    @property
    def run(self) -> Any:
        if self._run is None:
            from .session import SteerRun, default_cache

            g = self.global_settings
            cache = default_cache(g["cache"], g["cache_dir"])
            if g["clear_cache"] and not self.is_worker:
                cache.clear()
            self._run = SteerRun(self.model_settings, cache, on_progress=self._progress)
        return self._run

    def spec_for(self, node: Any) -> RunSpec:
        marker = node.get_closest_marker("steer")
        kwargs = dict(marker.kwargs) if marker else {}
        try:
            return spec_from(resolve(self._cli, self._ini, kwargs))
        except (ValueError, argparse.ArgumentTypeError) as exc:
            problem = f"{node.nodeid}: {exc}"
        pytest.fail(problem, pytrace=False)

    # -- progress: plain lines in CI logs and under xdist, one updating line on a terminal -----------

    def _progress(self, p: Any) -> None:
        if self.config.get_verbosity() < 0:
            return
        now = time.monotonic()
        finished = p.done == p.total
        eta = f"{p.eta_s:.0f}s" if p.eta_s == p.eta_s else "?"
        line = f"steer: generated {p.done}/{p.total} rows, {p.tokens_per_s:.1f} tokens/s, ETA {eta}"
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        tty = tr is not None and tr.isatty() and not self.is_worker
        if not tty and not finished and now - self._progress_last < 10:
            return
        self._progress_last = now
        capman = self.config.pluginmanager.get_plugin("capturemanager")
        # capture owns fds 1 and 2 while a test runs; xdist workers inherit the controller's stderr
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            if self.is_worker:
                sys.__stderr__.write(f"[{self.config.workerinput['workerid']}] {line}\n")
                sys.__stderr__.flush()
            elif tty:
                tr.write("\r" + line.ljust(78), flush=True)
                if finished:
                    tr.write("\n")
            else:
                tr.write_line(line)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


_PLUGIN = pytest.StashKey[SteerPlugin]()


def _plugin(config: pytest.Config) -> SteerPlugin:
    return config.stash[_PLUGIN]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "steer(**settings): grid and settings for one test, e.g. alphas=[5, 10], trials=3, per_type=4, "
        "include_baseline=False; the command line still wins",
    )
    plugin = SteerPlugin(config)
    config.stash[_PLUGIN] = plugin
    # pytest-html reads htmlpath in its own pytest_configure, which runs after this one
    if plugin.global_settings["html"] and not getattr(config.option, "htmlpath", None) and not plugin.is_worker \
            and hasattr(config.option, "htmlpath") and not config.option.collectonly:
        config.option.htmlpath = str(plugin.report_dir / "report.html")
        config.option.self_contained_html = True
    if plugin.global_settings["compare"]:
        from .baselines import BaselineMismatch, load_baseline

        try:
            plugin.stored = load_baseline(plugin.global_settings["compare"])
        except BaselineMismatch as exc:
            raise pytest.UsageError(str(exc)) from None


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
    spec = _plugin(metafunc.config).spec_for(metafunc.definition)
    configs = [a for a in spec.configs() if a is not None or spec.include_baseline]
    points = [SteerPoint(spec, a, t) for t in range(spec.trials) for a in configs]
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
        raise pytest.UsageError("steer_point is set by pytest-steer's parametrization; ask for alpha, trial or steer_result")
    return request.param


@pytest.fixture
def alpha(steer_point: SteerPoint) -> float | None:
    """The steering strength of this item; None for the unsteered baseline."""
    return steer_point.alpha


@pytest.fixture
def trial(steer_point: SteerPoint) -> int:
    return steer_point.trial


@pytest.fixture
def steer_result(request: pytest.FixtureRequest, steer_point: SteerPoint) -> Any:
    """The scored result of this item's (config, trial), with its baseline; metrics become test properties."""
    plugin = _plugin(request.config)
    result = plugin.run.result(steer_point.spec, steer_point.alpha, steer_point.trial)
    for name, value in result.properties():
        request.node.user_properties.append((name, value))
    request.node.stash[_RESULT] = (steer_point, result)
    return result


@pytest.fixture
def steer_baseline(request: pytest.FixtureRequest, steer_point: SteerPoint) -> Any:
    """The unsteered result of the same trial (same examples, same random draws)."""
    return _plugin(request.config).run.result(steer_point.spec, None, steer_point.trial)


@pytest.fixture(scope="session")
def steer_model(pytestconfig: pytest.Config) -> Any:
    """The model under test (`LoadedModel`: .model, .tokenizer, .name, .identity), loaded once per process."""
    return _plugin(pytestconfig).run.model


@pytest.fixture
def steer_cases(request: pytest.FixtureRequest) -> Any:
    """The selected IFEval cases for this test's settings (`CaseSet`)."""
    plugin = _plugin(request.config)
    return plugin.run.cases(plugin.spec_for(request.node))


@pytest.fixture
def pasta(request: pytest.FixtureRequest) -> Any:
    """Factory of PASTA controls with this test's layers and scale position: `pasta(alpha=10.0)`."""
    plugin = _plugin(request.config)
    spec = plugin.spec_for(request.node)

    def make(alpha: float = 10.0, **overrides: Any) -> Any:
        return dataclasses.replace(plugin.run.control(spec), alpha=alpha, **overrides)

    return make


class SteerEval:
    """Evaluation entry point for tests that look at the whole sweep rather than one grid point."""

    def __init__(self, plugin: SteerPlugin, spec: RunSpec) -> None:
        self._plugin, self.spec = plugin, spec

    def result(self, alpha: float | None, trial: int | None = None) -> Any:
        """One config; `trial=None` pools all trials (the right unit for the statistical gates)."""
        return self._plugin.run.result(self.spec, alpha, trial)

    def frame(self) -> Any:
        """The whole sweep as a DataFrame, one row per (example, config, trial)."""
        from .results import to_frame

        return to_frame([r for t in range(self.spec.trials) for r in self._plugin.run.rows(self.spec, t)])


@pytest.fixture
def steer_eval(request: pytest.FixtureRequest) -> SteerEval:
    plugin = _plugin(request.config)
    return SteerEval(plugin, plugin.spec_for(request.node))


_RESULT = pytest.StashKey[tuple]()


def _uses_steering(item: pytest.Item) -> bool:
    cs = getattr(item, "callspec", None)
    if cs is not None and "steer_point" in cs.params:
        return True
    return bool(set(getattr(item, "fixturenames", ())) & {"steer_eval", "steer_cases", "pasta", "steer_model"})


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail fast: everything that can be checked without generating is checked once the selection is known."""
    plugin = _plugin(config)
    steering = [it for it in items if _uses_steering(it)]
    if not steering or config.option.collectonly:
        return
    specs = []
    for it in steering:
        cs = getattr(it, "callspec", None)
        specs.append(cs.params["steer_point"].spec if cs and "steer_point" in cs.params else plugin.spec_for(it))
    plugin.specs = list(dict.fromkeys(specs))
    from .baselines import BaselineMismatch, check_compatible
    from .cases import CaseLoadError
    from .metrics.quality import QualityScorerError
    from .models import ModelLoadError
    from .steering import SteeringError

    try:
        plugin.run.prepare(plugin.specs)
        if plugin.stored is not None:
            for spec in plugin.specs:
                check_compatible(plugin.stored, run_settings(plugin.run, spec), plugin.global_settings["compare"])
    except (ModelLoadError, CaseLoadError, QualityScorerError, SteeringError, BaselineMismatch, ValueError) as exc:
        raise pytest.UsageError(f"pytest-steer: {exc}") from None


def run_settings(run: Any, spec: RunSpec) -> dict[str, Any]:
    """What a stored baseline must share with this run to be comparable."""
    s = asdict(spec)
    s.pop("include_baseline", None)
    settings = run.settings(spec)
    s.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    s["model_identity"] = run.model.identity
    s["cases"] = [c.content_hash() for c in run.cases(spec)]
    return json.loads(json.dumps(s, default=str))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """With --steer-compare, a test whose config regressed against the stored baseline fails."""
    result = yield
    plugin = _plugin(item.config)
    if plugin.stored is not None and _RESULT in item.stash:
        from .baselines import regressions

        point, res = item.stash[_RESULT]
        found = regressions(plugin.stored, res.rows, config=res.config, trial=point.trial,
                            margin=plugin.global_settings["compare_margin"])
        if found:
            raise AssertionError("regressed against stored baseline " + plugin.global_settings["compare"] + ":\n  "
                                 + "\n  ".join(found))
    return result


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """`assert result.strict_prompt_accuracy >= 0.5` explains the metric, threshold and baseline."""
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
        plugin.worker_meta.append(data["meta"])


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Workers hand their rows to the controller; the controller writes results, figures and the report
    before pytest-html writes its page (its hook is trylast)."""
    from .reporting import build_report, rows_payload

    plugin = _plugin(session.config)
    if plugin.is_worker:
        if plugin._run is not None:
            session.config.workeroutput[WORKER_KEY] = rows_payload(plugin)
        return
    build_report(plugin)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    plugin = _plugin(config)
    if plugin.terminal_lines and config.get_verbosity() >= 0:
        terminalreporter.section("pytest-steer")
        for line in plugin.terminal_lines:
            terminalreporter.write_line(line)


# -- pytest-html ------------------------------------------------------------------------------------

_HTML_COLUMNS = [("steer_config", "Config"), ("steer_trial", "Trial"), ("strict_prompt_accuracy", "Strict acc."),
                 ("loose_prompt_accuracy", "Loose acc."), ("quality", "Quality")]


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list[str]) -> None:
    for i, (_, title) in enumerate(_HTML_COLUMNS):
        cells.insert(2 + i, f"<th>{title}</th>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: Any, cells: list[str]) -> None:
    import html

    props = dict(getattr(report, "user_properties", ()))
    for i, (name, _) in enumerate(_HTML_COLUMNS):
        v = props.get(name, "")
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
