"""Steering controls. PASTA now; other methods later behind the same small interface.

PASTA (Zhang et al. 2023, "Tell Your Model Where to Attend") rescales the post-softmax attention
of selected heads so that highlighted prompt tokens get more weight, then renormalises. Scaling a
softmax column by c and renormalising is exactly adding log(c) to that pre-softmax score, so here
PASTA is an additive bias fed into the model's own attention kernel (SDPA or eager) through
`transformers.AttentionInterface`. No model source is edited and `output_attentions` is not needed.

Convention (the seed study's): larger alpha means stronger steering; alpha = 1 is a no-op.
For P = prompt keys (k < prompt_len) and H = highlighted prompt keys:

- ``include``:    add -log(alpha) to keys in P \\ H
- ``exclude``:    add +log(alpha) to keys in P \\ H  (alpha < 1 is the paper's down-scaling)
- ``generation``: add +log(alpha) to every key in P

Keys of generated tokens are never changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Protocol, Sequence

import torch
import torch.nn.functional as F

SCALE_POSITIONS = ("include", "exclude", "generation")
_PREFIX = "pasta_"
_BASES = ("sdpa", "eager")
_BIAS_ATTR = "_steer_bias"


class SteeringError(ValueError):
    """Bad steering input, raised before any generation starts."""


class SteeringControl(Protocol):
    """What the generation engine needs from a steering method."""

    name: str

    def with_alpha(self, alpha: float | Sequence[float]) -> "SteeringControl":
        """The same control at another strength (one value, or one per batch row)."""
        ...

    def validate(self, model: Any) -> None:
        """Raise SteeringError if this control cannot steer `model`."""
        ...

    def steer(self, model: Any, highlight: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """Steer every forward pass of `model` inside the block."""
        ...

    def describe(self) -> dict[str, Any]:
        """Everything that determines the control's effect, for cache keys and reports."""
        ...


# ---------------------------------------------------------------------------------------------
# The attention functions registered with transformers


def _base_attention(base: str, module: torch.nn.Module) -> Callable[..., Any]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if fn is None:
        raise SteeringError(f"{type(module).__name__} has no eager_attention_forward; use attn_implementation='sdpa'")
    return fn


def _biased_mask(
    attention_mask: torch.Tensor | None, bias: torch.Tensor, query: torch.Tensor, key: torch.Tensor
) -> torch.Tensor:
    """Combine the model's mask (None, bool or additive float) with the [B, H, 1, P] prompt bias."""
    q_len, kv_len = query.shape[-2], key.shape[-2]
    if bias.shape[0] != query.shape[0]:
        raise SteeringError(
            f"the steering mask has {bias.shape[0]} rows but the model runs {query.shape[0]}; "
            "beam search and num_return_sequences > 1 are not supported under steering"
        )
    bias = F.pad(bias.to(query.dtype), (0, kv_len - bias.shape[-1]))
    if attention_mask is None:  # no padding: the kernel would have used is_causal for prefill
        q_pos = torch.arange(q_len, device=query.device)[:, None] + (kv_len - q_len)
        attention_mask = torch.arange(kv_len, device=query.device)[None, :] <= q_pos
    if attention_mask.dtype == torch.bool:
        minimum = torch.finfo(query.dtype).min
        attention_mask = torch.zeros((), dtype=query.dtype, device=query.device).masked_fill(~attention_mask, minimum)
    return attention_mask[..., :kv_len] + bias


def _make_attention(base: str) -> Callable[..., Any]:
    def attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, **kwargs: Any) -> Any:
        bias = getattr(module, _BIAS_ATTR, None)
        if bias is not None:
            attention_mask = _biased_mask(attention_mask, bias, query, key)
        return _base_attention(base, module)(module, query, key, value, attention_mask, **kwargs)

    attention.__name__ = f"{_PREFIX}{base}_attention"
    return attention


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    masks = {"sdpa": sdpa_mask, "eager": eager_mask}
    for base in _BASES:
        AttentionInterface.register(_PREFIX + base, _make_attention(base))
        # Without a mask function the custom name would get attention_mask=None and ignore padding.
        AttentionMaskInterface.register(_PREFIX + base, masks[base])


_register()


def _attention_modules(model: Any) -> dict[int, torch.nn.Module]:
    """Map layer index -> self-attention module, for models that route attention through AttentionInterface."""
    out: dict[int, torch.nn.Module] = {}
    for mod in model.modules():
        idx = getattr(mod, "layer_idx", None)
        if idx is not None and type(mod).__name__.endswith("Attention") and hasattr(mod, "config"):
            out.setdefault(int(idx), mod)
    return out


