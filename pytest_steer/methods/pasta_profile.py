"""PASTA's model profiling (Zhang et al. 2023, "Tell Your Model Where to Attend", Sec. 3.2), scaled to a run.

The paper steers each attention head alone on a small training set of each task, ranks the heads by
task performance, keeps the top k per task and steers the intersection of those sets (LLaMA-7B: 17
heads in 11 layers of 1,024). Here, on held-out cases only (never the evaluated ones):

1. each layer's heads together, and the unsteered model, on PROFILE_CASES held-out cases per instruction
   type: greedy PROFILE_TOKENS-token responses at PROFILE_ALPHA (the paper's 0.01), scored by the task's
   judge (IFEval: its strict check);
2. each head alone of the TOP_LAYERS best layers, the same way;
3. the heads ranked by held-out accuracy (macro over instruction types), ties broken by the unsteered
   model's log-likelihood of the responses (the less a head degrades the text, the better), then by
   position; the top k = HEAD_SHARE of the model's heads (the reference's 17/1,024) are kept.

Differences from the paper, all from its cost: a layer pass first instead of every head (30 x 9 = 270
heads of the embedded model would be 270 generations per case), a handful of cases per type instead of
1,000 per task, short greedy responses, and one pooled ranking instead of the intersection of per-task
top-k sets (with a few binary judgements per type, per-type top-k sets are mostly ties, so their
intersection is noise). Every row of a pass runs in shared batches, each row with its own heads.

The result is cached (store kind "head-profile") under everything it depends on, like activation
steering's `auto` sweep, so a second run reads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .base import PrepareContext, SteeringError, user_turn

if TYPE_CHECKING:
    from ..records import Case

#: the PASTA method being profiled (typed loosely: `pasta` imports this module)
PASTA = Any

#: the profiling budget (see the module docstring); bump PROFILE_FORMAT when the computation changes
PROFILE_ALPHA, PROFILE_CASES, PROFILE_TOKENS, TOP_LAYERS = 100.0, 1, 24, 3
HEAD_SHARE = 17 / 1024
PROFILE_FORMAT = 1
_BATCH = 32

#: one candidate: {layer: heads}; {} is the unsteered model
Selection = Mapping[int, Sequence[int]]


@dataclass(frozen=True)
class Candidate:
    """One profiled selection and how it did on the held-out cases."""

    layer: int | None  # None: the unsteered model
    heads: tuple[int, ...]  # () with a layer: every head of it
    accuracy: float  # macro over instruction types
    log_likelihood: float  # mean per-token, of the responses under the unsteered model (NaN if none)

    def rank_key(self) -> tuple[float, float, int, tuple[int, ...]]:
        ll = self.log_likelihood if not math.isnan(self.log_likelihood) else -math.inf
        return (-self.accuracy, -ll, self.layer if self.layer is not None else -1, self.heads)


@dataclass
class HeadProfile:
    """What profiling found: the unsteered accuracy, each layer's and each profiled head's result, the heads
    kept, on how many held-out cases, and what it cost (0 when read from the cache)."""

    baseline: float
    layers: list[Candidate]
    heads: list[Candidate]
    chosen: dict[int, tuple[int, ...]]
    cases: int
    total_heads: int
    seconds: float = 0.0
    rows: int = 0
    cached: bool = field(default=False)

    def notes(self) -> list[str]:
        heads = "; ".join(f"layer {layer}: {', '.join(map(str, hs))}" for layer, hs in sorted(self.chosen.items()))
        best = ", ".join(str(c.layer) for c in sorted(self.layers, key=Candidate.rank_key)[:TOP_LAYERS])
        cost = "read from the cache" if self.cached else f"{self.rows} greedy responses in {self.seconds:.0f} s"
        return [f"pasta: profiled heads {heads} ({sum(map(len, self.chosen.values()))} of {self.total_heads}; "
                f"layers {best} profiled head by head; {self.cases} held-out cases at alpha {PROFILE_ALPHA:g}, "
                f"held-out accuracy unsteered {self.baseline:.2f}, best head "
                f"{max((c.accuracy for c in self.heads), default=math.nan):.2f}; {cost})"]


def top_k(total_heads: int) -> int:
    """How many heads profiling keeps: the reference's share (17 of LLaMA-7B's 1,024), at least one."""
    return max(1, round(HEAD_SHARE * total_heads))


def profile_cases(method: PASTA, held_out: Sequence[Case], found: Callable[[Case], bool]) -> list[Case]:
    """PROFILE_CASES held-out cases per instruction type whose highlights are `found` in their prompt
    (single-instruction ones first, then the shortest prompts, which the many profiling passes pay for, then by
    key: the same choice on every machine)."""
    from .actadd import _kinds

    usable = [c for c in {c.key: c for c in held_out}.values() if method.offers.highlights(c) and found(c)]
    kinds = sorted({k for c in usable for k in _kinds(method.offers, c)} or {""})
    picked: list[Case] = []
    for kind in kinds:
        having = sorted((c for c in usable if kind in _kinds(method.offers, c) or not kind),
                        key=lambda c: (len(_kinds(method.offers, c)) > 1, len(c.prompt), c.key))
        picked.extend(c for c in having[:PROFILE_CASES] if c not in picked)
    return picked


def _run(method: PASTA, ctx: PrepareContext, cases: Sequence[Case], selections: Sequence[Selection],
         alpha: float) -> list[tuple[float, float]]:
    """Per selection, (macro accuracy over instruction types, mean log-likelihood) on `cases`, every (case,
    selection) row a greedy response in shared batches."""
    import torch

    from ..prompts import encode, render_chat
    from .actadd import _kinds

    model, tokenizer = ctx.model.model, ctx.model.tokenizer
    follows, log_likelihoods = ctx.options["follows"], ctx.options["log_likelihoods"]
    rows = [(case, sel) for case in cases for sel in selections]  # case-major: a batch shares one prompt length
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    responses: list[str] = []
    for start in range(0, len(rows), _BATCH):
        chunk = rows[start:start + _BATCH]
        chunk_cases = [c for c, _ in chunk]
        batch = encode(tokenizer, [render_chat(tokenizer, user_turn(c)) for c in chunk_cases], device=model.device)
        highlight, alphas = method.highlight(batch, chunk_cases, [alpha] * len(chunk))
        with torch.inference_mode(), method.steer_highlight(model, highlight, alphas, [s for _, s in chunk]):
            out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                                 max_new_tokens=PROFILE_TOKENS, pad_token_id=pad, temperature=None, top_p=None,
                                 top_k=None)
        responses += [str(t) for t in tokenizer.batch_decode(out[:, batch.input_ids.shape[1]:],
                                                             skip_special_tokens=True)]
    ll = log_likelihoods([c.prompt for c, _ in rows], responses)
    out_scores = []
    for i in range(len(selections)):
        part = range(i, len(rows), len(selections))
        by_kind: dict[str, list[bool]] = {}
        for j in part:
            case = rows[j][0]
            for kind in _kinds(method.offers, case) or [""]:
                by_kind.setdefault(kind, []).append(bool(follows(case, responses[j])))
        accuracy = sum(sum(v) / len(v) for v in by_kind.values()) / len(by_kind)
        finite = [float(ll[j]) for j in part if not math.isnan(float(ll[j]))]
        out_scores.append((accuracy, sum(finite) / len(finite) if finite else math.nan))
    return out_scores


def profile_heads(method: PASTA, ctx: PrepareContext, num_layers: int, found: Callable[[Case], bool]) -> HeadProfile:
    """Profile the model's `num_layers` layers' heads on the held-out cases whose highlights are `found` in their
    prompts (module docstring); from `ctx.store` when it ran before."""
    from ..cache import numerics_versions, tokenizer_fingerprint

    if not all(callable(ctx.options.get(k)) for k in ("follows", "log_likelihoods")):
        raise SteeringError("PASTA layers 'profile' score held-out responses, which needs options 'follows' and "
                            "'log_likelihoods' in its PrepareContext (the session gives them when the task has a "
                            "judge: Task(judge=...)); give layers middle, all or indices instead")
    model, tokenizer = ctx.model.model, ctx.model.tokenizer
    num_heads = model.config.get_text_config().num_attention_heads
    cases = profile_cases(method, ctx.held_out, found)
    if not cases:
        raise SteeringError("PASTA layers 'profile' needs held-out cases whose instructions are found in their "
                            "prompts, and the task gives none; give layers middle, all or indices instead")
    alpha = 1 / PROFILE_ALPHA if method.scale_position == "exclude" else PROFILE_ALPHA
    param = next(model.parameters())
    key = {"format": PROFILE_FORMAT, "model": ctx.model.identity, "tokenizer": tokenizer_fingerprint(tokenizer),
           "cases": [c.content_hash() for c in cases], "alpha": alpha, "scale_position": method.scale_position,
           "tokens": PROFILE_TOKENS, "top_layers": TOP_LAYERS, "k": top_k(num_layers * num_heads),
           "scorer": str(ctx.options.get("scorer")), "dtype": str(param.dtype).removeprefix("torch."),
           "device_type": param.device.type, "versions": numerics_versions()}
    record = ctx.store.get("head-profile", key) if ctx.store is not None else None
    cached = _from_record(record, len(cases), num_layers * num_heads) if record is not None else None
    if cached is not None:
        return cached
    start = time.perf_counter()
    stage1 = _run(method, ctx, cases, [{}, *({layer: range(num_heads)} for layer in range(num_layers))], alpha)
    layers = [Candidate(layer, (), *score) for layer, score in enumerate(stage1[1:])]
    best = [c.layer for c in sorted(layers, key=Candidate.rank_key)[:TOP_LAYERS] if c.layer is not None]
    pairs = [(layer, head) for layer in best for head in range(num_heads)]
    stage2 = _run(method, ctx, cases, [{layer: [head]} for layer, head in pairs], alpha)
    heads = [Candidate(layer, (head,), *score) for (layer, head), score in zip(pairs, stage2, strict=True)]
    chosen: dict[int, tuple[int, ...]] = {}
    for c in sorted(heads, key=Candidate.rank_key)[:top_k(num_layers * num_heads)]:
        if c.layer is not None:
            chosen[c.layer] = tuple(sorted((*chosen.get(c.layer, ()), *c.heads)))
    profile = HeadProfile(stage1[0][0], layers, heads, dict(sorted(chosen.items())), len(cases),
                          num_layers * num_heads, time.perf_counter() - start,
                          len(cases) * (1 + num_layers + len(pairs)))
    if ctx.store is not None:
        ctx.store.put("head-profile", key, {
            "baseline": profile.baseline, "chosen": [[layer, list(hs)] for layer, hs in profile.chosen.items()],
            "layers": [[c.layer, c.accuracy, c.log_likelihood] for c in layers],
            "heads": [[c.layer, c.heads[0], c.accuracy, c.log_likelihood] for c in heads],
            "seconds": profile.seconds, "rows": profile.rows})
    return profile


def _from_record(record: Mapping[str, Any], cases: int, total_heads: int) -> HeadProfile | None:
    """The profile from a cached record, or None if the record is not one (then profiling runs again)."""
    try:
        return HeadProfile(
            float(record["baseline"]),
            [Candidate(int(layer), (), float(a), float(ll)) for layer, a, ll in record["layers"]],
            [Candidate(int(layer), (int(h),), float(a), float(ll)) for layer, h, a, ll in record["heads"]],
            {int(layer): tuple(int(h) for h in hs) for layer, hs in record["chosen"]},
            cases, total_heads, float(record["seconds"]), int(record["rows"]), cached=True)
    except (KeyError, TypeError, ValueError):
        return None
