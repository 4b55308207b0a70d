"""IFEval scoring: every reference checker, strict vs loose, offline and deterministic, and the
`IFEvalScorer` that turns a response into IFEval's four accuracies as named scores."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.scores import Sample, Scorer, metrics_of
from pytest_steer.tasks import Case, load_cases
from pytest_steer.tasks.ifeval.scorer import (
    VERSION,
    IFEvalScorer,
    InstructionScore,
    english_punkt_tokenizer,
    instruction_types,
    score_response,
    validate_case,
)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# instruction id -> (kwargs, responses that follow it, responses that do not), strict mode.
CHECKS: dict[str, tuple[dict, list[str], list[str]]] = {
    "keywords:existence": (
        {"keywords": ["banana", "river"]},
        ["A banana floated down the River.", "river... banana"],
        ["A banana floated past.", "Nothing relevant here."],
    ),
    "keywords:frequency": (
        {"keyword": "tea", "frequency": 3, "relation": "at least"},
        ["Tea, tea and more tea.", "TEA tea Tea tea"],
        ["Tea and coffee.", "tea tea"],
    ),
    "keywords:forbidden_words": (
        {"forbidden_words": ["cat", "dog"]},
        ["A catalog of hot dogs.", "Birds sing."],
        ["My Cat sleeps all day.", "The dog barked."],
    ),
    "keywords:letter_frequency": (
        {"letter": "z", "let_frequency": 2, "let_relation": "at least"},
        ["Pizza!", "Zig zag."],
        ["Pasta.", "Only one z here."],
    ),
    "language:response_language": (
        {"language": "de"},
        ["Das Wetter ist heute sehr schön und wir gehen am Nachmittag im Park spazieren."],
        ["The weather is lovely today and we are going for a walk in the park this afternoon."],
    ),
    "length_constraints:number_sentences": (
        {"num_sentences": 2, "relation": "at least"},
        ["Dr. Smith arrived. He was late.", "One idea. Another idea. A third."],
        # Punkt knows "Dr." is an abbreviation: a naive splitter would count two sentences.
        ["Dr. Smith arrived late.", "Just one sentence here"],
    ),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2},
        ["First paragraph.\n***\nSecond paragraph.", "One.\n\n***\n\nTwo."],
        ["Only one paragraph.", "A.\n***\nB.\n***\nC."],
    ),
    "length_constraints:number_words": (
        {"num_words": 5, "relation": "less than"},
        ["Just four words here.", "Short."],
        ["This response has far too many words.", "one two three four five"],
    ),
    "length_constraints:nth_paragraph_first_word": (
        {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "however"},
        ["An opening paragraph.\n\nHowever, the second one starts right.",
         "Intro.\n\n\"However\" it goes."],
        ["An opening paragraph.\n\nBut the second one does not.", "However, only one paragraph."],
    ),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2},
        ["Dear [name], we will visit [address].", "[a] [b] [c]"],
        ["Dear [name], see you soon.", "No placeholders at all."],
    ),
    "detectable_content:postscript": (
        {"postscript_marker": "P.S."},
        ["Hello there.\nP.S. See you soon.", "Hi.\n\np.s. bring snacks"],
        ["Hello there.", "PS see you soon."],
    ),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 2},
        ["* one\n* two", "Intro\n- first\n- second"],
        ["* one\n* two\n* three", "* only one"],
    ),
    "detectable_format:constrained_response": (
        {},
        ["My answer is yes.", "Hmm. My answer is maybe."],
        ["Sure thing.", "my answer is yes"],
    ),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2},
        ["*one* and *two*", "**bold one** and *italic two*"],
        ["*only one* here", "* * and ** **"],
    ),
    "detectable_format:multiple_sections": (
        {"section_spliter": "Section", "num_sections": 2},
        ["Section 1\nfoo\nSection 2\nbar", "Section 1 a Section 2 b Section 3 c"],
        ["Section 1\nfoo", "Part 1\nfoo\nPart 2\nbar"],
    ),
    "detectable_format:json_format": (
        {},
        ['```json\n{"a": 1}\n```', '{"a": [1, 2]}'],
        ["a: 1", 'Here it is: {"a": 1}'],
    ),
    "detectable_format:title": (
        {},
        ["<<My Title>>\nSome text.", "Text <<A title>> more"],
        ["My Title\nSome text.", "<<  >> empty title"],
    ),
    "combination:two_responses": (
        {},
        ["Answer one.\n******\nAnswer two.", "A\n******\nB\n******"],
        ["Answer one.\n******\nAnswer one.", "Just one answer."],
    ),
    "combination:repeat_prompt": (
        {"prompt_to_repeat": "Write a haiku about rain."},
        ["Write a haiku about rain. Rain taps the window.", "write a haiku about rain.\nDrops."],
        ["Rain taps the window.", "Sure! Write a haiku about rain."],
    ),
    "startend:end_checker": (
        {"end_phrase": "Any other questions?"},
        ["Here it is. Any other questions?", 'Done. "any other questions?"\n'],
        ["Any other questions? Bye.", "Here it is. Any other question?"],
    ),
    "change_case:capital_word_frequency": (
        {"capital_frequency": 2, "capital_relation": "at least"},
        ["This is VERY IMPORTANT.", "NASA and the ESA met. Then they left."],
        ["This is VERY important.", "nothing shouted here."],
    ),
    "change_case:english_capital": (
        {},
        ["THIS IS ALL WRITTEN IN CAPITAL LETTERS AND IN PLAIN ENGLISH."],
        ["This is not all capitals.",
         "DAS IST ALLES IN GROSSBUCHSTABEN UND AUF DEUTSCH GESCHRIEBEN."],
    ),
    "change_case:english_lowercase": (
        {},
        ["this is all lowercase english text about the weather today."],
        ["This Has Capitals.", "das ist alles kleingeschrieben und auf deutsch geschrieben."],
    ),
    "punctuation:no_comma": (
        {},
        ["No commas here.", "Semicolons; are fine."],
        ["Well, here is one.", "a,b"],
    ),
    "startend:quotation": (
        {},
        ['"Wrapped in quotes."', '  "Padded but wrapped."  '],
        ["Not wrapped.", '"Only an opening quote.'],
    ),
}

# (instruction id, kwargs, response): fails strict, passes loose.
LOOSE_ONLY = [
    ("startend:end_checker", {"end_phrase": "Have fun!"}, "Enjoy the trip. **Have fun!**"),
    ("startend:end_checker", {"end_phrase": "Have fun!"}, "Bye.\nHave fun!\n(written by a bot)"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a haiku about rain."},
     "Sure, here it is:\nWrite a haiku about rain. Drops on the roof."),
    ("startend:quotation", {}, 'Here you go:\n"A quoted answer."'),
    ("punctuation:no_comma", {}, "Hello, friend!\nNo commas in the answer itself."),
]


def case(iid: str, kwargs: dict, key: str = "t") -> dict:
    return {"key": key, "prompt": "p", "instruction_id_list": [iid], "kwargs": [kwargs]}


def test_checks_cover_every_registered_instruction_type():
    assert sorted(CHECKS) == list(instruction_types())
    assert len(CHECKS) == 25


@pytest.mark.parametrize("iid", sorted(CHECKS))
def test_reference_checker_passes_and_fails(iid):
    kwargs, good, bad = CHECKS[iid]
    validate_case(case(iid, kwargs))
    for response in good:
        assert score_response(case(iid, kwargs), response).follow_all_instructions, response
    for response in bad:
        assert not score_response(case(iid, kwargs), response).follow_all_instructions, response


@pytest.mark.parametrize("iid", sorted(CHECKS))
@pytest.mark.parametrize("response", ["", "   \n\t "])
def test_empty_response_fails_strict_and_loose(iid, response):
    score = score_response(case(iid, CHECKS[iid][0]), response)
    assert score == InstructionScore((iid,), False, (False,), False, (False,))


@pytest.mark.parametrize(("iid", "kwargs", "response"), LOOSE_ONLY)
def test_loose_accepts_what_strict_rejects(iid, kwargs, response):
    score = score_response(case(iid, kwargs), response)
    assert not score.follow_all_instructions
    assert score.loose_follow_all_instructions


def test_multi_instruction_prompt_lists_each_instruction():
    row = {
        "key": "multi",
        "prompt": "p",
        "instruction_id_list": ["punctuation:no_comma", "startend:end_checker"],
        "kwargs": [{}, {"end_phrase": "Bye."}],
    }
    score = score_response(row, "Hello, there.\nBye.")
    assert score.follow_instruction_list == (False, True)
    assert not score.follow_all_instructions
    assert score.loose_follow_instruction_list == (True, True)  # first line dropped
    assert score.loose_follow_all_instructions


def sample(c: Case | dict, response: str) -> Sample:
    prompt = c.prompt if isinstance(c, Case) else c["prompt"]
    return Sample(c, BASELINE_CONFIG, prompt, response, n_tokens=len(response.split()), finish_reason="stop")


def test_ifeval_scorer_declares_four_named_scores():
    scorer = IFEvalScorer()
    assert isinstance(scorer, Scorer) and scorer.name == "ifeval"
    by_name = {m.name: m for m in metrics_of([scorer])}
    assert list(by_name) == ["strict_prompt_accuracy", "loose_prompt_accuracy",
                             "strict_instruction_accuracy", "loose_instruction_accuracy"]
    assert [(m.kind, m.direction, m.per_tag) for m in by_name.values()] == [
        ("binary", 1, False), ("binary", 1, False), ("real", 1, True), ("real", 1, True)]
    assert by_name["strict_prompt_accuracy"].title == "strict accuracy"
    assert f"v{VERSION}" in scorer.identity() and "if-verifiable==0.1.2" in scorer.identity()
    scorer.check()


def test_ifeval_scorer_values_and_per_instruction_details():
    row = {
        "key": "multi",
        "prompt": "p",
        "instruction_id_list": ["punctuation:no_comma", "startend:end_checker", "detectable_format:title"],
        "kwargs": [{}, {"end_phrase": "Bye."}, {}],
    }
    one = case("punctuation:no_comma", {}, "one")
    scores = IFEvalScorer().score([sample(row, "Hello, there.\nBye."), sample(one, "No comma"), sample(one, "")])
    assert scores[0].values == {
        "strict_prompt_accuracy": 0.0,
        "loose_prompt_accuracy": 0.0,  # the title is missing in every variant
        "strict_instruction_accuracy": pytest.approx(1 / 3),
        "loose_instruction_accuracy": pytest.approx(2 / 3),  # first line dropped: no comma left
    }
    assert scores[0].details == {"strict_instruction_accuracy": [False, True, False],
                                 "loose_instruction_accuracy": [True, True, False]}
    assert scores[1].values == {"strict_prompt_accuracy": 1.0, "loose_prompt_accuracy": 1.0,
                                "strict_instruction_accuracy": 1.0, "loose_instruction_accuracy": 1.0}
    assert scores[2].values["strict_prompt_accuracy"] == scores[2].values["loose_instruction_accuracy"] == 0.0
    assert all(isinstance(v, float) for s in scores for v in s.values.values())


def test_unknown_instruction_id_is_named_with_the_known_ones():
    with pytest.raises(ValueError) as info:
        validate_case(case("keywords:made_up", {}, key="k1"))
    message = str(info.value)
    assert "'keywords:made_up'" in message and "'k1'" in message
    assert "keywords:forbidden_words" in message and "startend:end_checker" in message


@pytest.mark.parametrize(
    ("iid", "kwargs", "fragment"),
    [
        ("keywords:forbidden_words", {}, "needs argument(s) forbidden_words"),
        ("keywords:forbidden_words", {"forbidden_words": None},
         "needs argument(s) forbidden_words"),
        ("keywords:forbidden_words", {"forbidden_words": []}, "needs argument(s) forbidden_words"),
        ("detectable_format:number_highlighted_sections", {"num_highlights": 2, "language": "de"},
         "does not take argument(s) language"),
        ("language:response_language", {"language": "nl"}, "'nl' is not one IFEval checks"),
        ("length_constraints:number_words", {"num_words": 5, "relation": "about"},
         "rejects kwargs"),
    ],
)
def test_invalid_kwargs_are_rejected_before_scoring(iid, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        validate_case(case(iid, kwargs))
    assert fragment in str(info.value)


def test_none_kwargs_are_dropped_not_randomised():
    padded = case("detectable_format:number_highlighted_sections",
                  {"num_highlights": 2, "forbidden_words": None, "language": None})
    validate_case(padded)
    assert score_response(padded, "*a* *b*").follow_all_instructions
    assert not score_response(padded, "*a*").follow_all_instructions


def test_kwargs_must_pair_with_instruction_ids():
    row = {"key": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}
    with pytest.raises(ValueError, match="2 kwargs dict"):
        score_response(row, "text")


def test_bundled_punkt_model_matches_the_punkt_package():
    import punkt

    tokenizer = english_punkt_tokenizer()
    for text in [
        "Dr. Smith went home at 5 p.m. today. He was tired!",
        "The U.S. economy grew 3.5% in Jan. It was strong.\n\nA new paragraph follows",
        "Mr. J. R. R. Tolkien wrote books. e.g. The Hobbit? Yes... maybe.",
    ]:
        assert tokenizer.tokenize(text) == punkt.sent_tokenize(text)


# -- real IFEval rows (tests only, never package data) -----------------------------------------

needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real IFEval test rows not found at {SHARED_DATA}"
)


@needs_shared
def test_real_ifeval_rows_validate_and_score():
    cases = load_cases(SHARED_DATA / "ifeval_input_data_rest.jsonl")
    for c in cases:
        validate_case(c)
    assert {t for c in cases for t in c.tags} == set(instruction_types())

    checked = 0
    for c in cases:
        if len(c.tags) != 1:
            continue
        iid, kw = c.tags[0], c.data["kwargs"][0]
        if iid == "startend:end_checker":
            good, bad = f"Some text first. {kw['end_phrase']}", f"{kw['end_phrase']} And more."
        elif iid == "keywords:forbidden_words":
            good, bad = "0", f"It says {kw['forbidden_words'][0]} here."
        elif iid == "punctuation:no_comma":
            good, bad = "No commas at all", "One, two"
        elif iid == "detectable_format:title":
            good, bad = "<<A Title>>\nText.", "A Title\nText."
        elif iid == "startend:quotation":
            good, bad = '"All quoted."', "Not quoted."
        else:
            continue
        assert score_response(c, good).follow_all_instructions, (c.key, good)
        assert not score_response(c, bad).follow_all_instructions, (c.key, bad)
        checked += 1
    assert checked >= 30  # about a tenth of the rows may be held back


@needs_shared
def test_split_dev_rows_score_their_own_instruction_types():
    cases = load_cases(SHARED_DATA / "split_ifeval_dev.jsonl")
    scores = IFEvalScorer().score([sample(c, c.prompt) for c in cases])
    assert len(scores) == 20
    per_type: dict[str, list[bool]] = {}
    for c, s in zip(cases, scores, strict=True):
        assert len(s.details["strict_instruction_accuracy"]) == len(c.tags) == 1
        assert s.values["strict_prompt_accuracy"] == float(s.details["strict_instruction_accuracy"][0])
        per_type.setdefault(c.tags[0], []).append(s.details["strict_instruction_accuracy"][0])
    assert {t: len(v) for t, v in per_type.items()} == {
        "keywords:forbidden_words": 5,
        "detectable_format:number_highlighted_sections": 5,
        "language:response_language": 5,
        "startend:end_checker": 5,
    }


# -- offline and deterministic ----------------------------------------------------------------

_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys
    import nltk

    def refuse(*args, **kwargs):
        raise RuntimeError("network or nltk.download used during scoring")

    socket.socket.connect = refuse
    socket.create_connection = refuse
    nltk.download = refuse
    nltk.data.path[:] = []  # whatever NLTK data the machine has, scoring must not need it

    from pytest_steer.tasks import load_cases
    from pytest_steer.tasks.ifeval.scorer import IFEvalScorer, score_response
    from pytest_steer.scores import Sample

    try:
        nltk.data.find("tokenizers/punkt_tab/english/")
        sys.exit("punkt_tab is still reachable; the test would prove nothing")
    except LookupError:
        pass
    cases = [c.to_dict() for c in load_cases(None)]
    for path in sys.argv[1:]:
        cases += [c.to_dict() for c in load_cases(path)]
    responses = [
        "",
        "Hallo",
        "Ciao, come stai? Bene grazie.",
        "Das ist gut. Is this English? *Yes* it is. THE END.",
        "Dr. Smith arrived at 5 p.m. today. He was LATE. Really LATE!",
        "*one* *two* **three**\\nfinal line. Have fun!",
    ]
    out = []
    for c in cases:
        for r in responses + [c["prompt"]]:
            s = score_response(c, r)
            out.append([c["key"], s.follow_instruction_list, s.loose_follow_instruction_list])
    checks = {
        iid: score_response(
            {"key": "x", "instruction_id_list": [iid], "kwargs": [kw]}, text
        ).follow_all_instructions
        for iid, kw, text in [
            ("length_constraints:number_sentences", {"num_sentences": 2, "relation": "at least"},
             "Dr. Smith arrived. He was late."),
            ("change_case:capital_word_frequency", {"capital_frequency": 2,
             "capital_relation": "at least"}, "Mr. Jones was VERY, VERY LATE. He ran."),
        ]
    }
    # if-verifiable's IFBench module calls nltk.download at import; IFEval scoring must not load it.
    assert "if_verifiable.ifbench.instructions_util" not in sys.modules
    overall = IFEvalScorer().score([Sample(c, None, c["prompt"], c["prompt"], 0, "stop") for c in cases])
    print(json.dumps({"rows": out, "checks": checks, "scores": [[s.values, s.details] for s in overall]}))
    """
)


