"""End-to-end runs of the plugin with pytester on a tiny random model: ids, properties, report,
figures, result files, escaping, generation sharing, caching, resume and xdist."""

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

# Counts the rows that really go through the model and makes responses carry markup, so the report's
# escaping is tested on real output; steered rows get enough *highlights* to pass that instruction.
INNER_CONFTEST = '''
import json, os
from pytest_steer import generation

_rows = []
_orig_batch = generation.GenerationEngine._generate_batch
_orig_decode = generation.GenerationEngine._decode

def counting(self, batch):
    _rows.extend([r.key, r.alpha, r.trial] for r in batch)
    return _orig_batch(self, batch)

def decode(self, req, tokens, seed, eos):
    g = _orig_decode(self, req, tokens, seed, eos)
    extra = " *one* *two* *three* *four* *five*" if req.alpha is not None else ""
    return generation.Generation(g.request, "<script>alert(1)</script> " + g.text + extra,
                                 g.n_tokens, g.finish_reason, g.seed)

def pytest_configure(config):
    generation.GenerationEngine._generate_batch = counting
    generation.GenerationEngine._decode = decode

def pytest_unconfigure(config):
    generation.GenerationEngine._generate_batch = _orig_batch
    generation.GenerationEngine._decode = _orig_decode
    name = "generated-%s.json" % os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(name, "w") as fh:
        json.dump(_rows, fh)
'''

TESTS = '''
def test_gate(steer_result, alpha, trial):
    assert steer_result.strict_prompt_accuracy >= 0.0
    assert steer_result.frame.shape[0] == 4
    if alpha is not None:
        assert steer_result.baseline.config == "baseline"
        assert steer_result.quality >= steer_result.baseline.quality - 100

def test_second_test_shares_generation(steer_result):
    assert len(steer_result.records) == 4

def test_sweep(steer_eval):
    assert steer_eval.frame().shape[0] == 24
'''


def _args(model_dir: Path, cache: Path, *extra: str, grid: bool = True) -> list[str]:
    """Command line for a tiny-model run; grid=False leaves alphas and trials to the test's marker."""
    return [
        "--steer-model", str(model_dir), *(["--steer-alphas", "5,20", "--steer-trials", "2"] if grid else []),
        "--steer-per-type", "1", "--steer-max-new-tokens", "8", "--steer-batch-size", "5",
        "--steer-report-dir", "report", "--steer-cache-dir", str(cache), "-p", "no:cacheprovider", *extra,
    ]


def _generated(path: Path) -> list:
    return [row for f in sorted(path.glob("generated-*.json")) for row in json.loads(f.read_text())]


def test_options_have_their_own_help_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*pytest-steer: LLM steering evaluations*", "*--steer-alphas=ALPHAS*", "*default: 5.0,10.0,20.0*"])


def test_bad_option_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--steer-alphas", "0,5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --steer-alphas: alpha 0 must be finite, > 0 and != 1*"])


