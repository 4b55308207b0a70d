"""The measures behind the side effects and the headline quality, as plain functions over strings and numbers
(no torch, no model).

`metrics/scorers.py` turns these into named scores and documents the headline formula, its anchors
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
- `order_probes`: windows over the whole text whose word order the model under test is asked about.
- `headline_quality`: the headline formula from these parts (metrics/scorers.py documents it).
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
#: no answer of its own: empty, only copied from the prompt, a restatement of it, or stock phrases alone
NO_ANSWER_FACTOR = 0.1
#: an answer that stopped by itself inside a sentence (not one cut at the token limit: that is `truncated`)
UNFINISHED_FACTOR = 0.5
#: a copied span: this many consecutive words that also stand in that order in the prompt
COPY_NGRAM = 4
#: a restatement: at least this share of the response's own words are the prompt's (`prompt_word_share`;
#: natural answers bring their own words), and at least `RESTATE_MIN_WORDS` words or mostly a verbatim copy
RESTATE_SHARE = 0.75
RESTATE_MIN_WORDS = 8
#: MiniLM prompt-response cosine from which an English answer counts as fully on topic; the topic
#: factor falls linearly to `OFF_TOPIC_FACTOR` at cosine <= 0 (GPT-4's compliant English IFEval answers:
#: 0.11-0.91, 8 of 162 below 0.3, the lowest still scoring 0.53; another task's answer mostly below 0.1)
ON_TOPIC_COSINE = 0.3
OFF_TOPIC_FACTOR = 0.25
#: a window of the answer whose cosine to the prompt is below this has drifted off topic, whatever the
#: whole answer's cosine: the topic factor then reads that window (at 0.05, 3 of 162 compliant answers had one)
DRIFT_COSINE = 0.0
#: the highest word-order mark (nats per word, or per character in scripts without spaces): a language's
#: mark is `MARK_SHARE` of the model's gain on its reference paragraph, at most this; the order factor is 1
#: at the mark and falls linearly to `ORDER_FLOOR`
FULL_ORDER_GAIN = 1.5
ORDER_FLOOR = 0.1
#: per language, the mark is this share of the model's gain on a reference paragraph in that language, and
#: a language whose reference gains less than `MIN_KNOWN_GAIN` is one the model cannot judge (not judged)
MARK_SHARE = 1 / 3
MIN_KNOWN_GAIN = 0.6
#: the order test reads windows of this many words (characters, in scripts written without spaces)
ORDER_WORDS = 32
ORDER_CHARS = 64
#: at most this many order windows per response, spread evenly over it: the test's cost is bounded
MAX_ORDER_WINDOWS = 4
#: fewer words than this (characters / 2 in scripts written without spaces): no order judgement
MIN_ORDER_WORDS = 12
#: the repetition check reads windows of this many units (whitespace-separated), over the whole answer, and
#: counts repeated n-grams of `REPETITION_N` units; a block of at least `LOOP_MIN_UNITS` units (of a period
#: up to `LOOP_MAX_PERIOD`) said three times in a row is a loop outright
REPETITION_WINDOW = 64
REPETITION_N = 6
#: a repeat counts when it repeats the last this many units: a loop does; a chorus after a verse does not
REPETITION_NEAR = 32
LOOP_MIN_UNITS = 6
LOOP_MAX_PERIOD = 64
#: windowed seq-rep-6 up to which nothing is marked down (GPT-4's compliant IFEval answers: 95% at or below
#: 0.15), and at which a response is tagged "repetition" and marked down to `REPETITION_FLOOR` (the looped
#: answers of the tests start at 0.4)
REPETITION_FREE = 0.15
REPETITION_MARK = 0.3
REPETITION_FLOOR = 0.1
#: among sound answers, a tie-break of at most `SUBSTANCE_WEIGHT`: distinct words of the answer's own (not
#: copied from the prompt), up to `SUBSTANCE_WORDS`. People prefer the answer with more substance (PandaLM:
#: damage alone decides 44% of pairs); a short answer that does what was asked still scores >= 0.95
SUBSTANCE_WEIGHT = 0.05
SUBSTANCE_WORDS = 40
#: a last line of prose with at least this many words and no closing mark is a sentence left unfinished
UNFINISHED_WORDS = 6
#: a last paragraph of at most this many words is a closing or sign-off ("Best wishes from all of us")
SIGN_OFF_WORDS = 8
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
    the prompt's language (or one the prompt names, as "into German") when `expected` is None.

    None when it cannot be judged: the response (or, without `expected`, the prompt) has fewer than
    `MIN_LANGUAGE_WORDS` words of letters, where langdetect guesses. Regions are ignored ("zh-cn"
    counts as "zh").
    """
    target = expected.split("-")[0].lower() if expected else detect_language(prompt)
    if target is None:
        return None
    found = detect_language(response)
    if found is None:
        return None
    # without a stated language, one the prompt names is asked for ("Translate ... into German")
    return found == target or (expected is None and _language_named(found, prompt))


