"""Side effects of steering, as plain functions over strings and numbers (no torch, no model).

`metrics/quality.py` turns these into named scores and documents the headline formula, its anchors
and what it can and cannot see. Each function here cites where its measure comes from:

- `text_tokens`: model-independent tokens (lowercased words, numbers, single punctuation marks; one
  token per character in scripts written without spaces), so repetition scores compare across models.
- `rep_n`: seq-rep-n of Welleck et al. 2020 ("Neural Text Generation with Unlikelihood Training"),
  the share of the response's n-grams that repeat an earlier one; `rep_n(tokens, 4)` is seq-rep-4.
- `diversity`: Π_{n=2..4} (1 − rep-n), from Su et al. 2022 ("A Contrastive Framework for Neural
  Text Generation"); 1 for text without repeated n-grams, near 0 for a loop.
- `detect_language`, `response_language_ok`: is the response in the language
  that was asked for (langdetect, seeded).
- `length_ratio`: response length against the unsteered response to the same prompt.
- `strip_markup`, `content_words`, `novel_words`, `copied_share`: the answer's own words, with markdown
  taken out and spans copied from the prompt (4-grams of its words) left out.
- `is_refusal`: a refusal in the response's first 40 words.
- `order_probe`: the text whose word order the model under test is asked about (see metrics/quality.py).
- `headline_quality`: the headline formula from these parts (metrics/quality.py documents it).
- `degeneration_tags`: visible labels for the report ("repetition", "wrong language", ...).
"""

from __future__ import annotations

import functools
import math
import random
import re
import unicodedata
from collections.abc import Sequence

#: below this many letter words (or characters, in scripts written without spaces) langdetect is
#: unreliable: it calls "Have fun!" Danish and "No problem at all." Catalan
MIN_LANGUAGE_WORDS = 5
WRONG_LANGUAGE_FACTOR = 0.1
REFUSAL_FACTOR = 0.1
#: distinct words of its own (not copied from the prompt) at which an answer counts as having full content
FULL_CONTENT_WORDS = 40
#: a copied span: this many consecutive words that also stand in that order in the prompt
COPY_NGRAM = 4
#: MiniLM prompt-response cosine from which an English answer counts as fully on topic; the topic
#: factor falls linearly to `OFF_TOPIC_FACTOR` at cosine <= 0
ON_TOPIC_COSINE = 0.4
OFF_TOPIC_FACTOR = 0.25
#: word-order gain (nats/token) at which the order factor is 1; it falls linearly to `ORDER_FLOOR`
FULL_ORDER_GAIN = 1.0
ORDER_FLOOR = 0.1
#: the order probe reads at most this many words (characters, in scripts written without spaces)
ORDER_WORDS = 48
ORDER_CHARS = 96
#: fewer words than this (characters / 2 in scripts written without spaces): no order judgement
MIN_ORDER_WORDS = 10
#: seq-rep-4 at or above which a response is tagged "repetition": about a third of the text copies
#: earlier text. Natural answers stay below 0.05 (Welleck et al. 2020: 0.006 for human text), the
#: looped answers of the tests start at 0.38
REPETITION_REP4 = 0.3
#: finish_reason of a generation that stopped at max_new_tokens
LENGTH_FINISH = "length"

# Scripts written without spaces between words: each character is one token.
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0x20000, 0x3134F),  # CJK extensions B-G
)


def _no_space_script(ch: str) -> bool:
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _NO_SPACE_RANGES)


def text_tokens(text: str) -> list[str]:
    """Lowercased words, numbers and single punctuation marks, for repetition statistics.

    Independent of any model's tokenizer, so rep-n means the same for every model, and `1.1.1.1`
    is the repetitive `1 . 1 . 1 . 1`. A word is a run of letters with their combining marks (so
    Devanagari and Vietnamese words stay whole); in scripts written without spaces (CJK, kana, Thai,
    ...) every character is a token. Whitespace and control characters separate tokens.
    """
    tokens: list[str] = []
    run, run_kind = "", ""
    for ch in text.lower():
        major = unicodedata.category(ch)[0]
        if major == "M":  # a combining mark belongs to the character before it
            if run:
                run += ch
            continue
        if major == "L":
            kind = "char" if _no_space_script(ch) else "word"
        else:
            kind = "number" if major == "N" else ""
        if run and kind in ("word", "number") and kind == run_kind:
            run += ch
            continue
        if run:
            tokens.append(run)
        run, run_kind = (ch, kind) if kind else ("", "")
        if not kind and major in "PS":
            tokens.append(ch)
    if run:
        tokens.append(run)
    return tokens


