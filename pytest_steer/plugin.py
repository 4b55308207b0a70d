"""pytest glue: options, marker, fixtures, parametrization, xdist and pytest-html hooks.

A run's life belongs to `session.SteerSession`; this module translates pytest's hooks into its calls
and its errors into `pytest.UsageError`. It costs nothing where no steering test is collected: nothing
heavier than `spec` is imported, and nothing is written, until a collected item uses a steering
fixture or the marker.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from .options import MarkerError, Option, shorten
from .spec import RunSpec, declared_options

if TYPE_CHECKING:
    from .session import (
        PASTA,
        CaseSet,
        EvalResult,
        GridPoint,
        LoadedModel,
        SteerEval,
        SteeringMethod,
        SteerPoint,
        SteerSession,
    )

GRID_FIXTURES = {"steer_config", "alpha", "trial", "steer_result", "steer_baseline"}
STEER_FIXTURES = {"steer_eval", "steer_cases", "pasta", "steer_model", "steer_methods"}
WORKER_KEY = "pytest_steer_rows"


# -- options ------------------------------------------------------------------------------------------


def _argparse_type(parse: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse(text)  # parse_* raise argparse.ArgumentTypeError -> "argument --steer-x: ..."
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(shorten(str(exc))) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


#: each session's parser and the option names added to it: a method registered later adds its own
_PARSERS: weakref.WeakKeyDictionary[Any, tuple[pytest.Parser, set[str]]] = weakref.WeakKeyDictionary()


def _add_options(parser: pytest.Parser, options: tuple[Option, ...], added: set[str]) -> None:
    group = parser.getgroup("steer", "pytest-steer: LLM steering evaluations")
    for o in options:
        if o.name in added:
            continue
        added.add(o.name)
        default = ",".join(map(str, o.default)) if isinstance(o.default, tuple) else o.default
        help_text = f"{o.help} (default: {default}; ini: {o.ini})"
        if o.flag:
            group.addoption(o.cli, action="store_true", default=None, dest=o.dest, help=help_text)
        else:
            group.addoption(o.cli, action="store", default=None, dest=o.dest, type=_argparse_type(o.parse),
                            metavar=o.name.upper(), help=help_text)
        parser.addini(o.ini, help=o.help, default=None)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    _PARSERS[pluginmanager] = (parser, set())
    _add_options(parser, declared_options(), _PARSERS[pluginmanager][1])


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> Any:
    """Methods and tasks registered in the initial conftest.py files get their command-line and ini options
    too: they are added after those files load and before pytest parses the command line in full."""
    result = yield
    _add_options(parser, declared_options(), _PARSERS[early_config.pluginmanager][1])
    return result


def _progress(config: pytest.Config) -> Any:
    """The session's progress callback: plain lines in CI logs and under xdist, one updating line on a terminal."""
    last = [0.0]
    is_worker = hasattr(config, "workerinput")

    def show(p: Any) -> None:
        if config.get_verbosity() < 0:
            return
        now = time.monotonic()
        finished = p.done == p.total
        eta = f"{p.eta_s:.0f}s" if p.eta_s == p.eta_s else "?"
        line = f"steer: generated {p.done}/{p.total} rows, {p.tokens_per_s:.1f} tokens/s, ETA {eta}"
        if p.per_replica is not None:
            line += " (" + ", ".join(f"{name} {n}" for name, n in p.per_replica.items()) + ")"
        tr = config.pluginmanager.get_plugin("terminalreporter")
        tty = tr is not None and tr.isatty() and not is_worker
        if not tty and not finished and now - last[0] < 10:
            return
        last[0] = now
        capman = config.pluginmanager.get_plugin("capturemanager")
        # capture owns fds 1 and 2 while a test runs; xdist workers inherit the controller's stderr
        with capman.global_and_fixture_disabled() if capman else contextlib.nullcontext():
            if is_worker and sys.__stderr__ is not None:
                sys.__stderr__.write(f"[{getattr(config, 'workerinput', {}).get('workerid')}] {line}\n")
                sys.__stderr__.flush()
            elif tr is not None and tty:
                tr.write("\r" + line.ljust(78), flush=True)
                if finished:
                    tr.write("\n")
            elif tr is not None:
                tr.write_line(line)

    return show