def _score_in_subprocesses(*hash_seeds: str) -> list[dict]:
    """Run the scoring script once per hash seed, concurrently, and return each run's output."""
    extra = [str(p) for p in sorted(SHARED_DATA.glob("*.jsonl"))] if SHARED_DATA.is_dir() else []
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _SCRIPT, *extra],
            env={
                **os.environ,
                "PYTHONHASHSEED": seed,
                "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                "HF_HUB_OFFLINE": "1",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in hash_seeds
    ]
    outputs = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, stderr[-3000:]
        outputs.append(json.loads(stdout))
    return outputs


def test_scores_are_identical_across_processes_and_need_no_network():
    first, second = _score_in_subprocesses("1", "4242")
    assert first == second
    assert first["checks"] == {
        "length_constraints:number_sentences": True,
        "change_case:capital_word_frequency": True,
    }
    # ... and match this process.
    embedded = load_cases(None)
    here = [list(score_response(c, "Hallo").follow_instruction_list) for c in embedded]
    there = [row for row in first["rows"] if row[0].startswith("steer-")][1::7]
    assert here == [row[1] for row in there]


def test_checker_randomness_is_pinned_and_global_random_untouched():
    # Real IFEval asks for letter "#"; the reference then picks a random letter.
    kwargs = {"letter": "#", "let_frequency": 4, "let_relation": "at least"}
    row = case("keywords:letter_frequency", kwargs)
    text = "##### " + "abcdefghijklm " * 4  # half the letters pass, so an unpinned draw varies
    results = set()
    for seed in range(8):
        random.seed(seed)
        expected_next = random.Random(seed).random()
        results.add(score_response(row, text).follow_all_instructions)
        assert random.random() == expected_next
    assert len(results) == 1