def enable_steering_backend(model: Any) -> str:
    """Switch `model` to the steerable twin of its attention implementation ("sdpa" -> "pasta_sdpa").

    With no steering active the twin calls the original kernel unchanged. Returns the previous name.
    """
    current = model.config._attn_implementation
    if current.startswith(_PREFIX):
        return current
    if current not in _BASES:
        raise SteeringError(
            f"PASTA supports attn_implementation 'sdpa' or 'eager', not {current!r}; "
            "load the model with attn_implementation='sdpa'"
        )
    model.set_attn_implementation(_PREFIX + current)
    return current


# ---------------------------------------------------------------------------------------------
# PASTA


@dataclass(frozen=True)
class PASTA:
    """PASTA attention steering as an exact additive bias.

    head_config: layers (all heads of each) or {layer: [heads]}.
    alpha: one strength, or one per batch row so a batch can mix strengths (1.0 = unsteered row).
    scale_position: "include", "exclude" or "generation" (see the module docstring).
    """

    head_config: Sequence[int] | Mapping[int, Sequence[int]]
    alpha: float | Sequence[float] = 10.0
    scale_position: str = "include"
    name: str = "pasta"

    def __post_init__(self) -> None:
        if self.scale_position not in SCALE_POSITIONS:
            raise SteeringError(f"unknown scale_position {self.scale_position!r}; use one of {', '.join(SCALE_POSITIONS)}")
        for a in self.alphas:
            if not (isinstance(a, (int, float)) and math.isfinite(a) and a > 0):
                raise SteeringError(f"alpha must be a finite number > 0 (1 = no steering), got {a!r}")
        layers = self.head_config.keys() if isinstance(self.head_config, Mapping) else self.head_config
        if not list(layers):
            raise SteeringError("head_config selects no layers; give layer indices or {layer: [heads]}")

    @property
    def alphas(self) -> list[float]:
        return [float(a) for a in self.alpha] if isinstance(self.alpha, Sequence) else [float(self.alpha)]

    def with_alpha(self, alpha: float | Sequence[float]) -> "PASTA":
        return dataclasses.replace(self, alpha=list(alpha) if isinstance(alpha, Sequence) else alpha)

    def heads(self, num_layers: int, num_heads: int) -> dict[int, list[int]]:
        """The selected heads per layer, validated against the model's shape."""
        if isinstance(self.head_config, Mapping):
            sel = {int(k): [int(h) for h in v] for k, v in self.head_config.items()}
        else:
            sel = {int(k): list(range(num_heads)) for k in self.head_config}
        for layer, hs in sel.items():
            if not 0 <= layer < num_layers:
                raise SteeringError(f"PASTA layer {layer} is outside the model, which has layers 0..{num_layers - 1}")
            bad = [h for h in hs if not 0 <= h < num_heads]
            if bad:
                raise SteeringError(f"PASTA heads {bad} of layer {layer} are outside the model, which has heads 0..{num_heads - 1}")
        return sel

    def validate(self, model: Any) -> None:
        """Check that the model's attention goes through AttentionInterface and the layers/heads exist."""
        if not getattr(type(model), "_supports_attention_backend", False):
            raise SteeringError(
                f"{type(model).__name__} does not route attention through transformers.AttentionInterface, "
                "so PASTA cannot steer it without editing model code; use a Llama/Qwen2/Mistral/Gemma-style model"
            )
        impl = model.config._attn_implementation.removeprefix(_PREFIX)
        if impl not in _BASES:
            raise SteeringError(f"PASTA supports attn_implementation 'sdpa' or 'eager', not {impl!r}")
        modules = _attention_modules(model)
        cfg = model.config.get_text_config()
        self.heads(len(modules) or cfg.num_hidden_layers, cfg.num_attention_heads)

    def describe(self) -> dict[str, Any]:
        hc = ({str(k): list(v) for k, v in self.head_config.items()} if isinstance(self.head_config, Mapping)
              else list(self.head_config))
        return {"method": self.name, "head_config": hc, "scale_position": self.scale_position}

    def prompt_bias(self, highlight: torch.Tensor) -> torch.Tensor:
        """The [B, P] additive bias on prompt keys, in float32."""
        alphas = self.alphas
        rows = highlight.shape[0]
        if len(alphas) not in (1, rows):
            raise SteeringError(f"got {len(alphas)} alphas for {rows} batch rows; give one alpha or one per row")
        log_a = torch.tensor(alphas, dtype=torch.float32, device=highlight.device).log().expand(rows)[:, None]
        hl = highlight.bool()
        if self.scale_position == "include":
            return torch.where(hl, 0.0, -log_a)
        if self.scale_position == "exclude":
            return torch.where(hl, 0.0, log_a)
        return log_a.expand(hl.shape).clone()

    @contextlib.contextmanager
    def steer(self, model: Any, highlight: torch.Tensor) -> Iterator[None]:
        """Steer every forward pass (prefill and decode) of `model` inside the block.

        highlight: bool [batch, prompt_len], True for highlighted prompt tokens, laid out like input_ids.
        """
        if highlight.dim() != 2:
            raise SteeringError(f"highlight must be a [batch, prompt_len] bool tensor, got shape {tuple(highlight.shape)}")
        self.validate(model)
        modules = _attention_modules(model)
        cfg = model.config.get_text_config()
        sel = self.heads(len(modules), cfg.num_attention_heads)
        bias = self.prompt_bias(highlight)
        dtype = next(model.parameters()).dtype
        previous = enable_steering_backend(model)
        try:
            for layer, mod in modules.items():
                heads = torch.zeros(cfg.num_attention_heads, dtype=torch.float32, device=bias.device)
                heads[sel.get(layer, [])] = 1.0
                # [B, H, 1, P]: zeros for unselected heads, so one graph serves every row and layer
                setattr(mod, _BIAS_ATTR, (bias[:, None, None, :] * heads[None, :, None, None]).to(dtype))
            yield
        finally:
            for mod in modules.values():
                if hasattr(mod, _BIAS_ATTR):
                    delattr(mod, _BIAS_ATTR)
            if not previous.startswith(_PREFIX):
                model.set_attn_implementation(previous)


