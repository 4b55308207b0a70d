"""Dose: how far a config moves the model, in one unit for every steering method.

PASTA's alpha, activation steering's coefficient and a prompt variant have no common scale, so
strength plots could only compare a method with itself. The dose of a steered row is the mean
per-token KL divergence KL(steered || unsteered) of the next-token distributions, teacher-forced on
the *unsteered* response of the same (case, trial): every config is measured on the same tokens,
and a method that changes nothing has dose 0 whatever its parameter says.

Cost: one forward pass per steered row over its prompt plus the baseline's response, batched with
the unsteered pass of the same (case, trial); no generation.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .methods.base import BASELINE_CONFIG
from .scores import Metric

if TYPE_CHECKING:
    from .generation import GenerationEngine, GenerationRequest

DOSE = Metric("dose", "real", 0, label="dose (KL nats/token)")
#: the same KL, teacher-forced on a neutral passage (`neutral_text`) instead of the baseline's response: how much
#: the steering moves the model on text it is not about (its invasiveness, as ITI and "Steering Without Side
#: Effects" measure it on unrelated text); one value per (case, config), the same for every trial
OFF_TARGET_DOSE = Metric("off_target_dose", "real", 0, label="off-target dose (KL nats/token)",
                         description="mean per-token KL from the unsteered model on a fixed neutral passage "
                                     "(pytest_steer/data/neutral.jsonl) after the row's prompt")


def neutral_text(case_key: str) -> str:
    """The neutral passage the off-target dose of `case_key`'s rows is measured on: one of the package's fixed
    passages (about nothing any instruction asks for), chosen by a hash of the key, the same on every machine."""
    import hashlib
    import json
    from importlib import resources

    lines = resources.files("pytest_steer").joinpath("data", "neutral.jsonl").read_text("utf-8").splitlines()
    texts = [str(json.loads(line)["text"]) for line in lines if line.strip()]
    return texts[int.from_bytes(hashlib.sha256(case_key.encode()).digest()[:4], "little") % len(texts)]


def doses(engine: GenerationEngine, requests: Sequence[GenerationRequest], baseline_response: str) -> list[float]:
    """KL(steered || unsteered) per token, averaged over the baseline response's tokens, for each of
    `requests` (steered rows of one case and trial). NaN for all when the response has no tokens."""
    import torch

    from .prompts import encode, render_chat

    if not requests:
        return []
    case, trial = requests[0].case, requests[0].trial
    if any(r.case.key != case.key or r.trial != trial or r.config.is_baseline for r in requests):
        raise ValueError("doses takes steered rows of one case and trial")
    tok, model = engine.tokenizer, engine.model
    response = list(tok(baseline_response, add_special_tokens=False)["input_ids"])
    if not response:
        return [float("nan")] * len(requests)
    from .generation import GenerationRequest

    rows = [GenerationRequest(case, BASELINE_CONFIG, trial), *requests]
    dev = next(model.parameters()).device
    enc = encode(tok, [render_chat(tok, engine.messages(r)) for r in rows], device=dev)
    tail = torch.tensor(response, device=dev).expand(len(rows), -1)
    ids = torch.cat([enc.input_ids, tail], 1)
    mask = torch.cat([enc.attention_mask, torch.ones_like(tail)], 1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    n = len(response)
    # the logits at the last prompt token predict the first response token; the LM head (a large share of
    # the pass at this vocabulary size) only runs on those n positions where the model lets us say so
    keep = {"logits_to_keep": n + 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with torch.inference_mode(), contextlib.ExitStack() as stack:
        cases = [r.case for r in rows]
        for name, method in engine.methods.items():
            values = [r.config.value_for(name) for r in rows]
            stack.enter_context(method.steer(model, enc, cases, values))
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **keep).logits
        logp = logits[:, -(n + 1):-1].float().log_softmax(-1)
    kl = (logp[1:].exp() * (logp[1:] - logp[:1])).sum(-1).mean(-1)
    return [float(x) for x in kl.clamp(min=0)]
