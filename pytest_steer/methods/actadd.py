"""Instruction activation steering (Stolfo et al., ICLR 2025, microsoft/llm-steer-instruct).

An instruction type (say "no commas") gets one vector: the mean, over prompts that carry such an
instruction, of the residual-stream activation at the prompt's last token minus the activation for
the same prompt with the instruction text removed. Steering adds a multiple of that vector to the
output of one decoder layer at every position, during prefill and every decode step.

The residual stream is read and written at the same place, the output of decoder layer `layer`
(what `output_hidden_states` reports as `hidden_states[layer + 1]`, except for the last layer,
where transformers reports the output after the final norm instead).

torch is imported inside the functions so that importing this module (the plugin does) is free.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .base import PrepareContext, SteeringError, Value, finite_number, number_label, user_turn

if TYPE_CHECKING:
    import torch

    from ..cases import Case
    from ..options import RunSpec
    from ..prompts import EncodedBatch

# A removed instruction followed by one of these leaves no space before it ("cats ." -> "cats.").
_CLOSING_PUNCTUATION = ".,;:!?)]}"


class InstructionCase(Protocol):
    """What `instruction_vectors` reads from a case (`pytest_steer.cases.Case` has it)."""

    @property
    def key(self) -> str: ...
    @property
    def prompt(self) -> str: ...
    @property
    def instructions(self) -> Sequence[str] | None: ...
    @property
    def instruction_id_list(self) -> Sequence[str]: ...


def middle_layer(num_layers: int) -> int:
    """The default steering layer: the paper steers mid-depth, where instruction features are formed."""
    return num_layers // 2


def prompt_without_instructions(prompt: str, instructions: Sequence[str]) -> str:
    """The prompt with each instruction text cut out: the paired input that isolates the instruction.

    Each instruction's first occurrence is removed, in order. Where text was cut, the surrounding
    whitespace becomes the widest break it had (a paragraph break stays one paragraph break, spaces
    become one space) and no space is left before closing punctuation. Raises ValueError naming an
    instruction that is empty or not in the (remaining) prompt.
    """
    text = prompt
    for sub in instructions:
        at = text.find(sub) if sub else -1
        if at < 0:
            raise ValueError(f"instruction text not found in the prompt: {sub!r}")
        text = _join(text[:at], text[at + len(sub):])
    return text.strip()


def _join(left: str, right: str) -> str:
    core_left, core_right = left.rstrip(), right.lstrip()
    if not core_left or not core_right or core_right[0] in _CLOSING_PUNCTUATION:
        return core_left + core_right
    gaps = (left[len(core_left):], right[: len(right) - len(core_right)])
    breaks = max(gap.count("\n") for gap in gaps)
    return core_left + ("\n" * breaks if breaks else " ") + core_right


def _decoder_layer(model: Any, layer: int) -> torch.nn.Module:
    """Decoder layer `layer` of a Llama/Qwen2-style model (`model.model.layers`)."""
    try:
        layers = model.model.layers
    except AttributeError:
        raise ValueError(
            f"{type(model).__name__} has no decoder layer list at model.model.layers; "
            "activation steering supports Llama/Qwen2/Mistral/Gemma-style causal LMs"
        ) from None
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer {layer} is outside the model, which has layers 0..{len(layers) - 1}")
    return layers[layer]


class _Captured(Exception):
    """Raised by the capture hook once the wanted layer has run: the layers above are not needed."""


def last_token_activations(
    model: Any, tokenizer: Any, prompts: Sequence[str], layer: int, *, batch_size: int = 16
) -> torch.Tensor:
    """Residual-stream activation at the last token of each chat-templated prompt, float32 [n, hidden] on CPU.

    The last prompt token (the end of the generation prompt) is where the model has read the whole
    instruction, so its activation is what the steering vector is made of. Prompts are rendered with
    `render_chat` and left padded, so the last position is every row's last token; position ids
    follow the attention mask, as in `generate`, so a row's activation does not depend on its batch.
    """
    import torch

    from ..prompts import render_chat

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    module = _decoder_layer(model, layer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out anyway
    captured: list[torch.Tensor] = []

    def capture(mod: torch.nn.Module, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        captured.append(hidden[:, -1].float().cpu())
        raise _Captured

    handle = module.register_forward_hook(capture)
    try:
        with torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                texts = [render_chat(tokenizer, p) for p in prompts[start:start + batch_size]]
                rows = tokenizer(texts, add_special_tokens=False)["input_ids"]
                width = max(len(r) for r in rows)
                ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], device=model.device)
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
                positions = (mask.cumsum(-1) - 1).clamp(min=0)
                try:
                    model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
                except _Captured:
                    pass
    finally:
        handle.remove()
    if not captured:
        return torch.empty(0, model.config.get_text_config().hidden_size)
    return torch.cat(captured)


def instruction_vectors(
    model: Any, tokenizer: Any, cases: Sequence[InstructionCase], layer: int, *, batch_size: int = 16
) -> dict[str, torch.Tensor]:
    """One steering vector per instruction type: the mean activation difference the instruction makes.

    For each case: activation(prompt) - activation(prompt without its instruction texts), at the
    last token of `layer`'s output. A case with several instruction types counts for each of them.
    Returns float32 CPU tensors [hidden], keyed by instruction type in order of first appearance.
    """
    cases = list(cases)
    if not cases:
        raise ValueError("no cases to compute instruction vectors from")
    stripped = []
    for case in cases:
        if not case.instructions:
            raise ValueError(f"case {case.key!r} has no instruction texts (`instructions`), so it has no paired prompt")
        try:
            stripped.append(prompt_without_instructions(case.prompt, case.instructions))
        except ValueError as e:
            raise ValueError(f"case {case.key!r}: {e}") from None
    acts = last_token_activations(
        model, tokenizer, [c.prompt for c in cases] + stripped, layer, batch_size=batch_size
    )
    diffs = acts[: len(cases)] - acts[len(cases):]
    rows: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        for kind in dict.fromkeys(case.instruction_id_list):
            rows.setdefault(kind, []).append(i)
    return {kind: diffs[idx].mean(0) for kind, idx in rows.items()}


@contextlib.contextmanager
def add_to_residual(model: Any, layer: int, vectors: torch.Tensor) -> Iterator[None]:
    """Add `vectors[row]` to decoder layer `layer`'s output at every position of batch row `row`.

    Active for every forward pass inside the block, so `generate` is steered at prefill and at each
    cached decode step. One vector per row lets a batch mix strengths; a zero row leaves its row
    exactly unchanged. The vector is cast to the hidden states' dtype and device. Beam search and
    num_return_sequences > 1 change the batch size and raise ValueError.
    """
    if vectors.dim() != 2:
        raise ValueError(f"vectors must be [batch, hidden], one vector per batch row, got shape {tuple(vectors.shape)}")
    module = _decoder_layer(model, layer)

    def steer(mod: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[0] != vectors.shape[0] or hidden.shape[-1] != vectors.shape[1]:
            raise ValueError(
                f"steering vectors of shape {tuple(vectors.shape)} do not fit hidden states of shape "
                f"{tuple(hidden.shape)}; give one vector per batch row (beam search and "
                "num_return_sequences > 1 are not supported under steering)"
            )
        steered = hidden + vectors.to(dtype=hidden.dtype, device=hidden.device)[:, None, :]
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    handle = module.register_forward_hook(steer)
    try:
        yield
    finally:
        handle.remove()


# ---------------------------------------------------------------------------------------------
# The method

#: bump when the cached vector record or its computation changes
VECTORS_FORMAT = 1


class ActivationSteering:
    """Instruction activation steering as a `SteeringMethod`: coefficient x the case's instruction vector.

    The vectors are fitted in `prepare` from the held-out cases only (never from the cases being
    evaluated, which would leak their prompts into the steering), one per instruction type; a row's
    vector is the mean of its case's type vectors. Coefficient 0 adds a zero vector: exactly unsteered.
    """

    name: ClassVar[str] = "actadd"
    param: ClassVar[str] = "coefficient"
    noop: ClassVar[Value] = 0.0

    def __init__(self, layer: int | str = "middle") -> None:
        if layer != "middle" and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
            raise SteeringError(f"activation-steering layer {layer!r} must be 'middle' or a layer index >= 0")
        self.layer = layer
        self._layer: int | None = None  # resolved in prepare
        self._vectors: dict[str, torch.Tensor] = {}
        self._held_out: str | None = None  # hash of the held-out cases' content hashes

    @classmethod
    def from_spec(cls, spec: RunSpec) -> ActivationSteering:
        return cls(layer=spec.actadd_layer)

    def __repr__(self) -> str:
        return f"ActivationSteering(layer={self.layer!r})"

    def check(self, value: Any) -> float:
        return finite_number(self.name, self.param, value)

    def label(self, value: Value, grid: Sequence[Value]) -> str:
        return number_label("c", float(value), [float(g) for g in grid])

    def strength(self, value: Value) -> float:
        return abs(float(value))

    @property
    def vectors(self) -> dict[str, torch.Tensor]:
        """The fitted vectors per instruction type (float32, CPU); empty before `prepare`."""
        return dict(self._vectors)

    def prepare(self, ctx: PrepareContext) -> None:
        """Resolve the layer; fit (or load from `ctx.store`) one vector per instruction type of the held-out cases."""
        from ..cache import numerics_versions, tokenizer_fingerprint

        model, tokenizer = ctx.model.model, ctx.model.tokenizer
        param = next(model.parameters())
        layers = _layer_count(model)
        layer = middle_layer(layers) if self.layer == "middle" else int(self.layer)
        if not 0 <= layer < layers:
            raise SteeringError(f"activation-steering layer {layer} is outside the model, which has layers "
                                f"0..{layers - 1}")
        held_out = list({c.key: c for c in ctx.held_out}.values())
        hashes = sorted(c.content_hash() for c in held_out)
        known = set(hashes)
        leaked = [c.key for c in ctx.steered if c.content_hash() in known]
        if leaked:
            raise SteeringError(f"case {leaked[0]!r} is both held out (fitting the vectors) and evaluated; "
                                "held-out cases must not be evaluated")
        held_hash = hashlib.sha256("\n".join(hashes).encode()).hexdigest()
        untagged = [c.key for c in ctx.steered if not c.instruction_id_list]
        if untagged:  # a row's vector is the mean of its case's type vectors: no type, no vector
            raise SteeringError(f"activation steering needs each case's instruction types (instruction_id_list) to "
                                f"choose its vector; case(s) {', '.join(map(repr, untagged[:3]))} have none: tag "
                                "them, or leave actadd out of --steer-methods")
        types = {t for c in held_out for t in c.instruction_id_list}
        missing = sorted({t for c in ctx.steered for t in c.instruction_id_list} - types)
        if missing:
            raise SteeringError(
                f"activation steering has no held-out case for instruction type(s) {', '.join(missing)}, so it has "
                "no vector to steer them with; add held-out cases of those types (held-out cases fit the vectors "
                "and are never evaluated)"
            )
        key = {
            "format": VECTORS_FORMAT, "model": ctx.model.identity, "tokenizer": tokenizer_fingerprint(tokenizer),
            "layer": layer, "held_out": hashes,
            "dtype": str(param.dtype).removeprefix("torch."), "device_type": param.device.type,
            "versions": numerics_versions(),
        }
        record = ctx.store.get("vectors", key) if ctx.store is not None and held_out else None
        vectors = _vectors_from_record(record) if record is not None else None
        if vectors is None:
            vectors = {}
            if held_out:
                try:
                    vectors = instruction_vectors(model, tokenizer, held_out, layer)
                except ValueError as e:
                    raise SteeringError(f"activation steering cannot fit its vectors: {e}") from None
                if ctx.store is not None:
                    ctx.store.put("vectors", key, {"vectors": {t: v.tolist() for t, v in vectors.items()}})
        self._layer, self._vectors, self._held_out = layer, vectors, held_hash

    def identity(self) -> dict[str, Any]:
        """Method, resolved layer and a hash of the held-out cases the vectors come from (after `prepare`)."""
        if self._layer is None:
            raise SteeringError("activation steering's identity depends on its fitted vectors; call prepare() first")
        return {"method": self.name, "layer": self._layer, "held_out": self._held_out}

    def render(self, case: Case, value: Value | None) -> list[dict[str, str]]:
        return user_turn(case)

    def steer(self, model: Any, batch: EncodedBatch, cases: Sequence[Case],
              values: Sequence[Value | None]) -> contextlib.AbstractContextManager[None]:
        """Add coefficient x the row case's mean type vector to every position of the row (zero for None)."""
        import torch

        if not len(batch.texts) == len(cases) == len(values):
            raise SteeringError(f"{len(batch.texts)} texts, {len(cases)} cases and {len(values)} values; "
                                "give one case and one value per batch row")
        if all(v is None for v in values):
            return contextlib.nullcontext()  # adding zeros changes no bit, so skipping it is the same computation
        if self._layer is None:
            raise SteeringError("activation steering has no vectors; call prepare() before steering")
        hidden = model.config.get_text_config().hidden_size
        rows = torch.zeros(len(values), hidden, dtype=torch.float32)
        for i, (case, value) in enumerate(zip(cases, values, strict=True)):
            if value is None:
                continue
            kinds = list(dict.fromkeys(case.instruction_id_list))
            absent = [k for k in kinds if k not in self._vectors]
            if absent or not kinds:
                raise SteeringError(f"case {case.key!r}: no activation-steering vector for instruction type(s) "
                                    f"{', '.join(absent) or '(none)'}; prepare() was not given held-out cases of them")
            rows[i] = self.check(value) * torch.stack([self._vectors[k] for k in kinds]).mean(0)
        param = next(model.parameters())
        return add_to_residual(model, self._layer, rows.to(device=param.device, dtype=param.dtype))


def _layer_count(model: Any) -> int:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise SteeringError(f"{type(model).__name__} has no decoder layer list at model.model.layers; activation "
                            "steering supports Llama/Qwen2/Mistral/Gemma-style causal LMs")
    return len(layers)


def _vectors_from_record(record: Mapping[str, Any]) -> dict[str, torch.Tensor] | None:
    """Vectors from a cached record, or None if the record is not one (then they are fitted again)."""
    import torch

    raw = record.get("vectors")
    if not isinstance(raw, Mapping) or not all(isinstance(v, list) for v in raw.values()):
        return None
    try:
        return {str(t): torch.tensor(v, dtype=torch.float32) for t, v in raw.items()}
    except (TypeError, ValueError):
        return None