# ---------------------------------------------------------------------------------------------
# Highlight masks from prompt texts


@dataclass
class SteeringBatch:
    """Tokenized chat prompts with their highlight mask (left padded)."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    highlight: torch.Tensor  # bool [batch, prompt_len]
    unsteerable: list[bool]  # rows whose instructions could not be located (warn mode): run them unsteered


def highlight_batch(
    tokenizer: Any,
    prompts: Sequence[str],
    instructions: Sequence[Sequence[str] | None],
    *,
    keys: Sequence[str] | None = None,
    on_missing: str = "error",
    device: torch.device | str | None = None,
) -> SteeringBatch:
    """Render each prompt in the chat template and mark the tokens that overlap its instruction substrings.

    Special tokens of the template are part of the tokenized prompt (and never highlighted). A row whose
    instructions are None (not steerable) gets an all-False mask. A substring missing from its prompt is
    a SteeringError naming the case, or with on_missing="warn" a warning and an unsteered row.
    """
    from .prompts import render_chat

    if on_missing not in ("error", "warn"):
        raise SteeringError(f"on_missing must be 'error' or 'warn', not {on_missing!r}")
    keys = list(keys) if keys is not None else [f"row {i}" for i in range(len(prompts))]
    texts, spans, unsteerable = [], [], []
    for key, prompt, instr in zip(keys, prompts, instructions):
        text = render_chat(tokenizer, prompt)
        base = text.find(prompt)
        row_spans, missing = [], []
        for sub in instr or ():
            at = prompt.find(sub)
            if at < 0 or base < 0 or not sub:
                missing.append(sub)
            else:
                row_spans.append((base + at, base + at + len(sub)))
        if missing:
            msg = f"case {key!r}: instruction text not found in its prompt: {missing[0][:80]!r}"
            if on_missing == "error":
                raise SteeringError(msg + "; fix the case's `instructions`, or pass on_missing='warn' to run it unsteered")
            warnings.warn(msg + "; this row runs unsteered", stacklevel=2)
            row_spans = []
        texts.append(text)
        spans.append(row_spans)
        unsteerable.append(bool(missing))

    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")
    hl = torch.zeros(enc["input_ids"].shape, dtype=torch.bool)
    for i, row_spans in enumerate(spans):
        for s, e in row_spans:
            hl[i] |= (offsets[i, :, 0] < e) & (offsets[i, :, 1] > s) & enc["attention_mask"][i].bool()
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return SteeringBatch(enc["input_ids"].to(dev), enc["attention_mask"].to(dev), hl.to(dev), unsteerable)