def _language_named(code: str, prompt: str) -> bool:
    """Whether `prompt` names the language `code` in English ("German" for "de")."""
    from if_verifiable.ifeval.instructions_util import LANGUAGE_CODES

    name = LANGUAGE_CODES.get(code)
    return bool(name) and re.search(rf"\b{re.escape(name)}\b", prompt, re.IGNORECASE) is not None


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


#: words of stock openers and closers ("Sure! Here you go.", "I hope this helps!"): an answer made of
#: these alone announces content and gives none. English only; "yes", "no" and numbers are answers.
_STOCK = frozenset(
    "sure certainly of course absolutely okay ok alright great here is are you go s below the following "
    "i hope this that helps help let me know if need anything else my answer to your request an a "
    "explanation response happy glad would be it will and with for as requested asked".split()
)
#: what a restatement wraps the request's words in ("So you want me to ...", "Let me repeat the task:")
_RESTATING = _STOCK | frozenset("so want like do understood task repeat what restate asking ask please which "
                                "need wish".split())


def prompt_word_share(response: str, prompt: str) -> float | None:
    """Share of the response's own words (outside spans copied from the prompt, and other than the words a
    restatement wraps a request in) that are the prompt's words: 1 when it adds nothing; None without words.

    A restatement of the request says the request's own words, reordered or not; an answer brings its own
    (GPT-4's compliant IFEval answers: at most 0.64, and 0.4 for 95% of them).
    """
    if not content_words(response):
        return None
    vocabulary = set(content_words(prompt))
    own = [w for w in novel_words(response, prompt) if w not in _RESTATING]
    return sum(w in vocabulary for w in own) / len(own) if own else 1.0


def restates_prompt(response: str, prompt: str) -> bool:
    """Whether the response only says the request back: at least `RESTATE_SHARE` of its own words are the
    prompt's (`prompt_word_share`), and it is either long enough to be more than a chosen option
    (`RESTATE_MIN_WORDS` words) or mostly a verbatim copy. A one-word answer taken from the prompt ("yes",
    a name offered) is no restatement.
    """
    share = prompt_word_share(response, prompt)
    if share is None or share < RESTATE_SHARE:
        return False
    copied = copied_share(response, prompt) or 0.0
    return len(content_words(response)) >= RESTATE_MIN_WORDS or copied >= 0.5


def content_free(response: str) -> bool:
    """Whether the response has words, all of them stock openers and closers, and no number: no answer."""
    tokens = [t for t in text_tokens(strip_markup(response)) if _has_letter(t) or t.isdigit()]
    return bool(tokens) and all(t in _STOCK for t in tokens)


_RULE_LINE = re.compile(r"(?m)^[ \t]*[^\w\s]{3,}[ \t]*$")


def sections(text: str) -> list[str]:
    """The text split at rule lines ("******", "---"): parts that the damage checks read separately, so
    two responses asked for, or a divided answer, do not count as repeating each other."""
    return [part for part in _RULE_LINE.split(text) if part.strip()]


