"""Side-effect scores and the parts of the headline quality: hand-computed unit checks, no model.

How the headline ranks real answers against their failure modes is in test_quality_pairs.py.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_steer.metrics.measures import (
    NO_ANSWER_FACTOR,
    OFF_TOPIC_FACTOR,
    ORDER_FLOOR,
    ORDER_WORDS,
    REFUSAL_FACTOR,
    REPETITION_FLOOR,
    SUBSTANCE_WEIGHT,
    UNFINISHED_FACTOR,
    WRONG_LANGUAGE_FACTOR,
    answer_factor,
    content_free,
    content_words,
    copied_share,
    degeneration_tags,
    detect_language,
    diversity,
    ends_unfinished,
    headline_quality,
    is_refusal,
    length_ratio,
    novel_words,
    order_probes,
    rep_n,
    response_language_ok,
    restates_prompt,
    sections,
    strip_markup,
    text_tokens,
    windows,
    worst_repetition,
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
    assert response_language_ok("Describe your favourite season in French, please.", french, None) is True  # named


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
    assert headline_quality(1.0, 0.0) == 1.0  # nothing counts words: any answer with no damage scores 1
    assert headline_quality(1.0, 0.02, order_gain=3.0, coherence=0.7, language_ok=True) == 1.0
    assert headline_quality(NO_ANSWER_FACTOR, 0.0) == pytest.approx(NO_ANSWER_FACTOR)
    assert headline_quality(1.0, 0.9) == pytest.approx(REPETITION_FLOOR)  # a loop
    assert headline_quality(1.0, 0.225) == pytest.approx(1 - (1 - REPETITION_FLOOR) / 2)  # half way to the mark
    assert headline_quality(1.0, 0.0, language_ok=False) == pytest.approx(WRONG_LANGUAGE_FACTOR)
    assert headline_quality(1.0, 0.0, refusal=True) == pytest.approx(REFUSAL_FACTOR)
    assert headline_quality(1.0, 0.0, unfinished=True) == pytest.approx(UNFINISHED_FACTOR)
    assert headline_quality(1.0, 0.0, coherence=-0.2) == pytest.approx(OFF_TOPIC_FACTOR)
    assert headline_quality(1.0, 0.0, coherence=0.15) == pytest.approx(OFF_TOPIC_FACTOR + (1 - OFF_TOPIC_FACTOR) / 2)
    assert headline_quality(1.0, 0.0, order_gain=0.75) == pytest.approx(0.5)  # half the (highest) mark
    assert headline_quality(1.0, 0.0, order_gain=0.2, order_mark=0.4) == pytest.approx(0.5)  # a language's mark
    # substance: a tie-break between sound answers, never more than SUBSTANCE_WEIGHT
    assert headline_quality(1.0, 0.0, own_words=1) == pytest.approx(1 - SUBSTANCE_WEIGHT * (1 - 1 / 40))
    assert headline_quality(1.0, 0.0, own_words=400) == 1.0
    assert headline_quality(1.0, 0.0, order_gain=-1.0) == pytest.approx(ORDER_FLOOR)  # word salad
    assert headline_quality(1.0, 0.0, order_gain=None, coherence=None, language_ok=None) == 1.0  # not judged


def test_short_and_echoing_answers_are_answers() -> None:
    riddle = "What has to be broken before you can use it? Answer in two words."
    assert answer_factor("An egg", riddle) == 1.0
    assert answer_factor("26", "What comes next: 2, 5, 10, 17? Reply with the number only.") == 1.0
    options = 'Is Paris in France? Answer with one of: "My answer is yes.", "My answer is no."'
    assert answer_factor("My answer is yes.", options) == NO_ANSWER_FACTOR  # without the task, a copied option
    assert answer_factor("My answer is yes.", options, echo_expected=True) == 1.0  # the task says options are answers
    assert answer_factor("Yes", "Is the sky blue? Say yes or no.") == 1.0  # one word taken from the prompt
    assert answer_factor("", riddle) == NO_ANSWER_FACTOR and answer_factor("**  **", riddle) == NO_ANSWER_FACTOR
    assert content_free("Sure! Here you go.") and content_free("Certainly, here is my answer to your request.")
    assert not content_free("Sure! The answer is 42.") and not content_free("Yes.")


def test_restating_the_prompt_is_no_answer() -> None:
    prompt = ("Write a short essay about the history of the Roman aqueducts and how they carried water into "
              "the cities. Do not use any commas in your response.")
    restated = "So you want a short essay on the history of Roman aqueducts and how they carried water to cities."
    assert restates_prompt(restated, prompt) and answer_factor(restated, prompt) == NO_ANSWER_FACTOR
    answer = ("Roman engineers built aqueducts from about 312 BC. Gravity moved water through stone channels "
              "across valleys on tall arches and into public fountains and baths.")
    assert not restates_prompt(answer, prompt) and answer_factor(answer, prompt) == 1.0


def test_sections_and_windows() -> None:
    assert sections("First answer.\n******\nSecond answer.") == ["First answer.\n", "\nSecond answer."]
    assert sections("No rule here - just a dash.") == ["No rule here - just a dash."]
    assert windows(list("abc"), 5) == [["a", "b", "c"]]
    assert windows(list("abcdefgh"), 4) == [list("abcd"), list("cdef"), list("efgh")]  # half a window apart
    spread = windows([str(i) for i in range(100)], 10, 3)
    assert [w[0] for w in spread] == ["0", "45", "90"]  # capped: first, middle, and the one ending at the end


def test_repetition_is_found_wherever_it_starts() -> None:
    answer = ("Roman engineers built aqueducts from about 312 BC. Gravity moved water through stone channels "
              "across valleys on tall arches. Cities used the water for fountains, baths and private houses. "
              "Many aqueducts ran for decades and some still stand today in France and Spain.")
    assert worst_repetition(answer) == 0.0
    looped = answer + " " + " ".join(["Roman engineers built aqueducts from about 312 BC."] * 6)
    assert rep_n(text_tokens(looped), 4) < 0.55 < worst_repetition(looped)  # the tail is a loop, the whole less so
    twice = "Answer one: keep the soil moist.\n******\nAnswer one: keep the soil moist."
    assert worst_repetition(twice) == 0.0  # two responses asked for may repeat each other
    table = "| Day | Rain |\n|---|---|\n| Mon | yes |\n| Tue | yes |\n| Wed | no |"
    assert worst_repetition(table) < 0.15  # pipes and dashes are not words
    assert worst_repetition("1." * 60) == 1.0 and worst_repetition("Wait...... what happened?") == 0.0
    verse = "The road is long and the night is cold, we walk on home as the stars grow old. "
    other = ("My father kept a lantern by the door, and every winter evening he would light it for the "
             "neighbours walking back from the mill. We children counted the sparks and argued about the snow, "
             "while mother sang the tunes her village taught her long ago. ")
    song = verse + other + verse  # a chorus again after a verse is no loop
    assert worst_repetition(song) < 0.15


def test_unfinished_endings() -> None:
    assert ends_unfinished("The aqueducts carried water for many miles across the")
    assert not ends_unfinished("The aqueducts carried water for many miles.")
    assert not ends_unfinished("Here is my list:\n- Fresh water for baths")  # a list item ends an answer
    assert not ends_unfinished("Best regards,\nAnna Novak")  # a signature
    assert not ends_unfinished('{"name": "Rome", "aqueducts": 11}')
    assert not ends_unfinished("<<Water of Rome>>")


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
    assert is_refusal("I apologize, but I cannot complete this request.")
    assert is_refusal("Sorry, I can't help with that.")
    assert is_refusal("Unfortunately, I'm not able to write this for you.")
    assert is_refusal("Lo siento, pero no puedo ayudarte con eso.")
    assert is_refusal("Es tut mir leid, aber ich kann Ihnen dabei nicht helfen.")
    assert is_refusal("Извините, но я не могу это сделать.")
    assert is_refusal("क्षमा करें, मैं यह नहीं कर सकता।")
    assert is_refusal("申し訳ありませんが、お応えできません。")
    assert not is_refusal("I'm sorry to hear that your tap leaks. Here is a short email you can send.")
    assert not is_refusal("You can't go wrong with a bigger pot: choose one a size up.")
    assert not is_refusal("Sorry for the wait! Here is the poem you asked for.")
    assert not is_refusal("Lo siento mucho por tu pérdida. Aquí tienes un poema para recordarla.")
    assert not is_refusal("As an AI, I don't have real-time access to train times; check the operator's website.")


def test_order_probes_cover_the_whole_text() -> None:
    text = "**The** sky above the ocean slowly turns from deep blue to soft pink and gold."
    [(probe, shuffled)] = order_probes(text)
    assert probe == "the sky above the ocean slowly turns from deep blue to soft pink and gold."
    assert sorted(shuffled.split()) == sorted(probe.split()) and shuffled != probe
    assert order_probes(text.upper()) == [(probe, shuffled)]  # capitals and markup do not move it
    assert order_probes("Paris is the capital.") == []  # too short to judge
    japanese = "こんにちは！旅行ガイドのさくらです。この町で生まれ育ちました。"
    [(jp_probe, jp_shuffled)] = order_probes(japanese)
    assert jp_probe == japanese and sorted(jp_shuffled) == sorted(japanese)  # characters are the units
    long_text = " ".join(f"word{i}" for i in range(300))
    probes = order_probes(long_text)
    assert len(probes) == 4 and probes[-1][0].split()[-1] == "word299"  # bounded, and the end is read
    assert all(len(p.split()) == ORDER_WORDS for p, _ in probes)


def test_degeneration_tags() -> None:
    coherent = text_tokens("The capital of France is Paris, a city on the Seine.")
    assert degeneration_tags(coherent, True, "stop", coherence=0.6, copied=0.0, order_gain=3.0) == []
    assert degeneration_tags(coherent, None, None) == []
    assert degeneration_tags(text_tokens("1." * 40), None, "length", worst_rep=1.0) == ["repetition", "truncated"]
    assert degeneration_tags(coherent, False, "stop", coherence=0.02) == ["wrong language", "off topic"]
    assert degeneration_tags([], None, "stop") == ["empty"]
    assert degeneration_tags(coherent, True, "stop", copied=0.8, refusal=True, order_gain=0.1) == [
        "copied", "refusal", "scrambled"]
    assert degeneration_tags(coherent, True, "stop", no_answer=True, unfinished=True) == ["no answer", "unfinished"]
    # a sentence of 9 words said twice: 4 of its 13 6-grams repeat (0.31), over the 0.3 mark; said once, none
    once = "Keep your bedroom cool, dark and quiet at night."
    assert worst_repetition(once) == 0.0
    assert worst_repetition(" ".join([once] * 2)) == pytest.approx(4 / 13)


def test_module_does_not_import_torch() -> None:
    code = "import sys, pytest_steer.metrics.measures; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
