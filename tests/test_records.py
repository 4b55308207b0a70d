"""The records floor: `Case` keeps its cache keys across the move to generic tags and data, and the old
IFEval keyword arguments still build the same case, with a warning."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings

import pytest

from pytest_steer.records import Case
from pytest_steer.tasks.ifeval import ifeval_case, load_cases

# Computed on main commit 7928497 (before Case got tags and data) with `case.content_hash()`: the
# embedded cases that tests/data's responses belong to, one per instruction type, and three user-task
# cases. A change here means every cached row of a user's results cache would be generated again.
MAIN_7928497_HASHES = {
    "steer-hl-01": "aadd4db1c9b34ce67b9dee34ca4101a197951177e53779f69c405d2e86d17cbe",
    "steer-fw-01": "1061f5e4693eaa3bda9bc3e6a8c9ed85822e89d1bce26c8b4dc4cb90591d32c9",
    "steer-lang-01": "07159c77ec5f569c32e6599221d6ad7e610d2a7797d6ca512a5eb792ace975a2",
    "steer-end-01": "24c12a3657a4760b24cd4ef0c206bb5537a98dad305b1bc2c25ab2483d5c5532",
}
#: sha256 of the 56 embedded cases' content hashes joined in file order, on main commit 7928497
MAIN_7928497_ALL_EMBEDDED = "123c7d719419dff19ccba18e1f587abef19a89f24c7d4fdf9fa9573d5c7da5d9"
#: Case("c1", "Say hi.") on main commit 7928497
MAIN_7928497_PLAIN = "5f93761a48f5b5d7bd3e4dcced0563aaf7231e284ea1be5a91b0e9c30a35ca9c"
#: Case("c1", "Tell me about cats. Be brief.", target={"rule": "Be brief.", "group": "brevity"}) on main 7928497
MAIN_7928497_TARGET = "ba1e7b03955498082d25d5a450e8b23d0e93c036704b0931f1adf68d4f3766a4"
#: Case("c1", "Shout hello.", instruction_id_list=("shout",)) on main 7928497
MAIN_7928497_TAGS = "7c66875e10d03bac60e5d7e7a2b8ca5c30913e15d7d5d5bbb62b570ce293c166"
#: Case("3", "Be brief.", None, ("length_constraints:number_words",), ({"relation": "less than",
#: "num_words": 5},)) on main 7928497: the original IFEval layout, without instruction sentences
MAIN_7928497_IFEVAL_LAYOUT = "0557c644680c01b5705611b1a05280e5988e7264c20602b76c8d85f6b7bf72a3"


def test_embedded_cases_keep_the_cache_keys_of_main() -> None:
    cases = load_cases(None)
    by_key = {c.key: c for c in cases}
    assert {k: by_key[k].content_hash() for k in MAIN_7928497_HASHES} == MAIN_7928497_HASHES
    joined = "".join(c.content_hash() for c in cases)
    assert hashlib.sha256(joined.encode()).hexdigest() == MAIN_7928497_ALL_EMBEDDED


def test_user_cases_keep_the_cache_keys_of_main() -> None:
    assert Case("c1", "Say hi.").content_hash() == MAIN_7928497_PLAIN
    target = {"rule": "Be brief.", "group": "brevity"}
    assert Case("c1", "Tell me about cats. Be brief.", target=target).content_hash() == MAIN_7928497_TARGET
    assert Case("c1", "Shout hello.", tags=("shout",)).content_hash() == MAIN_7928497_TAGS
    kw = ({"relation": "less than", "num_words": 5},)
    assert ifeval_case("3", "Be brief.", None, ("length_constraints:number_words",), kw).content_hash() \
        == MAIN_7928497_IFEVAL_LAYOUT


def test_old_keyword_and_positional_arguments_warn_and_build_the_same_case() -> None:
    new = ifeval_case("k", "Say hi. Be brief.", ("Be brief.",), ("length:short",), ({"n": 3},))
    with pytest.warns(DeprecationWarning, match=r"tags=instruction_ids"):
        by_keyword = Case("k", "Say hi. Be brief.", instructions=("Be brief.",), instruction_id_list=("length:short",),
                          kwargs=({"n": 3},))
    with pytest.warns(DeprecationWarning):
        by_position = Case("k", "Say hi. Be brief.", ("Be brief.",), ("length:short",), ({"n": 3},))
    assert new == by_keyword == by_position
    assert new.content_hash() == by_keyword.content_hash()
    assert new.tags == ("length:short",) and new.data["instructions"] == ("Be brief.",)
    with pytest.warns(DeprecationWarning, match="case.tags"):
        assert new.instruction_id_list == ("length:short",)
    with pytest.warns(DeprecationWarning, match=r"data\['kwargs'\]"):
        assert new.kwargs == ({"n": 3},)
    with pytest.warns(DeprecationWarning):
        assert new.instructions == ("Be brief.",)


def test_new_fields_raise_no_warning_and_replace_keeps_the_case() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        case = Case("k", "Say hi.", tags=("greeting",), data={"lang": "en"}, target="hi")
        assert dataclasses.replace(case) == case
        assert dataclasses.replace(case, tags=("other",)).tags == ("other",)
    # a data entry of its own is a field of the row, so it changes the cache key
    assert case.to_dict() == {"key": "k", "prompt": "Say hi.", "instruction_id_list": ["greeting"], "kwargs": [],
                              "lang": "en", "target": "hi"}
    assert case.content_hash() != Case("k", "Say hi.", tags=("greeting",), target="hi").content_hash()


def test_replace_with_an_old_field_changes_only_that_field() -> None:
    case = ifeval_case("k", "Say hi. Be brief.", ("Be brief.",), ("length:short",), ({"n": 3},), target="hi")
    with pytest.warns(DeprecationWarning):
        changed = dataclasses.replace(case, instructions=("Say hi.",))
    assert changed == ifeval_case("k", "Say hi. Be brief.", ("Say hi.",), ("length:short",), ({"n": 3},), target="hi")
    with pytest.warns(DeprecationWarning):
        assert dataclasses.replace(case, instructions=None).data == {"kwargs": ({"n": 3},)}


def test_an_unknown_keyword_or_shadowing_a_row_field_is_an_error() -> None:
    with pytest.raises(TypeError, match="unexpected keyword"):
        Case("k", "p", instruction_ids=("t",))
    with pytest.raises(ValueError, match=r"data may not use the field name\(s\) \['prompt'\]"):
        Case("k", "p", data={"prompt": "other"})