def windows(items: Sequence[str], size: int, max_windows: int | None = None) -> list[list[str]]:
    """Windows of `size` items over the whole sequence, a half window apart (the last one ends at the end);
    at most `max_windows`, spread evenly, where cost must stay bounded. One window when it is short."""
    items = list(items)
    if len(items) <= size:
        return [items]
    count = math.ceil((len(items) - size) / max(1, size // 2)) + 1
    if max_windows is not None:
        count = min(count, max_windows)
    if count == 1:
        return [items[:size]]
    starts = [round(i * (len(items) - size) / (count - 1)) for i in range(count)]
    return [items[s : s + size] for s in starts]


def repeated_mask(units: Sequence[str], n: int = 4, within: int | None = None) -> list[bool]:
    """Per n-gram start: does this n-gram repeat one that began earlier (within the last `within` units;
    anywhere before it when None)?"""
    last: dict[tuple[str, ...], int] = {}
    mask = []
    for i in range(len(units) - n + 1):
        gram = tuple(units[i : i + n])
        seen = last.get(gram)
        mask.append(seen is not None and (within is None or i - seen <= within))
        last[gram] = i
    return mask


_UNIT_LOOP = re.compile(r"(.{1,4})\1{5,}.{0,4}")


def _unit_loop(unit: str) -> bool:
    """A unit that is itself a loop: a pattern of 1-4 characters with a letter or digit, six times or more
    ("1.1.1.1.1.1.", "lalalalalala"); an ellipsis or a rule of dashes is none."""
    match = _UNIT_LOOP.fullmatch(unit)
    return match is not None and any(ch.isalnum() for ch in match.group(1))


_TABLE_RULE = re.compile(r"^[|:=+\-]+$")


def _units(text: str) -> list[str]:
    """Whitespace-separated units of the markup-stripped, lowercased text: words with their punctuation,
    and symbols standing alone ("{", '"'), so a loop of symbols is a loop too; a table's pipes and rules
    are left out, so a table's layout is not repetition."""
    return [u for u in strip_markup(text).lower().split() if not _TABLE_RULE.match(u)]


def _tandem_loop(units: Sequence[str], max_period: int = LOOP_MAX_PERIOD) -> int:
    """Length (in units) of the longest run of one block said at least three times in a row."""
    best = 0
    for period in range(1, min(max_period, len(units) // 3) + 1):
        run = 0
        for i in range(len(units) - period):
            run = run + 1 if units[i] == units[i + period] else 0
            if run >= 2 * period:
                best = max(best, run + period)
    return best


def worst_repetition(text: str, n: int = REPETITION_N, window: int = REPETITION_WINDOW) -> float:
    """How much of the answer's most repetitive stretch repeats the text just before it, per section
    (`sections`): the highest seq-rep-n (Welleck et al. 2020) of any `window`-unit window over the whole
    text, counting repeats of the previous `REPETITION_NEAR` units only, n shortened to a third of a short section;
    and 1 where a block of at least `LOOP_MIN_UNITS` units is said three times in a row, or one unit is a
    loop itself ("1.1.1.1.1.1"). A loop shows wherever it starts; a song's chorus after a verse, anaphora
    or repeated JSON keys stay low (n = 6 needs six units repeated in order, close by). 0 without n-grams.
    """
    worst = 0.0
    for part in sections(text):
        units = _units(part)
        if _tandem_loop(units) >= LOOP_MIN_UNITS or any(_unit_loop(u) for u in units):
            return 1.0
        k = max(1, min(n, len(units) // 3))
        mask = repeated_mask(units, k, REPETITION_NEAR)
        if not mask:
            continue
        size = max(1, window - k + 1)
        if len(mask) <= size:
            worst = max(worst, sum(mask) / len(mask))
            continue
        running = sum(mask[:size])
        best = running
        for i in range(size, len(mask)):
            running += mask[i] - mask[i - size]
            best = max(best, running)
        worst = max(worst, best / size)
    return worst


_REFUSAL = re.compile(
    # English: an apology or regret leading into "I can't", or a bare "I can't help with"
    r"\b(?:i'm|i am) (?:sorry|afraid)\b[^.!?]{0,40}?\bi (?:can't|cannot|can not|won't|will not|am unable|'m unable"
    r"|am not able|'m not able)\b"
    r"|\b(?:i )?apologi[sz]e\b[^.!?]{0,40}?\b(?:can't|cannot|can not|won't|unable|not able)\b"
    r"|^\W*sorry\b[^.!?]{0,40}?\b(?:can't|cannot|can not|won't|unable|not able)\b"
    r"|^\W*unfortunately\b[^.!?]{0,40}?\b(?:can't|cannot|can not|won't|unable|not able)\b"
    r"|^\W*(?:i|we) (?:can't|cannot|can not|won't|will not|am unable to|'m unable to|am not able to|'m not able to) "
    r"(?:help|assist|do|provide|write|comply|fulfil|fulfill|answer|create|complete|generate)\b"
    r"|\bas an ai\b[^.!?]{0,40}?\b(?:can't|cannot|can not|won't|unable|not able)\b"
    r"|\bas a language model\b[^.!?]{0,40}?\b(?:can't|cannot|can not|won't|unable|not able)\b"
    # the languages IFEval asks for: a regret word, then "I cannot" within the sentence
    r"|\b(?:lo siento|lo lamento|disculpa|perdón)\b[^.!?]{0,60}?\bno (?:puedo|me es posible)"  # es
    r"|\b(?:desculpe|sinto muito|lamento)\b[^.!?]{0,60}?\bnão (?:posso|consigo)"  # pt
    r"|\b(?:désolé|désolée|je regrette|malheureusement)\b[^.!?]{0,60}?\bne (?:peux|pourrai|suis pas en mesure)"  # fr
    r"|\b(?:es tut mir leid|leider|entschuldigung)\b[^.!?]{0,60}?\b(?:kann ich|ich kann)\b[^.!?]{0,40}?\bnicht"  # de
    r"|\b(?:mi dispiace|purtroppo|spiacente)\b[^.!?]{0,60}?\bnon (?:posso|sono in grado)"  # it
    r"|\b(?:przepraszam|niestety)\b[^.!?]{0,60}?\bnie (?:mogę|jestem w stanie)"  # pl
    r"|\b(?:valitettavasti|pahoittelen|olen pahoillani)\b[^.!?]{0,60}?\ben (?:voi|pysty)"  # fi
    r"|\b(?:samahani|pole)\b[^.!?]{0,60}?\bsi(?:wezi|taweza)"  # sw
    r"|\b(?:xin lỗi|rất tiếc)\b[^.!?]{0,60}?\bkhông thể"  # vi
    r"|(?:извините|простите|к сожалению|сожалею)[^.!?]{0,60}?не (?:могу|смогу|в состоянии)"  # ru
    r"|(?:вибачте|на жаль|перепрошую)[^.!?]{0,60}?не (?:можу|зможу)"  # uk
    r"|(?:съжалявам|извинете|за съжаление)[^.!?]{0,60}?не (?:мога|бих могъл)"  # bg
    r"|(?:عذرًا|عذرا|آسف|للأسف|أعتذر)[^.!?؟]{0,60}?(?:لا أستطيع|لا يمكنني|لا يمكنني)"  # ar
    r"|(?:متاسفم|متأسفم|ببخشید|متأسفانه)[^.!?؟]{0,60}?(?:نمی‌توانم|نمیتوانم|نمی توانم)"  # fa
    r"|(?:معذرت|معاف کیجیے|افسوس)[^.!?؟۔]{0,60}?(?:نہیں کر سکتا|نہیں کر سکتی|سے قاصر)"  # ur
    r"|(?:סליחה|מצטער|מצטערת|לצערי)[^.!?]{0,60}?(?:לא יכול|לא יכולה|איני יכול)"  # he
    r"|(?:क्षमा|माफ़|माफ|खेद|दुर्भाग्य)[^।.!?]{0,80}?(?:नहीं कर सकत|असमर्थ|सक्दिन|शकत नाही)"  # hi, ne, mr
    r"|(?:দুঃখিত|ক্ষমা)[^।.!?]{0,80}?(?:পারব না|পারি না|অক্ষম)"  # bn
    r"|(?:ક્ષમા|માફ|દિલગીર)[^.!?]{0,80}?(?:શકતો નથી|શકતી નથી|અસમર્થ)"  # gu
    r"|(?:ਮਾਫ਼|ਮਾਫ|ਅਫ਼ਸੋਸ)[^.!?।]{0,80}?(?:ਨਹੀਂ ਕਰ ਸਕਦਾ|ਨਹੀਂ ਕਰ ਸਕਦੀ|ਅਸਮਰੱਥ)"  # pa
    r"|(?:மன்னிக்கவும்|வருந்துகிறேன்)[^.!?]{0,80}?(?:முடியாது|இயலாது)"  # ta
    r"|(?:క్షమించండి|క్షమించాలి)[^.!?]{0,80}?(?:చేయలేను|సాధ్యం కాదు)"  # te
    r"|(?:ಕ್ಷಮಿಸಿ|ವಿಷಾದ)[^.!?]{0,80}?(?:ಸಾಧ್ಯವಿಲ್ಲ|ಮಾಡಲಾರೆ)"  # kn
    r"|(?:ക്ഷമിക്കണം|ഖേദിക്കുന്നു)[^.!?]{0,80}?(?:കഴിയില്ല|സാധ്യമല്ല)"  # ml
    r"|(?:ขอโทษ|ขออภัย|เสียใจ)[^.!?]{0,80}?(?:ไม่สามารถ|ทำไม่ได้)"  # th
    r"|(?:申し訳|すみません|ごめんなさい)[^。!?！？]{0,60}?(?:できません|お応えできません|致しかねます)"  # ja
    r"|(?:죄송|미안|유감)[^.!?]{0,60}?(?:수 없습니다|수 없어요|드릴 수 없)"  # ko
    r"|(?:抱歉|对不起|對不起|很遗憾)[^。!?！？]{0,40}?(?:无法|無法|不能)",  # zh
    re.IGNORECASE,
)


def is_refusal(text: str) -> bool:
    """Whether the first 40 words decline the request: "I'm sorry, but I can't ...", "I apologize, but
    I cannot ...", "Unfortunately, I'm not able to ...", "As an AI, I cannot ...", and a regret followed by "I cannot"
    in each language IFEval asks for. An apology that goes on to answer ("I'm sorry to hear that. Here ...")
    is no refusal.
    """
    head = " ".join(strip_markup(text).replace("\u2019", "'").split()[:40])
    return bool(_REFUSAL.search(head))


def _no_space_text(text: str) -> bool:
    letters = [c for c in text if _has_letter(c)]
    return bool(letters) and sum(_no_space_script(c) for c in letters) > len(letters) / 2


def order_probes(text: str, seed: str = "") -> list[tuple[str, str]]:
    """(window, the window's words in a seeded random order) over the whole text, for the word-order test.

    Windows of `ORDER_WORDS` words (`ORDER_CHARS` characters, shuffled as characters, in scripts written
    without spaces) per section, markup stripped and lowercased (formatting and capitals that were asked
    for do not move them); at most `MAX_ORDER_WINDOWS` per text, spread evenly, so the cost is bounded.
    Windows shorter than `MIN_ORDER_WORDS` words are not judged. The shuffle's seed is `seed` and the window.
    """
    probes: list[tuple[str, str]] = []
    for part in sections(text):
        plain = " ".join(strip_markup(part).lower().split())
        if _no_space_text(plain):
            chars = [c for c in plain if not c.isspace()]
            for window in windows(chars, ORDER_CHARS, MAX_ORDER_WINDOWS):
                if len(window) >= 2 * MIN_ORDER_WORDS:
                    shuffled = window[:]
                    random.Random(seed + "".join(window)).shuffle(shuffled)
                    probes.append(("".join(window), "".join(shuffled)))
            continue
        for window in windows(plain.split(), ORDER_WORDS, MAX_ORDER_WINDOWS):
            if len(window) >= MIN_ORDER_WORDS:
                shuffled = window[:]
                random.Random(seed + " ".join(window)).shuffle(shuffled)
                probes.append((" ".join(window), " ".join(shuffled)))
    if len(probes) > MAX_ORDER_WINDOWS:  # many sections: keep an even spread
        step = len(probes) / MAX_ORDER_WINDOWS
        probes = [probes[int(i * step)] for i in range(MAX_ORDER_WINDOWS)]
    return probes


def probe_units(probe: str) -> int:
    """How many units a probe shuffles: words, or characters in scripts written without spaces."""
    return len(probe.replace(" ", "")) if _no_space_text(probe) else len(probe.split())


_LIST_START = re.compile(r"^\s*(?:[-*+•|>#]|\d{1,3}[.)]|<<)")
_TRAILING_TAGS = re.compile(r"(?:\s+(?:[#@]\w+|https?://\S+))+\s*$")


def ends_unfinished(text: str) -> bool:
    """Whether the answer stops inside a sentence: its last line is prose of at least `UNFINISHED_WORDS` words
    (`2 x` that many characters in scripts without spaces) ending on a letter, or any line ending on a comma,
    colon or semicolon. List items, headings, table rows, titles, a closing paragraph of a few words (a
    sign-off), trailing hashtags or links, and a closing bracket, quote or code fence end answers too.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return False
    last = _TRAILING_TAGS.sub("", lines[-1].strip()) or lines[-1].strip()
    if _LIST_START.match(last):
        return False
    if last[-1] in ",;:":
        return True
    if not _has_letter(last[-1]):
        return False
    if _no_space_text(last):
        return len(last) >= 2 * UNFINISHED_WORDS
    words = len(last.split())
    own_paragraph = len(lines) > 1 and text.rstrip().rfind("\n\n") > text.rstrip().rfind(lines[-1].strip()) - 3
    return words >= UNFINISHED_WORDS and not (own_paragraph and words <= SIGN_OFF_WORDS)


def answer_factor(response: str, prompt: str, *, echo_expected: bool = False) -> float:
    """1 for an answer; `NO_ANSWER_FACTOR` for no words of its own (empty, or only spans copied from the
    prompt), a restatement of the prompt, or stock phrases alone. `echo_expected`: the case asks for the
    prompt said back or for one of the options it lists, so copying it is compliance."""
    tokens = [t for t in text_tokens(strip_markup(response)) if _has_letter(t) or t.isdigit()]
    if not tokens:
        return NO_ANSWER_FACTOR
    if content_free(response):
        return NO_ANSWER_FACTOR
    if not echo_expected and (not novel_words(response, prompt) and not any(t.isdigit() for t in tokens)
                              or restates_prompt(response, prompt)):
        return NO_ANSWER_FACTOR
    return 1.0


def repetition_factor(worst_rep: float) -> float:
    """1 up to a `worst_repetition` of `REPETITION_FREE`, down linearly to `REPETITION_FLOOR` at `REPETITION_MARK`."""
    span = (worst_rep - REPETITION_FREE) / (REPETITION_MARK - REPETITION_FREE)
    return 1.0 - (1.0 - REPETITION_FLOOR) * min(1.0, max(0.0, span))


def order_factor(gain: float | None, mark: float = FULL_ORDER_GAIN) -> float:
    """1 at a word-order gain of `mark` nats per word or more (the language's mark, `FULL_ORDER_GAIN` at
    most), falling linearly to `ORDER_FLOOR`; 1 when not judged (None: too short, or a language the model
    under test does not know)."""
    if gain is None or math.isnan(gain):
        return 1.0
    return min(1.0, max(ORDER_FLOOR, gain / mark))


def topic_factor(cosine: float | None) -> float:
    """1 at a prompt-response cosine of `ON_TOPIC_COSINE` or more, falling linearly to `OFF_TOPIC_FACTOR` at 0;
    1 when not judged (None)."""
    if cosine is None:
        return 1.0
    on_topic = min(1.0, max(0.0, cosine) / ON_TOPIC_COSINE)
    return OFF_TOPIC_FACTOR + (1.0 - OFF_TOPIC_FACTOR) * on_topic


def headline_quality(
    answer: float,
    worst_rep: float,
    *,
    order_gain: float | None = None,
    order_mark: float = FULL_ORDER_GAIN,
    coherence: float | None = None,
    language_ok: bool | None = None,
    refusal: bool = False,
    unfinished: bool = False,
    own_words: int | None = None,
) -> float:
    """answer · repetition · order · topic · language · refusal · ending · substance, in [0, 1]
    (metrics/scorers.py explains).

    `answer` from `answer_factor`; `worst_rep` from `worst_repetition`; `order_gain` the worst window's
    word-order gain in nats per word (None: not judged) against `order_mark`, the answer's language's mark;
    `coherence` the prompt-response cosine of the worst
    window (None: not judged); `language_ok` from `response_language_ok`; `refusal` from `is_refusal`;
    `unfinished` from `ends_unfinished`, for an answer that stopped by itself; `own_words` the distinct words
    of its own (None: the substance tie-break is left out). Only the tie-break counts words, and it moves a
    sound answer between 0.95 and 1: a short answer that does what was asked is never damage.
    """
    quality = answer * repetition_factor(worst_rep) * order_factor(order_gain, order_mark) * topic_factor(coherence)
    if language_ok is False:
        quality *= WRONG_LANGUAGE_FACTOR
    if refusal:
        quality *= REFUSAL_FACTOR
    if unfinished:
        quality *= UNFINISHED_FACTOR
    if own_words is not None:
        quality *= 1.0 - SUBSTANCE_WEIGHT * (1.0 - min(1.0, own_words / SUBSTANCE_WORDS))
    return quality


#: MiniLM cosine below which an English answer (or a window of it) is tagged "off topic"
OFF_TOPIC_FLAG_COSINE = 0.1
#: share of the words copied from the prompt at which a response is tagged "copied"
COPIED_FLAG_SHARE = 0.8


def degeneration_tags(
    tokens: Sequence[str],
    language_ok: bool | None,
    finish_reason: str | None,
    coherence: float | None = None,
    *,
    worst_rep: float = 0.0,
    copied: float | None = None,
    refusal: bool = False,
    order_gain: float | None = None,
    order_mark: float = FULL_ORDER_GAIN,
    no_answer: bool = False,
    unfinished: bool = False,
) -> list[str]:
    """Visible labels for a response, in a fixed order, so a report shows why its quality is low.

    "empty": no text tokens. "repetition": `worst_repetition` >= `REPETITION_MARK`. "copied": at
    least `COPIED_FLAG_SHARE` of its words copy the prompt. "no answer": `answer_factor` found no answer
    of its own (restated prompt, stock phrases). "refusal": `is_refusal`. "scrambled": some window's
    word-order gain is below half of `order_mark` (None: not judged). "wrong language": `language_ok` is False.
    "unfinished": stopped by itself inside a sentence. "truncated": finish_reason is "length" (hit
    max_new_tokens). "off topic": a window's prompt cosine is below `OFF_TOPIC_FLAG_COSINE` (None: not judged).
    """
    tags = []
    if not tokens:
        tags.append("empty")
    elif worst_rep >= REPETITION_MARK:
        tags.append("repetition")
    if copied is not None and copied >= COPIED_FLAG_SHARE:
        tags.append("copied")
    if no_answer and tokens and "copied" not in tags:
        tags.append("no answer")
    if refusal:
        tags.append("refusal")
    if order_gain is not None and order_gain < order_mark / 2:
        tags.append("scrambled")
    if language_ok is False:
        tags.append("wrong language")
    if unfinished:
        tags.append("unfinished")
    if finish_reason == LENGTH_FINISH:
        tags.append("truncated")
    if coherence is not None and coherence < OFF_TOPIC_FLAG_COSINE:
        tags.append("off topic")
    return tags