def rep_n(tokens: Sequence[str], n: int) -> float:
    """seq-rep-n (Welleck et al. 2020): 1 − |unique n-grams| / |n-grams|; 0 when there is no n-gram."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def diversity(tokens: Sequence[str]) -> float:
    """Π_{n=2..4} (1 − rep-n) (Su et al. 2022): 1 without repeated n-grams, near 0 for a loop.

    No tokens at all (an empty or whitespace-only response) gives 0: there is no text to credit, and
    a steered model that only emits newlines must not look perfect.
    """
    if not tokens:
        return 0.0
    return math.prod(1.0 - rep_n(tokens, n) for n in (2, 3, 4))


@functools.lru_cache(maxsize=4096)
def detect_language(text: str) -> str | None:
    """langdetect's ISO code without region ("zh-cn" -> "zh"), or None when there is too little text.

    Seeded, so the answer depends on the text alone (and is cached: a case's prompt is asked about once
    per process, not once per configuration and trial).
    """
    from langdetect import DetectorFactory, detect
    from langdetect.lang_detect_exception import LangDetectException

    letter_words = [t for t in text_tokens(text) if any(unicodedata.category(c)[0] == "L" for c in t)]
    if len(letter_words) < MIN_LANGUAGE_WORDS:
        return None
    if _mostly_capitals(text):  # langdetect's profiles are lowercase: "THE SKY IS BLUE" reads as another language
        text = text.lower()
    DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes it deterministic
    try:
        return str(detect(text)).split("-")[0]
    except LangDetectException:
        return None


def _mostly_capitals(text: str) -> bool:
    cased = [c for c in text if c.isupper() or c.islower()]
    return bool(cased) and sum(c.isupper() for c in cased) > len(cased) / 2


def response_language_ok(prompt: str, response: str, expected: str | None = None) -> bool | None:
    """Whether the response is in `expected` (an ISO 639-1 code, as IFEval's `language` kwarg), or in
    the prompt's language when `expected` is None.

    None when it cannot be judged: the response (or, without `expected`, the prompt) has fewer than
    `MIN_LANGUAGE_WORDS` words of letters, where langdetect guesses. Regions are ignored ("zh-cn"
    counts as "zh").
    """
    target = expected.split("-")[0].lower() if expected else detect_language(prompt)
    if target is None:
        return None
    found = detect_language(response)
    return None if found is None else found == target


def length_ratio(n_tokens: int, baseline_n_tokens: int | None) -> float | None:
    """Response length over the unsteered response's length for the same prompt (and trial).

    Steering that silences the model or makes it ramble shows up here before it shows in any mean.
    None when there is no baseline response or it was empty.
    """
    if not baseline_n_tokens:
        return None
    return n_tokens / baseline_n_tokens


#: markdown that carries no words: emphasis and code marks, headings, bullet and number markers at line start
_MARKUP = re.compile(r"(?m)^[ \t]*(?:[-*+•]|\d{1,3}[.)]|#{1,6})[ \t]+|[*_`~#]+")


def strip_markup(text: str) -> str:
    """The text without markdown marks, so formatting that was asked for neither adds nor removes words."""
    return _MARKUP.sub("", text)


def _has_letter(token: str) -> bool:
    return any(unicodedata.category(c)[0] == "L" for c in token)


def content_words(text: str) -> list[str]:
    """The text's words (tokens with a letter; lowercased, markup stripped), in order: what content is made of.

    Numbers and punctuation are left out, so `**Step 1:**` headers or bullet marks add (almost) nothing.
    """
    return [t for t in text_tokens(strip_markup(text)) if _has_letter(t)]


def _copied(words: Sequence[str], source: Sequence[str], n: int = COPY_NGRAM) -> list[bool]:
    """Per word: does it lie in a run of `n` words that also stands in `source`?"""
    grams = {tuple(source[i : i + n]) for i in range(len(source) - n + 1)}
    mask = [False] * len(words)
    for i in range(len(words) - n + 1):
        if tuple(words[i : i + n]) in grams:
            mask[i : i + n] = [True] * n
    return mask


def novel_words(response: str, prompt: str) -> list[str]:
    """The response's words outside spans copied from the prompt: the prompt or instruction said back is no answer."""
    words = content_words(response)
    return [w for w, c in zip(words, _copied(words, content_words(prompt)), strict=True) if not c]


def copied_share(response: str, prompt: str) -> float | None:
    """Share of the response's words that lie in spans copied from the prompt; None without words."""
    words = content_words(response)
    return sum(_copied(words, content_words(prompt))) / len(words) if words else None


_REFUSAL = re.compile(
    r"\b(?:i'm|i am) (?:sorry|afraid)\b[^.!?]{0,30}?\bi (?:can't|cannot|can not|won't|will not|am unable|'m unable"
    r"|am not able|'m not able)\b"
    r"|^\W*(?:i|we) (?:can't|cannot|can not|won't|will not|am unable to|'m unable to|am not able to) "
    r"(?:help|assist|do|provide|write|comply|fulfil|fulfill|answer|create|complete|generate)\b"
    r"|\bas an ai\b|\bas a language model\b",
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    """Whether the first 40 words decline the request ("I'm sorry, but I can't ...", "As an AI ...").

    English phrasings only; an apology that goes on to answer ("I'm sorry to hear that. Here ...") is no refusal.
    """
    head = " ".join(strip_markup(text).replace("\u2019", "'").split()[:40])
    return bool(_REFUSAL.search(head))


def order_probe(text: str) -> tuple[str, str] | None:
    """(probe, the probe's words in a seeded random order) for the word-order test, or None when too short.

    The probe is the start of the text, markup stripped and lowercased (so formatting and capitals that
    were asked for do not move it): `ORDER_WORDS` words, or `ORDER_CHARS` characters in scripts written
    without spaces, whose characters are shuffled instead. The seed is the probe itself, so the pair
    depends on the text alone.
    """
    plain = " ".join(strip_markup(text).lower().split())
    rng = random.Random(plain)
    letters = [c for c in plain if _has_letter(c)]
    no_space = sum(_no_space_script(c) for c in letters)
    if no_space > len(letters) / 2:  # CJK, kana, Thai...: characters are the units
        if no_space < 2 * MIN_ORDER_WORDS:
            return None
        probe = plain[:ORDER_CHARS]
        chars = list(probe)
        rng.shuffle(chars)
        return probe, "".join(chars)
    words = plain.split()
    if len(words) < MIN_ORDER_WORDS:
        return None
    probe_words = words[:ORDER_WORDS]
    shuffled = probe_words[:]
    rng.shuffle(shuffled)
    return " ".join(probe_words), " ".join(shuffled)


def content_factor(n_novel: int) -> float:
    """min(1, distinct words of its own / `FULL_CONTENT_WORDS`)."""
    return min(1.0, n_novel / FULL_CONTENT_WORDS)


def order_factor(gain: float | None) -> float:
    """1 at a word-order gain of `FULL_ORDER_GAIN` nats/token or more, falling linearly to `ORDER_FLOOR`; 1
    when not judged (None: too short)."""
    if gain is None or math.isnan(gain):
        return 1.0
    return min(1.0, max(ORDER_FLOOR, gain / FULL_ORDER_GAIN))


def topic_factor(cosine: float | None) -> float:
    """1 at a prompt-response cosine of `ON_TOPIC_COSINE` or more, falling linearly to `OFF_TOPIC_FACTOR` at 0;
    1 when not judged (None)."""
    if cosine is None:
        return 1.0
    on_topic = min(1.0, max(0.0, cosine) / ON_TOPIC_COSINE)
    return OFF_TOPIC_FACTOR + (1.0 - OFF_TOPIC_FACTOR) * on_topic


def headline_quality(
    n_novel: int,
    diversity: float,
    *,
    order_gain: float | None = None,
    coherence: float | None = None,
    language_ok: bool | None = None,
    refusal: bool = False,
) -> float:
    """content · diversity · order · topic · language · refusal, in [0, 1] (metrics/quality.py explains).

    `n_novel`: distinct words of the response's own (`len(set(novel_words(...)))`); `diversity` over its
    content words; `order_gain` the word-order gain in nats/token (None: not judged); `coherence` the
    prompt-response cosine (None: not judged); `language_ok` from `response_language_ok` (None: not
    judged); `refusal` from `is_refusal`. No words of its own gives 0.
    """
    quality = content_factor(n_novel) * diversity * order_factor(order_gain) * topic_factor(coherence)
    if language_ok is False:
        quality *= WRONG_LANGUAGE_FACTOR
    if refusal:
        quality *= REFUSAL_FACTOR
    return quality


#: MiniLM cosine below which an English answer is tagged "off topic"
OFF_TOPIC_FLAG_COSINE = 0.1
#: share of the words copied from the prompt at which a response is tagged "copied"
COPIED_FLAG_SHARE = 0.8


def degeneration_tags(
    tokens: Sequence[str],
    language_ok: bool | None,
    finish_reason: str | None,
    coherence: float | None = None,
    *,
    copied: float | None = None,
    refusal: bool = False,
    order_gain: float | None = None,
) -> list[str]:
    """Visible labels for a response, in a fixed order, so a report shows why its quality is low.

    "empty": no text tokens. "repetition": seq-rep-4 >= `REPETITION_REP4`. "copied": at least
    `COPIED_FLAG_SHARE` of its words copy the prompt. "refusal": `is_refusal`. "scrambled": the word-order
    gain is below half of `FULL_ORDER_GAIN`. "wrong language": `language_ok` is False. "truncated":
    finish_reason is "length" (hit max_new_tokens). "off topic": the prompt-response cosine is below
    `OFF_TOPIC_FLAG_COSINE` (pass None where it is not judged).
    """
    tags = []
    if not tokens:
        tags.append("empty")
    elif rep_n(tokens, 4) >= REPETITION_REP4:
        tags.append("repetition")
    if copied is not None and copied >= COPIED_FLAG_SHARE:
        tags.append("copied")
    if refusal:
        tags.append("refusal")
    if order_gain is not None and order_gain < FULL_ORDER_GAIN / 2:
        tags.append("scrambled")
    if language_ok is False:
        tags.append("wrong language")
    if finish_reason == LENGTH_FINISH:
        tags.append("truncated")
    if coherence is not None and coherence < OFF_TOPIC_FLAG_COSINE:
        tags.append("off topic")
    return tags
