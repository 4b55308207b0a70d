"""Side-effect scores and the headline quality: hand-computed unit checks, then the properties that
made us replace raw fluency, on real text scored by `SideEffectScorer` (the embedded model and MiniLM).

tests/data/coherent_responses.jsonl holds hand-written, coherent answers (40-60 words; the cases that
ask for another language are answered in it) to 31 of the embedded cases; two of them also carry an
English answer, i.e. one in the wrong language. From each answer the tests derive a loop (its first
sentence repeated to the same length in model tokens) and, for every third one, a seeded word shuffle.
All texts go through one `score` call (the model forward is what costs: about 80 responses).
"""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_steer.cases import Case, load_cases
from pytest_steer.methods.base import BASELINE_CONFIG, Config
from pytest_steer.metrics.side_effects import (
    OFF_TOPIC_FACTOR,
    TRUNCATED_FACTOR,
    WRONG_LANGUAGE_FACTOR,
    degeneration_tags,
    detect_language,
    diversity,
    expected_language,
    headline_quality,
    length_ratio,
    rep_n,
    response_language_ok,
    text_tokens,
)
from pytest_steer.scores import Sample, Score

DATA = Path(__file__).parent / "data" / "coherent_responses.jsonl"
SENTENCE_END = re.compile(r"(?<=[^\d\s][.!?])\s+|(?<=[。！？।])\s*|\n+")

# --------------------------------------------------------------------------------------- unit checks


def test_text_tokens_split_words_numbers_and_punctuation() -> None:
    assert text_tokens("Hello, World! 1.1.1 isn't 12:30") == [
        "hello", ",", "world", "!", "1", ".", "1", ".", "1", "isn", "'", "t", "12", ":", "30"
    ]
    assert text_tokens("*highlighted part* is") == ["*", "highlighted", "part", "*", "is"]
    assert text_tokens("पानी पीना।") == ["पानी", "पीना", "।"]  # combining vowel signs stay in their word
    assert text_tokens("Đọc sách") == ["đọc", "sách"]
    assert text_tokens("私はガイド。") == ["私", "は", "ガ", "イ", "ド", "。"]  # no spaces: one token per character
    assert text_tokens(" \n\t ") == []


def test_rep_n_and_diversity_hand_computed() -> None:
    tokens = ["a", "b", "a", "b", "a"]
    assert rep_n(tokens, 1) == pytest.approx(1 - 2 / 5)
    assert rep_n(tokens, 2) == pytest.approx(1 - 2 / 4)  # ab ba ab ba
    assert rep_n(tokens, 3) == pytest.approx(1 - 2 / 3)  # aba bab aba
    assert rep_n(tokens, 4) == 0.0  # abab baba
    assert rep_n(tokens, 6) == 0.0  # no 6-gram at all
    assert diversity(tokens) == pytest.approx((1 / 2) * (2 / 3) * 1)
    assert diversity(["the", "cat", "sat", "on", "the", "mat"]) == 1.0  # "the" repeats, but no bigram does
    assert diversity(["paris", "."]) == 1.0
    assert diversity([]) == 0.0  # no text, nothing to credit
    loop = text_tokens("1." * 50)
    assert rep_n(loop, 4) > 0.95 and diversity(loop) < 1e-4
    with pytest.raises(ValueError):
        rep_n(tokens, 0)


def test_response_language() -> None:
    prompt = "Describe your favourite season and why you like it."
    english = "My favourite season is autumn, because the air is cool and the leaves turn gold."
    french = "Ma saison préférée est l'automne, parce que l'air est frais et les feuilles deviennent dorées."
    assert response_language_ok(prompt, english, None) is True
    assert response_language_ok(prompt, french, None) is False  # not the prompt's language
    assert response_language_ok(prompt, french, "fr") is True
    assert response_language_ok(prompt, english, "fr") is False
    assert response_language_ok(prompt, "Have fun!", None) is None  # too short to judge
    assert response_language_ok(prompt, "1.1.1.1.1.1.1.1", "en") is None  # no letters
    assert response_language_ok("Hi!", english, None) is None  # the prompt's language is unknown
    assert response_language_ok(prompt, "我最喜欢的季节是秋天，因为天气凉爽。", "zh") is True  # zh-cn counts as zh
    assert detect_language(french) == "fr" and detect_language("Have fun!") is None


def test_expected_language_comes_from_the_ifeval_argument() -> None:
    asks_german = Case("k", "Write in German.", None, ("punctuation:no_comma", "language:response_language"),
                       ({}, {"language": "de"}))
    assert expected_language(asks_german) == "de"
    assert expected_language(Case("k", "Write a poem.", None, ("punctuation:no_comma",), ({},))) is None
    assert expected_language(Case("k", "No instructions at all.")) is None


def test_length_ratio() -> None:
    assert length_ratio(48, 96) == 0.5
    assert length_ratio(96, 48) == 2.0
    assert length_ratio(10, None) is None
    assert length_ratio(10, 0) is None