def test_end_to_end_small_grid(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_evals=TESTS)
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "cache", "-v", "--junitxml=junit.xml"))
    result.assert_outcomes(passed=13)
    result.stdout.fnmatch_lines([
        "steer: generated 12/12 rows, * tokens/s, ETA 0s",  # plain progress lines: stdout is not a TTY here
        "*test_gate?baseline-trial0? PASSED*", "*test_gate?alpha5-trial0? PASSED*", "*test_gate?alpha20-trial1? PASSED*",
        "*pytest-steer*", "baseline *2*", "alpha20 *2*", "recommended: *",
    ])

    # generation ran once per (case, config, trial), although two tests and a sweep read every row
    rows = _generated(pytester.path)
    assert len(rows) == 24 and len({tuple(r) for r in rows}) == 24

    # metrics are test properties in JUnit XML
    tree = ET.parse(pytester.path / "junit.xml")
    case = next(tc for tc in tree.iter("testcase") if tc.get("name") == "test_gate[alpha5-trial1]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["steer_config"] == "alpha5" and props["steer_trial"] == "1"
    for name in ("strict_prompt_accuracy", "strict_instruction_accuracy", "loose_prompt_accuracy", "fluency", "quality"):
        assert 0 <= float(props[name]) <= 1 or name in ("fluency", "quality")
    assert any(k.startswith("follow_rate[") for k in props)

    report = pytester.path / "report"
    page = (report / "report.html").read_text()
    for column in ("Config", "Strict acc.", "Quality"):
        assert f"{column}" in page
    for png in ("tradeoff.png", "pareto.png", "heatmap_types.png"):
        assert (report / png).read_bytes()[:8] == PNG
    assert list(report.glob("delta_by_type_*.png"))

    lines = (report / "results.jsonl").read_text().splitlines()
    assert len(lines) == 24 and (report / "results.parquet").is_file()
    from pytest_steer.analysis import load_results

    results, summary = load_results(report)
    assert list(summary["config"]) == ["baseline", "alpha5", "alpha20"]
    assert {"follow_all_wilson_low", "follow_all_mcnemar_p", "quality_diff_low"} <= set(summary.columns)
    assert results["response"].str.contains("<script>").all()

    # generated text is escaped everywhere it is shown
    for html_file in (report / "report.html", report / "summary.html"):
        text = html_file.read_text()
        assert "<script>alert(1)</script>" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_rerun_hits_the_cache_and_reproduces_results(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_evals=TESTS)
    args = _args(tiny_model_dir, tmp_path / "cache")
    start = time.perf_counter()
    pytester.runpytest(*args).assert_outcomes(passed=13)
    first_s = time.perf_counter() - start
    first = (pytester.path / "report" / "results.jsonl").read_text()
    assert len(_generated(pytester.path)) == 24

    start = time.perf_counter()
    result = pytester.runpytest(*args)
    second_s = time.perf_counter() - start
    result.assert_outcomes(passed=13)
    assert _generated(pytester.path) == []  # 100% of generations came from the cache
    assert "100% of 24 rows" in (pytester.path / "report" / "summary.html").read_text()
    assert (pytester.path / "report" / "results.jsonl").read_text() == first
    print(f"first run {first_s:.1f}s, cached rerun {second_s:.1f}s")

    # --steer-cache false regenerates, with identical results (per-row seeding)
    pytester.runpytest(*args, "--steer-cache", "false").assert_outcomes(passed=13)
    assert len(_generated(pytester.path)) == 24
    assert (pytester.path / "report" / "results.jsonl").read_text() == first


def test_marker_sets_the_grid_and_command_line_wins(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.steer(alphas=[3, 7], trials=1, include_baseline=False)
        def test_one(alpha, trial):
            pass
    ''')
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "c", grid=False), "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_one?alpha3-trial0?", "*test_one?alpha7-trial0?"])
    assert "baseline" not in result.stdout.str()
    result = pytester.runpytest("--steer-alphas", "9", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_one?alpha9-trial0?"])
    pytester.makepyfile(test_bad='''
        import pytest

        @pytest.mark.steer(alpahs=[3])
        def test_typo(alpha):
            pass
    ''')
    result = pytester.runpytest("test_bad.py", "--collect-only")
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["test_bad.py::test_typo: @pytest.mark.steer got unknown keyword(s) ?'alpahs'?; allowed: alphas,*"])


def test_k_selects_a_slice(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_evals=TESTS)
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "cache", "-k", "test_gate and alpha20", "-q"))
    result.assert_outcomes(passed=2)
    assert "steer: generated" not in result.stdout.str()  # -q keeps progress quiet
    # a trial's unit is generated whole (baseline + every alpha), so its rows pair up
    assert len(_generated(pytester.path)) == 24


def test_failing_threshold_names_metric_threshold_and_baseline(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.steer(alphas=[5], trials=1, include_baseline=False)
        def test_gate(steer_result):
            assert steer_result.strict_prompt_accuracy >= 1.5
    ''')
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "cache", grid=False))
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*strict_prompt_accuracy >= threshold failed*",
        "*strict_prompt_accuracy = * (alpha5, trial 0, n=4; baseline *)*",
        "*threshold: 1.5*",
    ])


