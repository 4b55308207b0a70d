"""Side-effect scores and the parts of the headline quality: hand-computed unit checks, no model.

How the headline ranks real answers against their failure modes is in test_quality_pairs.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_steer.metrics.side_effects import (
    FULL_CONTENT_WORDS,
    OFF_TOPIC_FACTOR,
    ORDER_FLOOR,
    REFUSAL_FACTOR,
    WRONG_LANGUAGE_FACTOR,
    content_words,
    copied_share,
    degeneration_tags,
    detect_language,
    diversity,
    headline_quality,
    is_refusal,
    length_ratio,
    novel_words,
    order_probe,
    rep_n,
    response_language_ok,
    strip_markup,
    text_tokens,
)
from pytest_steer.tasks import Case
from pytest_steer.tasks.ifeval import ifeval_case

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
    assert response_language_ok(prompt, english.upper(), None) is True  # capitals asked for are still English


def test_expected_language_comes_from_the_ifeval_argument() -> None:
    from pytest_steer.tasks import INSTRUCTIONS

    expected_language = INSTRUCTIONS.language
    asks_german = ifeval_case("k", "Write in German.", None, ("punctuation:no_comma", "language:response_language"),
                       ({}, {"language": "de"}))
    assert expected_language(asks_german) == "de"
    assert expected_language(ifeval_case("k", "Write a poem.", None, ("punctuation:no_comma",), ({},))) is None
    assert expected_language(Case("k", "No instructions at all.")) is None


def test_length_ratio() -> None:
    assert length_ratio(48, 96) == 0.5
    assert length_ratio(96, 48) == 2.0
    assert length_ratio(10, None) is None
    assert length_ratio(10, 0) is None


def test_headline_quality_factors() -> None:
    full = FULL_CONTENT_WORDS
    assert headline_quality(full, 1.0) == 1.0
    assert headline_quality(full * 2, 0.9, order_gain=3.0, coherence=0.7, language_ok=True) == pytest.approx(0.9)
    assert headline_quality(full // 2, 1.0) == pytest.approx(0.5)  # half the content
    assert headline_quality(0, 1.0) == 0.0  # nothing of its own: the prompt said back
    assert headline_quality(full, 1.0, language_ok=False) == pytest.approx(WRONG_LANGUAGE_FACTOR)
    assert headline_quality(full, 1.0, refusal=True) == pytest.approx(REFUSAL_FACTOR)
    assert headline_quality(full, 1.0, coherence=-0.2) == pytest.approx(OFF_TOPIC_FACTOR)
    assert headline_quality(full, 1.0, coherence=0.2) == pytest.approx(OFF_TOPIC_FACTOR + (1 - OFF_TOPIC_FACTOR) / 2)
    assert headline_quality(full, 1.0, order_gain=0.5) == pytest.approx(0.5)
    assert headline_quality(full, 1.0, order_gain=-1.0) == pytest.approx(ORDER_FLOOR)  # word salad
    assert headline_quality(full, 1.0, order_gain=None, coherence=None, language_ok=None) == 1.0  # not judged


def test_markup_and_copied_words() -> None:
    answer = "## Tips\n- **Water** the plant *weekly*.\n1. Keep it `warm`."
    assert strip_markup(answer).split() == ["Tips", "Water", "the", "plant", "weekly.", "Keep", "it", "warm."]
    assert content_words("**Step 1:** Mix the flour.") == ["step", "mix", "the", "flour"]  # numbers carry no content
    prompt = "Write a short guide to repotting a houseplant. Highlight at least 2 sections."
    assert novel_words(prompt, prompt) == [] and copied_share(prompt, prompt) == 1.0
    said_back = "Highlight at least 2 sections. Choose a bigger pot and fresh soil."
    assert novel_words(said_back, prompt) == ["choose", "a", "bigger", "pot", "and", "fresh", "soil"]
    assert copied_share(said_back, prompt) == pytest.approx(4 / 11)  # "highlight at least sections" of 11 words
    assert copied_share("", prompt) is None


def test_refusals() -> None:
    assert is_refusal("I'm sorry, but I can't help with that.")
    assert is_refusal("I\u2019m sorry, but I cannot write that email for you.")
    assert is_refusal("As an AI language model, I am unable to do that.")
    assert is_refusal("I can't assist with that request.")
    assert not is_refusal("I'm sorry to hear that your tap leaks. Here is a short email you can send.")
    assert not is_refusal("You can't go wrong with a bigger pot: choose one a size up.")


def test_order_probe() -> None:
    text = "**The** sky above the ocean slowly turns from deep blue to soft pink and gold."
    probe, shuffled = order_probe(text)
    assert probe == "the sky above the ocean slowly turns from deep blue to soft pink and gold."
    assert sorted(shuffled.split()) == sorted(probe.split()) and shuffled != probe
    assert order_probe(text.upper()) == (probe, shuffled)  # capitals and markup do not move it
    assert order_probe("Paris is the capital.") is None  # too short to judge
    japanese = "こんにちは！旅行ガイドのさくらです。この町で生まれ育ちました。"
    jp_probe, jp_shuffled = order_probe(japanese)
    assert jp_probe == japanese and sorted(jp_shuffled) == sorted(japanese)  # characters are the units


def test_degeneration_tags() -> None:
    coherent = text_tokens("The capital of France is Paris, a city on the Seine.")
    assert degeneration_tags(coherent, True, "stop", coherence=0.6, copied=0.0, order_gain=3.0) == []
    assert degeneration_tags(coherent, None, None) == []
    assert degeneration_tags(text_tokens("1." * 40), None, "length") == ["repetition", "truncated"]
    assert degeneration_tags(coherent, False, "stop", coherence=0.02) == ["wrong language", "off topic"]
    assert degeneration_tags([], None, "stop") == ["empty"]
    assert degeneration_tags(coherent, True, "stop", copied=0.8, refusal=True, order_gain=0.1) == [
        "copied", "refusal", "scrambled"]
    # a sentence said twice: 8 of its 19 4-grams repeat (0.42), over the 0.3 threshold; said once, none
    once = "Keep your bedroom cool, dark and quiet at night."
    assert degeneration_tags(text_tokens(once), True, "stop") == []
    assert degeneration_tags(text_tokens(" ".join([once] * 2)), True, "stop") == ["repetition"]


def test_module_does_not_import_torch() -> None:
    code = "import sys, pytest_steer.metrics.side_effects; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
