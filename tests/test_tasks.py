"""Tasks: the IFEval split keeps held-out cases apart from evaluated ones; users' own tasks and scorers."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.scores import Metric, Sample, ScorerError, scorer
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import (
    HELD_OUT_PER_TYPE,
    Case,
    CaseSplit,
    Task,
    TaskError,
    get_task,
    hub_sources,
    register_task,
)
from pytest_steer.tasks.ifeval import ifeval_case


def test_ifeval_split_is_disjoint_and_balanced():
    split = get_task("ifeval").load(RunSpec(per_type=4))
    evaluated = {c.key for c in split.evaluated}
    held = {c.key for c in split.held_out}
    assert len(evaluated) == 16 and not evaluated & held
    for t in split.evaluated.types:
        n = sum(t in c.tags for c in split.held_out)
        assert 1 <= n <= HELD_OUT_PER_TYPE
    # a larger evaluated set shrinks the held-out set, never overlaps it
    bigger = get_task("ifeval").load(RunSpec(per_type=8))
    assert not {c.key for c in bigger.evaluated} & {c.key for c in bigger.held_out}


def test_a_split_refuses_overlap():
    from pytest_steer.tasks import CaseSet

    a, b = Case("a", "Say hi."), Case("b", "Say bye.")
    with pytest.raises(TaskError, match="also evaluated"):
        CaseSplit(CaseSet((a, b)), (Case("a2", "Say hi."),))  # same content under another key


def test_user_scorer_and_task():
    @scorer(Metric("shouts", "binary"))
    def shouts(sample):
        return sample.response.isupper()

    case = Case("c1", "Shout hello.", tags=("shout",))
    out = shouts.score([Sample(case, BASELINE_CONFIG, case.prompt, "HELLO", 1, "stop")])
    assert out[0].values == {"shouts": 1.0}
    task = Task.from_cases("shout", [case], [shouts])
    assert task.primary == "shouts" and list(task.load(RunSpec()).evaluated) == [case]
    register_task(task)
    assert get_task("shout") is task
    with pytest.raises(TaskError, match="did you mean 'shout'"):
        get_task("shoutt")
    with pytest.raises(TaskError, match="primary metric 'nope'"):
        Task.from_cases("bad", [case], [shouts], primary="nope")


def test_scorer_errors_are_one_line():
    @scorer("a", "b")
    def two(sample):
        return 1.0

    @scorer("a")
    def wrong(sample):
        return {"z": 1}

    case = Case("c1", "x")
    s = Sample(case, BASELINE_CONFIG, "x", "y", 1, "stop")
    with pytest.raises(ScorerError, match="declares 2 metrics"):
        two.score([s])
    with pytest.raises(ScorerError, match="undeclared score"):
        wrong.score([s])


@pytest.mark.parametrize(("returned", "message"), [
    ("0.5", "which is not a number or bool"),
    ({"a": 1.0}, r"did not return \['b'\]"),
    (float("inf"), "must be finite"),
    pytest.param(10**400, "must be finite", id="int-past-float"),  # probe round 3 of issue 29: a raw OverflowError
    (7, "a binary metric takes 0/1"),
])
def test_scorer_values_are_checked_not_passed_on(returned, message):
    """Text, a missing name, infinity and a binary 7 are errors (the run flags that row), never data."""
    declared = ("a", "b") if isinstance(returned, dict) else ("a",)

    @scorer(*declared)
    def bad(sample):
        return returned

    case = Case("c1", "x")
    with pytest.raises(ScorerError, match=message):
        bad.score([Sample(case, BASELINE_CONFIG, "x", "y", 1, "stop")])


def test_the_task_judges_responses_for_actadds_layer_sweep() -> None:
    """`auto` scores its sweep with the task's judge: IFEval's strict check, and nothing for a task without one."""
    from pytest_steer.session.run import _layer_sweep_tools

    ifeval = get_task("ifeval")
    case = ifeval_case("k", "Write about cats. Do not use any commas.", ("Do not use any commas.",),
                ("punctuation:no_comma",), ({},))
    assert ifeval.judge is not None and ifeval.judge_name == "ifeval-strict"
    assert ifeval.judge(case, "Cats purr.") and not ifeval.judge(case, "Cats, dogs.")
    plain = Task.from_cases("plain", [Case("c1", "Say hi.")], [scorer("ok")(lambda sample: True)])
    assert plain.judge is None and _layer_sweep_tools(None, plain) == {}  # type: ignore[arg-type]


def test_from_cases_takes_the_judge_that_layer_auto_needs() -> None:
    """Issue 29: layer `auto` on a user's task needed `Task(judge=...)`; `from_cases`, the docs' way to build
    a task, had no `judge=`. Its cache name follows the function's source."""
    def one_word(case: Case, response: str) -> bool:
        return len(response.split()) == 1

    ok = scorer("ok")(lambda sample: True)
    task = Task.from_cases("brevity", [Case("c1", "Say hi.")], [ok], judge=one_word)
    assert task.judge is one_word and task.judge("c1", "Hi.") and not task.judge("c1", "Hi there.")  # type: ignore[arg-type]
    assert task.judge_name.startswith(f"{__name__}.test_from_cases_takes_the_judge_that_layer_auto_needs.<locals>"
                                      ".one_word:")
    named = Task.from_cases("brevity", [Case("c1", "Say hi.")], [ok], judge=one_word, judge_name="one-word-v1")
    assert named.judge_name == "one-word-v1"
    with pytest.raises(TaskError, match="judge must be a function"):
        Task.from_cases("brevity", [Case("c1", "Say hi.")], [ok], judge="one word")  # type: ignore[arg-type]


