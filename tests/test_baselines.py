"""Stored baselines: the format-2 file, its validation, compatibility and direction-aware regressions."""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path

import pytest

from pytest_steer.baselines import (
    BaselineMismatch,
    check_compatible,
    load_baseline,
    regressions,
    save_baseline,
    stored_configs,
)
from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.results import ResultRow

from .factories import METRICS, PASTA5, PASTA10, make_row

SETTINGS = {"run1": {"task": "ifeval", "model_identity": "m@abc", "cases": ["h1", "h2"], "max_new_tokens": 96,
                     "seed": 0, "quality": "offline", "alphas": [5.0]}}


def _rows(quality: float = 0.5, repetition: float = 0.05, length_ratio: float = 1.0) -> list[ResultRow]:
    """Baseline and pasta-alpha5, 4 cases x 2 trials; pasta's scores set by the arguments."""
    rows = []
    for k in range(4):
        for t in range(2):
            rows.append(make_row(f"k{k}", BASELINE_CONFIG, t, follow=[k % 2 == 0],
                                 scores={"quality": 0.5, "repetition": 0.05, "length_ratio": None}))
            rows.append(make_row(f"k{k}", PASTA5, t, follow=[k != 3],
                                 scores={"quality": quality, "repetition": repetition, "length_ratio": length_ratio}))
    return rows


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    return save_baseline(tmp_path / "sub" / "baseline.json", SETTINGS, _rows(), METRICS)


def test_round_trip(stored: Path) -> None:
    doc = json.loads(stored.read_text())
    assert doc["format"] == 2 and set(doc) == {"format", "settings", "metrics", "summary", "rows"}
    summary = {r["config"]: r for r in doc["summary"]["run1"]}
    assert summary["baseline"]["strict_prompt_accuracy"] == 0.5 and summary["pasta-alpha5"]["quality"] == 0.5
    assert summary["baseline"]["length_ratio"] is None  # NaN is written as null: the file stays strict JSON
    b = load_baseline(stored)
    assert b.settings == SETTINGS and b.metrics == METRICS and b.rows == _rows()
    assert stored_configs(b) == {"baseline", "pasta-alpha5"}
    assert not list(stored.parent.glob("*.tmp"))  # written atomically, no leftovers


