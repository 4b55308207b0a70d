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
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..options import Option, grid_parser, parse_choice, parse_layer
from .base import INSTRUCTIONS, CaseOffers, PrepareContext, SteeringError, Value, finite_number, number_label, user_turn

if TYPE_CHECKING:
    import torch

    from ..prompts import EncodedBatch
    from ..records import Case

# A removed instruction followed by one of these leaves no space before it ("cats ." -> "cats.").
_CLOSING_PUNCTUATION = ".,;:!?)]}"


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
    return layers_last_token_activations(model, tokenizer, prompts, [layer], batch_size=batch_size)[layer]


def layers_last_token_activations(
    model: Any, tokenizer: Any, prompts: Sequence[str], layers: Sequence[int], *, batch_size: int = 16
) -> dict[int, torch.Tensor]:
    """`last_token_activations` at several layers from one forward pass per batch (for `auto`'s sweep)."""
    import torch

    from ..prompts import render_chat

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    wanted = sorted(set(layers))
    modules = {layer: _decoder_layer(model, layer) for layer in wanted}
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0  # masked out anyway
    captured: dict[int, list[torch.Tensor]] = {layer: [] for layer in wanted}

    def capture(layer: int) -> Callable[..., None]:
        def hook(mod: torch.nn.Module, args: Any, output: Any) -> None:
            hidden = output[0] if isinstance(output, tuple) else output
            captured[layer].append(hidden[:, -1].float().cpu())
            if layer == wanted[-1]:
                raise _Captured
        return hook

    handles = [module.register_forward_hook(capture(layer)) for layer, module in modules.items()]
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
        for handle in handles:
            handle.remove()
    hidden_size = model.config.get_text_config().hidden_size
    return {layer: torch.cat(rows) if rows else torch.empty(0, hidden_size) for layer, rows in captured.items()}


def _kinds(offers: CaseOffers, case: Case) -> list[str]:
    """Per instruction of `case`, the group its directions fall back to (IFEval: its instruction type); `auto`
    chooses one layer per group."""
    return [vks[0].fallback if vks else "" for vks in offers.vector_keys(case)]


def _fit_keys(vector_keys: Sequence[Any]) -> list[str]:
    """The directions one instruction's activation difference counts for: its type, and its fine keys
    that point *towards* what it asks (a forbidden word is no inclusion example)."""
    keys = [k for vk in vector_keys for k in ((vk.key,) if vk.sign > 0 else ()) + (vk.fallback,)]
    return list(dict.fromkeys(keys))


