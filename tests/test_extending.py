"""docs/extending-builtins.md's worked example runs: a built-in task is one folder and one registry line."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest

import pytest_steer.tasks as tasks
from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.scores import Sample
from pytest_steer.spec import RunSpec

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending-builtins.md"


def _example(name: str) -> str:
    """The fenced code block after `<!-- example: name -->` in the doc."""
    found = re.search(rf"<!-- example: {re.escape(name)} -->\n```python\n(.*?)```", DOC.read_text(encoding="utf-8"),
                      re.S)
    assert found, f"no example {name!r} in {DOC.name}"
    return found.group(1)


def test_the_worked_example_adds_a_task_with_one_folder_and_one_registry_line(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "shout_example"
    package.mkdir()
    (package / "__init__.py").write_text(_example("task package"), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "shout_example", raising=False)
    module = importlib.import_module("shout_example")
    monkeypatch.setattr(tasks, "BUILTIN", dict(tasks.BUILTIN))
    monkeypatch.setattr(tasks, "_TASKS", dict(tasks._TASKS))
    exec(_example("registry line"), {**vars(module), "BUILTIN": tasks.BUILTIN, "BuiltinTask": tasks.BuiltinTask})

    assert [o.name for o in tasks.task_options("shout")] == ["shout_cases"]  # known before it is built
    task = tasks.get_task("shout")
    split = task.load(RunSpec(task="shout", shout_cases=3))
    assert [c.key for c in split.evaluated] == ["shout-0", "shout-1", "shout-2"] and len(split.held_out) == 3
    case = split.evaluated[0]
    assert task.highlights(case) == ("Answer in capital letters.",) and case.tags == ("shout",)
    assert [vk.key for vks in task.vector_keys(case) for vk in vks] == ["shout"]
    samples = [Sample(case, BASELINE_CONFIG, case.prompt, text, 4, "stop") for text in ("CATS PURR.", "Cats purr.")]
    assert [s.values["shouted"] for s in task.scorers[0].score(samples)] == [1.0, 0.0]
    assert task.judge is not None and task.judge(case, "OWLS HOOT") and not task.judge(case, "owls hoot")
    assert tasks.hub_sources("shout", {}) == []
