"""End-to-end runs of the plugin on a tiny random model: ids, properties, report, figures, result
files, escaping, generation sharing, caching, resume, xdist, stored baselines, users' own tasks.

One full run is shared (module fixture) by the tests that only read its output, so the suite
stays fast; the cache, resume and xdist tests compare against it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

PNG = b"\x89PNG\r\n\x1a\n"

# Counts the rows that really go through the model, makes responses carry markup (so escaping is tested
# on real output) and steered rows pass the highlighted-sections instruction, and with STEER_UNWRITABLE
# simulates a cache disk that refuses every write.
INNER_CONFTEST = '''
import json, os
from pytest_steer import cache, generation

_rows = []
_orig_batch = generation.GenerationEngine._generate_batch
_orig_decode = generation.GenerationEngine._decode
_orig_write, _orig_mark = cache.write_atomically, cache.write_manifest

def counting(self, batch):
    _rows.extend([r.case.key, r.config.label, r.trial] for r in batch)
    return _orig_batch(self, batch)

def decode(self, req, tokens, seed, eos):
    g = _orig_decode(self, req, tokens, seed, eos)
    # steered rows get enough *highlights* to pass that instruction: the report has "fixed" examples to show
    extra = "" if req.config.is_baseline else " *one* *two* *three* *four* *five*"
    return generation.Generation(g.request, "<script>alert(1)</script> " + g.text + extra, g.n_tokens,
                                 g.finish_reason, g.seed)

def refuse(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", str(path))

def pytest_configure(config):
    generation.GenerationEngine._generate_batch = counting
    generation.GenerationEngine._decode = decode
    if os.environ.get("STEER_UNWRITABLE"):
        cache.write_atomically = cache.write_manifest = refuse  # the cache's files only, not the report's

def pytest_unconfigure(config):
    generation.GenerationEngine._generate_batch = _orig_batch
    generation.GenerationEngine._decode = _orig_decode
    cache.write_atomically, cache.write_manifest = _orig_write, _orig_mark
    name = "generated-%s.json" % os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(name, "w") as fh:
        json.dump(_rows, fh)
'''

TESTS = '''
def test_gate(steer_result, steer_config, trial):
    assert steer_result.frame.shape[0] == 4
    assert steer_result.label == steer_config.label
    if not steer_config.is_baseline:
        assert steer_result.baseline.label == "baseline"

def test_second_test_shares_generation(steer_result):
    assert len(steer_result.records) == 4

def test_sweep(steer_eval):
    assert steer_eval.frame().shape[0] == 40
'''
N_ROWS = 40  # 4 cases x (baseline + pasta 5, 20 + actadd 4 + prompt restate) x 2 trials
N_TESTS = 21  # 2 x 10 grid points + the sweep
LABELS = ["baseline", "pasta-alpha5", "pasta-alpha20", "actadd-c4", "prompt-restate"]


def _args(model_dir: Path, cache: Path, *extra: str, grid: bool = True) -> list[str]:
    """Command line for a tiny-model run; grid=False leaves the grid to the test's marker."""
    g = ["--steer-methods", "pasta,actadd,prompt", "--steer-alphas", "5,20", "--steer-actadd-coefs", "4",
         "--steer-prompt-variants", "restate", "--steer-trials", "2"] if grid else []
    return ["--steer-model", str(model_dir), *g, "--steer-per-type", "1", "--steer-max-new-tokens", "8",
            "--steer-batch-size", "8", "--steer-report-dir", "report", "--steer-cache-dir", str(cache),
            "-p", "no:cacheprovider", *extra]


def _generated(path: Path) -> list:
    rows = [row for f in sorted(path.glob("generated-*.json")) for row in json.loads(f.read_text())]
    for f in path.glob("generated-*.json"):
        f.unlink()
    return rows


def _project(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "conftest.py").write_text(INNER_CONFTEST)
    (path / "test_evals.py").write_text(TESTS)
    return path


