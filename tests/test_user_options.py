"""A user's method owns its options as a built-in does: `--steer-<name>-<param>`, `steer_<name>_<param>` and
the marker keyword `<name>_<param>`, with the same precedence (CLI > marker > ini > default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CONFTEST = '''
import contextlib
from pytest_steer import Case, Option, SteeringError, Task, register_method, register_task, scorer, user_turn
from pytest_steer.options import grid_parser, parse_positive_int


def check_level(value):
    if value not in (0, 1, 2):
        raise SteeringError(f"shout level {value!r} must be 0, 1 or 2")
    return value


class Shout:  # the shape of a built-in method (docs/extending.md, "Your own method")
    name, param, noop = "shout", "level", 0
    grid = Option("shout_values", grid_parser("level", check_level, 0, "1,2"), (1,), "shout levels")
    options = (Option("shout_times", parse_positive_int, 2, "how often a shout repeats"),)

    def __init__(self, times):
        self.times = times

    @classmethod
    def from_options(cls, values):
        return cls(values["shout_times"])

    def check(self, value):
        return check_level(value)

    def label(self, value, grid): return f"x{self.times}-level{value}"
    def strength(self, value): return float(value)
    def identity(self): return {"times": self.times}
    def prepare(self, ctx): pass

    def render(self, case, value):
        turn = user_turn(case)
        if value:
            turn[0]["content"] += " " + "LISTEN. " * (value * self.times)
        return turn

    def steer(self, model, batch, cases, values): return contextlib.nullcontext()


register_method("shout", Shout)


@scorer("short")
def short(sample):
    return len(sample.response.split()) < 50


register_task(Task.from_cases("hello", [Case("c1", "Say hello.")], [short]))
'''

TESTS = '''
import pytest


@pytest.mark.steer(shout_times=4)
def test_marked(steer_result, steer_config):
    pass


def test_plain(steer_result, steer_config):
    pass
'''


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_shout=TESTS)
    return pytester


def _ids(result: pytest.RunResult) -> set[str]:
    return {line.split("::")[-1] for line in result.outlines if "::" in line}


def test_help_lists_the_users_options(project: pytest.Pytester) -> None:
    out = project.runpytest("--help").stdout.str()
    assert "--steer-shout-times" in out and "--steer-shout-values" in out and "steer_shout_times" in out


def test_default_ini_marker_and_command_line_reach_the_users_method(project: pytest.Pytester) -> None:
    base = ["--collect-only", "-q", "-p", "no:cacheprovider", "--steer-task", "hello", "--steer-methods", "shout"]
    got = _ids(project.runpytest(*base))
    assert {"test_plain[shout-x2-level1-trial0]", "test_marked[shout-x4-level1-trial0]"} <= got  # default, marker

    project.makeini("[pytest]\nsteer_shout_times = 5\nsteer_shout_values = 1,2\n")
    got = _ids(project.runpytest(*base))
    assert {"test_plain[shout-x5-level1-trial0]", "test_plain[shout-x5-level2-trial0]",  # ini
            "test_marked[shout-x4-level2-trial0]"} <= got  # the marker beats the ini

    got = _ids(project.runpytest(*base, "--steer-shout-times", "3", "--steer-shout-values", "2"))
    assert {"test_plain[shout-x3-level2-trial0]", "test_marked[shout-x3-level2-trial0]"} <= got  # the CLI wins
    assert not any("level1" in i for i in got)


def test_bad_values_of_the_users_options_fail_in_one_line(project: pytest.Pytester) -> None:
    result = project.runpytest("--steer-shout-times", "0", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--steer-shout-times: must be >= 1, got 0*"])
    result = project.runpytest("--steer-task", "hello", "--steer-methods", "shout", "--steer-shout-values", "7",
                               "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--steer-shout-values: shout level 7 must be 0, 1 or 2*"])


def test_a_run_builds_the_method_from_its_options(project: pytest.Pytester, tiny_model_dir: Path,
                                                  tmp_path: Path) -> None:
    result = project.runpytest("--steer-model", str(tiny_model_dir), "--steer-task", "hello", "--steer-methods",
                               "shout", "--steer-trials", "1", "--steer-max-new-tokens", "4", "--steer-report-dir",
                               "report", "--steer-cache-dir", str(tmp_path / "cache"), "-p", "no:cacheprovider",
                               "-k", "plain")
    result.assert_outcomes(passed=2)  # baseline and shout-x2-level1
    assert "shout-x2-level1" in (project.path / "report" / "summary.html").read_text()


def test_the_short_form_gets_a_values_option(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST.replace('register_method("shout", Shout)',
                                           'register_method("shout", lambda options: Shout(1), values=[2])'))
    pytester.makepyfile(test_shout=TESTS)
    got = _ids(pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", "--steer-task", "hello",
                                  "--steer-methods", "shout", "--steer-shout-values", "1,2"))
    assert {"test_plain[shout-x1-level1-trial0]", "test_plain[shout-x1-level2-trial0]"} <= got


TASK_WITHOUT_IFEVAL_FIELDS = '''
import pytest
from pytest_steer import Case, Task, register_task, scorer

RULE = "Answer in one word."
# no `instructions`, no `instruction_id_list`: the task's own data says what to steer towards
cases = [Case(f"c{i}", f"Tell me about {w}. {RULE}", target={"rule": RULE, "group": "brevity"})
         for i, w in enumerate(["cats", "dogs", "rain", "sun", "tea", "snow"])]


@scorer("one_word")
def one_word(sample):
    return len(sample.response.split()) <= 1


register_task(Task.from_cases("brevity", cases[:3], [one_word], held_out=cases[3:],
                              highlights=lambda case: [case.target["rule"]],
                              vector_keys=lambda case: [case.target["group"]]))


@pytest.mark.steer(task="brevity", methods="pasta,actadd,prompt", alphas=[5], actadd_coefs=[2],
                   prompt_variants="restate,marked", trials=1)
def test_brevity(steer_result, steer_config):
    assert len(steer_result.records) == 3
    assert steer_result.primary == "one_word" and 0 <= steer_result.one_word <= 1
'''


def test_a_task_without_ifeval_fields_is_steered_by_every_built_in_method(
        pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makepyfile(test_brevity=TASK_WITHOUT_IFEVAL_FIELDS)
    result = pytester.runpytest("--steer-model", str(tiny_model_dir), "--steer-max-new-tokens", "4",
                                "--steer-report-dir", "report", "--steer-cache-dir", str(tmp_path / "cache"),
                                "-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*test_brevity?pasta-alpha5-trial0? PASSED*",
                                 "*test_brevity?actadd-c2-trial0? PASSED*",
                                 "*test_brevity?prompt-restate-trial0? PASSED*",
                                 "*test_brevity?prompt-marked-trial0? PASSED*"])
    rows = [json.loads(line) for line in (pytester.path / "report" / "results.jsonl").read_text().splitlines()]
    assert {r["config"] for r in rows} == {"baseline", "pasta-alpha5", "actadd-c2", "prompt-restate",
                                           "prompt-marked"}


def test_pasta_only_fixtures_and_the_old_grid_point_name_are_deprecated(
        pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    pytester.makepyfile("def test_old(alpha, pasta):\n    assert alpha is None or alpha == 5.0\n")
    result = pytester.runpytest("--steer-model", str(tiny_model_dir), "--steer-alphas", "5", "--steer-trials", "1",
                                "--steer-per-type", "1", "--steer-report-dir", "report", "--steer-cache-dir",
                                str(tmp_path / "cache"), "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, warnings=4)  # baseline and alpha5, each warned for both fixtures
    result.stdout.fnmatch_lines(["*fixture 'alpha' is deprecated*use steer_config.value*",
                                 "*fixture 'pasta' is deprecated*steer_methods*"])

    import pytest_steer
    from pytest_steer.methods.base import GridPoint

    with pytest.warns(DeprecationWarning, match="use pytest_steer.GridPoint"):
        assert pytest_steer.Config is GridPoint