@pytest.mark.parametrize(("doc", "problem"), [
    ({"format": 1, "settings": {}, "rows": []}, "it has format 1, this pytest-steer reads format 2"),
    ([1, 2], "it holds a JSON list, not an object"),
    ({"format": 2, "settings": {}, "metrics": [], "summary": {}}, "its 'rows' is missing or not a JSON array"),
    ({"format": 2, "settings": {"r": 1}, "metrics": [], "summary": {}, "rows": []},
     "its 'settings' are not one object per run"),
    ({"format": 2, "settings": {}, "metrics": [{"name": "q", "kind": "ordinal"}], "summary": {}, "rows": []},
     "metric 0: metric 'q': kind must be 'binary' or 'real'"),
    ({"format": 2, "settings": {}, "metrics": [], "summary": {}, "rows": [{"key": "k1"}]},
     "row 0 is not a result row (needs key, tags, "),
])
def test_wrong_shape_is_one_clear_line(tmp_path: Path, doc: object, problem: str) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineMismatch) as info:
        load_baseline(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"stored baseline {path} is not a pytest-steer baseline file: {problem}")
    assert message.endswith(f"save a new one with --steer-save-baseline {path}")


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(BaselineMismatch, match="does not exist; create it with --steer-save-baseline"):
        load_baseline(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(BaselineMismatch, match="is not valid JSON"):
        load_baseline(tmp_path / "bad.json")


def test_check_compatible(stored: Path) -> None:
    b = load_baseline(stored)
    check_compatible(b, {**SETTINGS["run1"], "alphas": [5.0, 10.0]}, stored)  # steering may differ
    with pytest.raises(BaselineMismatch, match=r"max_new_tokens: stored 96, now 128"):
        check_compatible(b, {**SETTINGS["run1"], "max_new_tokens": 128}, stored)
    with pytest.raises(BaselineMismatch, match=r"task: stored 'ifeval', now 'json'"):
        check_compatible(b, {**SETTINGS["run1"], "task": "json"}, stored)


def test_regressions_are_direction_aware(stored: Path) -> None:
    b = load_baseline(stored)
    kw = dict(config="pasta-alpha5", trial=None, margin=0.05, metrics=METRICS)
    assert regressions(b, _rows(), **kw) == []
    found = regressions(b, _rows(quality=0.3, repetition=0.2), **kw)
    assert found == [
        "headline quality for pasta-alpha5: 0.3 now vs 0.5 stored (change -0.2, allowed -0.05, n=8 paired rows)",
        "rep-4 for pasta-alpha5: 0.2 now vs 0.05 stored (change +0.15, allowed +0.05, n=8 paired rows)",
    ]
    # better in the good direction, or a change of a metric without one, is no regression
    assert regressions(b, _rows(quality=0.9, repetition=0.0, length_ratio=3.0), **kw) == []
    # the binary primary metric falls when k0 and k1 fail too: 6 of 8 rows -> 2 of 8
    worse = copy.deepcopy(_rows())
    for r in worse:
        if r.config == "pasta-alpha5" and r.key in ("k0", "k1"):
            r.scores["strict_prompt_accuracy"] = 0.0
    assert regressions(b, worse, **kw)[0].startswith("strict prompt accuracy for pasta-alpha5: 0.25 now vs 0.75 stored")
    # only the asked trial is compared
    one = regressions(b, _rows(quality=0.3), config="pasta-alpha5", trial=1, margin=0.05, metrics=METRICS)
    assert one == ["headline quality for pasta-alpha5: 0.3 now vs 0.5 stored (change -0.2, allowed -0.05, "
                   "n=4 paired rows)"]


def test_regressions_skip_what_the_file_does_not_have(stored: Path) -> None:
    b = load_baseline(stored)
    steered = [make_row(f"k{k}", PASTA10, 0, follow=[False], scores={"quality": 0.0}) for k in range(4)]
    assert "pasta-alpha10" not in stored_configs(b)
    assert regressions(b, steered, config="pasta-alpha10", trial=0, margin=0.0, metrics=METRICS) == []
    b.metrics = [m for m in b.metrics if m.name != "quality"]  # a metric the stored run did not declare
    assert regressions(b, _rows(quality=0.0), config="pasta-alpha5", trial=None, margin=0.05, metrics=METRICS) == []


def test_saving_never_overwrites_what_is_not_a_stored_baseline(tmp_path: Path, stored: Path) -> None:
    """Probe round 4 of issue 29: `--steer-save-baseline notes.json` replaced a user's notes.json with the
    baseline. A stored baseline (saving again updates it), an empty file or a new path may be written; a file
    of the user's, a link (saving replaced it with a file) or a device may not, and they stay as they were."""
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "data"}')
    link = tmp_path / "latest.json"
    link.symlink_to(stored)
    for path, problem in [(notes, "exists and is not a stored baseline pytest-steer wrote"), (link, "is a link"),
                          (Path("/dev/null"), "is not a plain file"), (tmp_path, "is a directory")]:
        with pytest.raises(BaselineMismatch) as info:
            save_baseline(path, SETTINGS, _rows(), METRICS)
        assert str(info.value).startswith(f"{path}: {problem}") and "\n" not in str(info.value)
    assert notes.read_text() == '{"my": "data"}' and link.is_symlink() and link.resolve() == stored
    before = load_baseline(stored)
    save_baseline(stored, SETTINGS, _rows(quality=0.9), METRICS)  # ours: updated in place
    assert load_baseline(stored).rows != before.rows
    empty = tmp_path / "empty.json"
    empty.touch()
    assert len(load_baseline(save_baseline(empty, SETTINGS, _rows(), METRICS)).rows) == len(_rows())


def test_a_stored_baseline_that_is_a_pipe_or_device_is_refused_without_reading(tmp_path: Path) -> None:
    """`--steer-compare /dev/zero` read without end (memory), and a named pipe waited for a writer for ever."""
    pipe = tmp_path / "pipe.json"
    os.mkfifo(pipe)

    def unblock() -> None:  # so that a reader that opens the pipe (the defect) fails this test instead of hanging
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:
                time.sleep(0.05)

    threading.Thread(target=unblock, daemon=True).start()
    for path in (pipe, Path("/dev/zero")):
        with pytest.raises(BaselineMismatch, match=r"is not a file \(a directory, a device or a pipe\)"):
            load_baseline(path)