AUTO_ON_A_USER_TASK = '''
import pytest
from pytest_steer import Case, Metric, Task, register_task, scorer

def case(key, kind, text):
    rule = {"short": "Answer in one word.", "digit": "Include a number."}[kind]
    return Case(key, f"{text} {rule}", tags=(f"mine:{kind}",), data={"instructions": (rule,)})

cases = [case(f"{k}{i}", k, t) for i, t in enumerate(["Name a colour.", "Name a fruit.", "Name a city."])
         for k in ("short", "digit")]

def follows(case, response):
    open("judged", "a").close()  # the layer sweep asked the task's judge
    return len(response.split()) == 1 if "one word" in case.prompt else any(c.isdigit() for c in response)

@scorer(Metric("ok", "binary"))
def ok(sample):
    return follows(sample.case, sample.response)

register_task(Task.from_cases("mine", cases[:2], [ok], held_out=cases[2:], judge=follows))

@pytest.mark.steer(task="mine", methods="actadd", actadd_layer="auto", actadd_coefs=[1], trials=1,
                   max_new_tokens=4)
def test_auto(steer_eval):
    assert steer_eval.result("actadd-c1").ok is not None
'''


def test_layer_auto_runs_on_a_task_built_with_from_cases(pytester: pytest.Pytester, tiny_model_dir, tmp_path) -> None:
    pytester.makepyfile(test_mine=AUTO_ON_A_USER_TASK)
    result = pytester.runpytest("--steer-model", str(tiny_model_dir), "--steer-cache-dir", str(tmp_path / "cache"),
                                "-p", "no:cacheprovider", "--steer-html", "false")
    out = result.stdout.str() + result.stderr.str()
    assert result.ret == pytest.ExitCode.OK, out
    assert "layer auto over" in out, out  # the sweep ran...
    assert (pytester.path / "judged").exists()  # ...judged by the task's judge


def test_the_ifeval_task_names_the_hub_ids_to_check_and_a_user_task_none(tmp_path: Path) -> None:
    from pytest_steer.errors import StartError

    assert hub_sources("ifeval", {"dataset": "org/split-ifeval@v2"}) == [("org/split-ifeval@v2", "--steer-dataset")]
    assert hub_sources("ifeval", {"dataset": "embedded"}) == []
    (tmp_path / "mine.jsonl").write_text("", encoding="utf-8")
    assert hub_sources("ifeval", {"dataset": str(tmp_path / "mine.jsonl")}) == []  # a file: the loader reads it
    with pytest.raises(StartError, match="no such file"):  # ...and that it is there is checked before any load
        hub_sources("ifeval", {"dataset": str(tmp_path / "missing.jsonl")})
    register_task(Task.from_cases("hubless", [Case("c1", "Say hi.")], [scorer("ok")(lambda sample: True)]))
    assert hub_sources("hubless", {"dataset": "org/name"}) == []


def test_the_old_home_of_the_ifeval_scorer_still_works_and_warns() -> None:
    import importlib
    import sys

    from pytest_steer.tasks.ifeval import scorer as moved

    sys.modules.pop("pytest_steer.metrics.instruction", None)
    with pytest.warns(DeprecationWarning, match="pytest_steer.tasks.ifeval.scorer"):
        old = importlib.import_module("pytest_steer.metrics.instruction")
    assert old.IFEvalScorer is moved.IFEvalScorer
    import pytest_steer.metrics as metrics

    with pytest.warns(DeprecationWarning, match="score_response"):
        assert metrics.score_response is moved.score_response