def fit_instruction_vectors(
    model: Any, tokenizer: Any, cases: Sequence[Case], layer: int, *, batch_size: int = 16,
    offers: CaseOffers = INSTRUCTIONS,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(directions d, targets z) per key: what both steering rules need, from one pass over the cases.

    For each instruction of each case: activation(prompt) - activation(prompt without that one
    instruction's text), at the last token of `layer`'s output, counted for that instruction's keys
    (`_fit_keys`: its type, and its fine keys such as a language or an included keyword). A case with
    several instructions thus gives each of them its own difference, the others kept in both prompts,
    instead of one mixed difference counted for every type (the reference fits on single-instruction
    examples; for those this is the same). d is the mean over a key's differences and z the mean
    projection of their with-instruction activations on d / |d|. Returns float32 CPU tensors [hidden]
    and floats, keyed in order of first appearance.
    """
    return fit_layers(model, tokenizer, cases, [layer], batch_size=batch_size, offers=offers)[layer]


def fit_layers(
    model: Any, tokenizer: Any, cases: Sequence[Case], layers: Sequence[int], *, batch_size: int = 16,
    offers: CaseOffers = INSTRUCTIONS,
) -> dict[int, tuple[dict[str, torch.Tensor], dict[str, float]]]:
    """`fit_instruction_vectors` at each of `layers`, from one forward pass per batch."""
    cases = list(cases)
    if not cases:
        raise ValueError("no cases to compute instruction vectors from")
    stripped: list[str] = []  # one per (case, instruction)
    owner: list[int] = []  # the case of each stripped prompt
    rows: dict[str, list[int]] = {}  # key -> the (case, instruction) pairs it is fitted from
    for i, case in enumerate(cases):
        texts = list(offers.highlights(case))
        if not texts:
            raise ValueError(f"case {case.key!r} offers no instruction texts (highlights, e.g. IFEval's "
                             "`instructions`), so it has no paired prompt")
        keyed = offers.vector_keys(case)
        for j, text in enumerate(texts):
            try:
                stripped.append(prompt_without_instructions(case.prompt, [text]))
            except ValueError as e:
                raise ValueError(f"case {case.key!r}: {e}") from None
            for key in _fit_keys(keyed[j] if j < len(keyed) else ()):
                rows.setdefault(key, []).append(len(owner))
            owner.append(i)
    at = layers_last_token_activations(
        model, tokenizer, [c.prompt for c in cases] + stripped, layers, batch_size=batch_size
    )
    out = {}
    for layer, acts in at.items():
        with_instruction = acts[: len(cases)][owner]
        diffs = with_instruction - acts[len(cases):]
        vectors = {key: diffs[idx].mean(0) for key, idx in rows.items()}
        out[layer] = vectors, {key: float(with_instruction[idx].mean(0) @ _unit(vectors[key]))
                               for key, idx in rows.items()}
    return out


def instruction_vectors(
    model: Any, tokenizer: Any, cases: Sequence[Case], layer: int, *, batch_size: int = 16,
    offers: CaseOffers = INSTRUCTIONS,
) -> dict[str, torch.Tensor]:
    """The directions d of `fit_instruction_vectors`: the mean activation difference the instruction makes."""
    return fit_instruction_vectors(model, tokenizer, cases, layer, batch_size=batch_size, offers=offers)[0]


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


def edit_residual(model: Any, layer: int, units: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                  pushes: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """Steer decoder layer `layer`'s output at every position of each batch row b: first the paper's
    clamp, then h += pushes[b] (the reference's keyword rule, and the `add` rule).

    The clamp with one direction u = units[0, b] is h += weights[b] (targets[0, b] - h.u) u. A row
    steered by several instructions gets one simultaneous projection (`clamp`): the smallest change
    within the span of its directions that puts every projection h.u_j at its target at once. Clamping
    one direction after another only does that when the directions are orthogonal: a later clamp moves
    the projections an earlier one set. A zero u leaves the row alone, so rows may have fewer directions.

    `units` [k, batch, hidden] (k may be 0), `targets` [k, batch], `weights` [batch], `pushes`
    [batch, hidden]; weight 1 is the paper's setting, weight 0 and a zero push change nothing, bit for
    bit. Computed in the hidden states' dtype, like the reference hooks.
    """
    if pushes.dim() != 2:
        raise ValueError(f"vectors must be [batch, hidden], one vector per batch row, got shape {tuple(pushes.shape)}")
    if units.dim() != 3 or targets.shape != units.shape[:2] or weights.shape != pushes.shape[:1] \
            or units.shape[1:] != pushes.shape:
        raise ValueError(f"units [k, batch, hidden], targets [k, batch], weights [batch] and pushes [batch, hidden] "
                         f"do not fit: {tuple(units.shape)}, {tuple(targets.shape)}, {tuple(weights.shape)}, "
                         f"{tuple(pushes.shape)}")
    has_push = bool(pushes.any())

    def edit(hidden: torch.Tensor) -> torch.Tensor:
        dtype, device = hidden.dtype, hidden.device
        w = weights.to(device=device, dtype=dtype)[:, None, None]
        if units.shape[0] == 1:  # one direction: the reference's hook, in the hidden states' dtype
            u, z = units[0].to(device=device, dtype=dtype)[:, None, :], targets[0].to(device=device, dtype=dtype)
            hidden = hidden + w * (z[:, None, None] - (hidden * u).sum(-1, keepdim=True)) * u
        elif units.shape[0] > 1:
            hidden = hidden + w * clamp(hidden, units.to(device), targets.to(device))
        return hidden + pushes.to(dtype=dtype, device=device)[:, None, :] if has_push else hidden

    return _edit_output(model, layer, pushes.shape[0], pushes.shape[1],
                        f"steering vectors of shape {tuple(pushes.shape)}", edit)


def clamp(hidden: torch.Tensor, units: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The change that sets every projection at once: for each row b and position, delta = U^T a with
    (U U^T) a = z - U h, U the row's non-zero directions units[:, b] (k x hidden), z its targets, so that
    U (h + delta) = z exactly (in the least-squares sense when directions are linearly dependent).

    `hidden` [batch, seq, hidden], `units` [k, batch, hidden], `targets` [k, batch]; solved in float32
    (or float64 for float64 states) and returned in `hidden`'s dtype. For orthonormal directions
    U U^T = I and this is the sum of the one-direction clamps, which clamping them in turn gives too.
    """
    import torch

    work = torch.promote_types(hidden.dtype, torch.float32)
    h = hidden.to(work)
    u = units.to(work).transpose(0, 1)  # [batch, k, hidden]
    active = u.abs().sum(-1) > 0  # [batch, k]
    gram = u @ u.transpose(1, 2) + torch.diag_embed((~active).to(work))  # an inactive direction solves to 0
    residual = (targets.to(work).T[:, None, :] - h @ u.transpose(1, 2)) * active[:, None, :]  # [batch, seq, k]
    coefficients = residual @ torch.linalg.pinv(gram, hermitian=True).transpose(1, 2)
    return (coefficients @ u).to(hidden.dtype)


def add_to_residual(model: Any, layer: int, vectors: torch.Tensor) -> contextlib.AbstractContextManager[None]:
    """Add `vectors[row]` to decoder layer `layer`'s output at every position of batch row `row`
    (`edit_residual` without clamps).

    Active for every forward pass inside the block, so `generate` is steered at prefill and at each
    cached decode step. One vector per row lets a batch mix strengths; a zero row leaves its row
    exactly unchanged. The vector is cast to the hidden states' dtype and device. Beam search and
    num_return_sequences > 1 change the batch size and raise ValueError.
    """
    import torch

    if vectors.dim() != 2:
        raise ValueError(f"vectors must be [batch, hidden], one vector per batch row, got shape {tuple(vectors.shape)}")
    rows = vectors.shape[0]
    return edit_residual(model, layer, torch.zeros(0, *vectors.shape), torch.zeros(0, rows), torch.zeros(rows), vectors)


# ---------------------------------------------------------------------------------------------
# The method

#: bump when the cached vector record or its computation changes
VECTORS_FORMAT = 3
#: the steering rules: the paper's projection clamp, and a constant push along the raw difference
RULES = ("project", "add")
#: `auto`'s budget: at most this many layers, evenly spaced in the middle band [n/5, n - n/5) (the
#: reference sweeps every 2nd layer from n/5 to the top), held-out cases per instruction type, and
#: new tokens per sweep response for a type judged early in an answer
AUTO_LAYERS, AUTO_CASES, AUTO_TOKENS = 4, 3, 64
#: the cap on new tokens for a type judged at the end of an answer or on its whole length. An answer cut
#: short fails them at every layer and unsteered alike: at 384 tokens only 1-2 of 3 of the embedded model's
#: end-phrase answers ended, so every arm scored 0 (the reference gives 768-1024). It is a cap, not a
#: length: generation stops as soon as every answer in the batch has ended (end of turn), so the long
#: budget is paid only while some answer is still going (a loop runs to the cap)
AUTO_LONG_TOKENS = 1024
JUDGED_ON_THE_WHOLE_ANSWER = frozenset({
    "startend:end_checker", "startend:quotation", "detectable_content:postscript", "detectable_format:json_format",
    "detectable_format:multiple_sections", "detectable_format:number_bullet_lists",
    "detectable_format:number_highlighted_sections", "length_constraints:number_words",
    "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:nth_paragraph_first_word", "keywords:frequency", "keywords:letter_frequency",
    "detectable_content:number_placeholders", "combination:repeat_prompt", "combination:two_responses",
})
#: the degeneracy mark, calibrated per model: a response whose perplexity (the response alone, under the
#: model itself) is below this share of the median over the sweep's unsteered responses is degenerate
DEGENERATE_SHARE = 0.5
#: bump when the cached sweep record or its computation changes
SWEEP_FORMAT = 2

Layers = dict[int, tuple[dict[str, "torch.Tensor"], dict[str, float]]]


def sweep_tokens(kind: str, max_new_tokens: int = 0) -> int:
    """The cap on new tokens per sweep response for instruction type `kind`: enough for it to be judged
    (for end-judged types, enough for the answer to end), or the run's own `max_new_tokens` when that is
    larger (the sweep then sees answers as long as the run's)."""
    return max(AUTO_LONG_TOKENS if kind in JUDGED_ON_THE_WHOLE_ANSWER else AUTO_TOKENS, max_new_tokens)


def response_perplexities(model: Any, tokenizer: Any, responses: Sequence[str], *, batch_size: int = 8) -> list[float]:
    """Perplexity of each response alone (after the start token, no prompt) under `model`; NaN when empty.

    This is the reference's measure (it scores the response alone, under GPT-2) with the model under
    test in GPT-2's place, since no fixed second model installs offline here. Given the prompt, a model
    finds its own fluent answers nearly as predictable as a loop (both near 2 for SmolLM2-135M). Alone,
    fluent answers spread widely (2.55 to 88 on samples measured here) while loops sit low (12 repeats of
    one phrase: 2.2), so no fixed mark fits every model: the caller calibrates one from unsteered answers.
    """
    import torch

    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = [[start, *tokenizer(r, add_special_tokens=False)["input_ids"]] for r in responses]
    out = [math.nan] * len(ids)
    todo = [i for i, x in enumerate(ids) if len(x) > 1]
    device = next(model.parameters()).device
    for at in range(0, len(todo), batch_size):
        rows = todo[at:at + batch_size]
        width = max(len(ids[i]) for i in rows)
        batch = torch.full((len(rows), width), start, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            batch[r, :len(ids[i])], mask[r, :len(ids[i])] = torch.tensor(ids[i]), 1
        with torch.inference_mode():
            logits = model(input_ids=batch.to(device), attention_mask=mask.to(device)).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), batch[:, 1:].to(device),
                                                reduction="none")
        keep = mask[:, 1:].to(device).float()
        for r, i in enumerate(rows):
            out[i] = math.exp(float((nll[r] * keep[r]).sum() / keep[r].sum()))
    return out


def auto_layers(num_layers: int) -> list[int]:
    """The layers `auto` tries: up to AUTO_LAYERS evenly spaced over the middle band [n/5, n - n/5)."""
    band = list(range(num_layers // 5, max(num_layers - num_layers // 5, num_layers // 5 + 1)))
    step = -(-len(band) // AUTO_LAYERS)
    return band[::step]


@dataclass(frozen=True)
class LayerTrial:
    """One response of `auto`'s sweep: an instruction type's held-out case, generated unsteered
    (layer None) or steered at `layer` with value 1; whether it follows the instruction, its
    perplexity (`response_perplexities`; NaN for an empty response), and whether it ended before its
    token budget (`tokens`)."""

    kind: str
    layer: int | None
    follows: bool
    perplexity: float
    ended: bool = True
    tokens: int = AUTO_TOKENS


def degeneracy_mark(trials: Sequence[LayerTrial]) -> float:
    """The perplexity below which a sweep response counts as degenerate, calibrated on this model:
    DEGENERATE_SHARE of the median perplexity of the sweep's unsteered responses (the reference's fixed
    2.5 belongs to GPT-2's scale, not to the model under test's). NaN without unsteered perplexities."""
    import statistics

    base = [t.perplexity for t in trials if t.layer is None and not math.isnan(t.perplexity)]
    return DEGENERATE_SHARE * statistics.median(base) if base else math.nan


def degenerate(trial: LayerTrial, mark: float) -> bool:
    """Empty, or more predictable than the mark (a loop)."""
    return math.isnan(trial.perplexity) or (not math.isnan(mark) and trial.perplexity < mark)


def choose_layers(trials: Sequence[LayerTrial]) -> dict[str, int | None]:
    """Per instruction type, the layer `auto` steers it at (None: not steered), as the reference picks it.

    As in the reference (floor 0, for chat models): an arm (a layer, or unsteered) with any degenerate
    response (`degenerate` under `degeneracy_mark`) scores 0; the highest held-out accuracy wins, ties
    going to unsteered, then to the lower layer.

    When no arm (unsteered or any layer) followed the instruction at all, the sweep says nothing about
    the layer (`uninformed`): the type is steered at the middle swept layer, the method's default
    depth, rather than reported as "unsteered", which would read as steering tried and found useless.
    """
    mark = degeneracy_mark(trials)
    blind = uninformed(trials)
    out: dict[str, int | None] = {}
    for kind in dict.fromkeys(t.kind for t in trials):
        by_layer: dict[int | None, list[LayerTrial]] = {}
        for t in trials:
            if t.kind == kind:
                by_layer.setdefault(t.layer, []).append(t)
        swept = sorted(layer for layer in by_layer if layer is not None)
        if kind in blind and swept:
            out[kind] = swept[len(swept) // 2]
            continue
        score = {layer: 0.0 if any(degenerate(r, mark) for r in rows) else sum(r.follows for r in rows) / len(rows)
                 for layer, rows in by_layer.items()}
        out[kind] = min(score, key=lambda layer: (-score[layer], layer is not None, layer or 0))
    return out


def uninformed(trials: Sequence[LayerTrial]) -> set[str]:
    """Instruction types that no response of the sweep followed, in any arm: their layer is not informed."""
    return {kind for kind in {t.kind for t in trials} if not any(t.follows for t in trials if t.kind == kind)}


def ended_by_arm(trials: Sequence[LayerTrial], kind: str) -> str:
    """How many of `kind`'s sweep answers ended within their budget, per arm ("unsteered 1/3, 6 2/3"): with
    every arm at 0, it tells an answer too short to be judged from steering that did not help."""
    arms: dict[int | None, list[LayerTrial]] = {}
    for t in trials:
        if t.kind == kind:
            arms.setdefault(t.layer, []).append(t)
    return ", ".join(f"{'unsteered' if layer is None else layer} {sum(t.ended for t in rows)}/{len(rows)}"
                     for layer, rows in sorted(arms.items(), key=lambda a: (a[0] is not None, a[0] or 0)))


def check_coefficient(value: Any) -> float:
    """Activation steering's one rule for its weight: any finite number (0 = no steering, < 0 pushes away)."""
    return finite_number("actadd", "coefficient", value)


#: the paper's two settings: the instruction kept in the prompt, or removed from it and supplied by the vector
SETTINGS = ("kept", "removed")
#: a grid value of the instruction-removed setting: "removed:<coefficient>"
REMOVED = "removed:"


def split_value(value: Any) -> tuple[str, float]:
    """(setting, coefficient) of a grid value: a number is the kept setting, "removed:<c>" the removed one."""
    if isinstance(value, str) and value.strip().startswith(REMOVED):
        return "removed", check_coefficient(value.strip()[len(REMOVED):])
    return "kept", check_coefficient(value)


def parse_settings(value: Any) -> tuple[str, ...]:
    """`--steer-actadd-setting`: kept, removed, or both (comma-separated)."""
    import argparse

    out = tuple(dict.fromkeys(t.strip() for t in str(value if not isinstance(value, (list, tuple))
                                                     else ",".join(map(str, value))).split(",") if t.strip()))
    bad = [t for t in out if t not in SETTINGS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"activation-steering setting {', '.join(bad) or value!r}: use kept, "
                                         "removed or kept,removed")
    return out


class ActivationSteering:
    """Instruction activation steering as a `SteeringMethod`, at weight `value` on its rule.

    `project` (the default, the paper's rule): h += value x (z - h.u) u per instruction direction,
    value 1 the paper's setting. `add`: h += value x d, d the mean of the case's raw differences.
    Keyword instructions add their words' directions under both (see the module docstring).
    The directions are fitted in `prepare` from the held-out cases only (never from the cases being
    evaluated, which would leak their prompts into the steering). Value 0 is exactly unsteered.

    `layer`: an index, "middle", or "auto": per instruction type, the layer of `auto_layers` that
    `choose_layers` picks from a sweep over held-out cases (which needs `ctx.options["follows"]`,
    (case, response) -> bool, and `ctx.options["perplexities"]`, responses -> perplexities, normally
    `response_perplexities` under the unsteered model; the session passes both, and the run's
    `max_new_tokens` for `sweep_tokens`).
    """

    name: ClassVar[str] = "actadd"
    param: ClassVar[str] = "coefficient"
    noop: ClassVar[Value] = 0.0
    grid: ClassVar[Option] = Option("actadd_coefs", grid_parser("coefficient", check_coefficient, 0.0, "1,2,4"),
                                    (1.0, 2.0, 4.0), "activation-steering coefficients to sweep")
    options: ClassVar[tuple[Option, ...]] = (
        Option("actadd_layer", parse_layer, "middle",
               "layer whose output activation steering edits: middle, an index, or auto (a held-out sweep per type)"),
        Option("actadd_rule", parse_choice(*RULES), "project",
               "activation-steering rule: project (the paper's projection clamp) or add (coefficient x raw vector)"),
        Option("actadd_setting", parse_settings, ("kept",),
               "activation-steering setting(s): kept (instruction in the prompt), removed (the prompt without its "
               "instruction, steered by the instruction's vector; adds an unsteered removed-c0 row), or kept,removed"),
    )

    def __init__(self, layer: int | str = "middle", rule: str = "project",
                 settings: Sequence[str] = ("kept",)) -> None:
        if layer not in ("middle", "auto") and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
            raise SteeringError(f"activation-steering layer {layer!r} must be 'middle', 'auto' or a layer index >= 0")
        if rule not in RULES:
            raise SteeringError(f"activation-steering rule {rule!r} must be one of {', '.join(RULES)}")
        self.layer = layer
        self.rule = rule
        if not settings or any(x not in SETTINGS for x in settings):
            raise SteeringError(f"activation-steering settings {tuple(settings)!r}: use kept and/or removed")
        self.settings = tuple(settings)
        self._layer: int | None = None  # the resolved fixed layer (None under auto)
        self._fits: Layers = {}  # layer -> (directions, targets), fitted in prepare
        self._type_layers: dict[str, int | None] = {}  # auto's choice per instruction type (None: not steered)
        self._uninformed: set[str] = set()  # types no arm of auto's sweep followed
        self._trials: list[LayerTrial] = []  # auto's sweep
        self._fallbacks: dict[str, str] = {}  # fine key without held-out cases -> the type key used instead
        self._held_out: str | None = None  # hash of the held-out cases' content hashes
        self.offers: CaseOffers = INSTRUCTIONS  # which keys group each case's vectors: the run's task, from prepare
        self._keys_id = "language+keywords"

    @classmethod
    def from_options(cls, values: Mapping[str, Any]) -> ActivationSteering:
        """The method at the values of its declared `options`."""
        return cls(layer=values["actadd_layer"], rule=values["actadd_rule"],
                   settings=values.get("actadd_setting", ("kept",)))

    def __repr__(self) -> str:
        return f"ActivationSteering(layer={self.layer!r}, rule={self.rule!r}, settings={self.settings!r})"

    def check(self, value: Any) -> Value:
        """A coefficient (the kept setting), or "removed:<coefficient>" (the instruction-removed setting)."""
        setting, c = split_value(value)
        return c if setting == "kept" else f"{REMOVED}{c!r}"

    def expand(self, grid: Sequence[Value]) -> list[Value]:
        """The grid in each of the method's settings; the removed setting adds its unsteered row (c = 0), the
        paper's "instruction removed, no steering" point that the steered removed rows are read against."""
        coefficients = [split_value(v)[1] for v in grid]
        out: list[Value] = []
        for setting in self.settings:
            if setting == "kept":
                out += coefficients
            else:
                out += [f"{REMOVED}{c!r}" for c in dict.fromkeys([0.0, *coefficients])]
        return out

    def series(self, value: Value) -> str:
        """The removed setting's rows are their own series ("actadd-removed") in tables and figures."""
        return "actadd-removed" if split_value(value)[0] == "removed" else self.name

    def rewrites(self, value: Value) -> str:
        """For combined configs: the removed setting replaces the prompt; the kept one leaves it alone."""
        return "replaces" if split_value(value)[0] == "removed" else "none"

    def label(self, value: Value, grid: Sequence[Value]) -> str:
        setting, c = split_value(value)
        same = [split_value(g)[1] for g in grid if split_value(g)[0] == setting]
        return number_label("c" if setting == "kept" else "removed-c", c, same)

    def strength(self, value: Value) -> float:
        return abs(split_value(value)[1])

    @property
    def vectors(self) -> dict[str, torch.Tensor]:
        """The fitted directions d per key (float32, CPU) at the fixed layer; empty before `prepare` and under auto."""
        return dict(self._fits[self._layer][0]) if self._layer in self._fits else {}

    @property
    def targets(self) -> dict[str, float]:
        """The projection targets z per key: the mean projection of with-instruction activations on d / |d|."""
        return dict(self._fits[self._layer][1]) if self._layer in self._fits else {}

    @property
    def layers(self) -> dict[str, int | None]:
        """Under auto, the chosen layer per instruction type (None: `auto` leaves it unsteered); else empty."""
        return dict(self._type_layers)

    @property
    def sweep(self) -> list[LayerTrial]:
        """`auto`'s sweep over held-out cases, each response's score and perplexity (empty for a fixed layer)."""
        return list(self._trials)

    @property
    def fallbacks(self) -> dict[str, str]:
        """Keys of the steered cases that had no held-out example, and the type key steering them instead."""
        return dict(self._fallbacks)

    def prepare(self, ctx: PrepareContext) -> None:
        """Resolve the layer(s); fit (or load from `ctx.store`) the directions and targets of the held-out
        cases; under auto, run (or load) the layer sweep and choose a layer per instruction type."""
        model = ctx.model.model
        layers = _layer_count(model)
        layer = middle_layer(layers) if self.layer == "middle" else None if self.layer == "auto" else int(self.layer)
        if layer is not None and not 0 <= layer < layers:
            raise SteeringError(f"activation-steering layer {layer} is outside the model, which has layers "
                                f"0..{layers - 1}")
        held_out = list({c.key: c for c in ctx.held_out}.values())
        hashes = sorted(c.content_hash() for c in held_out)
        known = set(hashes)
        leaked = [c.key for c in ctx.steered if c.content_hash() in known]
        if leaked:
            raise SteeringError(f"case {leaked[0]!r} is both held out (fitting the vectors) and evaluated; "
                                "held-out cases must not be evaluated")
        self.offers = offers = ctx.task
        self._check_removed(ctx.steered)
        self._keys_id = self._keying(held_out)
        untagged = [c.key for c in ctx.steered if not offers.vector_keys(c)]
        if untagged:  # a row's vector is the mean of its case's key vectors: no key, no vector
            raise SteeringError(f"activation steering needs each case's vector keys (IFEval: its instruction types, "
                                f"instruction_id_list) to choose its vector; case(s) "
                                f"{', '.join(map(repr, untagged[:3]))} have none: tag them, or leave actadd out of "
                                "--steer-methods")
        types = {t for c in held_out for t in _kinds(offers, c)}
        missing = sorted({t for c in ctx.steered for t in _kinds(offers, c)} - types)
        if missing:
            raise SteeringError(
                f"activation steering has no held-out case for instruction type(s) {', '.join(missing)}, so it has "
                "no vector to steer them with; add held-out cases of those types (held-out cases fit the vectors "
                "and are never evaluated)"
            )
        if layer is None and ctx.steered and not all(callable(ctx.options.get(k)) for k in ("follows",
                                                                                           "perplexities")):
            raise SteeringError("activation-steering layer auto scores a sweep over held-out cases, which needs "
                                "options 'follows' and 'perplexities' in its PrepareContext (the session gives "
                                "them when the task has a judge: Task(judge=...)); pass a layer index or 'middle' "
                                "instead")
        self._fits = self._fitted(ctx, held_out, hashes, [layer] if layer is not None else auto_layers(layers))
        self._layer, self._held_out = layer, hashlib.sha256("\n".join(hashes).encode()).hexdigest()
        keys = set(next(iter(self._fits.values()))[0]) if self._fits else set()
        self._fallbacks = {vk.name: vk.fallback for c in ctx.steered for vks in offers.vector_keys(c) for vk in vks
                           if vk.key not in keys}
        self._type_layers, self._uninformed, self._trials = {}, set(), []
        if layer is None and ctx.steered:
            self._trials = self._sweep(ctx, held_out, hashes)
            self._type_layers, self._uninformed = choose_layers(self._trials), uninformed(self._trials)

    def _fitted(self, ctx: PrepareContext, held_out: list[Case], hashes: list[str], layers: list[int]) -> Layers:
        """Directions and targets at each of `layers`: from the store where it has them, else fitted (and stored)."""
        from ..cache import numerics_versions, tokenizer_fingerprint

        model, tokenizer = ctx.model.model, ctx.model.tokenizer
        if not held_out:
            return {layer: ({}, {}) for layer in layers}
        param = next(model.parameters())

        def key(layer: int) -> dict[str, Any]:
            return {"format": VECTORS_FORMAT, "model": ctx.model.identity,
                    "tokenizer": tokenizer_fingerprint(tokenizer), "layer": layer, "held_out": hashes,
                    "keys": self._keys_id,
                    "dtype": str(param.dtype).removeprefix("torch."), "device_type": param.device.type,
                    "versions": numerics_versions()}

        fits: Layers = {}
        for layer in layers:
            record = ctx.store.get("vectors", key(layer)) if ctx.store is not None else None
            loaded = _vectors_from_record(record) if record is not None else None
            if loaded is not None:
                fits[layer] = loaded
        todo = [layer for layer in layers if layer not in fits]
        if todo:
            try:
                fresh = fit_layers(model, tokenizer, held_out, todo, offers=self.offers)
            except ValueError as e:
                raise SteeringError(f"activation steering cannot fit its vectors: {e}") from None
            for layer, (vectors, targets) in fresh.items():
                fits[layer] = vectors, targets
                if ctx.store is not None:
                    ctx.store.put("vectors", key(layer), {"vectors": {t: v.tolist() for t, v in vectors.items()},
                                                          "targets": targets})
        return {layer: fits[layer] for layer in layers}

    def _sweep(self, ctx: PrepareContext, held_out: list[Case], hashes: list[str]) -> list[LayerTrial]:
        """`auto`'s sweep: AUTO_CASES held-out cases per steered instruction type (single-instruction ones
        first, as the reference uses), greedy responses of up to `sweep_tokens` new tokens for their type,
        unsteered and at each layer at value 1, scored; read from the store when the same sweep ran before."""
        from ..cache import numerics_versions, tokenizer_fingerprint

        model, tokenizer = ctx.model.model, ctx.model.tokenizer
        kinds = sorted({t for c in ctx.steered for t in _kinds(self.offers, c)})
        run_tokens = int(ctx.options.get("max_new_tokens", 0) or 0)
        picked: list[tuple[str, Case]] = []
        for kind in kinds:
            having = sorted((c for c in held_out if kind in _kinds(self.offers, c)),
                            key=lambda c: (len(_kinds(self.offers, c)) > 1, c.key))
            picked.extend((kind, c) for c in having[:AUTO_CASES])
        budget: dict[str, int] = {}  # a case picked for several types gets the longest of their budgets
        for kind, c in picked:
            budget[c.key] = max(budget.get(c.key, 0), sweep_tokens(kind, run_tokens))
        grid = sorted(self._fits)
        param = next(model.parameters())
        key = {"format": SWEEP_FORMAT, "model": ctx.model.identity, "tokenizer": tokenizer_fingerprint(tokenizer),
               "rule": self.rule, "grid": grid, "held_out": hashes,
               "cases": [[kind, c.content_hash(), budget[c.key]] for kind, c in picked],
               "scorer": str(ctx.options.get("scorer")), "dtype": str(param.dtype).removeprefix("torch."),
               "device_type": param.device.type, "versions": numerics_versions()}
        record = ctx.store.get("layer-sweep", key) if ctx.store is not None else None
        trials = _trials_from_record(record) if record is not None else None
        if trials is not None:
            return trials
        cases = list(dict.fromkeys(c for _, c in picked))
        groups: dict[int, list[Case]] = {}
        for c in cases:
            groups.setdefault(budget[c.key], []).append(c)
        follows, perplexities = ctx.options["follows"], ctx.options["perplexities"]
        trials = []
        for layer in [None, *grid]:
            responses: dict[str, tuple[str, bool]] = {}
            for tokens, group in groups.items():
                responses.update(zip((c.key for c in group), self._greedy(model, tokenizer, group, layer, tokens),
                                     strict=True))
            ppl = perplexities([responses[c.key][0] for _, c in picked])
            trials.extend(LayerTrial(kind, layer, bool(follows(c, responses[c.key][0])), float(x),
                                     responses[c.key][1], budget[c.key])
                          for (kind, c), x in zip(picked, ppl, strict=True))
        if ctx.store is not None:
            ctx.store.put("layer-sweep", key, {"trials": [[t.kind, t.layer, t.follows, t.perplexity, t.ended, t.tokens]
                                                          for t in trials]})
        return trials

    def _greedy(self, model: Any, tokenizer: Any, cases: Sequence[Case], layer: int | None,
                max_new_tokens: int) -> list[tuple[str, bool]]:
        """Greedy responses of up to `max_new_tokens` to `cases`, every instruction steered at `layer` at
        value 1 (None: unsteered), each with whether it ended (end of turn) before the budget. `generate`
        stops once every row has ended, so a long cap costs only while some answer is still going."""
        import torch

        from ..prompts import encode, render_chat

        batch = encode(tokenizer, [render_chat(tokenizer, user_turn(c)) for c in cases], device=model.device)
        probe = ActivationSteering(layer=0 if layer is None else layer, rule=self.rule)
        if layer is not None:
            probe._layer, probe._fits = layer, {layer: self._fits[layer]}
        steering = probe.steer(model, batch, cases, [None if layer is None else 1.0] * len(cases))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with torch.inference_mode(), steering:
            out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=pad, temperature=None, top_p=None,
                                 top_k=None)
        new = out[:, batch.input_ids.shape[1]:]
        stops = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
                    else [model.generation_config.eos_token_id, tokenizer.eos_token_id]) - {None}
        ended = [bool(any(int(t) in stops for t in row)) for row in new]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        return [(str(t), e) for t, e in zip(texts, ended, strict=True)]

    def _keying(self, held_out: Sequence[Case]) -> str:
        """How the vectors are keyed, for cache keys: the offers' own name for their keying when they give one
        (IFEval's "language+keywords", as before), else a hash of the keys the task gives the held-out cases."""
        named = getattr(self.offers, "keying", None)
        if isinstance(named, str) and named:
            return named
        keys = [[c.key, [[vk.key for vk in vks] for vks in self.offers.vector_keys(c)]] for c in held_out]
        return "task:" + hashlib.sha256(repr(keys).encode()).hexdigest()[:16]

    def identity(self) -> dict[str, Any]:
        """Method, rule, resolved layer(s) and a hash of the held-out cases the vectors come from (after `prepare`)."""
        if not self._fits:
            raise SteeringError("activation steering's identity depends on its fitted vectors; call prepare() first")
        layer: Any = self._layer if self._layer is not None else {"auto": self._type_layers}
        return {"method": self.name, "rule": self.rule, "layer": layer, "held_out": self._held_out,
                "keys": self._keys_id}

    def _check_removed(self, steered: Sequence[Case]) -> None:
        """In the removed setting every steered case's instructions must cut out of its prompt (before any work)."""
        if "removed" not in self.settings:
            return
        for case in steered:
            self.render(case, f"{REMOVED}1.0")

    def notes(self) -> list[str]:
        """What the report should say about the fitted method: its layer(s), its settings, and keys that fell back
        to a type."""
        if self._layer is not None:
            out = [f"actadd: rule {self.rule}, layer {self._layer}"]
        else:
            chosen = sorted(self._type_layers.items())
            out = [f"actadd: rule {self.rule}, layer auto over {sorted(self._fits)}: " + ", ".join(
                f"{kind} {'unsteered' if layer is None else layer}"
                + (" (no information: no arm of the sweep followed it)" if kind in self._uninformed else "")
                for kind, layer in chosen)]
            budgets = {t.kind: t.tokens for t in self._trials}
            out.extend(f"actadd: auto's {kind} answers ended within {budgets[kind]} tokens: "
                       f"{ended_by_arm(self._trials, kind)}"
                       for kind, _ in chosen if kind in JUDGED_ON_THE_WHOLE_ANSWER and kind in budgets)
        if "removed" in self.settings:
            out.append("actadd: settings " + ", ".join(self.settings) + " (actadd-removed-c* rows: the prompt without "
                       "its instructions, steered by their vectors; removed-c0 unsteered; each paired with the "
                       "baseline, which keeps the instructions)")
        by_type: dict[str, list[str]] = {}
        for fine, kind in sorted(self._fallbacks.items()):
            by_type.setdefault(kind, []).append(fine)
        if by_type:  # "language:response_language=ko, =pl (steered with language:response_language)"
            out.append("actadd: no held-out case for " + "; ".join(
                fines[0] + "".join(", =" + f.partition("=")[2] for f in fines[1:]) + f" (steered with {kind})"
                for kind, fines in by_type.items()))
        return out

    def render(self, case: Case, value: Value | None) -> list[dict[str, str]]:
        """The prompt as one user turn; in the removed setting, without its instruction texts."""
        if value is None or split_value(value)[0] == "kept":
            return user_turn(case)
        try:
            return [{"role": "user", "content": prompt_without_instructions(case.prompt, self.offers.highlights(case))}]
        except ValueError as e:
            raise SteeringError(f"case {case.key!r}: {e}; the instruction-removed setting cannot render it") from None

    def _layer_of(self, kind: str) -> int | None:
        return self._layer if self._layer is not None else self._type_layers.get(kind)

    def _keys(self, case: Case) -> list[list[tuple[str, float]]]:
        """Per instruction of `case`, its (direction key, signed weight share) pairs, fallbacks applied."""
        known = next(iter(self._fits.values()))[0] if self._fits else {}
        out: list[list[tuple[str, float]]] = []
        for vks in self.offers.vector_keys(case):
            pairs = [(vk.key, vk.sign * vk.share) if vk.key in known else (vk.fallback, vk.share) for vk in vks]
            absent = [k for k, _ in pairs if k not in known]
            if absent:
                raise SteeringError(f"case {case.key!r}: no activation-steering vector for instruction type(s) "
                                    f"{', '.join(absent)}; prepare() was not given held-out cases of them")
            out.append(pairs)
        if not out:
            raise SteeringError(f"case {case.key!r}: no activation-steering vector for instruction type(s) (none); "
                                "prepare() was not given held-out cases of them")
        return out

    def _row(self, case: Case, weight: float, hidden: int,
             layer: int) -> tuple[list[tuple[torch.Tensor, float]], torch.Tensor]:
        """One row's steering at `layer` and `weight`: the (unit, target) clamps and the vector added after them,
        for the case's instructions steered at that layer.

        `project`: each non-keyword instruction is a clamp (applied together, `clamp`); keyword instructions add
        weight x sum(sign x share x d) over their words (the reference's keyword rule). `add`: the mean
        over those instructions of each one's vector (d, or that keyword sum), times weight.
        """
        import torch

        vectors, targets = self._fits[layer]
        clamps: list[tuple[torch.Tensor, float]] = []
        pushes: list[torch.Tensor] = []
        for kind, vks, pairs in zip(_kinds(self.offers, case), self.offers.vector_keys(case), self._keys(case),
                                    strict=True):
            if self._layer_of(kind) != layer:
                continue
            if vks[0].per_word:
                pushes.append(sum((share * vectors[k] for k, share in pairs), torch.zeros(hidden)))
            elif self.rule == "project":
                clamps.extend((_unit(vectors[k]), targets[k]) for k, _ in pairs)
            else:
                pushes.append(vectors[pairs[0][0]])
        if not pushes:
            return clamps, torch.zeros(hidden)
        total = torch.stack(pushes).sum(0)
        return clamps, weight * (total / len(pushes) if self.rule == "add" else total)

    def steer(self, model: Any, batch: EncodedBatch, cases: Sequence[Case],
              values: Sequence[Value | None]) -> contextlib.AbstractContextManager[None]:
        """Steer row i by its case's directions at values[i] under the method's rule (None: not at all),
        each instruction at its layer (under auto, its type's; rows never see their partners' steering)."""
        import torch

        if not len(batch.texts) == len(cases) == len(values):
            raise SteeringError(f"{len(batch.texts)} texts, {len(cases)} cases and {len(values)} values; "
                                "give one case and one value per batch row")
        if all(v is None for v in values):
            return contextlib.nullcontext()  # a zero change changes no bit, so skipping it is the same computation
        if not self._fits:
            raise SteeringError("activation steering has no vectors; call prepare() before steering")
        hidden = model.config.get_text_config().hidden_size
        param = next(model.parameters())
        weights = torch.tensor([0.0 if v is None else split_value(v)[1] for v in values])
        used = sorted({layer for c, v in zip(cases, values, strict=True) if v is not None
                       for layer in map(self._layer_of, _kinds(self.offers, c)) if layer is not None})
        edits: list[contextlib.AbstractContextManager[None]] = []
        for layer in used:
            rows = [self._row(c, float(w), hidden, layer) if v is not None else ([], torch.zeros(hidden))
                    for c, v, w in zip(cases, values, weights, strict=True)]
            depth = max(len(clamps) for clamps, _ in rows)
            units = torch.zeros(depth, len(values), hidden, dtype=torch.float32)
            targets = torch.zeros(depth, len(values), dtype=torch.float32)
            for i, (clamps, _) in enumerate(rows):
                for j, (u, z) in enumerate(clamps):
                    units[j, i], targets[j, i] = u, z
            pushes = torch.stack([push for _, push in rows]).to(device=param.device, dtype=param.dtype)
            edits.append(edit_residual(model, layer, units, targets, weights, pushes))
        return _all(edits)


@contextlib.contextmanager
def _all(contexts: Sequence[contextlib.AbstractContextManager[None]]) -> Iterator[None]:
    """Enter every context (one hook per steered layer) for the block."""
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        yield


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


def _trials_from_record(record: Mapping[str, Any]) -> list[LayerTrial] | None:
    """The sweep's trials from a cached record, or None if the record is not one (then the sweep runs again)."""
    rows = record.get("trials")
    if not isinstance(rows, list):
        return None
    try:
        return [LayerTrial(str(kind), None if layer is None else int(layer), bool(follows), float(ppl), bool(ended),
                           int(tokens))
                for kind, layer, follows, ppl, ended, tokens in rows]
    except (TypeError, ValueError):
        return None
