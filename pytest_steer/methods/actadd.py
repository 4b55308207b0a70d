"""Instruction activation steering (Stolfo et al., ICLR 2025, microsoft/llm-steer-instruct).

An instruction gets one direction: the mean, over held-out prompts that carry such an instruction,
of the residual-stream activation at the prompt's last token minus the activation for the same
prompt with the instruction text removed (d), and its unit vector u = d / |d|. The paper's rule, a
projection clamp, sets the component along u of every position's activation to z, the mean
projection on u of the with-instruction last-token activations: h += (z - h.u) u, during prefill and
every decode step. The weight on that change is the method's value (1: the paper's rule, 0: no-op).
The `add` rule adds value x d instead, a constant push at every position.

Directions are keyed as the reference keys them (`vector_keys`): per target language for
`language:response_language`, per word for `keywords:existence`, and a forbidden word is steered away
from by its inclusion direction; other instructions per type. Keyword instructions follow the
reference's keyword rule under both rules: each word's direction d_w is added at weight
sign x value / (number of words), i.e. the reference's weight W = value x |d_w| on the unit direction.
A key without a held-out example falls back to its instruction type's direction (`fallbacks` lists
them, the report shows them).

The residual stream is read and written at the same place, the output of decoder layer `layer`
(what `output_hidden_states` reports as `hidden_states[layer + 1]`, except for the last layer,
where transformers reports the output after the final norm instead).

torch is imported inside the functions so that importing this module (the plugin does) is free.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
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
    @property
    def kwargs(self) -> Sequence[Mapping[str, Any]]: ...


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


@dataclass(frozen=True)
class VectorKey:
    """Which direction steers one instruction (or one of its words), and how.

    `key` is the direction used when the held-out cases have it, `fallback` the type direction used
    otherwise; `name` names the pair in the report's fallback notes. Keyword instructions follow the
    reference's keyword rule (`per_word`): each word's direction is added at weight sign x value / words,
    with sign -1 for a forbidden word, steered away from by its *inclusion* direction.
    """

    name: str
    key: str
    fallback: str
    sign: float = 1.0
    share: float = 1.0
    per_word: bool = False


#: keyword types the reference keys per word: kwargs field of the words, the key prefix of their
#: (inclusion) directions, and the sign those directions are added with
_PER_WORD = {
    "keywords:existence": ("keywords", "keywords:existence", 1.0),
    "keywords:forbidden_words": ("forbidden_words", "keywords:existence", -1.0),
}


def vector_keys(kind: str, kwargs: Mapping[str, Any] | None) -> list[VectorKey]:
    """The directions that steer one instruction of type `kind` with arguments `kwargs`.

    As the reference keys them: `language:response_language` per target language
    ("language:response_language=de"); `keywords:existence` per keyword ("keywords:existence=cat"),
    and `keywords:forbidden_words` by each forbidden word's inclusion direction, negated; other types
    by type. Words are lower-cased. Each falls back to the type's own direction.
    """
    kwargs = kwargs or {}
    if kind == "language:response_language" and kwargs.get("language"):
        return [VectorKey(f"{kind}={kwargs['language']}", f"{kind}={kwargs['language']}", kind)]
    if kind in _PER_WORD:
        field_name, prefix, sign = _PER_WORD[kind]
        raw = kwargs.get(field_name)
        words = list(dict.fromkeys(str(w).strip().lower() for w in raw if str(w).strip())) \
            if isinstance(raw, (list, tuple)) else []
        if words:
            return [VectorKey(f"{kind}={w}", f"{prefix}={w}", kind, sign, 1 / len(words), True) for w in words]
        return [VectorKey(kind, kind, kind, 1.0, 1.0, True)]
    return [VectorKey(kind, kind, kind)]


def _case_keys(case: InstructionCase) -> list[list[VectorKey]]:
    """Per instruction of `case`, the `vector_keys` that steer it."""
    kwargs = list(case.kwargs) if getattr(case, "kwargs", None) else []
    return [vector_keys(kind, kwargs[i] if i < len(kwargs) else None)
            for i, kind in enumerate(case.instruction_id_list)]


def _fit_keys(case: InstructionCase) -> list[str]:
    """The directions a held-out case's activation difference counts for: each instruction's type, and
    its fine keys that point *towards* what the case asks (a forbidden-words case is no inclusion example)."""
    keys = [k for ks in _case_keys(case) for vk in ks for k in ((vk.key,) if vk.sign > 0 else ()) + (vk.fallback,)]
    return list(dict.fromkeys(keys))


def fit_instruction_vectors(
    model: Any, tokenizer: Any, cases: Sequence[InstructionCase], layer: int, *, batch_size: int = 16
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(directions d, targets z) per key: what both steering rules need, from one pass over the cases.

    For each case: activation(prompt) - activation(prompt without its instruction texts), at the
    last token of `layer`'s output; d is the mean over the cases of a key and z the mean projection
    of their with-instruction activations on d / |d|. A case counts for each of its keys (`_fit_keys`):
    its types', and its fine ones (a language, each included keyword). Returns float32 CPU tensors
    [hidden] and floats, keyed in order of first appearance.
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
    with_instruction = acts[: len(cases)]
    diffs = with_instruction - acts[len(cases):]
    rows: dict[str, list[int]] = {}
    for i, case in enumerate(cases):
        for key in _fit_keys(case):
            rows.setdefault(key, []).append(i)
    vectors = {key: diffs[idx].mean(0) for key, idx in rows.items()}
    targets = {key: float(with_instruction[idx].mean(0) @ _unit(vectors[key])) for key, idx in rows.items()}
    return vectors, targets


def instruction_vectors(
    model: Any, tokenizer: Any, cases: Sequence[InstructionCase], layer: int, *, batch_size: int = 16
) -> dict[str, torch.Tensor]:
    """The directions d of `fit_instruction_vectors`: the mean activation difference the instruction makes."""
    return fit_instruction_vectors(model, tokenizer, cases, layer, batch_size=batch_size)[0]


def _unit(vector: torch.Tensor) -> torch.Tensor:
    norm = vector.norm()
    return vector / norm if norm > 0 else vector


@contextlib.contextmanager
def _edit_output(model: Any, layer: int, rows: int, hidden_size: int, what: str,
                 edit: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace decoder layer `layer`'s hidden-state output by `edit(hidden)` in every forward pass inside
    the block (prefill and each cached decode step), after checking it has `rows` rows of `hidden_size`."""
    module = _decoder_layer(model, layer)

    def hook(mod: torch.nn.Module, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[0] != rows or hidden.shape[-1] != hidden_size:
            raise ValueError(
                f"{what} do not fit hidden states of shape {tuple(hidden.shape)}; give one per batch row "
                "(beam search and num_return_sequences > 1 are not supported under steering)"
            )
        steered = edit(hidden)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def clamp_projection(model: Any, layer: int, units: torch.Tensor, targets: torch.Tensor,
                     weights: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """The paper's rule: at every position of batch row b, h += weights[b] (targets[j, b] - h.u) u with
    u = units[j, b], for each direction j in turn (a row steered by several instructions gets each
    clamp; a zero u leaves the row alone, so rows may have fewer directions).

    `units` [k, batch, hidden], `targets` [k, batch], `weights` [batch]; weight 1 is the paper's
    setting, 0 changes nothing. Computed in the hidden states' dtype, like the reference hook.
    """
    if units.dim() != 3 or targets.shape != units.shape[:2] or weights.shape != units.shape[1:2]:
        raise ValueError(f"units [k, batch, hidden], targets [k, batch] and weights [batch] do not fit: "
                         f"{tuple(units.shape)}, {tuple(targets.shape)}, {tuple(weights.shape)}")

    return _edit_output(model, layer, units.shape[1], units.shape[2],
                        f"steering directions of shape {tuple(units.shape)}",
                        lambda hidden: _clamp(hidden, units, targets, weights))


def _clamp(hidden: torch.Tensor, units: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`clamp_projection`'s edit of one layer output [batch, positions, hidden]."""
    dtype, device = hidden.dtype, hidden.device
    w = weights.to(device=device, dtype=dtype)[:, None, None]
    for u, z in zip(units.to(device=device, dtype=dtype), targets.to(device=device, dtype=dtype), strict=True):
        u = u[:, None, :]
        hidden = hidden + w * (z[:, None, None] - (hidden * u).sum(-1, keepdim=True)) * u
    return hidden


def add_to_residual(model: Any, layer: int, vectors: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """Add `vectors[row]` to decoder layer `layer`'s output at every position of batch row `row`.

    Active for every forward pass inside the block, so `generate` is steered at prefill and at each
    cached decode step. One vector per row lets a batch mix strengths; a zero row leaves its row
    exactly unchanged. The vector is cast to the hidden states' dtype and device. Beam search and
    num_return_sequences > 1 change the batch size and raise ValueError.
    """
    if vectors.dim() != 2:
        raise ValueError(f"vectors must be [batch, hidden], one vector per batch row, got shape {tuple(vectors.shape)}")
    return _edit_output(model, layer, vectors.shape[0], vectors.shape[1],
                        f"steering vectors of shape {tuple(vectors.shape)}",
                        lambda hidden: hidden + vectors.to(dtype=hidden.dtype, device=hidden.device)[:, None, :])


# ---------------------------------------------------------------------------------------------
# The method

#: bump when the cached vector record or its computation changes
VECTORS_FORMAT = 3
#: the steering rules: the paper's projection clamp, and a constant push along the raw difference
RULES = ("project", "add")


class ActivationSteering:
    """Instruction activation steering as a `SteeringMethod`, at weight `value` on its rule.

    `project` (the default, the paper's rule): h += value x (z - h.u) u per instruction direction,
    value 1 the paper's setting. `add`: h += value x d, d the mean of the case's raw differences.
    Keyword instructions add their words' directions under both (see the module docstring).
    The directions are fitted in `prepare` from the held-out cases only (never from the cases being
    evaluated, which would leak their prompts into the steering). Value 0 is exactly unsteered.
    """

    name: ClassVar[str] = "actadd"
    param: ClassVar[str] = "coefficient"
    noop: ClassVar[Value] = 0.0

    def __init__(self, layer: int | str = "middle", rule: str = "project") -> None:
        if layer != "middle" and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
            raise SteeringError(f"activation-steering layer {layer!r} must be 'middle' or a layer index >= 0")
        if rule not in RULES:
            raise SteeringError(f"activation-steering rule {rule!r} must be one of {', '.join(RULES)}")
        self.layer = layer
        self.rule = rule
        self._layer: int | None = None  # resolved in prepare
        self._vectors: dict[str, torch.Tensor] = {}
        self._targets: dict[str, float] = {}
        self._fallbacks: dict[str, str] = {}  # fine key without held-out cases -> the type key used instead
        self._held_out: str | None = None  # hash of the held-out cases' content hashes

    @classmethod
    def from_spec(cls, spec: RunSpec) -> ActivationSteering:
        return cls(layer=spec.actadd_layer, rule=spec.actadd_rule)

    def __repr__(self) -> str:
        return f"ActivationSteering(layer={self.layer!r}, rule={self.rule!r})"

    def check(self, value: Any) -> float:
        return finite_number(self.name, self.param, value)

    def label(self, value: Value, grid: Sequence[Value]) -> str:
        return number_label("c", float(value), [float(g) for g in grid])

    def strength(self, value: Value) -> float:
        return abs(float(value))

    @property
    def vectors(self) -> dict[str, torch.Tensor]:
        """The fitted directions d per key (float32, CPU); empty before `prepare`."""
        return dict(self._vectors)

    @property
    def targets(self) -> dict[str, float]:
        """The projection targets z per key: the mean projection of with-instruction activations on d / |d|."""
        return dict(self._targets)

    @property
    def fallbacks(self) -> dict[str, str]:
        """Keys of the steered cases that had no held-out example, and the type key steering them instead."""
        return dict(self._fallbacks)

    def prepare(self, ctx: PrepareContext) -> None:
        """Resolve the layer; fit (or load from `ctx.store`) the directions and targets of the held-out cases."""
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
            "layer": layer, "held_out": hashes, "keys": "language+keywords",
            "dtype": str(param.dtype).removeprefix("torch."), "device_type": param.device.type,
            "versions": numerics_versions(),
        }
        record = ctx.store.get("vectors", key) if ctx.store is not None and held_out else None
        fitted = _vectors_from_record(record) if record is not None else None
        if fitted is None:
            fitted = {}, {}
            if held_out:
                try:
                    fitted = fit_instruction_vectors(model, tokenizer, held_out, layer)
                except ValueError as e:
                    raise SteeringError(f"activation steering cannot fit its vectors: {e}") from None
                if ctx.store is not None:
                    ctx.store.put("vectors", key, {"vectors": {t: v.tolist() for t, v in fitted[0].items()},
                                                   "targets": fitted[1]})
        self._layer, (self._vectors, self._targets), self._held_out = layer, fitted, held_hash
        self._fallbacks = {vk.name: vk.fallback for c in ctx.steered for vks in _case_keys(c) for vk in vks
                           if vk.key not in self._vectors}

    def identity(self) -> dict[str, Any]:
        """Method, rule, resolved layer and a hash of the held-out cases the vectors come from (after `prepare`)."""
        if self._layer is None:
            raise SteeringError("activation steering's identity depends on its fitted vectors; call prepare() first")
        return {"method": self.name, "rule": self.rule, "layer": self._layer, "held_out": self._held_out,
                "keys": "language+keywords"}

    def notes(self) -> list[str]:
        """What the report should say about the fitted method: its layer, and keys that fell back to a type."""
        out = [f"actadd: rule {self.rule}, layer {self._layer}"]
        if self._fallbacks:
            out.append("actadd: no held-out case for " + ", ".join(
                f"{fine} (steered with {kind})" for fine, kind in sorted(self._fallbacks.items())))
        return out

    def render(self, case: Case, value: Value | None) -> list[dict[str, str]]:
        return user_turn(case)

    def _keys(self, case: Case) -> list[list[tuple[str, float]]]:
        """Per instruction of `case`, its (direction key, signed weight share) pairs, fallbacks applied."""
        out: list[list[tuple[str, float]]] = []
        for vks in _case_keys(case):
            pairs = [(vk.key, vk.sign * vk.share) if vk.key in self._vectors else (vk.fallback, vk.share)
                     for vk in vks]
            absent = [k for k, _ in pairs if k not in self._vectors]
            if absent:
                raise SteeringError(f"case {case.key!r}: no activation-steering vector for instruction type(s) "
                                    f"{', '.join(absent)}; prepare() was not given held-out cases of them")
            out.append(pairs)
        if not out:
            raise SteeringError(f"case {case.key!r}: no activation-steering vector for instruction type(s) (none); "
                                "prepare() was not given held-out cases of them")
        return out

    def _row(self, case: Case, weight: float, hidden: int) -> tuple[list[tuple[torch.Tensor, float]], torch.Tensor]:
        """One row's steering at `weight`: the (unit, target) clamps and the vector added after them.

        `project`: each non-keyword instruction is a clamp; keyword instructions add
        weight x sum(sign x share x d) over their words (the reference's keyword rule). `add`: the mean
        over the instructions of each one's vector (d, or that keyword sum), times weight.
        """
        import torch

        clamps: list[tuple[torch.Tensor, float]] = []
        pushes: list[torch.Tensor] = []
        for vks, pairs in zip(_case_keys(case), self._keys(case), strict=True):
            if vks[0].per_word:
                pushes.append(sum((share * self._vectors[k] for k, share in pairs), torch.zeros(hidden)))
            elif self.rule == "project":
                clamps.extend((_unit(self._vectors[k]), self._targets[k]) for k, _ in pairs)
            else:
                pushes.append(self._vectors[pairs[0][0]])
        if not pushes:
            return clamps, torch.zeros(hidden)
        total = torch.stack(pushes).sum(0)
        return clamps, weight * (total / len(pushes) if self.rule == "add" else total)

    def steer(self, model: Any, batch: EncodedBatch, cases: Sequence[Case],
              values: Sequence[Value | None]) -> contextlib.AbstractContextManager[None]:
        """Steer row i by its case's directions at values[i] under the method's rule (None: not at all)."""
        import torch

        if not len(batch.texts) == len(cases) == len(values):
            raise SteeringError(f"{len(batch.texts)} texts, {len(cases)} cases and {len(values)} values; "
                                "give one case and one value per batch row")
        if all(v is None for v in values):
            return contextlib.nullcontext()  # a zero change changes no bit, so skipping it is the same computation
        if self._layer is None:
            raise SteeringError("activation steering has no vectors; call prepare() before steering")
        hidden = model.config.get_text_config().hidden_size
        param = next(model.parameters())
        weights = torch.tensor([0.0 if v is None else self.check(v) for v in values])
        rows = [self._row(c, float(w), hidden) if v is not None else ([], torch.zeros(hidden))
                for c, v, w in zip(cases, values, weights, strict=True)]
        depth = max(len(clamps) for clamps, _ in rows)
        units = torch.zeros(depth, len(values), hidden, dtype=torch.float32)
        targets = torch.zeros(depth, len(values), dtype=torch.float32)
        for i, (clamps, _) in enumerate(rows):
            for j, (u, z) in enumerate(clamps):
                units[j, i], targets[j, i] = u, z
        pushes = torch.stack([push for _, push in rows]).to(device=param.device, dtype=param.dtype)
        if not depth:
            return add_to_residual(model, self._layer, pushes)
        if not pushes.any():
            return clamp_projection(model, self._layer, units, targets, weights)

        def edit(h: torch.Tensor) -> torch.Tensor:
            return _clamp(h, units, targets, weights) + pushes.to(dtype=h.dtype, device=h.device)[:, None, :]

        return _edit_output(model, self._layer, len(values), hidden, f"steering directions of shape "
                            f"{tuple(units.shape)}", edit)


def _layer_count(model: Any) -> int:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise SteeringError(f"{type(model).__name__} has no decoder layer list at model.model.layers; activation "
                            "steering supports Llama/Qwen2/Mistral/Gemma-style causal LMs")
    return len(layers)


def _vectors_from_record(record: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, float]] | None:
    """(directions, targets) from a cached record, or None if the record is not one (then they are fitted again)."""
    import torch

    raw, targets = record.get("vectors"), record.get("targets")
    if not isinstance(raw, Mapping) or not all(isinstance(v, list) for v in raw.values()):
        return None
    if not isinstance(targets, Mapping) or set(targets) != set(raw):
        return None
    try:
        return ({str(t): torch.tensor(v, dtype=torch.float32) for t, v in raw.items()},
                {str(t): float(z) for t, z in targets.items()})
    except (TypeError, ValueError):
        return None
