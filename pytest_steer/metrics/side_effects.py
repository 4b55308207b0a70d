"""Side effects of steering, as plain functions over strings and numbers (no torch, no model).

`metrics/quality.py` turns these into named scores and documents the headline formula, its anchors
and what it can and cannot see. Each function here cites where its measure comes from:

- `text_tokens`: model-independent tokens (lowercased words, numbers, single punctuation marks; one
  token per character in scripts written without spaces), so repetition scores compare across models.
- `rep_n`: seq-rep-n of Welleck et al. 2020 ("Neural Text Generation with Unlikelihood Training"),
  the share of the response's n-grams that repeat an earlier one; `rep_n(tokens, 4)` is seq-rep-4.
- `diversity`: Π_{n=2..4} (1 − rep-n), from Su et al. 2022 ("A Contrastive Framework for Neural
  Text Generation"); 1 for text without repeated n-grams, near 0 for a loop.
- `detect_language`, `expected_language`, `response_language_ok`: is the response in the language
  that was asked for (langdetect, seeded).
- `length_ratio`: response length against the unsteered response to the same prompt.
- `headline_quality`: the headline formula, from the scores above and the model's fluency.
- `degeneration_tags`: visible labels for the report ("repetition", "wrong language", ...).
"""

from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Sequence
from typing import Any

#: below this many letter words (or characters, in scripts written without spaces) langdetect is
#: unreliable: it calls "Have fun!" Danish and "No problem at all." Catalan
MIN_LANGUAGE_WORDS = 5
WRONG_LANGUAGE_FACTOR = 0.1
TRUNCATED_FACTOR = 0.5
ON_TOPIC_COSINE = 0.1
OFF_TOPIC_FACTOR = 0.5
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
    DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes it deterministic
    try:
        return str(detect(text)).split("-")[0]
    except LangDetectException:
        return None


def expected_language(case: Any) -> str | None:
    """The language a case asks for: IFEval's `language:response_language` argument, else None (the
    prompt's own language is expected)."""
    ids = getattr(case, "instruction_id_list", None) or ()
    kwargs = getattr(case, "kwargs", None) or ()
    for iid, kw in zip(ids, kwargs, strict=False):  # a user task's cases may have tags without kwargs
        if iid == "language:response_language" and kw and kw.get("language"):
            return str(kw["language"])
    return None


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


def headline_quality(
    fluency: float,
    diversity: float,
    *,
    coherence: float | None = None,
    language_ok: bool | None = None,
    truncated: bool = False,
) -> float:
    """exp(fluency) · diversity² · language · truncation · topic, in [0, 1] (metrics/quality.py explains).

    `fluency` is the mean log-likelihood of the response tokens (nats per token), `diversity` is
    `diversity(text_tokens(response))`, `coherence` the prompt-response cosine (None: not judged, no
    topic factor), `language_ok` from `response_language_ok` (None: not judged, no factor),
    `truncated` whether generation stopped at max_new_tokens. A response without text (diversity 0)
    scores 0 even though its fluency is NaN; otherwise a NaN fluency gives NaN (no score).
    """
    if diversity <= 0.0:
        return 0.0
    quality = math.exp(fluency) * diversity**2
    if language_ok is False:
        quality *= WRONG_LANGUAGE_FACTOR
    if truncated:
        quality *= TRUNCATED_FACTOR
    if coherence is not None:
        on_topic = min(1.0, max(0.0, coherence) / ON_TOPIC_COSINE)
        quality *= OFF_TOPIC_FACTOR + (1.0 - OFF_TOPIC_FACTOR) * on_topic
    return quality


def degeneration_tags(
    tokens: Sequence[str],
    language_ok: bool | None,
    finish_reason: str | None,
    coherence: float | None = None,
) -> list[str]:
    """Visible labels for a response, in a fixed order, so a report shows why its quality is low.

    "empty": no text tokens. "repetition": seq-rep-4 >= `REPETITION_REP4`. "wrong language":
    `language_ok` is False. "truncated": finish_reason is "length" (hit max_new_tokens). "off topic":
    the prompt-response cosine is below `ON_TOPIC_COSINE` (pass None where it is not judged).
    """
    tags = []
    if not tokens:
        tags.append("empty")
    elif rep_n(tokens, 4) >= REPETITION_REP4:
        tags.append("repetition")
    if language_ok is False:
        tags.append("wrong language")
    if finish_reason == LENGTH_FINISH:
        tags.append("truncated")
    if coherence is not None and coherence < ON_TOPIC_COSINE:
        tags.append("off topic")
    return tags
