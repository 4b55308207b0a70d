"""Every bad input of issue 13 fails early, in one line that names the value, without a traceback.

Start-up checks must come before the model loads: a spy conftest records any call to `load_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SPY = '''
import pytest_steer.session.run as session

_orig = session.load_model

def spy(*args, **kwargs):
    open("model-loaded", "w").close()
    return _orig(*args, **kwargs)

def pytest_configure(config):
    session.load_model = spy

def pytest_unconfigure(config):
    session.load_model = _orig
'''

GRID_TEST = "def test_point(steer_result):\n    pass\n"


def _user_method_test(values: str, label: str = "f'v{value}'", prepare: str = "pass") -> str:
    """A test module registering a user method `loud` with grid `values`, label expression and prepare body."""
    return f"""
import contextlib, pytest
from pytest_steer import register_method, user_turn

class Loud:
    name, param, noop = "loud", "level", 0
    def check(self, value): return value
    def label(self, value, grid): return {label}
    def strength(self, value): return 1.0
    def identity(self): return {{}}
    def prepare(self, ctx): {prepare}
    def render(self, case, value): return user_turn(case)
    def steer(self, model, batch, cases, values): return contextlib.nullcontext()

register_method("loud", lambda spec: Loud(), values={values})

@pytest.mark.steer(methods="loud")
def test_point(steer_result):
    pass
"""


def _user_task_test(name: str, metric: str) -> str:
    """A test module registering a task `name` whose one scorer declares `metric`."""
    return f"""
import pytest
from pytest_steer import Case, Metric, Task, register_task, scorer

@scorer(Metric({metric!r}, "binary"))
def judge(sample):
    return True

register_task(Task.from_cases({name!r}, [Case("c1", "Say hi.")], [judge]))

@pytest.mark.steer(task={name!r}, methods="prompt", prompt_variants="system", trials=1)
def test_point_{metric}(steer_result):
    pass
