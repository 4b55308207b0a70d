"""The batched generation engine: chat template, left padding, any mix of steering methods and
configs per batch, and per-row seeded sampling so that results do not depend on batch composition.

The engine knows nothing of any method: a method renders its rows' messages and steers the batch
(`methods.base.SteeringMethod`).

Sampling is Gumbel-max: each row adds Gumbel noise drawn from a counter-based hash of
(row seed, step, vocab index) to its processed logits and takes the argmax. That samples exactly
from softmax(logits / T) (after top-k/top-p), and a row's random numbers depend only on its own
seed, so trial t of the baseline and trial t of every steered config use the same draws (paired).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from .methods.base import GridPoint, SteeringError, SteeringMethod
from .prompts import encode, render_chat

if TYPE_CHECKING:
    from .tasks.base import Case

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings shared by every row of a run."""

    max_new_tokens: int = 128
    do_sample: bool = True
    # None = the model's own generation_config value (what `model.generate(do_sample=True)` would use)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int = 0
    static_cache: bool = False  # StaticCache (+ torch.compile on CUDA): pays off on large grids

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature is not None and not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")


    def resolved(self, model: Any) -> GenerationSettings:
        """Fill unset sampling knobs from the model's generation_config, so caches and reports see real values."""
        if not self.do_sample:
            return dataclasses.replace(self, temperature=None, top_p=None, top_k=None)
        gc = getattr(model, "generation_config", None)
        return dataclasses.replace(
            self,
            temperature=self.temperature if self.temperature is not None else (getattr(gc, "temperature", None) or 1.0),
            top_p=self.top_p if self.top_p is not None else getattr(gc, "top_p", None),
            top_k=self.top_k if self.top_k is not None else getattr(gc, "top_k", None),
        )


@dataclass(frozen=True)
class GenerationRequest:
    """One row to generate: a case under one config (a method at a value, or the baseline) and trial."""

    case: Case
    config: GridPoint
    trial: int

    @property
    def key(self) -> str:
        return self.case.key


@dataclass(frozen=True)
class Generation:
    request: GenerationRequest
    text: str
    n_tokens: int
    finish_reason: str  # "stop" (end-of-turn token) or "length" (max_new_tokens reached)
    seed: int


def row_seed(seed: int, key: str, trial: int) -> int:
    """A row's sampling seed from (run seed, case, trial): the same for every steering config."""
    digest = hashlib.sha256(f"{seed}\x1f{key}\x1f{trial}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) on int64 tensors holding values < 2**32."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


_INDEX_HASH: dict[tuple[int, str], torch.Tensor] = {}


def _index_hash(vocab: int, device: torch.device) -> torch.Tensor:
    """Hashed vocab indices, computed once per (vocab size, device): the per-step work is then one mix."""
    k = (vocab, str(device))
    if k not in _INDEX_HASH:
        _INDEX_HASH[k] = _mix32(torch.arange(vocab, device=device, dtype=torch.int64) ^ 0x85EBCA6B)
    return _INDEX_HASH[k]


def hash_uniform(seeds: torch.Tensor, step: int, vocab: int) -> torch.Tensor:
    """Uniform (0, 1) float32 numbers [rows, vocab] that depend only on (row seed, step, vocab index)."""
    s = _mix32(_mix32(seeds.to(torch.int64) & _MASK32) ^ ((step * 0x9E3779B9) & _MASK32))
    x = _mix32(s[:, None] ^ _index_hash(vocab, seeds.device)[None, :])
    # the top 24 bits -> (0, 1); float32 holds them exactly, so no value rounds to 0 or 1
    return ((x >> 8).to(torch.float32) + 0.5) * (1.0 / 16777216.0)


class GumbelSampler(LogitsProcessor):
    """Adds per-row seeded Gumbel noise; greedy decoding of the result samples from softmax(scores)."""

    def __init__(self, seeds: Sequence[int], prompt_len: int) -> None:
        self.seeds = torch.tensor(list(seeds), dtype=torch.int64)
        self.prompt_len = prompt_len

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        u = hash_uniform(self.seeds.to(scores.device), step, scores.shape[-1])
        return scores.float() - torch.log(-torch.log(u))


class TopPCandidates(LogitsProcessor):
    """Nucleus (top-p) filtering computed on the `k` most likely tokens instead of a full vocabulary sort.

    A token is kept when the probability mass of the tokens above it is < top_p, as in transformers'
    TopPLogitsWarper. Whenever the k candidates hold at least top_p of the mass, every kept token is
    among them and the result is the same; rows where they don't fall back to the full sort. The full
    sort of 16 x 49k logits took 22% of a CPU decode step; topk(256) costs a few percent of that.
    """

    def __init__(self, top_p: float, k: int = 256) -> None:
        self.top_p, self.k = float(top_p), k
        self._full = TopPLogitsWarper(top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.k, scores.shape[-1])
        logits = scores.float()
        top, idx = logits.topk(k, dim=-1)
        p = (top - torch.logsumexp(logits, dim=-1, keepdim=True)).exp()
        cum = p.cumsum(-1)
        keep = (cum - p) < self.top_p
        keep[:, 0] = True
        out = torch.full_like(logits, -math.inf).scatter_(-1, idx, top.masked_fill(~keep, -math.inf))
        short = cum[:, -1] < self.top_p
        if short.any():
            out[short] = self._full(input_ids[short], logits[short])
        return out


class OutOfMemory(Exception):
    """Raised (or mapped from torch.OutOfMemoryError) when a batch does not fit."""


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, (OutOfMemory, torch.OutOfMemoryError)) or "out of memory" in str(exc).lower()