def test_headline_quality_factors() -> None:
    base = math.exp(-2.0) * 0.9**2
    assert headline_quality(-2.0, 0.9) == pytest.approx(base)
    assert headline_quality(-2.0, 0.9, language_ok=True, coherence=0.4) == pytest.approx(base)
    assert headline_quality(-2.0, 0.9, language_ok=False) == pytest.approx(base * WRONG_LANGUAGE_FACTOR)
    assert headline_quality(-2.0, 0.9, truncated=True) == pytest.approx(base * TRUNCATED_FACTOR)
    assert headline_quality(-2.0, 0.9, coherence=-0.2) == pytest.approx(base * OFF_TOPIC_FACTOR)
    halfway = OFF_TOPIC_FACTOR + (1 - OFF_TOPIC_FACTOR) / 2
    assert headline_quality(-2.0, 0.9, coherence=0.05) == pytest.approx(base * halfway)
    assert headline_quality(0.0, 1.0) == 1.0
    assert headline_quality(math.nan, 0.0) == 0.0  # empty response: Fluency gives NaN, quality 0
    assert math.isnan(headline_quality(math.nan, 0.8))  # unscored text stays unscored


def test_degeneration_tags() -> None:
    coherent = text_tokens("The capital of France is Paris, a city on the Seine.")
    assert degeneration_tags(coherent, True, "stop", coherence=0.6) == []
    assert degeneration_tags(coherent, None, None) == []
    assert degeneration_tags(text_tokens("1." * 40), None, "length") == ["repetition", "truncated"]
    assert degeneration_tags(coherent, False, "stop", coherence=0.02) == ["wrong language", "off topic"]
    assert degeneration_tags([], None, "stop") == ["empty"]
    # a sentence said twice: 8 of its 19 4-grams repeat (0.42), over the 0.3 threshold; said once, none
    once = "Keep your bedroom cool, dark and quiet at night."
    assert degeneration_tags(text_tokens(once), True, "stop") == []
    assert degeneration_tags(text_tokens(" ".join([once] * 2)), True, "stop") == ["repetition"]


def test_module_does_not_import_torch() -> None:
    code = "import sys, pytest_steer.metrics.side_effects; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------- properties on real text


def _first_sentence(text: str) -> str:
    return next(part.strip() for part in SENTENCE_END.split(text) if part and part.strip())


def _repeat_to_tokens(unit: str, n_tokens: int, tokenizer: Any) -> str:
    """`unit` repeated (space-joined) and cut to exactly `n_tokens` model tokens."""
    n_unit = len(tokenizer(unit, add_special_tokens=False)["input_ids"])
    text = " ".join([unit] * (n_tokens // max(1, n_unit) + 2))
    return tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens])


def _shuffled(text: str, seed: str) -> str:
    """The words in a seeded random order; characters for scripts written without spaces."""
    words = text.split()
    if len(words) < 10:
        chars = list(text)
        random.Random(seed).shuffle(chars)
        return "".join(chars)
    random.Random(seed).shuffle(words)
    return " ".join(words)


STEERED = Config("pasta", 10.0, "pasta-alpha10", 10.0)