"""


def _marker_test(marker: str) -> str:
    return f"import pytest\n\n@pytest.mark.steer({marker})\ndef test_point(steer_result):\n    pass\n"


LONG_PART = "x" * 300  # longer than the 255 bytes a file name may have


def _cases(tmp: Path) -> list[tuple[str, list[str], str, str]]:
    """(id, extra args, test file, text the one error line must contain)."""
    a_file = tmp / "a-file"
    a_file.write_text("x")
    wrong_shape = tmp / "wrong-shape.json"
    wrong_shape.write_text(json.dumps({"format": 1}))
    notes = tmp / "notes.json"
    notes.write_text('{"my": "data"}')
    bad_line = tmp / "bad-line.jsonl"
    bad_line.write_text('{"key": "x", "prompt": \n')
    dangling = tmp / "dangling-report"
    if not dangling.is_symlink():
        dangling.symlink_to(tmp / "no-such-folder")
    return [
        # probe round 7 of issue 29: said "cannot be written (File exists)"
        ("report-dir-dangling-link", ["--steer-report-dir", str(dangling)], GRID_TEST,
         f"a link to {tmp / 'no-such-folder'}, which does not exist"),
        ("save-baseline-unwritable", ["--steer-save-baseline", "/proc/x/b.json"], GRID_TEST, "/proc/x/b.json"),
        ("report-dir-is-a-file", ["--steer-report-dir", str(a_file)], GRID_TEST, f"{a_file}: is a file"),
        ("report-dir-unwritable", ["--steer-report-dir", "/proc/steer-report"], GRID_TEST, "/proc/steer-report"),
        ("device-cuda-missing", ["--steer-device", "cuda"], GRID_TEST, "--steer-device cuda"),
        ("device-nonsense", ["--steer-device", "nonsense"], GRID_TEST, "--steer-device nonsense"),
        ("compare-wrong-shape", ["--steer-compare", str(wrong_shape)], GRID_TEST, str(wrong_shape)),
        ("marker-typo", [], _marker_test("alpahs=[5, 10]"), "did you mean 'alphas'"),
        ("marker-alphas-text", [], _marker_test('alphas="ten"'), "alphas='ten'"),
        ("marker-alphas-negative", [], _marker_test("alphas=[0, -2]"), "alphas=[0, -2]"),
        ("marker-trials-fraction", [], _marker_test("trials=2.5"), "trials=2.5"),
        ("marker-trials-bool", [], _marker_test("trials=True"), "trials=True"),
        ("marker-positional", [], _marker_test("[5, 10]"), "positional [5, 10]"),
        ("alphas-repeated", ["--steer-alphas", "10,10"], GRID_TEST, "alpha 10.0 is given twice"),
        ("model-missing-dir", ["--steer-model", "/path/that/does/not/exist"], GRID_TEST,
         "/path/that/does/not/exist: no such directory"),
        ("quality-typo", ["--steer-quality", "fluencyy"], GRID_TEST, "did you mean 'fluency'"),
        ("layers-backwards", ["--steer-layers", "5-2"], GRID_TEST, "'5-2' runs backwards"),
        ("unknown-method", ["--steer-methods", "pasta,actad"], GRID_TEST, "did you mean 'actadd'"),
        ("unknown-task", ["--steer-task", "ifevl"], GRID_TEST, "did you mean 'ifeval'"),
        ("method-label-collision", [], _user_method_test("[1, 2]", "'loud'"),
         "labels both 1 and 2 as 'loud-loud'"),
        ("method-value-none", [], _user_method_test("[None, 1]"), "loud grid value None must be a number"),
        ("method-value-bool", [], _user_method_test("[True]"), "loud grid value True must be a number"),
        ("metric-named-like-a-field", [], _user_task_test("named", "value"),
         "metric 'value' has the name of a result field"),
        ("temperature-zero", ["--steer-temperature", "0"], GRID_TEST, "temperature '0' must be > 0"),
        ("top-p-above-one", ["--steer-top-p", "1.5"], GRID_TEST, "top-p '1.5' must be in (0, 1]"),
        ("top-k-zero", ["--steer-top-k", "0"], GRID_TEST, "top-k '0' must be >= 1"),
        ("greedy-with-trials", ["--steer-greedy", "--steer-trials", "3"], GRID_TEST,
         "--steer-greedy makes all 3 trials of a case identical copies; add --steer-trials 1"),
        ("marker-greedy-with-trials", [], _marker_test("greedy=True, trials=2"), "all 2 trials of a case identical"),
        # issue 29
        ("actadd-layer-typo", ["--steer-methods", "actadd", "--steer-actadd-layer", "autoo"], GRID_TEST,
         "'autoo' is not a layer index, middle or auto; did you mean 'auto'?"),
        ("batch-size-typo", ["--steer-batch-size", "autp"], GRID_TEST,
         "'autp' is not a whole number >= 1 or auto; did you mean 'auto'?"),
        ("model-typo", ["--steer-model", "embeded"], GRID_TEST, "--steer-model embeded: no such directory, and not "
         "the embedded model; did you mean 'embedded'?"),
        ("model-embedded-revision", ["--steer-model", "embedded@main"], GRID_TEST,
         "--steer-model embedded@main: the embedded model has no revisions"),
        # probe round 3 of issue 29: a path part longer than 255 bytes was an INTERNALERROR traceback
        ("model-name-too-long", ["--steer-model", f"{tmp}/{LONG_PART}/m"], GRID_TEST,
         "cannot be a path here (File name too long)"),
        ("cache-dir-name-too-long", ["--steer-cache-dir", f"{tmp}/{LONG_PART}"], GRID_TEST,
         "cannot be used (File name too long)"),
        ("report-dir-name-too-long", ["--steer-report-dir", f"{tmp}/{LONG_PART}"], GRID_TEST,
         "--steer-report-dir"),
        ("save-baseline-name-too-long", ["--steer-save-baseline", f"{tmp}/{LONG_PART}.json"], GRID_TEST,
         "cannot be written (File name too long)"),
        ("dataset-name-too-long", ["--steer-dataset", f"{tmp}/{LONG_PART}.jsonl"], GRID_TEST,
         "cannot be read (File name too long)"),
        ("dataset-file-missing", ["--steer-dataset", f"{tmp}/no-such-cases.jsonl"], GRID_TEST,
         "no-such-cases.jsonl: no such file"),  # was found only after the model had loaded
        # probe round 4 of issue 29: the baseline was written over the user's file at the end of the run
        ("save-baseline-over-a-users-file", ["--steer-save-baseline", str(notes)], GRID_TEST,
         f"--steer-save-baseline {notes}: exists and is not a stored baseline pytest-steer wrote"),
        # probe round 4 of issue 29: the case file was read only after the model had loaded
        ("dataset-bad-line", ["--steer-dataset", str(bad_line)], GRID_TEST,
         f"{bad_line} line 1: invalid JSON at column 24"),
        ("types-unknown", ["--steer-types", "bogus:type"], GRID_TEST, "no cases for instruction type(s) bogus:type"),
    ]


@pytest.mark.parametrize("case_id", [c[0] for c in _cases(Path("/tmp"))])
def test_bad_input_fails_early_in_one_line(case_id: str, pytester: pytest.Pytester, tiny_model_dir: Path,
                                           tmp_path: Path) -> None:
    _, extra, test_file, expected = next(c for c in _cases(tmp_path) if c[0] == case_id)
    pytester.makeconftest(SPY)
    pytester.makepyfile(test_bad=test_file)
    model = [] if "--steer-model" in extra else ["--steer-model", str(tiny_model_dir)]
    result = pytester.runpytest(*model, "--steer-cache-dir", str(tmp_path / "cache"), "-p", "no:cacheprovider", *extra)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    matching = [line for line in out.splitlines() if expected in line]
    assert len(matching) == 1, f"expected one line with {expected!r}:\n{out}"
    assert not (pytester.path / "model-loaded").exists(), "the error must come before the model loads"


def test_hub_ids_fail_at_once_when_offline(pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytester.makeconftest(SPY)
    pytester.makepyfile(test_bad=GRID_TEST)
    result = pytester.runpytest("--steer-model", "some-org/some-model", "--steer-cache-dir", str(tmp_path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*some-org/some-model*offline*"])
    assert not (pytester.path / "model-loaded").exists()
    # a reward model id is checked the same way, before the model loads
    result = pytester.runpytest("--steer-model", str(tiny_model_dir), "--steer-quality", "some-org/reward",
                                "--steer-cache-dir", str(tmp_path))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--steer-quality some-org/reward*offline*"])
    assert not (pytester.path / "model-loaded").exists()


def test_one_task_name_from_two_modules_is_refused(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                   tmp_path: Path) -> None:
    """Module A's test must not silently run module B's cases: the clash fails at start-up."""
    pytester.makeconftest(SPY)
    pytester.makepyfile(test_a=_user_task_test("mine", "a"), test_b=_user_task_test("mine", "b"))
    result = pytester.runpytest("--steer-model", str(tiny_model_dir), "--steer-cache-dir", str(tmp_path / "cache"),
                                "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out
    result.stderr.fnmatch_lines(["*task 'mine' is registered by both *test_a.py and *test_b.py*"])
    assert not (pytester.path / "model-loaded").exists()


def test_a_user_methods_prepare_raising_is_one_line(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                    tmp_path: Path) -> None:
    """Not an INTERNALERROR: one line naming the method and its error, before any generation."""
    pytester.makepyfile(test_bad=_user_method_test("[1]", prepare="raise RuntimeError('needs a GPU')"))
    result = pytester.runpytest("--steer-model", str(tiny_model_dir), "--steer-cache-dir", str(tmp_path / "cache"),
                                "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    result.stderr.fnmatch_lines(["*steering method 'loud' failed in prepare(): RuntimeError: needs a GPU"])


def test_a_prompt_longer_than_the_models_context_is_refused_at_start_up(pytester: pytest.Pytester,
                                                                       tiny_model_dir: Path, tmp_path: Path) -> None:
    """The tiny model's context is 1024 tokens: a 1,100-word case would run on untrained positions."""
    pytester.makepyfile(test_bad=_user_task_test("long", "ok").replace(
        'Case("c1", "Say hi.")', 'Case("c1", "Say hi. " + "word " * 1100, instructions=("Say hi.",))'))
    result = pytester.runpytest("--steer-model", str(tiny_model_dir), "--steer-cache-dir", str(tmp_path / "cache"),
                                "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out and "generated" not in out, out
    result.stderr.fnmatch_lines(["*case 'c1' (baseline): its prompt of * tokens plus 96 new tokens exceeds the "
                                 "model's context of 1024 tokens*"])


def test_collect_only_reports_marker_errors_like_a_run(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Issue 29: a marker typo gave rc 0 under --collect-only (the run gives rc 4)."""
    pytester.makeconftest(SPY)
    pytester.makepyfile(test_bad=_marker_test("alpahs=[5, 10]"))
    result = pytester.runpytest("--collect-only", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out and len([ln for ln in out.splitlines() if "did you mean 'alphas'" in ln]) == 1
    assert not (pytester.path / "model-loaded").exists()
    pytester.makepyfile(test_bad=_marker_test("alphas=[5, 10]"))
    result = pytester.runpytest("--collect-only", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    assert not (pytester.path / "model-loaded").exists() and not (pytester.path / "steer-report").exists()


def test_collect_only_refuses_the_paths_a_run_refuses(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Probe round 5 of issue 29: --collect-only passed a --steer-save-baseline that would replace a file of the
    user's, which a run refuses before it starts."""
    pytester.makeconftest(SPY)
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    pytester.makepyfile(test_bad=GRID_TEST)
    result = pytester.runpytest("--collect-only", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider", "--steer-save-baseline", str(notes))
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert len([ln for ln in out.splitlines() if f"--steer-save-baseline {notes}: exists and is not" in ln]) == 1
    assert notes.read_text() == '{"mine": 1}' and not (pytester.path / "steer-report").exists()


def test_a_marker_value_the_command_line_overrides_is_still_checked(pytester: pytest.Pytester,
                                                                    tmp_path: Path) -> None:
    """Probe round 5 of issue 29: with --steer-trials 2, the marker's trials=10**9 was never parsed; it is a bad
    value in any run (the command line may be dropped tomorrow)."""
    pytester.makepyfile(test_bad=_marker_test("alphas=[5], trials=10**9"))
    result = pytester.runpytest("--collect-only", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider", "--steer-trials", "2")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert len([ln for ln in out.splitlines() if "trials=1000000000): 1000000000 trials are more than" in ln]) == 1


def test_an_option_of_a_backend_not_chosen_is_named(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Probe round 5 of issue 29: `--steer-backend local --steer-ray-replicas 4` ignored the Ray option silently."""
    pytester.makepyfile(test_bad=GRID_TEST)
    result = pytester.runpytest("--collect-only", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider", "--steer-backend", "local", "--steer-ray-replicas", "4")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert len([ln for ln in out.splitlines() if "--steer-ray-replicas set, but the backend is 'local': it does "
                "nothing in this run" in ln]) == 1, out


def test_a_backend_name_in_the_wrong_case_gets_a_hint(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Probe round 5 of issue 29: `--steer-backend LOCAL` named the registered backends but no nearest one."""
    pytester.makepyfile(test_bad=GRID_TEST)
    result = pytester.runpytest("--collect-only", "-q", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider", "--steer-backend", "LOCAL")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR and "did you mean 'local'?" in out, out


def test_marker_options_of_methods_the_test_does_not_run_warn(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Issue 29: `actadd_coefs=` on a test that runs only PASTA was ignored silently."""
    pytester.makepyfile(test_bad=_marker_test("methods='pasta', alphas=[5], actadd_coefs=[2], actadd_layer=3"))
    result = pytester.runpytest("--collect-only", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider")
    out = result.stdout.str()
    assert result.ret == pytest.ExitCode.OK, out
    lines = [ln for ln in out.splitlines() if "has no effect" in ln]
    assert len(lines) == 1, out
    assert "actadd_coefs (of actadd); actadd_layer (of actadd), but the test runs only pasta" in lines[0]
    pytester.makepyfile(test_bad=_marker_test("methods='pasta,actadd', alphas=[5], actadd_coefs=[2]"))
    result = pytester.runpytest("--collect-only", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider")
    assert "has no effect" not in result.stdout.str()


LONG = "x" * 100_000


@pytest.mark.parametrize("source", ["cli", "ini", "marker", "cli-400-digits"])
def test_a_huge_option_value_is_quoted_cut_in_one_line(source: str, pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Probe round 3 of issue 29: a 100k-character value was quoted in full (a 100k-character error line, from
    every source), and 400 digits given as an alpha on the command line ended in an INTERNALERROR traceback
    (float() raises OverflowError, which argparse does not catch)."""
    pytester.makeconftest(SPY)
    pytester.makepyfile(test_bad=_marker_test(f"alphas={LONG!r}") if source == "marker" else GRID_TEST)
    if source == "ini":
        pytester.makeini(f"[pytest]\nsteer_alphas = {LONG}\n")
    extra = {"cli": ["--steer-alphas", LONG], "cli-400-digits": ["--steer-alphas", "9" * 400]}.get(source, [])
    result = pytester.runpytest("--collect-only", "--steer-cache-dir", str(tmp_path / "cache"), "-p",
                                "no:cacheprovider", *extra)
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out[:3000]
    assert "Traceback" not in out and "INTERNALERROR" not in out, out[:3000]
    lines = [line for line in out.splitlines() if ("too large" if "digits" in source else "is not a number") in line]
    assert len(lines) == 1 and len(lines[0]) < 1200, out[:3000]
    assert "alpha" in lines[0] and ("100,00" in lines[0] or "digits" in source)
    assert max(map(len, out.splitlines())) < 1200


@pytest.mark.parametrize("option", ["--steer-cache-dir", "--steer-report-dir", "--steer-save-baseline",
                                    "--steer-compare", "--steer-dataset"])
def test_an_empty_path_is_refused_not_read_as_the_default(option: str, pytester: pytest.Pytester) -> None:
    """Probe round 4 of issue 29: `--steer-cache-dir "$CACHE" --steer-clear-cache` with CACHE unset cleared the
    shared default cache, an empty --steer-report-dir wrote the report into the project folder, and an empty
    --steer-save-baseline saved nothing, all silently. Checked while the command line is parsed, so even
    --collect-only refuses it."""
    pytester.makepyfile(test_bad=GRID_TEST)
    result = pytester.runpytest(option, "", "--collect-only", "-p", "no:cacheprovider")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    expected = f"argument {option}: the path is empty (an unset variable?); give a path, or leave the option out"
    assert len([line for line in out.splitlines() if expected in line]) == 1, out
    assert "Traceback" not in out
