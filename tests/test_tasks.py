"""Tasks: the IFEval split keeps held-out cases apart from evaluated ones; users' own tasks and scorers."""

from __future__ import annotations

import pytest

from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.scores import Metric, Sample, ScorerError, scorer
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import HELD_OUT_PER_TYPE, Case, CaseSplit, Task, TaskError, get_task, register_task


def test_ifeval_split_is_disjoint_and_balanced():
    split = get_task("ifeval").load(RunSpec(per_type=4))
    evaluated = {c.key for c in split.evaluated}
    held = {c.key for c in split.held_out}
    assert len(evaluated) == 16 and not evaluated & held
    for t in split.evaluated.types:
        n = sum(t in c.instruction_id_list for c in split.held_out)
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

    case = Case("c1", "Shout hello.", instruction_id_list=("shout",))
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
    case = Case("k", "Write about cats. Do not use any commas.", ("Do not use any commas.",),
                ("punctuation:no_comma",), ({},))
    assert ifeval.judge is not None and ifeval.judge_name == "ifeval-strict"
    assert ifeval.judge(case, "Cats purr.") and not ifeval.judge(case, "Cats, dogs.")
    plain = Task.from_cases("plain", [Case("c1", "Say hi.")], [scorer("ok")(lambda sample: True)])
    assert plain.judge is None and _layer_sweep_tools(None, plain) == {}  # type: ignore[arg-type]
