"""PASTA attention steering (Zhang et al. 2023, "Tell Your Model Where to Attend") as a `SteeringMethod`.

PASTA rescales the post-softmax attention of selected heads so that highlighted prompt tokens (here:
the case's instruction sentences) get more weight, then renormalises. Scaling a softmax column by c
and renormalising is exactly adding log(c) to that pre-softmax score, so PASTA is an additive bias
fed into the model's own attention kernel (SDPA or eager) through `transformers.AttentionInterface`.
No model source is edited and `output_attentions` is not needed.

Convention (the seed study's): larger alpha means stronger steering; alpha = 1 is a no-op.
For P = prompt keys (k < prompt_len) and H = highlighted prompt keys:

- ``include``:    add -log(alpha) to keys in P \\ H
- ``exclude``:    add +log(alpha) to keys in P \\ H  (alpha < 1 is the paper's down-scaling)
- ``generation``: add +log(alpha) to every key in P

Keys of generated tokens are never changed. torch and transformers are imported inside the
functions, so importing this module (the plugin does, to label configs) is free.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from ..options import Option, grid_parser, parse_choice, parse_layers
from ..prompts import render_chat
from .base import (
    INSTRUCTIONS,
    CaseOffers,
    PrepareContext,
    SteeringError,
    Value,
    finite_number,
    no_highlights,
    number_label,
    user_turn,
)

if TYPE_CHECKING:
    import torch

    from ..prompts import EncodedBatch
    from ..records import Case

SCALE_POSITIONS = ("include", "exclude", "generation")
PROFILE = "profile"
_PREFIX = "pasta_"
_BASES = ("sdpa", "eager")
_BIAS_ATTR = "_steer_bias"

#: layer -> heads (None: all heads of the layer)
HeadSpec = dict[int, tuple[int, ...] | None]


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
    import torch
    import torch.nn.functional as F

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


@functools.cache
def _register() -> None:
    """Register the steerable twins "pasta_sdpa" and "pasta_eager" (once, on first use)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

    masks: dict[str, Callable[..., Any]] = {"sdpa": sdpa_mask, "eager": eager_mask}
    for base in _BASES:
        AttentionInterface.register(_PREFIX + base, _make_attention(base))
        # Without a mask function the custom name would get attention_mask=None and ignore padding.
        AttentionMaskInterface.register(_PREFIX + base, masks[base])


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

    With no bias set the twin calls the original kernel with the original arguments, so an
    unsteered model computes exactly what it did before. Returns the previous name.
    """
    _register()
    current = str(model.config._attn_implementation)
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
# Layer selection


def _layer_index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SteeringError(f"PASTA layer {value!r} is not a layer index")
    try:
        n = int(value)
    except ValueError:
        raise SteeringError(f"PASTA layer {value!r} is not a layer index") from None
    if n < 0:
        raise SteeringError(f"PASTA layer {n} is negative; layers count from 0")
    return n


def parse_pasta_layers(value: Any) -> Any:
    """`--steer-layers`: "profile" (the paper's head profiling, `profile_heads`) or what `parse_layers` reads."""
    if isinstance(value, str) and value.strip() == PROFILE:
        return PROFILE
    return parse_layers(value)


def _head_spec(layers: Any) -> str | HeadSpec:
    """"middle"/"all"/"profile", or {layer: heads or None (all heads)} from any accepted `layers` form."""
    if isinstance(layers, str):
        if layers not in ("middle", "all", PROFILE):
            raise SteeringError(f"PASTA layers {layers!r}: use 'middle', 'all', 'profile', layer indices or "
                                "{layer: [heads]}")
        return layers
    pairs: list[tuple[Any, Any]]
    if isinstance(layers, Mapping):
        pairs = list(layers.items())
    elif isinstance(layers, (list, tuple)):
        pairs = [tuple(x) if isinstance(x, (list, tuple)) else (x, None) for x in layers]
        if any(len(p) != 2 for p in pairs):
            raise SteeringError(f"PASTA layers {layers!r}: give layer indices or (layer, heads) pairs")
    else:
        raise SteeringError(f"PASTA layers {layers!r}: use 'middle', 'all', layer indices or {{layer: [heads]}}")
    spec: HeadSpec = {}
    for layer, heads in pairs:
        n = _layer_index(layer)
        if heads is not None and not isinstance(heads, (list, tuple)):
            raise SteeringError(f"PASTA heads {heads!r} of layer {n} must be a list of head indices")
        if n in spec:
            raise SteeringError(f"PASTA layer {n} is given twice")
        spec[n] = None if heads is None else tuple(_layer_index(h) for h in heads)
        if spec[n] == ():
            raise SteeringError(f"PASTA layer {n} selects no heads")
    if not spec:
        raise SteeringError("PASTA layers select no layer; give layer indices or {layer: [heads]}")
    if len({h is None for h in spec.values()}) > 1:
        raise SteeringError(f"PASTA layers {layers!r} mix whole layers and (layer, heads) pairs; use one form")
    return spec


def middle_layers(num_layers: int) -> list[int]:
    """The seed study's layers 8..23 of Qwen2.5-1.5B's 28, scaled to `num_layers` (9..25 of SmolLM2's 30)."""
    lo = round(num_layers * 8 / 28)
    return list(range(lo, max(round(num_layers * 24 / 28), lo + 1)))


# ---------------------------------------------------------------------------------------------
# The method


def check_alpha(value: Any) -> float:
    """PASTA's one rule for alpha: a finite number > 0 (1 = no steering; < 1 down-weights)."""
    a = finite_number("pasta", "alpha", value)
    if not a > 0:
        raise SteeringError(f"pasta alpha {value!r} must be > 0 (1 = no steering)")
    return a


class PASTA:
    """PASTA attention steering as an exact additive bias, one alpha per batch row.

    layers: "middle" (the seed study's 8..23 of 28, scaled), "all", layer indices (all heads of each),
    (layer, heads) pairs as `RunSpec.layers` holds them, or {layer: [heads]}.
    scale_position: "include", "exclude" or "generation" (see the module docstring).
    """

    name: ClassVar[str] = "pasta"
    param: ClassVar[str] = "alpha"
    noop: ClassVar[Value] = 1.0
    needs_prompt: ClassVar[bool] = True  # its highlights are located in the rendered prompt (combined configs)
    #: the grid option and the settings this method reads (CLI --steer-<name>, ini steer_<name>, marker <name>)
    grid: ClassVar[Option] = Option(
        "alphas", grid_parser("alpha", check_alpha, 1.0, "5,10,20"), (5.0, 10.0, 20.0),
        "PASTA strengths to sweep, comma-separated (the baseline is always added)")
    options: ClassVar[tuple[Option, ...]] = (
        Option("layers", parse_pasta_layers, "middle",
               "PASTA layers (all heads): middle, all, 8-23, 8,9,10, JSON {layer: [heads]}, or profile (the paper's "
               "head profiling on held-out cases, scaled to the run)"),
        Option("scale_position", parse_choice(*SCALE_POSITIONS), "include", "PASTA scale position"),
    )

    def __init__(self, layers: Any = "middle", scale_position: str = "include") -> None:
        if scale_position not in SCALE_POSITIONS:
            raise SteeringError(f"unknown PASTA scale_position {scale_position!r}; "
                                f"use one of {', '.join(SCALE_POSITIONS)}")
        self.layers = layers
        self.scale_position = scale_position
        self._spec = _head_spec(layers)
        self._resolved: dict[int, list[int]] | None = None
        self.profile: Any = None  # what profiling found (a pasta_profile.HeadProfile) (layers "profile"), from prepare
        self.unsteerable: set[str] = set()  # keys of cases whose instructions were not found (warn mode)
        self.offers: CaseOffers = INSTRUCTIONS  # what each case offers to highlight: the run's task, from prepare

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> PASTA:
        """The method at the values of its declared `options`."""
        return cls(layers=values["layers"], scale_position=values["scale_position"])

    def __repr__(self) -> str:
        return f"PASTA(layers={self.layers!r}, scale_position={self.scale_position!r})"

    # --- values ---------------------------------------------------------------------------------

    def check(self, value: Any) -> float:
        return check_alpha(value)

    def label(self, value: Value, grid: Sequence[Value]) -> str:
        """"alpha10"; "profiled-alpha10" on profiled heads, so the two can never be read as one another."""
        prefix = "profiled-alpha" if self._spec == PROFILE else "alpha"
        return number_label(prefix, float(value), [float(g) for g in grid])

    def series(self, value: Value) -> str:
        """Profiled PASTA is its own series ("pasta-profiled") in tables and figures."""
        return "pasta-profiled" if self._spec == PROFILE else self.name

    def notes(self) -> list[str]:
        """For the report and the terminal: the heads profiling chose, and what it cost."""
        return self.profile.notes() if self.profile is not None else []

    def strength(self, value: Value) -> float:
        return abs(math.log(float(value)))

    # --- model and cases ------------------------------------------------------------------------

    def _modules(self, model: Any) -> dict[int, torch.nn.Module]:
        """The attention modules PASTA steers, by layer; SteeringError if PASTA cannot steer the model."""
        if not getattr(type(model), "_supports_attention_backend", False):
            raise SteeringError(
                f"{type(model).__name__} does not route attention through transformers.AttentionInterface, "
                "so PASTA cannot steer it without editing model code; use a Llama/Qwen2/Mistral/Gemma-style model"
            )
        impl = str(model.config._attn_implementation).removeprefix(_PREFIX)
        if impl not in _BASES:
            raise SteeringError(f"PASTA supports attn_implementation 'sdpa' or 'eager', not {impl!r}")
        modules = _attention_modules(model)
        if not modules:
            raise SteeringError(f"{type(model).__name__} has no attention modules with a layer index for PASTA "
                                "to steer")
        return modules

    def heads(self, model: Any) -> dict[int, list[int]]:
        """The selected heads per layer of `model`; SteeringError if PASTA cannot steer the model."""
        modules = self._modules(model)
        num_layers, num_heads = len(modules), model.config.get_text_config().num_attention_heads
        spec: HeadSpec
        if self._spec == PROFILE:
            if self._resolved is None:
                raise SteeringError("PASTA layers 'profile' are chosen by profiling; call prepare() first")
            spec = {layer: tuple(hs) for layer, hs in self._resolved.items()}
        elif isinstance(self._spec, dict):
            spec = self._spec
        elif self._spec == "middle":
            spec = dict.fromkeys(middle_layers(num_layers))
        else:
            spec = dict.fromkeys(range(num_layers))
        sel: dict[int, list[int]] = {}
        for layer, hs in sorted(spec.items()):
            if layer >= num_layers:
                raise SteeringError(f"PASTA layer {layer} is outside the model, which has layers 0..{num_layers - 1}")
            bad = [h for h in hs or () if h >= num_heads]
            if bad:
                raise SteeringError(f"PASTA heads {bad} of layer {layer} are outside the model, which has heads "
                                    f"0..{num_heads - 1}")
            sel[layer] = list(range(num_heads)) if hs is None else list(hs)
        return sel

    def prepare(self, ctx: PrepareContext) -> None:
        """Check the model, resolve the layers, and locate every steered case's instructions in its prompt."""
        if ctx.on_missing not in ("error", "warn"):
            raise SteeringError(f"on_missing must be 'error' or 'warn', not {ctx.on_missing!r}")
        model, tokenizer = ctx.model.model, ctx.model.tokenizer
        self.offers = ctx.task
        if self._spec == PROFILE:
            from .pasta_profile import profile_heads

            def found(case: Case) -> bool:
                return _spans(render_chat(tokenizer, user_turn(case)), case, self.offers.highlights(case))[1] is None

            self.profile = profile_heads(self, ctx, len(self._modules(model)), found)
            self._resolved = {layer: list(heads) for layer, heads in self.profile.chosen.items()}
        self._resolved = self.heads(model)
        enable_steering_backend(model)  # once here, so batches do not switch the kernel back and forth
        self.unsteerable = set()
        for case in {c.key: c for c in ctx.steered}.values():
            if not self.offers.highlights(case):
                raise no_highlights(case, "PASTA", "highlight")
            _, problem = _spans(render_chat(tokenizer, user_turn(case)), case, self.offers.highlights(case))
            if problem is None:
                continue
            msg = f"case {case.key!r}: {problem}"
            if ctx.on_missing == "error":
                raise SteeringError(msg + "; fix the case's `instructions`, or pass --steer-on-missing warn to "
                                    "run such cases unsteered")
            warnings.warn(msg + "; its PASTA rows run unsteered", stacklevel=2)
            self.unsteerable.add(case.key)

    def rewrites(self, value: Value) -> str:
        """For combined configs: PASTA renders the prompt unchanged (and `needs_prompt` to find its spans)."""
        return "none"

    def identity(self) -> dict[str, Any]:
        """Method, head config (layer list when every head of a layer is steered) and scale position."""
        head_config: Any
        if self._spec == PROFILE:
            if self._resolved is None:
                raise SteeringError("PASTA layers 'profile' are chosen by profiling; call prepare() first")
            head_config = {"profiled": {str(k): h for k, h in sorted(self._resolved.items())}}
        elif isinstance(self._spec, str):
            if self._resolved is None:
                raise SteeringError(f"PASTA layers {self._spec!r} depend on the model; call prepare() first")
            head_config = list(self._resolved)
        elif all(h is None for h in self._spec.values()):
            head_config = sorted(self._spec)
        else:
            head_config = {str(k): list(h or ()) for k, h in sorted(self._spec.items())}
        return {"method": self.name, "head_config": head_config, "scale_position": self.scale_position}

    # --- steering -------------------------------------------------------------------------------

    def render(self, case: Case, value: Value | None) -> list[dict[str, str]]:
        return user_turn(case)

    def steer(self, model: Any, batch: EncodedBatch, cases: Sequence[Case],
              values: Sequence[Value | None]) -> contextlib.AbstractContextManager[None]:
        """Highlight each steered row's instruction tokens and steer it at its alpha.

        Rows at None (baseline, other methods) and unsteerable cases get alpha 1, a zero bias, so every
        row of the batch runs the same kernel whatever its partners.
        """
        highlight, alphas = self.highlight(batch, cases, values)
        return self.steer_highlight(model, highlight, alphas)

    def highlight(self, batch: EncodedBatch, cases: Sequence[Case],
                  values: Sequence[Value | None]) -> tuple[torch.Tensor, list[float]]:
        """The bool [batch, prompt_len] mask of instruction tokens, and each row's alpha (1 where not steered)."""
        import torch

        if not len(batch.texts) == len(cases) == len(values):
            raise SteeringError(f"{len(batch.texts)} texts, {len(cases)} cases and {len(values)} values; "
                                "give one case and one value per batch row")
        mask = torch.zeros(batch.input_ids.shape, dtype=torch.bool, device=batch.input_ids.device)
        alphas: list[float] = []
        for i, (text, case, value) in enumerate(zip(batch.texts, cases, values, strict=True)):
            if value is None or case.key in self.unsteerable:
                alphas.append(1.0)
                continue
            spans, problem = _spans(text, case, self.offers.highlights(case))
            if problem is not None:
                raise SteeringError(f"case {case.key!r}: {problem}; PASTA.prepare() was not given this case")
            for start, end in spans:
                mask[i] |= batch.char_mask(i, start, end)
            alphas.append(self.check(value))
        return mask, alphas

    def prompt_bias(self, highlight: torch.Tensor, alphas: float | Sequence[float]) -> torch.Tensor:
        """The [B, P] additive bias on prompt keys, in float32."""
        import torch

        values = [float(alphas)] if isinstance(alphas, (int, float)) else [float(a) for a in alphas]
        for a in values:
            if not (math.isfinite(a) and a > 0):
                raise SteeringError(f"alpha must be a finite number > 0 (1 = no steering), got {a!r}")
        rows = highlight.shape[0]
        if len(values) not in (1, rows):
            raise SteeringError(f"got {len(values)} alphas for {rows} batch rows; give one alpha or one per row")
        log_a = torch.tensor(values, dtype=torch.float32, device=highlight.device).log().expand(rows)[:, None]
        hl = highlight.bool()
        if self.scale_position == "include":
            return torch.where(hl, 0.0, -log_a)
        if self.scale_position == "exclude":
            return torch.where(hl, 0.0, log_a)
        return log_a.expand(hl.shape).clone()

    @contextlib.contextmanager
    def steer_highlight(self, model: Any, highlight: torch.Tensor, alphas: float | Sequence[float],
                        row_heads: Sequence[Mapping[int, Sequence[int]]] | None = None) -> Iterator[None]:
        """Steer every forward pass (prefill and decode) of `model` inside the block, from a highlight tensor.

        highlight: bool [batch, prompt_len], True for highlighted prompt tokens, laid out like input_ids.
        alphas: one alpha, or one per row (1 = that row unsteered).
        row_heads: per row, its own {layer: heads} instead of the method's (profiling steers each head alone).
        """
        import torch

        if highlight.dim() != 2:
            raise SteeringError(f"highlight must be a [batch, prompt_len] bool tensor, got shape "
                                f"{tuple(highlight.shape)}")
        sel = self.heads(model) if row_heads is None else {}
        rows = [sel] * highlight.shape[0] if row_heads is None else list(row_heads)
        if len(rows) != highlight.shape[0]:
            raise SteeringError(f"got {len(rows)} head selections for {highlight.shape[0]} batch rows")
        modules = _attention_modules(model)
        num_heads = model.config.get_text_config().num_attention_heads
        bias = self.prompt_bias(highlight, alphas)
        dtype = next(model.parameters()).dtype
        previous = enable_steering_backend(model)
        try:
            for layer, mod in modules.items():
                heads = torch.zeros(len(rows), num_heads, dtype=torch.float32, device=bias.device)
                for i, chosen in enumerate(rows):
                    heads[i, list(chosen.get(layer, []))] = 1.0
                # [B, H, 1, P]: zeros for unselected heads, so one graph serves every row and layer
                setattr(mod, _BIAS_ATTR, (bias[:, None, None, :] * heads[:, :, None, None]).to(dtype))
            yield
        finally:
            for mod in modules.values():
                if hasattr(mod, _BIAS_ATTR):
                    delattr(mod, _BIAS_ATTR)
            if not previous.startswith(_PREFIX):
                model.set_attn_implementation(previous)


def _spans(text: str, case: Case, highlights: Sequence[str]) -> tuple[list[tuple[int, int]], str | None]:
    """Character spans of the case's highlights in the rendered `text`, or a problem naming what is missing."""
    if not highlights:
        return [], "no highlights (e.g. IFEval's `instructions`), so PASTA has nothing to highlight"
    base = text.find(case.prompt)
    if base < 0:
        return [], "the chat template does not contain the prompt verbatim, so its instructions cannot be located"
    spans = []
    for sub in highlights:
        at = case.prompt.find(sub) if sub else -1
        if at < 0:
            return [], f"instruction text not found in its prompt: {sub[:80]!r}"
        spans.append((base + at, base + at + len(sub)))
    return spans, None
