"""Case loading (every file format, HF quirks, malformed rows) and balanced, seeded selection."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pytest_steer.tasks import (
    SEED_INSTRUCTION_TYPES,
    Case,
    CaseLoadError,
    load_case_set,
    load_cases,
    select_cases,
)
from pytest_steer.tasks.ifeval import ifeval_case

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real IFEval test rows not found at {SHARED_DATA}"
)

ROWS = [
    {
        "key": "a1",
        "prompt": "Write a haiku about tea. Do not use the word cup.",
        "instructions": ["Do not use the word cup."],
        "instruction_id_list": ["keywords:forbidden_words"],
        "kwargs": [{"forbidden_words": ["cup"]}],
    },
    {
        "key": "a2",
        "prompt": "Describe a cat. Highlight at least 2 sections, i.e. *highlighted section*.",
        "instructions": ["Highlight at least 2 sections, i.e. *highlighted section*."],
        "instruction_id_list": ["detectable_format:number_highlighted_sections"],
        "kwargs": [{"num_highlights": 2}],
    },
    {
        "key": "a3",
        "prompt": "Say hi without commas. End with Bye.",
        "instructions": ["without commas", "End with Bye."],
        "instruction_id_list": ["punctuation:no_comma", "startend:end_checker"],
        "kwargs": [{}, {"end_phrase": "Bye."}],
    },
]
EXPECTED = [
    ifeval_case("a1", ROWS[0]["prompt"], ("Do not use the word cup.",), ("keywords:forbidden_words",),
         ({"forbidden_words": ["cup"]},)),
    ifeval_case("a2", ROWS[1]["prompt"], ("Highlight at least 2 sections, i.e. *highlighted section*.",),
         ("detectable_format:number_highlighted_sections",), ({"num_highlights": 2},)),
    ifeval_case("a3", ROWS[2]["prompt"], ("without commas", "End with Bye."),
         ("punctuation:no_comma", "startend:end_checker"), ({}, {"end_phrase": "Bye."})),
]


def write(path: Path, rows: list[dict]) -> Path:
    """Write rows in the format the suffix names (CSV: list and dict columns as JSON strings)."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        as_text = [
            {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()}
            for r in rows
        ]
        pd.DataFrame(as_text).to_csv(path, index=False)
    return path


def make_case(key: str, iid: str = "punctuation:no_comma", *more: str) -> Case:
    ids = (iid, *more)
    return ifeval_case(key, f"prompt {key}", (f"prompt {key}",), ids, tuple({} for _ in ids))


# -- loading -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet", ".csv"])
def test_every_file_format_loads_the_same_cases(tmp_path, suffix):
    cases = load_cases(write(tmp_path / f"cases{suffix}", ROWS))
    assert cases == EXPECTED
    assert [c.content_hash() for c in cases] == [c.content_hash() for c in EXPECTED]
    assert all("instructions" in c.data for c in cases)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_ifeval_layout_without_instructions_is_not_steerable(tmp_path, suffix):
    rows = [{k: v for k, v in r.items() if k != "instructions"} for r in ROWS]
    cases = load_cases(write(tmp_path / f"ifeval{suffix}", rows))
    assert ["instructions" in c.data for c in cases] == [False, False, False]
    assert not any("instructions" in c.data for c in cases)
    assert cases[2].to_dict() == rows[2]


def test_hf_padding_and_numpy_values_normalise(tmp_path):
    # The HF copy pads kwargs with None and stores ints as floats; parquet hands back numpy arrays.
    rows = [
        {"key": 7, "prompt": "Say it in German.", "instructions": ["Say it in German."],
         "instruction_id_list": ["language:response_language"],
         "kwargs": [{"language": "de", "num_highlights": None, "forbidden_words": None}]},
        {"key": 8, "prompt": "Highlight 3.", "instructions": ["Highlight 3."],
         "instruction_id_list": ["detectable_format:number_highlighted_sections"],
         "kwargs": [{"language": None, "num_highlights": 3.0, "forbidden_words": None}]},
        {"key": 9, "prompt": "No cup or mug.", "instructions": ["No cup or mug."],
         "instruction_id_list": ["keywords:forbidden_words"],
         "kwargs": [{"language": None, "num_highlights": None, "forbidden_words": ["cup", "mug"]}]},
    ]
    cases = load_cases(write(tmp_path / "hf.parquet", rows))
    assert [c.key for c in cases] == ["7", "8", "9"]
    assert [c.data["kwargs"] for c in cases] == [
        ({"language": "de"},),
        ({"num_highlights": 3},),
        ({"forbidden_words": ["cup", "mug"]},),
    ]
    assert type(cases[1].data["kwargs"][0]["num_highlights"]) is int
    assert type(cases[2].data["kwargs"][0]["forbidden_words"]) is list
    assert type(cases[0].tags) is tuple
    assert load_cases(write(tmp_path / "hf.jsonl", rows)) == cases


