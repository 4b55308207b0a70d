"""The embedded case set is well-formed, balanced, steerable and says what its checkers check."""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources

import pytest

from pytest_steer.tasks import SEED_INSTRUCTION_TYPES, load_cases, select_cases
from pytest_steer.tasks.ifeval.scorer import validate_case

CASES = load_cases(None)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}


def test_embedded_file_is_package_data():
    assert resources.files("pytest_steer").joinpath("data", "cases.jsonl").is_file()
    assert load_cases("embedded") == CASES


def test_at_least_twelve_single_instruction_cases_per_seed_type():
    counts = Counter(c.tags for c in CASES)
    assert set(counts) == {(t,) for t in SEED_INSTRUCTION_TYPES}
    assert all(n >= 12 for n in counts.values()), counts
    assert len(select_cases(CASES, instruction_types=SEED_INSTRUCTION_TYPES, per_type=12)) == 48


def test_keys_unique_and_prompts_distinct():
    assert len({c.key for c in CASES}) == len(CASES)
    assert len({c.prompt for c in CASES}) == len(CASES)
    assert all(re.fullmatch(r"steer-(fw|hl|lang|end)-\d\d", c.key) for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key)
def test_case_is_steerable_and_valid_for_its_checker(case):
    assert "instructions" in case.data
    assert all(span in case.prompt for span in case.data["instructions"])
    assert all(v is not None for kw in case.data["kwargs"] for v in kw.values())
    validate_case(case)  # known id, all arguments present and accepted by build_description
    assert len(case.prompt) < 300, "keep prompts short: responses are ~128 tokens"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key)
def test_instruction_text_states_its_arguments(case):
    from if_verifiable.ifeval.instructions_util import LANGUAGE_CODES

    text = " ".join(case.data["instructions"])
    (iid,), (kw,) = case.tags, case.data["kwargs"]
    if iid == "keywords:forbidden_words":
        for word in kw["forbidden_words"]:
            assert re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE), word
    elif iid == "detectable_format:number_highlighted_sections":
        n = kw["num_highlights"]
        assert re.search(rf"\b({n}|{NUMBER_WORDS[n]})\b", text), n
        assert "highlight" in text.lower() or "italic" in text.lower() or "emphasi" in text.lower()
    elif iid == "language:response_language":
        assert LANGUAGE_CODES[kw["language"]] in text
    elif iid == "startend:end_checker":
        assert f'"{kw["end_phrase"]}"' in text
    else:
        pytest.fail(f"unexpected instruction type {iid}")
