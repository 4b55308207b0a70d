"""A user's own task, run through the same fixtures, marker, report and gates as IFEval.

The task: answer in JSON with given keys. The scorer is a plain function written here; its scores
reach JUnit properties, the HTML report and `steer_eval.summary()` like IFEval's do.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from pytest_steer import Case, Metric, Task, register_task, scorer

_ASKS = [
    ("Describe a cat you know.", ["name", "age"]),
    ("Tell me about your favourite city.", ["city", "country"]),
    ("Recommend a book.", ["title", "author"]),
    ("Plan a short trip.", ["destination", "days"]),
    ("Suggest a recipe.", ["dish", "minutes"]),
    ("Describe today's weather.", ["sky", "temperature"]),
    ("Name a planet and one fact about it.", ["planet", "fact"]),
    ("Recommend a film.", ["title", "year"]),
    ("Describe a tree.", ["species", "height"]),
    ("Pick a sport to try.", ["sport", "reason"]),
]


def _case(i: int, ask: str, keys: list[str]) -> Case:
    instruction = f"Answer only with a JSON object that has the keys {' and '.join(map(repr, keys))}."
    return Case(f"json-{i}", f"{ask} {instruction}", tags=("json",), data={"instructions": (instruction,)},
                target=tuple(keys))


def _parse(text: str) -> object:
    body = text.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        return json.loads(body)
    except ValueError:
        return None


@scorer(Metric("valid_json", "binary", label="valid JSON"), Metric("has_keys", "binary", label="has the keys"))
def json_answer(sample):
    parsed = _parse(sample.response)
    keys = sample.case.target or ()
    is_object = isinstance(parsed, dict)
    return {"valid_json": is_object, "has_keys": is_object and all(k in parsed for k in keys)}


def follows(case: Case, response: str) -> bool:
    """The task's judge: what PASTA's head profiling and activation steering's layer `auto` score held-out
    responses with (a JSON object with the case's keys)."""
    parsed = _parse(response)
    return isinstance(parsed, dict) and all(k in parsed for k in case.target or ())


CASES = [_case(i, ask, keys) for i, (ask, keys) in enumerate(_ASKS)]
register_task(dataclasses.replace(Task.from_cases("json", CASES[:6], [json_answer], primary="valid_json",
                                                  held_out=CASES[6:]), judge=follows, judge_name="json keys"))


@pytest.mark.steer(task="json", trials=1)
def test_json_answers(steer_result, steer_config):
    rows = steer_result.records
    assert len(rows) == 6
    assert all(r.scores["valid_json"] in (0.0, 1.0) for r in rows)
    # has_keys implies valid_json, per row
    assert all(r.scores["has_keys"] <= r.scores["valid_json"] for r in rows)
    assert 0.0 <= steer_result.valid_json <= 1.0 and steer_result.primary == "valid_json"