def test_hugging_face_rows_normalise(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, split, revision=None):
        assert revision is None
        calls.append((name, split))
        return [
            {"key": np.int64(3), "prompt": "Be brief.", "instructions": None,
             "instruction_id_list": np.array(["length_constraints:number_words"]),
             "kwargs": np.array([{"num_words": np.float64(50.0), "relation": "less than",
                                  "language": None}])},
        ]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (c,) = load_cases("someone/split-ifeval", split="test")
    assert calls == [("someone/split-ifeval", "test")]
    assert c == ifeval_case("3", "Be brief.", None, ("length_constraints:number_words",),
                     ({"num_words": 50, "relation": "less than"},))
    assert type(c.data["kwargs"][0]["num_words"]) is int


def test_unreachable_dataset_id_fails_fast_with_advice(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # for anything imported from here on
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # already imported
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(CaseLoadError) as info:
        load_cases("some/nonexistent-dataset-id")
    assert time.monotonic() - start < 30
    message = str(info.value)
    assert "'some/nonexistent-dataset-id'" in message
    assert "HF_HUB_OFFLINE" in message and "local" in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_local_file_is_not_taken_for_a_dataset_id(tmp_path):
    with pytest.raises(CaseLoadError, match="does not exist"):
        load_cases(tmp_path / "nope.jsonl")


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "cases.txt"
    path.write_text("hello")
    with pytest.raises(CaseLoadError, match="unsupported file type '.txt'"):
        load_cases(path)


@pytest.mark.parametrize(
    ("bad_row", "fragment"),
    [
        ({"key": "b", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
         "missing field(s) prompt"),
        ({"key": "b", "prompt": "p", "kwargs": [{}]}, "missing field(s) instruction_id_list"),
        ({"key": "b", "prompt": "p", "instruction_id_list": ["punctuation:no_comma"],
          "kwargs": [{}, {}]}, "2 kwargs dict(s) for 1 instruction id(s)"),
        ({"key": "b", "prompt": "p", "instruction_id_list": [], "kwargs": []},
         "non-empty list"),
    ],
)
def test_malformed_jsonl_row_names_file_and_line(tmp_path, bad_row, fragment):
    path = write(tmp_path / "bad.jsonl", [ROWS[0], ROWS[1], bad_row])
    with pytest.raises(CaseLoadError) as info:
        load_cases(path)
    assert f"{path} line 3" in str(info.value)
    assert fragment in str(info.value)


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n{not json\n", encoding="utf-8")
    with pytest.raises(CaseLoadError, match=r"bad\.jsonl line 3: invalid JSON"):
        load_cases(path)


@pytest.mark.parametrize("suffix", [".json", ".parquet", ".csv"])
def test_malformed_table_row_names_file_and_row(tmp_path, suffix):
    bad = dict(ROWS[1], instructions=[""])
    path = write(tmp_path / f"bad{suffix}", [ROWS[0], bad])
    with pytest.raises(CaseLoadError) as info:
        load_cases(path)
    assert f"{path} row 1" in str(info.value)


def test_duplicate_keys_are_rejected(tmp_path):
    with pytest.raises(CaseLoadError, match="duplicate case key 'a1'"):
        load_cases(write(tmp_path / "dup.jsonl", [ROWS[0], ROWS[0]]))


def test_case_hash_is_stable_and_sensitive():
    case = EXPECTED[0]
    copy = Case(**{f: getattr(case, f) for f in case.__dataclass_fields__})
    assert copy.content_hash() == case.content_hash()
    assert len(case.content_hash()) == 64
    changed = ifeval_case(case.key, case.prompt, case.data["instructions"], case.tags,
                   ({"forbidden_words": ["mug"]},))
    assert changed.content_hash() != case.content_hash()
    assert len({case, EXPECTED[0], changed}) == 2


# -- selection ---------------------------------------------------------------------------------


POOL = (
    [make_case(f"fw{i:02d}", "keywords:forbidden_words") for i in range(10)]
    + [make_case(f"end{i:02d}", "startend:end_checker") for i in range(6)]
    + [make_case(f"multi{i}", "keywords:forbidden_words", "startend:end_checker") for i in range(3)]
)


def test_single_instruction_filter():
    assert all(len(c.tags) == 1 for c in select_cases(POOL))
    everything = select_cases(POOL, single_instruction=False)
    assert len(everything) == len(POOL) and len(set(everything)) == len(POOL)
    with pytest.raises(ValueError, match="no single-instruction cases"):
        select_cases(POOL[-3:])


def test_type_filter_and_order():
    types = ["startend:end_checker", "keywords:forbidden_words"]
    picked = select_cases(POOL, instruction_types=types)
    assert [c.tags[0] for c in picked] == ["startend:end_checker"] * 6 + [
        "keywords:forbidden_words"
    ] * 10
    only_end = select_cases(POOL, instruction_types=["startend:end_checker"])
    assert {c.key for c in only_end} == {f"end{i:02d}" for i in range(6)}


def test_balanced_per_type_and_reproducible():
    picked = select_cases(POOL, per_type=4, seed=7)
    assert [c.tags[0] for c in picked] == ["keywords:forbidden_words"] * 4 + [
        "startend:end_checker"
    ] * 4
    # Input order does not matter, and a larger per_type extends a smaller one.
    assert picked == select_cases(list(reversed(POOL)), per_type=4, seed=7)
    assert picked[:2] + picked[4:6] == select_cases(POOL, per_type=2, seed=7)
    different = {tuple(c.key for c in select_cases(POOL, per_type=4, seed=s)) for s in range(6)}
    assert len(different) > 1


PINNED_SELECTION = ["fw00", "fw02", "fw08", "end02", "end05", "end00"]


def test_selection_is_pinned_across_machines():
    # sha256 ordering, not Python's hash or random: this list must never change.
    picked = select_cases(POOL, per_type=3, seed=123)
    assert [c.key for c in picked] == PINNED_SELECTION


def test_too_few_cases_for_a_type():
    with pytest.raises(ValueError, match=r"'startend:end_checker' has only 6 case\(s\) available"):
        select_cases(POOL, per_type=7)
    with pytest.raises(ValueError, match="positive"):
        select_cases(POOL, per_type=0)


def test_unknown_or_empty_type_filter_lists_available_types():
    with pytest.raises(ValueError) as info:
        select_cases(POOL, instruction_types=["language:response_language"])
    assert "language:response_language" in str(info.value)
    assert "keywords:forbidden_words (10)" in str(info.value)
    with pytest.raises(ValueError, match="instruction_types is empty; available types"):
        select_cases(POOL, instruction_types=[])


def test_multi_instruction_case_counts_once_for_its_first_requested_type():
    picked = select_cases(POOL, single_instruction=False,
                          instruction_types=["startend:end_checker", "keywords:forbidden_words"])
    assert len(picked) == len(POOL)
    multi = {"multi0", "multi1", "multi2"}
    assert {c.key for c in picked[:9]} == {f"end{i:02d}" for i in range(6)} | multi


def test_case_set():
    cases = load_case_set(None, instruction_types=SEED_INSTRUCTION_TYPES, per_type=3, seed=1)
    assert len(cases) == 12 and len(list(cases)) == 12
    assert cases.types == SEED_INSTRUCTION_TYPES
    assert cases.by_key(cases[5].key) is cases[5]
    assert len(cases.of_type("startend:end_checker")) == 3
    assert cases.source == "embedded"
    with pytest.raises(KeyError, match="no case with key 'nope'"):
        cases.by_key("nope")


# -- real rows ---------------------------------------------------------------------------------


@needs_shared
def test_real_ifeval_rows_load_and_are_not_steerable():
    cases = load_cases(SHARED_DATA / "ifeval_input_data_rest.jsonl")
    assert len(cases) > 400
    assert not any("instructions" in c.data for c in cases)
    assert all(len(c.data["kwargs"]) == len(c.tags) for c in cases)
    singles = select_cases(cases, instruction_types=["punctuation:no_comma"], per_type=5)
    assert len(singles) == 5
    assert all(c.tags == ("punctuation:no_comma",) for c in singles)


@needs_shared
def test_split_dev_rows_load_and_select():
    cases = load_cases(SHARED_DATA / "split_ifeval_dev.jsonl")
    assert len(cases) == 20 and all("instructions" in c.data for c in cases)
    assert all(s in c.prompt for c in cases for s in c.data["instructions"])
    picked = select_cases(cases, instruction_types=SEED_INSTRUCTION_TYPES, per_type=5)
    assert sorted(c.key for c in picked) == sorted(c.key for c in cases)
    with pytest.raises(ValueError, match="has only 5 case"):
        select_cases(cases, per_type=6)


def test_a_span_missing_from_its_prompt_loads_and_is_left_to_the_steering_method(tmp_path):
    """--steer-on-missing decides (error, or warn and run unsteered), so the loader must not refuse the row."""
    row = {"key": "b", "prompt": "Say hi.", "instructions": ["Say bye."],
           "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    (case,) = load_cases(write(tmp_path / "c.jsonl", [row]))
    assert case.data["instructions"] == ("Say bye.",) and "Say bye." not in case.prompt


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_text_files_read_alike_a_bom_is_accepted_and_latin1_is_refused_naming_the_file(tmp_path, suffix):
    path = write(tmp_path / f"cases{suffix}", ROWS)
    utf8 = path.read_bytes()
    path.write_bytes(b"\xef\xbb\xbf" + utf8)  # what Excel and Notepad write
    assert load_cases(path) == EXPECTED
    path.write_bytes(utf8.replace(b"a haiku", "a caf\u00e9 haiku".encode("latin-1")))
    with pytest.raises(CaseLoadError, match=rf"^{path}: .*(not UTF-8|utf-8)"):
        load_cases(path)