_SESSION = pytest.StashKey["SteerSession"]()
_RESULT = pytest.StashKey[tuple["SteerPoint", Any]]()


def _session(config: pytest.Config) -> SteerSession:
    return config.stash[_SESSION]


def _spec_for(node: Any) -> RunSpec:
    marker = node.get_closest_marker("steer")
    return _session(node.config).spec_for(node.nodeid, dict(marker.kwargs) if marker else {},
                                          tuple(marker.args) if marker else ())


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "steer(**settings): grid and settings for one test, e.g. methods='pasta,prompt', alphas=[5, 10], trials=3, "
        "per_type=4, task='ifeval', include_baseline=False; the command line still wins",
    )
    from .session import StartError, SteerSession

    parser, added = _PARSERS[config.pluginmanager]

    def get_cli(name: str) -> Any:
        return config.getoption(f"steer_{name}", None)  # None: registered after the command line was read

    def get_ini(name: str) -> Any:
        if name not in added:  # a method registered in a test module: its ini key is declared now
            _add_options(parser, declared_options(), added)
        return config.getini(f"steer_{name}")

    try:
        config.stash[_SESSION] = SteerSession(get_cli, get_ini, Path(config.invocation_params.dir),
                                              worker=getattr(config, "workerinput", None),
                                              xdist=bool(getattr(config.option, "numprocesses", None)),
                                              on_progress=_progress(config))
    except StartError as exc:
        raise pytest.UsageError(shorten(f"pytest-steer: {exc}")) from None
    steer = config.stash[_SESSION]
    if steer.settings["clear_cache"] and not steer.is_worker and not config.option.collectonly \
            and getattr(config.option, "numprocesses", None):
        steer.clear_cache()  # the xdist controller starts no run: clear before its workers start


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
    from .session import SteerPoint

    try:
        spec = _spec_for(metafunc.definition)
    except MarkerError as exc:
        _session(metafunc.config).problems[metafunc.definition.nodeid] = str(exc)
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
def steer_config(steer_point: SteerPoint) -> GridPoint:
    """This item's config: `.method`, `.value`, `.label`, `.strength` (method "baseline" when unsteered)."""
    return steer_point.config


@pytest.fixture
def alpha(request: pytest.FixtureRequest, steer_point: SteerPoint) -> float | None:
    """PASTA's alpha of this item; None for the baseline and for other methods' configs.

    Deprecated: it names one method's parameter; use `steer_config.value` (with `steer_config.method`)."""
    _deprecated(request, "alpha", "steer_config.value (and steer_config.method == 'pasta')")
    c = steer_point.config
    return float(c.value) if c.method == "pasta" and c.value is not None else None


@pytest.fixture
def trial(steer_point: SteerPoint) -> int:
    return steer_point.trial


@pytest.fixture
def steer_result(request: pytest.FixtureRequest, steer_point: SteerPoint) -> EvalResult:
    """The scored result of this item's (config, trial), with its baseline; metrics become test properties."""
    result = _session(request.config).result(steer_point)
    for name, value in result.properties():
        request.node.user_properties.append((name, value))
    request.node.stash[_RESULT] = (steer_point, result)
    return result


@pytest.fixture
def steer_baseline(request: pytest.FixtureRequest, steer_point: SteerPoint) -> EvalResult:
    """The unsteered result of the same trial (same cases, same random draws)."""
    return _session(request.config).run.result(steer_point.spec, "baseline", steer_point.trial)


@pytest.fixture(scope="session")
def steer_model(pytestconfig: pytest.Config) -> LoadedModel:
    """The model under test (`LoadedModel`: .model, .tokenizer, .name, .identity), loaded once per process."""
    return _session(pytestconfig).run.model


@pytest.fixture
def steer_cases(request: pytest.FixtureRequest) -> CaseSet:
    """The evaluated cases for this test's settings (`CaseSet`)."""
    return _session(request.config).run.cases(_spec_for(request.node))