@pytest.fixture(scope="module")
def samples(embedded: Any) -> dict[str, dict[str, Sample]]:
    """Every text by kind ("coherent", "looped", "shuffled", "english", "degenerate", "truncated") and key."""
    tok = embedded.tokenizer
    cases = {c.key: c for c in load_cases()}
    rows = [json.loads(line) for line in DATA.read_text("utf-8").splitlines() if line.strip()]
    assert len(rows) >= 30
    out: dict[str, dict[str, Sample]] = {}

    def add(kind: str, key: str, case_key: str, text: str, finish: str = "stop", config: Config = BASELINE_CONFIG,
            baseline_n_tokens: int | None = None) -> None:
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        case = cases[case_key]
        out.setdefault(kind, {})[key] = Sample(case, config, case.prompt, text, n, finish, baseline_n_tokens)

    lengths = []
    for i, row in enumerate(rows):
        key, text = row["key"], row["response"]
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        lengths.append(n)
        looped = _repeat_to_tokens(_first_sentence(text), n, tok)
        assert looped != text, key
        add("coherent", key, key, text)
        # Loops are scored as if they had stopped on their own (a real loop would also be truncated).
        add("looped", key, key, looped)
        assert abs(out["looped"][key].n_tokens - n) <= 2, key  # decoding and re-encoding may merge a token
        if i % 3 == 0:
            shuffled = _shuffled(text, key)
            assert shuffled != text, key
            add("shuffled", key, key, shuffled)
        if "english" in row:
            add("english", key, key, row["english"])
    first = rows[0]
    # The same answer from a steered config, cut at max_new_tokens, twice as long as the baseline's.
    add("truncated", first["key"], first["key"], first["response"], "length", STEERED, baseline_n_tokens=2 * lengths[0])
    n = sorted(lengths)[len(lengths) // 2]
    sentence = "The sky is blue because sunlight is scattered by the air."
    add("degenerate", "ones", "steer-fw-05", _repeat_to_tokens("1.", n, tok))
    add("degenerate", "the", "steer-end-06", _repeat_to_tokens("the", n, tok))
    add("degenerate", "highlighted", "steer-hl-02", _repeat_to_tokens("*highlighted part* is", n, tok))
    add("degenerate", "sentence x8", "steer-hl-02", " ".join([sentence] * 8))  # on topic, for a change
    return out


@pytest.fixture(scope="module")
def scored(embedded: Any, samples: dict[str, dict[str, Sample]]) -> dict[str, dict[str, Score]]:
    """The scores of `samples`, from one `SideEffectScorer.score` call over all of them."""
    from pytest_steer.metrics.quality import SideEffectScorer

    scorer = SideEffectScorer(embedded, batch_size=8)
    flat = [(kind, key, sample) for kind, by_key in samples.items() for key, sample in by_key.items()]
    scores = scorer.score([sample for *_, sample in flat])
    out: dict[str, dict[str, Score]] = {}
    for (kind, key, _), score in zip(flat, scores, strict=True):
        assert set(score.values) == {m.name for m in scorer.metrics}
        out.setdefault(kind, {})[key] = score
    return out


def _quality(scores: dict[str, Score]) -> dict[str, float]:
    return {k: s.values["quality"] for k, s in scores.items()}


def _ratios(scored: dict[str, dict[str, Score]], kind: str) -> dict[str, float]:
    coherent = _quality(scored["coherent"])
    return {key: coherent[key] / q for key, q in _quality(scored[kind]).items()}


def test_loop_of_first_sentence_scores_below_the_answer(scored) -> None:
    ratios = _ratios(scored, "looped")
    assert len(ratios) >= 30
    assert {k: r for k, r in ratios.items() if r <= 1.0} == {}, "looped text scored at least as high as the answer"
    assert all("repetition" in s.details["flags"] for s in scored["looped"].values())
    assert max(s.values["repetition"] for s in scored["coherent"].values()) < 0.1


def test_degenerate_text_scores_below_every_coherent_answer(scored) -> None:
    worst_coherent = min(_quality(scored["coherent"]).values())
    assert {k: q for k, q in _quality(scored["degenerate"]).items() if q >= worst_coherent} == {}, worst_coherent
    # ... although the model finds them more fluent than any coherent answer: what the old headline rewarded
    best_fluency = max(s.values["fluency"] for s in scored["coherent"].values())
    assert all(s.values["fluency"] > best_fluency for s in scored["degenerate"].values())


def test_answer_beats_its_shuffled_words(scored) -> None:
    ratios = _ratios(scored, "shuffled")
    assert len(ratios) >= 10
    assert {k: r for k, r in ratios.items() if r <= 1.0} == {}, "shuffled words scored at least as high as the answer"


def test_answer_in_the_wrong_language_loses(scored) -> None:
    ratios = _ratios(scored, "english")
    assert ratios and {k: r for k, r in ratios.items() if r <= 1.0} == {}
    for key, s in scored["english"].items():
        assert s.values["wrong_language"] == 1.0 and "wrong language" in s.details["flags"], key
        assert scored["coherent"][key].values["wrong_language"] == 0.0, key


def test_coherent_answers_have_no_flags(scored) -> None:
    assert {k: s.details["flags"] for k, s in scored["coherent"].items() if s.details["flags"]} == {}
    assert all(s.values["truncated"] == 0.0 and s.values["length_ratio"] is None for s in scored["coherent"].values())


def test_truncation_lowers_quality_and_length_ratio_is_against_the_baseline(scored) -> None:
    (key, cut), = scored["truncated"].items()
    whole = scored["coherent"][key]
    assert cut.values["truncated"] == 1.0 and cut.details["flags"] == ["truncated"]
    assert cut.values["quality"] == pytest.approx(TRUNCATED_FACTOR * whole.values["quality"], rel=1e-3)
    assert cut.values["length_ratio"] == 0.5


def test_scores_do_not_depend_on_batch_partners(scored, samples, embedded) -> None:
    from pytest_steer.metrics.quality import SideEffectScorer

    scorer = SideEffectScorer(embedded, batch_size=1)
    for kind in ("coherent", "looped"):
        key = "steer-fw-02"
        alone, batched = scorer.score([samples[kind][key]])[0], scored[kind][key]
        assert alone.details == batched.details
        assert alone.values.keys() == batched.values.keys()
        for name, value in alone.values.items():
            other = batched.values[name]
            assert (value is None) == (other is None), name
            assert value is None or value == pytest.approx(other, rel=1e-3, abs=1e-4), name