def test_unloadable_model_fails_before_generation(pytester: pytest.Pytester, tmp_path: Path) -> None:
    pytester.makepyfile("def test_x(steer_result):\n    pass\n")
    result = pytester.runpytest("--steer-model", str(tmp_path / "nope"), "--steer-cache-dir", str(tmp_path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*could not load model*nope*To fix:*"])


def test_unloadable_reward_model_fails_before_generation(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile("def test_x(steer_result):\n    pass\n")
    result = pytester.runpytest(*_args(tiny_model_dir, tmp_path / "c"), "--steer-quality", "no-such-org/reward-model-typo")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no-such-org/reward-model-typo*"])
    assert _generated(pytester.path) == []


def _subprocess_run(cwd: Path, args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "pytest", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_sigkill_midway_resumes_to_identical_results(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A run killed with SIGKILL keeps its finished batches; the rerun generates only what is missing."""
    for d in ("killed", "clean"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "conftest.py").write_text(INNER_CONFTEST)
        (tmp_path / d / "test_evals.py").write_text(TESTS)
    args = _args(tiny_model_dir, tmp_path / "killed-cache") + ["--steer-max-new-tokens", "48", "--steer-batch-size", "1"]
    proc = _subprocess_run(tmp_path / "killed", args)
    gen_dir = tmp_path / "killed-cache" / "generation"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(gen_dir.rglob("*.json"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = len(list(gen_dir.rglob("*.json")))
    assert 3 <= kept < 24, f"expected to kill mid-run, {kept} rows were cached"

    rerun = _subprocess_run(tmp_path / "killed", args)
    out = rerun.communicate()[0].decode()
    assert rerun.returncode == 0, out
    assert len(_generated(tmp_path / "killed")) == 24 - kept  # only the missing rows

    clean = _subprocess_run(tmp_path / "clean", _args(tiny_model_dir, tmp_path / "clean-cache")
                            + ["--steer-max-new-tokens", "48", "--steer-batch-size", "1"])
    assert clean.wait() == 0
    resumed = (tmp_path / "killed" / "report" / "results.jsonl").read_text()
    assert resumed == (tmp_path / "clean" / "report" / "results.jsonl").read_text()


def test_corrupt_cache_entry_is_regenerated(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_evals=TESTS)
    args = _args(tiny_model_dir, tmp_path / "cache")
    pytester.runpytest(*args).assert_outcomes(passed=13)
    first = (pytester.path / "report" / "results.jsonl").read_text()
    victims = sorted((tmp_path / "cache" / "generation").rglob("*.json"))[:2]
    victims[0].write_text('{"format": 1, "key": {}, "val')  # truncated
    victims[1].write_bytes(b"\x00garbage")
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=13)
    assert len(_generated(pytester.path)) == 2
    assert (pytester.path / "report" / "results.jsonl").read_text() == first


def test_xdist_matches_serial(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    """-n 2 --dist loadgroup: each trial is generated once, on one worker, and the summary equals the serial one."""
    pytester.makeconftest(INNER_CONFTEST)
    pytester.makepyfile(test_evals=TESTS)
    serial = pytester.runpytest_subprocess(*_args(tiny_model_dir, tmp_path / "serial-cache"))
    serial.assert_outcomes(passed=13)
    expected = (pytester.path / "report" / "summary.csv").read_text()
    for f in pytester.path.glob("generated-*.json"):
        f.unlink()
    parallel = pytester.runpytest_subprocess(*_args(tiny_model_dir, tmp_path / "xdist-cache"),
                                             "-n", "2", "--dist", "loadgroup", "--tx", "2*popen")
    parallel.assert_outcomes(passed=13)
    assert (pytester.path / "report" / "summary.csv").read_text() == expected
    rows = _generated(pytester.path)
    assert len({tuple(r) for r in rows}) == 24
    assert "workers" in (pytester.path / "report" / "summary.html").read_text()


OVERSTEER_CONFTEST = '''
from pytest_steer import steering

_orig = steering.PASTA.with_alpha

def oversteer(self, alpha):
    """A deliberately broken build: every steered row gets alpha x 10,000."""
    if isinstance(alpha, (list, tuple)):
        return _orig(self, [a if a == 1.0 else a * 1e4 for a in alpha])
    return _orig(self, alpha if alpha == 1.0 else alpha * 1e4)

def pytest_configure(config):
    steering.PASTA.with_alpha = oversteer

def pytest_unconfigure(config):
    steering.PASTA.with_alpha = _orig
'''


@pytest.mark.slow
def test_stored_baseline_passes_for_same_model_and_fails_when_degraded(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """On the embedded model: save, compare again (passes: rows reproduce), then compare a build that
    oversteers (alpha x 10,000): quality collapses and the steered tests fail, naming the metric."""
    pytester.makepyfile(test_evals="def test_point(steer_result):\n    pass\n")
    base = ["--steer-alphas", "5", "--steer-trials", "1", "--steer-per-type", "1", "--steer-max-new-tokens", "16",
            "--steer-report-dir", "report", "--steer-cache-dir", str(tmp_path / "cache"), "-p", "no:cacheprovider"]
    stored = tmp_path / "baseline.json"
    pytester.runpytest(*base, "--steer-save-baseline", str(stored)).assert_outcomes(passed=2)
    assert len(json.loads(stored.read_text())["rows"]) == 8

    pytester.runpytest(*base, "--steer-compare", str(stored)).assert_outcomes(passed=2)

    pytester.makeconftest(OVERSTEER_CONFTEST)
    result = pytester.runpytest(*base, "--steer-compare", str(stored), "--steer-cache", "false")
    result.assert_outcomes(passed=1, failed=1)  # the baseline is unaffected, alpha5 regressed
    result.stdout.fnmatch_lines(["*regressed against stored baseline*", "*quality for alpha5:*now vs*stored*"])

    # other generation settings: the comparison refuses instead of comparing apples to oranges
    result = pytester.runpytest(*base[:7], "32", *base[8:], "--steer-compare", str(stored))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*cannot compare with stored baseline*max_new_tokens: stored 16, now 32*"])


def test_model_cases_and_pasta_fixtures(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makepyfile('''
        import pytest

        @pytest.mark.steer(per_type=2, layers="0", scale_position="exclude")
        def test_fixtures(steer_model, steer_cases, pasta):
            assert steer_model.model.config.num_hidden_layers == 2
            assert len(steer_cases) == 8 and all(c.steerable for c in steer_cases)
            ctl = pasta(alpha=0.5)
            assert ctl.alphas == [0.5] and ctl.scale_position == "exclude" and list(ctl.head_config) == [0]
    ''')
    result = pytester.runpytest("--steer-model", str(tiny_model_dir), "--steer-cache-dir", str(tmp_path))
    result.assert_outcomes(passed=1)