def _deprecated(request: pytest.FixtureRequest, name: str, instead: str) -> None:
    request.node.warn(pytest.PytestDeprecationWarning(
        f"pytest-steer: the fixture {name!r} is deprecated (it belongs to one method); use {instead}"))


@pytest.fixture
def pasta(request: pytest.FixtureRequest) -> PASTA:
    """This test's PASTA method (layers, scale position), prepared on the model: `pasta.steer(...)`.

    Deprecated: it names one method; use `steer_methods["pasta"]`."""
    _deprecated(request, "pasta", 'steer_methods["pasta"]')
    return cast("PASTA", _session(request.config).methods(_spec_for(request.node))["pasta"])


@pytest.fixture
def steer_methods(request: pytest.FixtureRequest) -> dict[str, SteeringMethod]:
    """Every registered steering method by name, built from this test's settings; the test's own methods
    are prepared on the model (`steer_methods["pasta"].steer(...)`)."""
    return _session(request.config).methods(_spec_for(request.node))


@pytest.fixture
def steer_eval(request: pytest.FixtureRequest) -> SteerEval:
    """The whole sweep of this test's settings (`session.SteerEval`)."""
    from .session import SteerEval

    return SteerEval(_session(request.config).run, _spec_for(request.node))


def _uses_steering(item: pytest.Item) -> bool:
    cs = getattr(item, "callspec", None)
    if cs is not None and "steer_point" in cs.params:
        return True
    return bool(set(getattr(item, "fixturenames", ())) & STEER_FIXTURES) or item.get_closest_marker("steer") is not None