def _pytest(cwd: Path, args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", *args], cwd=cwd, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> tuple[Path, Path, str]:
    """(project dir, cache dir, output) of one serial run of the three-method grid."""
    root = tmp_path_factory.mktemp("e2e")
    project, cache = _project(root / "project"), root / "cache"
    out = _pytest(project, _args(tiny_model_dir, cache, "-v", "--junitxml=junit.xml"))
    assert out.returncode == 0, out.stdout + out.stderr
    return project, cache, out.stdout


def test_options_have_their_own_help_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*pytest-steer: LLM steering evaluations*", "*--steer-methods=METHODS*",
                                 "*--steer-alphas=ALPHAS*", "*--steer-actadd-coefs=ACTADD_COEFS*"])


def test_end_to_end_ids_properties_and_report(first_run: tuple[Path, Path, str]) -> None:
    project, _, stdout = first_run
    assert f"{N_TESTS} passed" in stdout
    for label in LABELS:
        assert f"test_gate[{label}-trial1] PASSED" in stdout
    assert "steer: generated 20/20 rows" in stdout and "pytest-steer" in stdout

    # generation ran once per (case, config, trial), although two tests and a sweep read every row
    rows = _generated(project)
    assert len(rows) == N_ROWS and len({tuple(r) for r in rows}) == N_ROWS

    # every metric, side effects included, is a test property in JUnit XML
    tree = ET.parse(project / "junit.xml")
    case = next(tc for tc in tree.iter("testcase") if tc.get("name") == "test_gate[actadd-c4-trial1]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["steer_config"] == "actadd-c4" and props["steer_method"] == "actadd" and props["steer_trial"] == "1"
    assert props["steer_primary"] == "strict_prompt_accuracy"
    for name in ("strict_prompt_accuracy", "loose_prompt_accuracy", "wrong_language", "truncated"):
        assert 0 <= float(props[name]) <= 1
    for name in ("quality", "fluency", "diversity", "repetition", "coherence", "length_ratio"):
        assert name in props
    assert any(k.startswith("strict_instruction_accuracy[") for k in props)  # per tag, named after the metric

    report = project / "report"
    page = (report / "report.html").read_text()
    # the per-test table's columns come from the declarations: the task's metrics, the headline, the dose
    for column in ("Config", "Trial", "strict accuracy", "loose accuracy", "strict instruction accuracy", "quality",
                   "dose (KL nats/token)"):
        assert f"<th>{column}</th>" in page or f"&lt;th&gt;{column}&lt;/th&gt;" in page, column
    for png in ("tradeoff.png", "pareto.png", "heatmap_tags.png"):
        assert (report / png).read_bytes()[:8] == PNG
    from pytest_steer.analysis import load_results

    saved = load_results(report)
    assert len(saved.rows) == N_ROWS
    assert list(saved.summary["config"]) == LABELS
    assert {"strict_prompt_accuracy_diff_low", "quality_p", "repetition_diff"} <= set(saved.summary.columns)
    summary_page = (report / "summary.html").read_text()
    assert "Side effects" in summary_page and "Recommend" in summary_page

    # generated text is escaped everywhere it is shown
    for html_file in (report / "report.html", report / "summary.html"):
        text = html_file.read_text()
        assert "<script>alert(1)</script>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_rerun_hits_the_cache_and_survives_corrupt_and_unwritable_records(
        first_run: tuple[Path, Path, str], tiny_model_dir: Path) -> None:
    """A rerun takes its rows from the cache; corrupt records are regenerated, and a cache that refuses
    writes costs a warning, not the run: the results are byte-identical all the same."""
    project, cache, _ = first_run
    _generated(project)
    first = (project / "report" / "results.jsonl").read_text()
    victims = sorted((cache / "generation").glob("??/*.json"))[:2]  # records, not the folder's manifest
    victims[0].write_text('{"format": 1, "key": {}, "val')  # truncated
    victims[1].write_bytes(b"\x00garbage")
    out = _pytest(project, _args(tiny_model_dir, cache), STEER_UNWRITABLE="1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(_generated(project)) == 2  # the other 38 rows came from the cache
    assert "95% of 40 rows" in (project / "report" / "summary.html").read_text()
    assert "2 corrupt record(s) found and regenerated, 2 record(s) could not be written" in out.stdout
    assert (project / "report" / "results.jsonl").read_text() == first


def test_sigkill_midway_then_xdist_resume_matches_the_serial_run(first_run: tuple[Path, Path, str],
                                                                   tiny_model_dir: Path, tmp_path: Path) -> None:
    """A run killed with SIGKILL keeps its finished batches. The rerun, with -n 2 --dist loadgroup,
    generates each missing row exactly once, counted over both workers (a unit is generated by the
    first worker to need it, under a lock in the cache; the other reads it, whether or not xdist kept
    the trial's tests on one worker), and its results equal the uninterrupted serial first run's:
    rows depend neither on the batch size nor on the worker."""
    args = _args(tiny_model_dir, tmp_path / "cache", "--steer-batch-size", "1")
    killed = _project(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=killed, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    gen_dir = tmp_path / "cache" / "generation"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(gen_dir.glob("??/*.json"))) < 3:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len(list(gen_dir.glob("??/*.json")))
    assert 3 <= kept < N_ROWS, f"expected to kill mid-run, {kept} rows were cached"
    _generated(killed)

    out = _pytest(killed, [*args, "-n", "2", "--dist", "loadgroup"])
    assert f"{N_TESTS} passed" in out.stdout, out.stdout + out.stderr
    rows = _generated(killed)
    assert len(rows) == N_ROWS - kept, rows  # only the missing rows, each once: counted, not deduplicated
    serial = first_run[0] / "report"
    assert (killed / "report" / "summary.csv").read_text() == (serial / "summary.csv").read_text()
    resumed = sorted((killed / "report" / "results.jsonl").read_text().splitlines())
    assert resumed == sorted((serial / "results.jsonl").read_text().splitlines())
    assert "workers" in (killed / "report" / "summary.html").read_text()


def test_clear_cache_under_xdist_clears_once_before_the_workers(first_run: tuple[Path, Path, str],
                                                                 tiny_model_dir: Path, tmp_path: Path) -> None:
    """Probe of issue 29: with -n 2, --steer-clear-cache cleared nothing (workers never clear, and the controller
    starts no run), so every stale record was reused without a word. The controller clears before the workers
    start; every row is generated again, once; the user's file stays and is named."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(first_run[1], cache)
    (cache / "notes.txt").write_text("mine")
    project = _project(tmp_path / "project")
    out = _pytest(project, [*_args(tiny_model_dir, cache), "-n", "2", "--dist", "loadgroup", "--steer-clear-cache"])
    assert f"{N_TESTS} passed" in out.stdout, out.stdout + out.stderr
    assert len(_generated(project)) == N_ROWS
    assert (cache / "notes.txt").read_text() == "mine"
    assert f"pytest-steer cache: cleared {cache}, but kept what it did not write there: notes.txt" in out.stdout


def test_marker_sets_the_grid_and_command_line_wins(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.steer(methods="pasta,prompt", alphas=[3, 7], prompt_variants="both", trials=1,
                           include_baseline=False)
        def test_one(steer_config, trial):
            pass
    ''')
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "c", grid=False), "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_one?pasta-alpha3-trial0?", "*test_one?pasta-alpha7-trial0?",
                                 "*test_one?prompt-both-trial0?"])
    assert "baseline" not in result.stdout.str()
    result = pytester.runpytest("--steer-alphas", "9", "--steer-methods", "pasta", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_one?pasta-alpha9-trial0?"])


def test_failing_threshold_names_metric_threshold_and_baseline(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                               tmp_path: Path) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.steer(methods="pasta", alphas=[5], trials=1, include_baseline=False)
        def test_gate(steer_result):
            assert steer_result.strict_prompt_accuracy >= 1.5
    ''')
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "cache", grid=False))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*strict_prompt_accuracy >= threshold failed*",
        "*strict_prompt_accuracy = * (pasta-alpha5, trial 0, n=4; baseline *)*",
        "*threshold: 1.5*",
    ])


DEGRADE_CONFTEST = '''
from pytest_steer import generation

_orig = generation.GenerationEngine._decode

def loop(self, req, tokens, seed, eos):
    """A deliberately broken build: every steered row degenerates into a loop."""
    g = _orig(self, req, tokens, seed, eos)
    text = g.text if req.config.is_baseline else "go " * 30
    return generation.Generation(g.request, text, g.n_tokens, g.finish_reason, g.seed)

def pytest_configure(config):
    generation.GenerationEngine._decode = loop

def pytest_unconfigure(config):
    generation.GenerationEngine._decode = _orig
'''


def test_stored_baseline_passes_for_same_model_and_fails_when_degraded(pytester: pytest.Pytester,
                                                                       tiny_model_dir: Path, tmp_path: Path) -> None:
    """Save (with -k: one item, its whole unit), compare again (passes: rows reproduce), compare a build
    whose steered rows loop (fails, naming the metric), compare a config the file lacks (skipped, named),
    other settings (refused)."""
    pytester.makepyfile(test_evals="def test_point(steer_result):\n    pass\n")
    base = _args(tiny_model_dir, tmp_path / "cache", grid=False) + ["--steer-methods", "pasta", "--steer-alphas", "5",
                                                                   "--steer-trials", "1"]
    stored = tmp_path / "baseline.json"
    # -k runs one item, but its trial's unit is generated whole (baseline + every config), so rows pair up
    result = pytester.runpytest(*base, "--steer-save-baseline", str(stored), "-k", "pasta-alpha5", "-q")
    result.assert_outcomes(passed=1, deselected=1)
    assert "steer: generated" not in result.stdout.str()  # -q keeps progress quiet
    assert len(json.loads(stored.read_text())["rows"]) == 8

    pytester.runpytest(*base, "--steer-compare", str(stored)).assert_outcomes(passed=2)

    result = pytester.runpytest(*base[:-3], "20", *base[-2:], "--steer-compare", str(stored))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*not in the stored baseline, not compared: pasta-alpha20*"])

    pytester.makeconftest(DEGRADE_CONFTEST)
    result = pytester.runpytest(*base, "--steer-compare", str(stored), "--steer-cache", "false")
    result.assert_outcomes(passed=1, failed=1)  # the baseline is unaffected, pasta-alpha5 regressed
    result.stdout.fnmatch_lines(["*regressed against stored baseline*", "*repetition (worst window) for pasta-alpha5*"])

    # other generation settings: the comparison refuses instead of comparing apples to oranges
    i = base.index("--steer-max-new-tokens")
    result = pytester.runpytest(*base[:i + 1], "16", *base[i + 2:], "--steer-compare", str(stored))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*max_new_tokens*"])


def test_fixtures_and_a_users_own_task_and_method(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                  tmp_path: Path) -> None:
    pytester.makepyfile('''
        import pytest
        from pytest_steer import Case, Task, register_task, scorer

        @scorer("short")
        def short(sample):
            return len(sample.response.split()) < 50

        cases = [Case(f"c{i}", f"Talk about {w}. Be brief.", tags=("brief",),
                      data={"instructions": ("Be brief.",)}) for i, w in enumerate(["cats", "dogs", "rain", "sun"])]
        register_task(Task.from_cases("brief", cases[:2], [short], held_out=cases[2:]))

        @pytest.mark.steer(task="brief", methods="pasta,actadd,prompt", alphas=[5], actadd_coefs=[2],
                           prompt_variants="system", trials=1)
        def test_brief(steer_result):
            assert len(steer_result.records) == 2
            assert 0 <= steer_result.short <= 1 and steer_result.primary == "short"

        import contextlib
        from pytest_steer import SteeringError, register_method, user_turn

        class Shout:
            name, param, noop = "shout", "level", 0
            def check(self, value):
                if value not in (0, 1, 2):
                    raise SteeringError(f"shout level {value!r} must be 0, 1 or 2")
                return value
            def label(self, value, grid): return f"level{value}"
            def strength(self, value): return float(value)
            def identity(self): return {"wording": "upper"}
            def prepare(self, ctx): pass
            def render(self, case, value):
                turn = user_turn(case)
                if value:
                    turn[0]["content"] += "\\n\\n" + " ".join(case.data["instructions"]).upper() * value
                return turn
            def steer(self, model, batch, cases, values): return contextlib.nullcontext()

        register_method("shout", lambda spec: Shout(), values=[2])

        @pytest.mark.steer(task="brief", methods="shout", trials=1, include_baseline=False)
        def test_users_method(steer_result, steer_config):
            assert steer_config.label == "shout-level2" and steer_result.baseline is not None
            assert {(r.method, r.value, r.strength) for r in steer_result.records} == {("shout", 2, 2.0)}
            assert {r.seed for r in steer_result.records} == {r.seed for r in steer_result.baseline.records}

        @pytest.mark.steer(per_type=2, layers="0", scale_position="exclude")
        def test_fixtures(steer_model, steer_cases, pasta):
            assert steer_model.model.config.num_hidden_layers == 2
            assert len(steer_cases) == 4 and all("instructions" in c.data for c in steer_cases)  # per-type 1 wins
            assert pasta.scale_position == "exclude"
    ''')
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "cache", "--junitxml=junit.xml", grid=False))
    result.assert_outcomes(passed=6)
    tree = ET.parse(pytester.path / "junit.xml")
    props = [{p.get("name"): p.get("value") for p in tc.iter("property")} for tc in tree.iter("testcase")]
    assert any(p.get("short") is not None and p.get("steer_primary") == "short" for p in props)
    assert "short" in (pytester.path / "report" / "summary.html").read_text()


def test_on_missing_warn_runs_the_row_unsteered(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                tmp_path: Path) -> None:
    rows = [{"key": "1", "prompt": "Write a poem. Do not use commas.", "instructions": ["Do not use commas."],
             "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
            {"key": "2", "prompt": "Write a story. No commas please.", "instructions": ["Do not use commas."],
             "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}]
    data = tmp_path / "cases.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pytester.makepyfile("def test_point(steer_result):\n    pass\n")
    common = _args(tiny_model_dir, tmp_path / "cache", grid=False) + [
        "--steer-dataset", str(data), "--steer-types", "all", "--steer-per-type", "2", "--steer-methods", "pasta",
        "--steer-alphas", "5", "--steer-trials", "1"]
    result = pytester.runpytest(*common)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*'2'*not found*--steer-on-missing warn*"])
    result = pytester.runpytest(*common, "--steer-on-missing", "warn")
    result.assert_outcomes(passed=2)


def test_a_scorer_failing_on_one_row_loses_only_that_rows_score(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    """Every test of the trial still runs, every row reaches the report, the failed score is missing and
    flagged with one terminal line, and the unit is generated once although the cache is off."""
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile('''
        import pytest
        from pytest_steer import Case, Task, register_task, scorer

        @scorer("fine")
        def fine(sample):
            if sample.case.key == "c1" and sample.config.is_baseline:
                raise ZeroDivisionError("boom")
            return True

        cases = [Case(f"c{i}", f"Talk about {w}. Be brief.", data={"instructions": ("Be brief.",)})
                 for i, w in enumerate(["cats", "dogs", "rain"])]
        register_task(Task.from_cases("fragile", cases, [fine]))

        @pytest.mark.steer(task="fragile", methods="prompt", prompt_variants="system", trials=1)
        def test_a(steer_result):
            assert len(steer_result.records) == 3

        @pytest.mark.steer(task="fragile", methods="prompt", prompt_variants="system", trials=1)
        def test_b(steer_result):
            assert len(steer_result.records) == 3
    ''')
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "cache", "--steer-cache", "false", grid=False))
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*scorers failed on 1 row(s)*case 'c1' (baseline): ZeroDivisionError: boom*"])
    rows = [json.loads(line) for line in (pytester.path / "report" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    flagged = [r for r in rows if r["details"].get("scorer_errors")]
    assert [(r["key"], r["config"], r["scores"]["fine"]) for r in flagged] == [("c1", "baseline", None)]
    assert flagged[0]["details"]["scorer_errors"] == {"fine": "ZeroDivisionError: boom"}
    assert all(r["scores"]["fine"] == 1.0 for r in rows if r not in flagged)
    assert len(json.loads((pytester.path / "generated-main.json").read_text())) == 6  # once for both tests


# The report dir's disk fills up at session end: every file opened for writing under a folder named
# `report` keeps half of its first write, then raises ENOSPC (as a full disk does).
FULL_DISK = '''
import builtins, errno, io, os
import pytest

_open = io.open

class Full:
    def __init__(self, fh):
        self._fh = fh
    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        raise OSError(errno.ENOSPC, "No space left on device")
    def __getattr__(self, name):
        return getattr(self._fh, name)
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self._fh.close()

def in_report(file):
    if isinstance(file, int):
        file = os.readlink(f"/proc/self/fd/{file}")
    return f"{os.sep}report{os.sep}" in os.path.abspath(os.fspath(file))

def full_open(file, mode="r", *args, **kwargs):
    fh = _open(file, mode, *args, **kwargs)
    return Full(fh) if any(c in mode for c in "wax") and in_report(file) else fh

@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    builtins.open = io.open = full_open
    try:
        yield
    finally:
        builtins.open = io.open = _open
'''


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="the fault injection names files through /proc")
def test_a_full_report_disk_at_session_end_is_one_line_per_file_and_leaves_no_cut_off_file(
        pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makeconftest(FULL_DISK)
    pytester.makepyfile("def test_point(steer_result):\n    pass\n")
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "cache", grid=False), "--steer-methods", "prompt",
                                "--steer-prompt-variants", "system", "--steer-trials", "1")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK, out  # the tests passed; the disk is not their fault
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    result.stdout.fnmatch_lines(["*pytest-steer*", "*could not write the HTML report *report.html: *No space left*",
                                 "config*rows*", "*could not write the results files*No space left*",
                                 "*2 passed*"], consecutive=False)
    assert "Generated html report" not in out
    left = [p for p in (pytester.path / "report").rglob("*") if p.is_file() and p.name != ".pytest-steer.lock"]
    assert left == [], f"cut-off or temporary files left behind: {left}"


def test_a_second_session_on_one_report_dir_is_refused(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                       tmp_path: Path) -> None:
    """The last writer used to win silently; now the second session stops at start-up, in one line."""
    from pytest_steer.cache import hold_lock

    pytester.makepyfile("def test_point(steer_result):\n    pass\n")
    (pytester.path / "report").mkdir()
    other_session = hold_lock(pytester.path / "report" / ".pytest-steer.lock")
    try:
        result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "cache", grid=False))
    finally:
        other_session.close()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--steer-report-dir *report: another pytest session is writing its report there*"])


def test_deselecting_configs_says_that_whole_units_are_generated(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    """`-k baseline` cannot generate the baseline alone (a unit is a trial's configs in shared batches); the
    terminal says so instead of leaving the user to wonder why 8 rows were generated for 4."""
    pytester.makepyfile("def test_point(steer_result):\n    pass\n")
    args = [*_args(tiny_model_dir, tmp_path / "cache", grid=False), "--steer-methods", "prompt",
            "--steer-prompt-variants", "system", "--steer-trials", "1"]
    result = pytester.runpytest(*args, "-k", "baseline")
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(["*the selected tests read 1 of the 2 configs, but every config of a trial is "
                                 "generated together*"])
    result = pytester.runpytest(*args)
    assert "the selected tests read" not in result.stdout.str()


def test_clear_cache_keeps_what_is_not_ours_and_says_so(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                         tmp_path: Path) -> None:
    """Issue 29: --steer-clear-cache deleted every folder under --steer-cache-dir, with rc 0 and no warning."""
    cache = tmp_path / "shared"
    user = {"huggingface/hub/model.bin": "weights", "my-project-data/results.csv": "a,b\n1,2\n"}
    for rel, text in user.items():
        (cache / rel).parent.mkdir(parents=True, exist_ok=True)
        (cache / rel).write_text(text)
    pytester.makepyfile("def test_point(steer_result):\n    pass\n")
    args = [*_args(tiny_model_dir, cache, grid=False), "--steer-methods", "prompt", "--steer-prompt-variants",
            "system", "--steer-trials", "1"]
    pytester.runpytest(*args).assert_outcomes(passed=2)
    assert list((cache / "generation").rglob("*.json"))
    result = pytester.runpytest(*args, "--steer-clear-cache")
    result.assert_outcomes(passed=2)
    assert {rel: (cache / rel).read_text() for rel in user} == user
    result.stdout.fnmatch_lines([f"*pytest-steer cache: cleared {cache}, but kept what it did not write there: "
                                 "huggingface/, my-project-data/"])


def test_quiet_still_names_what_was_kept(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    """Probe round 5 of issue 29: under `-q` the whole pytest-steer section was hidden, the line naming the user's
    folders kept in the report dir (and the clear line of the cache) with it; `-q` hides the tables only."""
    cache = tmp_path / "shared"
    (cache / "my-project-data").mkdir(parents=True)
    pytester.makepyfile("def test_point(steer_result):\n    pass\n")
    (pytester.path / "report" / "run-friday").mkdir(parents=True)
    args = [*_args(tiny_model_dir, cache, grid=False), "--steer-methods", "prompt", "--steer-prompt-variants",
            "system", "--steer-trials", "1", "--steer-clear-cache", "-q"]
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    assert len([ln for ln in out.splitlines() if ln.startswith("kept in") and "run-friday/" in ln]) == 1, out
    assert len([ln for ln in out.splitlines() if "but kept what it did not write there: my-project-data/" in ln]) == 1
    assert not [ln for ln in out.splitlines() if ln.startswith("report: ")]  # the summary stays hidden under -q


@pytest.mark.parametrize("cache", ["false", "true"])
def test_a_session_never_replaces_results_it_did_not_produce_again(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                                   tmp_path: Path, cache: str) -> None:
    """Probe round 7 of issue 29 (D1): with `--steer-cache false` the report's results.jsonl is the only copy of
    the generations, and the next session (an interrupted one in the probe; another run here) replaced it. It
    is kept aside and named, with the cache on too (round 8: a cache cleared since, or one an xdist worker could
    not write, holds nothing either)."""
    pytester.makepyfile("def test_point(steer_result):\n    pass\n")
    base = [*_args(tiny_model_dir, tmp_path / "cache", grid=False), "--steer-methods", "prompt",
            "--steer-prompt-variants", "system", "--steer-cache", cache]
    pytester.runpytest(*base, "--steer-trials", "2").assert_outcomes(passed=4)
    first = (pytester.path / "report" / "results.jsonl").read_bytes()
    result = pytester.runpytest(*base, "--steer-trials", "1", *(["--steer-clear-cache"] if cache == "true" else []))
    result.assert_outcomes(passed=2)
    aside = list((pytester.path / "report").glob("results-*.jsonl"))
    assert [p.read_bytes() for p in aside] == [first]
    result.stdout.fnmatch_lines([f"kept in *report: {aside[0].name}, an earlier session's results.jsonl, for its "
                                 f"{len(first.splitlines())} rows this session did not produce again*"])
