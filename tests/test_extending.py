"""The worked examples run: a built-in task is one folder and one registry line (docs/extending-builtins.md), a
backend one module and one registry line (docs/extending.md)."""

from __future__ import annotations

import importlib
import json
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


BACKEND_EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "recording_backend.py"
POINT_TEST = "def test_point(steer_result):\n    assert steer_result.rows\n"


def _run_with_the_example_backend(pytester: pytest.Pytester, model_dir: Path, cache: Path,
                                  *args: str) -> pytest.RunResult:
    """A user's project whose conftest.py is the worked example (docs/extending.md), run as a user would."""
    pytester.makeconftest(BACKEND_EXAMPLE.read_text(encoding="utf-8"))
    pytester.makepyfile(test_grid=POINT_TEST)
    return pytester.runpytest_subprocess(
        "--steer-backend", "recording", "--steer-recording-log", "calls.jsonl", "--steer-model", str(model_dir),
        "--steer-trials", "2", "--steer-per-type", "1", "--steer-max-new-tokens", "4",
        "--steer-cache-dir", str(cache), "-p", "no:cacheprovider", *args)


def test_the_worked_backend_generates_every_row_it_is_given(pytester: pytest.Pytester, tiny_model_dir: Path,
                                                             tmp_path: Path) -> None:
    result = _run_with_the_example_backend(pytester, tiny_model_dir, tmp_path / "cache", "--steer-methods", "prompt",
                                           "--steer-prompt-variants", "restate")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str() + result.stderr.str()
    result.stdout.fnmatch_lines(["*4 passed*"])  # baseline and prompt-restate, two trials each
    calls = [json.loads(line) for line in (pytester.path / "calls.jsonl").read_text("utf-8").splitlines()]
    assert [c["call"] for c in calls] == ["start", "generate", "generate", "close"]  # one call per trial
    assert all(c["rows"] == 8 and c["configs"] == ["baseline", "prompt-restate"] for c in calls[1:3])  # 4 cases
    generated = sum(1 for _ in (tmp_path / "cache" / "generation").glob("??/*.json"))
    assert generated == 16  # every row the backend generated went to the cache
    pages = [p.read_text("utf-8") for p in (pytester.path / "steer-report").rglob("*.html")]
    assert any("recording, calls in calls.jsonl" in page for page in pages)  # its meta() is in the run details


def test_the_worked_backend_refuses_a_method_it_cannot_run_before_the_model_loads(
        pytester: pytest.Pytester, tiny_model_dir: Path, tmp_path: Path) -> None:
    result = _run_with_the_example_backend(pytester, tiny_model_dir, tmp_path / "cache", "--steer-methods",
                                           "prompt,pasta")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-steer: backend 'recording' cannot run steering method 'pasta' "
                                 "(it runs prompt); drop pasta from --steer-methods or choose another "
                                 "--steer-backend"])
    calls = [json.loads(line)["call"] for line in (pytester.path / "calls.jsonl").read_text("utf-8").splitlines()]
    assert calls == ["close"]  # never started (start comes after the model loads), closed all the same