def _start_html(config: pytest.Config, session: pytest.Session, page: Path) -> None:
    """Switch pytest-html on into the report dir, now that a steering test is known to run."""
    try:
        from pytest_html import plugin as html_plugin
        from pytest_html.basereport import BaseReport
    except ImportError:
        return
    config.option.htmlpath = str(page)
    config.option.self_contained_html = True
    before = set(config.pluginmanager.get_plugins())
    html_plugin.pytest_configure(config)
    for report in set(config.pluginmanager.get_plugins()) - before:
        if isinstance(report, BaseReport):  # it missed the session start: give it the call it expects
            report.pytest_sessionstart(session)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Fail fast: everything that can be checked without generating is checked once the selection is known."""
    from .session import StartError

    steer = _session(config)
    steering = [it for it in items if _uses_steering(it)]
    if not steering:
        return
    tests = dict.fromkeys(it.nodeid.split("[")[0] for it in steering)
    bad = [steer.problems[n] for n in tests if n in steer.problems]
    if bad:
        raise pytest.UsageError(shorten("pytest-steer: " + bad[0]))
    selected: dict[RunSpec, set[str]] = {}
    whole: set[RunSpec] = set()  # specs a whole-sweep test (steer_eval, ...) needs every config of anyway
    try:
        for it in steering:
            cs = getattr(it, "callspec", None)
            if cs is not None and "steer_point" in cs.params:
                point = cs.params["steer_point"]
                selected.setdefault(point.spec, set()).add(point.config.label)
            else:
                whole.add(_spec_for(it))
    except MarkerError as exc:
        raise pytest.UsageError(shorten(f"pytest-steer: {exc}")) from None
    html = bool(steer.settings["html"] and not steer.is_worker and not getattr(config.option, "htmlpath", None)
                and hasattr(config.option, "htmlpath"))
    if config.option.collectonly:  # markers and paths are checked as a run checks them; nothing is started
        try:
            if not steer.is_worker:
                steer.check_paths([*selected, *whole], html=html)
        except StartError as exc:
            raise pytest.UsageError(shorten(f"pytest-steer: {exc}")) from None
        return
    steer.note_partial_selection(selected, whole)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    try:
        steer.start([*selected, *whole],
                    say=lambda line: reporter.write_line(f"pytest-steer: {line}", yellow=True) if reporter else None,
                    html=html)
    except StartError as exc:
        raise pytest.UsageError(shorten(f"pytest-steer: {exc}")) from None
    if not steer.is_worker:
        _HTML_COLUMNS[:] = steer.html_columns()
    if steer.html_page is not None:
        _start_html(config, session, steer.html_page)
    if not steer.is_worker:
        _guard_html(config, steer)


def _guard_html(config: pytest.Config, steer: SteerSession) -> None:
    """pytest-html writes its page in place and raises at session end when the disk is full or read-only
    (a traceback, a 0-byte page, no pass/fail line, rc 1). Have it write atomically, and make a failure
    one line in our summary: the tests' outcome and exit code stand. A page written is recorded as ours when
    it is the one the plugin pointed into the report dir (the next session may replace it)."""
    try:
        from pytest_html.basereport import BaseReport
    except ImportError:
        return
    from .session import write_atomically

    manager = config.pluginmanager
    for report in [p for p in manager.get_plugins() if isinstance(p, BaseReport)]:
        def write(rendered: str, report: Any = report) -> None:
            try:
                write_atomically(report._report_path, rendered)
            except OSError as exc:
                steer.notes.append(f"could not write the HTML report {report._report_path}: {exc}")
                manager.unregister(report)  # nor claim "Generated html report" in the summary
                return
            steer.page_written(report._report_path)

        report._write_report = write


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """With --steer-compare, a test whose config regressed against the stored baseline fails.

    A config the stored file does not have is not a regression: its comparison is skipped, and the
    terminal summary names it.
    """
    result = yield
    steer = _session(item.config)
    if _RESULT in item.stash:
        found = steer.regressions(*item.stash[_RESULT])
        if found:
            raise AssertionError("regressed against stored baseline " + steer.settings["compare"] + ":\n  "
                                 + "\n  ".join(found))
    return result


def pytest_assertrepr_compare(config: pytest.Config, op: str, left: Any, right: Any) -> list[str] | None:
    """`assert result.strict_prompt_accuracy >= 0.5` explains the metric, threshold and baseline."""
    steer = config.stash.get(_SESSION, None)
    return steer.explain(op, left, right) if steer is not None else None


# -- xdist: workers send rows, the controller reports ---------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    out = getattr(node, "workeroutput", {}).get(WORKER_KEY)
    if out:
        from .session import WorkerPayload

        _session(node.config).gather(WorkerPayload.from_json(out))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Workers hand their payload to the controller; the controller finishes the session (results, figures,
    report, stored baseline) before pytest-html writes its page (its hook is trylast)."""
    steer = _session(session.config)
    if not steer.started:
        return  # no steering test ran: import nothing, write nothing
    if steer.is_worker:
        getattr(session.config, "workeroutput", {})[WORKER_KEY] = steer.payload().to_json()
        return
    steer.finish()


def pytest_unconfigure(config: pytest.Config) -> None:
    steer = config.stash.get(_SESSION, None)
    if steer is not None:
        steer.close()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = _session(config).display(quiet=config.get_verbosity() < 0)
    if lines:
        terminalreporter.section("pytest-steer")
        for line in lines:
            terminalreporter.write_line(line)


# -- pytest-html ------------------------------------------------------------------------------------

#: the per-test table's columns, (property name, title), from the session's metric declarations once it has
#: started (pytest-html's table hooks get no config): empty where no steering test ran, so none is added
_HTML_COLUMNS: list[tuple[str, str]] = []


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list[str]) -> None:
    import html

    for i, (_, title) in enumerate(_HTML_COLUMNS):
        cells.insert(2 + i, f"<th>{html.escape(title)}</th>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: Any, cells: list[str]) -> None:
    import html

    props = dict(getattr(report, "user_properties", ()))
    for i, (name, _) in enumerate(_HTML_COLUMNS):
        v = props.get(name, "")
        if name == "steer_primary" and v:  # an xdist controller's table: each row names its primary metric
            v = f"{v} {props[v]:.3f}" if isinstance(props.get(v), float) else v
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
        cells.insert(2 + i, f"<td>{html.escape(text)}</td>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    fragment = _session(session.config).summary_fragment
    if fragment:
        postfix.append(fragment)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "pytest-steer report"


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # fork-safety under xdist