@dataclass
class Progress:
    """What a progress callback gets after each batch."""

    done: int
    total: int
    new_tokens: int
    elapsed_s: float
    per_replica: Mapping[str, int] | None = None  # rows each replica of a cluster backend delivered

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / self.done * (self.total - self.done) if self.done else float("nan")


@dataclass
class GenerationEngine:
    """Generates rows of any mix of steering methods and the baseline in shared batches.

    Each row is rendered by its config's method (the baseline: the prompt as one user turn); then every
    method of the engine steers the whole batch, each at its own rows' values and None elsewhere. So a
    row runs the same kernels whatever its batch partners, and with per-row seeds its text does not
    depend on them. Methods must be prepared (`SteeringMethod.prepare`) before generating.
    """

    model: Any
    tokenizer: Any
    methods: Mapping[str, SteeringMethod] = field(default_factory=dict)
    settings: GenerationSettings = field(default_factory=GenerationSettings)
    batch_size: int = 16
    sort_by_length: bool = True
    _oom_logged: bool = field(default=False, init=False, repr=False)

    def validate(self, requests: Sequence[GenerationRequest]) -> None:
        """Every steered row's method is one of the engine's; cheap, so call it before long runs."""
        for r in requests:
            for method, _ in r.config.steering():
                if method not in self.methods:
                    have = ", ".join(self.methods) or "none"
                    raise SteeringError(f"row {r.key!r} asks for steering method {method!r}, but the engine "
                                        f"has {have}; pass it in GenerationEngine(methods=...)")

    def check_context(self, requests: Sequence[GenerationRequest]) -> None:
        """Refuse a row whose rendered prompt plus `max_new_tokens` exceeds the model's context: past it the
        model runs on positions it was never trained on and its text is noise, scored as if it were not."""
        window = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        if not window:
            return
        for r in requests:
            n = len(self.tokenizer(render_chat(self.tokenizer, self.messages(r)), add_special_tokens=False).input_ids)
            if n + self.settings.max_new_tokens > window:
                raise ValueError(f"case {r.case.key!r} ({r.config.label}): its prompt of {n} tokens plus "
                                 f"{self.settings.max_new_tokens} new tokens exceeds the model's context of {window} "
                                 "tokens; shorten the case or lower --steer-max-new-tokens")

    def messages(self, request: GenerationRequest) -> list[dict[str, str]]:
        """The chat messages of one row, as its method (or a combined config's prompt-changing part) renders them."""
        from .methods.combine import render

        return render(request.config, request.case, self.methods)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        on_batch: Callable[[list[Generation]], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> list[Generation]:
        """Generate all requests; `on_batch` sees each finished batch at once (e.g. to persist it)."""
        self.validate(requests)
        order = list(range(len(requests)))
        if self.sort_by_length:  # less padding; results don't move because seeding is per row
            lengths = [sum(len(m["content"]) for m in self.messages(r)) for r in requests]
            order.sort(key=lambda i: lengths[i])
        results: dict[int, Generation] = {}
        start, new_tokens = time.perf_counter(), 0
        pending = order
        while pending:
            chunk = pending[: self.batch_size]
            try:
                gens = self._generate_batch([requests[i] for i in chunk])
            except Exception as exc:
                if not _is_oom(exc) or self.batch_size == 1:
                    raise
                self.batch_size = max(1, self.batch_size // 2)
                if not self._oom_logged:
                    log.warning("out of memory during generation; batch size halved to %d and retrying",
                                self.batch_size)
                    self._oom_logged = True
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for i, g in zip(chunk, gens, strict=True):
                results[i] = g
            pending = pending[len(chunk):]
            new_tokens += sum(g.n_tokens for g in gens)
            if on_batch is not None:
                on_batch(gens)
            if on_progress is not None:
                on_progress(Progress(len(results), len(requests), new_tokens, time.perf_counter() - start))
        return [results[i] for i in range(len(requests))]

    def _processors(self, seeds: list[int], prompt_len: int) -> LogitsProcessorList:
        s = self.settings.resolved(self.model)
        if not s.do_sample:
            return LogitsProcessorList()
        procs: list[LogitsProcessor] = []
        if s.temperature is not None and s.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(s.temperature))
        if s.top_k is not None:
            procs.append(TopKLogitsWarper(s.top_k))
        if s.top_p is not None and s.top_p < 1.0:
            procs.append(TopPCandidates(s.top_p))
        procs.append(GumbelSampler(seeds, prompt_len))
        return LogitsProcessorList(procs)

    def _eos_ids(self) -> list[int]:
        eos = self.model.generation_config.eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos or [])
        if not ids and self.tokenizer.eos_token_id is not None:
            ids = [self.tokenizer.eos_token_id]
        return ids

    @torch.inference_mode()
    def _generate_batch(self, batch: list[GenerationRequest]) -> list[Generation]:
        dev = next(self.model.parameters()).device
        enc = encode(self.tokenizer, [render_chat(self.tokenizer, self.messages(r)) for r in batch], device=dev)
        seeds = [row_seed(self.settings.seed, r.key, r.trial) for r in batch]
        prompt_len = enc.input_ids.shape[1]
        eos = self._eos_ids()
        config = GenerationConfig(
            max_new_tokens=self.settings.max_new_tokens,
            do_sample=False,  # sampling happens in GumbelSampler, per row
            # greedy no-op values, so the model's sampling defaults aren't merged in (and warned about);
            # our own warpers above apply the resolved temperature/top-p/top-k
            temperature=1.0, top_p=1.0, top_k=50,
            eos_token_id=eos or None,
            pad_token_id=self.tokenizer.pad_token_id,
            cache_implementation="static" if self.settings.static_cache else None,
        )
        cases = [r.case for r in batch]
        with contextlib.ExitStack() as stack:
            for name, method in self.methods.items():
                values = [r.config.value_for(name) for r in batch]
                stack.enter_context(method.steer(self.model, enc, cases, values))
            out = self.model.generate(
                input_ids=enc.input_ids, attention_mask=enc.attention_mask, generation_config=config,
                logits_processor=self._processors(seeds, prompt_len),
            )
        rows = enumerate(zip(batch, seeds, strict=True))
        return [self._decode(r, out[i, prompt_len:], s, eos) for i, (r, s) in rows]

    def _decode(self, req: GenerationRequest, tokens: torch.Tensor, seed: int, eos: list[int]) -> Generation:
        toks = tokens.tolist()
        stop = next((j for j, t in enumerate(toks) if t in eos), None)
        kept = toks if stop is None else toks[:stop]
        text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
        n = len(toks) if stop is None else stop + 1
        return Generation(req, text, n, "length" if stop is None else "stop", seed)


def grid_requests(cases: Iterable[Case], configs: Sequence[GridPoint],
                  trials: Iterable[int]) -> list[GenerationRequest]:
    """Every (case, config, trial) row of a sweep, trial-major then config then case."""
    cases, trials = list(cases), list(trials)
    return [GenerationRequest(c, cfg, t) for t in trials for cfg in configs for c in cases]
