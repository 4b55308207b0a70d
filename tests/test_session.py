"""A session's life: the run's score cache (an edited scorer re-scores cached rows instead of returning its old
values), and the report dir's start-up check (a user's file with one of the report's names is never overwritten)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from pytest_steer.cache import ResultCache
from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.scores import FunctionScorer, Sample
from pytest_steer.session import SteerRun
from pytest_steer.tasks import Case


def _scorer_from(path: Path, body: str) -> FunctionScorer:
    """`judge` as the user's module defines it now (written, then imported afresh, like a new session)."""
    path.write_text(f"from pytest_steer import scorer\n\n@scorer('ok')\ndef judge(sample):\n    {body}\n")
    spec = importlib.util.spec_from_file_location("user_scorers", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    judge: FunctionScorer = module.judge
    return judge


def test_a_fixed_scorer_is_not_served_its_old_cached_scores(tmp_path: Path) -> None:
    run = SteerRun(cache=ResultCache(tmp_path / "cache"))
    case = Case("c1", "Say hi.")
    samples = [Sample(case, BASELINE_CONFIG, case.prompt, "hi", 1, "stop")]
    broken = _scorer_from(tmp_path / "user_scorers.py", "return False")
    assert run._scored(broken, samples, ["gen-1"])[0].values == {"ok": 0.0}
    fixed = _scorer_from(tmp_path / "user_scorers.py", "return sample.response == 'hi'")
    assert (fixed.name, fixed.version) == (broken.name, broken.version)
    assert run._scored(fixed, samples, ["gen-1"])[0].values == {"ok": 1.0}
    # unchanged code still hits the cache
    again = _scorer_from(tmp_path / "user_scorers.py", "return sample.response == 'hi'")
    assert again.identity() == fixed.identity()


POINT_TEST = "def test_point(steer_result):\n    pass\n"


def _tiny_run(pytester: pytest.Pytester, model_dir: Path, cache: Path) -> pytest.RunResult:
    """One prompt config and the baseline, one case, 4 new tokens, the pytest-html page on: a few seconds."""
    return pytester.runpytest("--steer-model", str(model_dir), "--steer-methods", "prompt", "--steer-prompt-variants",
                              "system", "--steer-trials", "1", "--steer-per-type", "1", "--steer-types",
                              "startend:end_checker", "--steer-max-new-tokens", "4", "--steer-report-dir", "report",
                              "--steer-cache-dir", str(cache), "--steer-html", "true", "-p", "no:cacheprovider")


def test_a_users_files_in_the_report_dir_are_refused_at_start_up(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                                 tmp_path: Path) -> None:
    """Probe of issue 29 (R1): `--steer-report-dir .` or a folder holding the user's own `results.jsonl`: the report
    replaced it silently. Now the session stops before any work, naming the files, and they are left as they were."""
    pytester.makepyfile(POINT_TEST)
    report = pytester.path / "report"
    report.mkdir()
    mine = {"results.jsonl": b'{"my": "rows"}\n', "report.html": b"<p>my page</p>"}
    for name, data in mine.items():
        (report / name).write_bytes(data)
    result = _tiny_run(pytester, tiny_model_dir, tmp_path / "cache")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.USAGE_ERROR, out
    assert "Traceback" not in out and "INTERNALERROR" not in out, out
    line = [x for x in out.splitlines() if "results.jsonl" in x]
    assert len(line) == 1 and "report.html" in line[0] and "--steer-report-dir" in line[0], out
    assert {name: (report / name).read_bytes() for name in mine} == mine
    assert sorted(p.name for p in report.iterdir()) == [".pytest-steer.lock", *sorted(mine)]  # nothing written
    assert not list((tmp_path / "cache").glob("generation/??/*.json"))  # nothing generated


def test_a_second_session_replaces_its_own_report_files(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                        tmp_path: Path) -> None:
    """The start-up check must not refuse what pytest-steer wrote itself: the manifests list the files it wrote,
    the pytest-html page included, so a second session in a row replaces them."""
    pytester.makepyfile(POINT_TEST)
    first = _tiny_run(pytester, tiny_model_dir, tmp_path / "cache")
    assert first.ret == pytest.ExitCode.OK, first.stdout.str() + first.stderr.str()
    report = pytester.path / "report"
    written = {p.name: p.stat().st_ino for p in report.iterdir()}
    assert {"results.jsonl", "summary.csv", "metrics.json", "summary.html", "report.html"} <= set(written)
    second = _tiny_run(pytester, tiny_model_dir, tmp_path / "cache")
    assert second.ret == pytest.ExitCode.OK, second.stdout.str() + second.stderr.str()
    for name in ("results.jsonl", "summary.html", "report.html"):
        assert (report / name).stat().st_ino != written[name], f"{name} was not written again"


def test_a_report_file_the_user_edited_is_refused_on_the_next_run(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                                  tmp_path: Path) -> None:
    """A file is ours only as we wrote it: an annotated summary.csv is the user's now, so the next run stops."""
    pytester.makepyfile(POINT_TEST)
    assert _tiny_run(pytester, tiny_model_dir, tmp_path / "cache").ret == pytest.ExitCode.OK
    edited = pytester.path / "report" / "summary.csv"
    with open(edited, "a") as fh:
        fh.write("my annotation\n")
    kept = edited.read_bytes()
    result = _tiny_run(pytester, tiny_model_dir, tmp_path / "cache")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--steer-report-dir *report: summary.csv *"])
    assert edited.read_bytes() == kept
