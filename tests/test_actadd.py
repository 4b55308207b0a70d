"""Instruction activation steering: vectors from paired prompts, and adding them to the residual stream."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from pytest_steer.cache import ResultCache
from pytest_steer.methods import PrepareContext, SteeringError, actadd, build_method, config
from pytest_steer.methods.actadd import (
    AUTO_LONG_TOKENS,
    AUTO_TOKENS,
    ActivationSteering,
    LayerTrial,
    add_to_residual,
    auto_layers,
    choose_layers,
    clamp,
    degeneracy_mark,
    ended_by_arm,
    fit_instruction_vectors,
    instruction_vectors,
    last_token_activations,
    middle_layer,
    prompt_without_instructions,
    response_perplexities,
    sweep_tokens,
    uninformed,
)
from pytest_steer.models import LoadedModel
from pytest_steer.prompts import encode, render_chat
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import load_cases
from pytest_steer.tasks.base import VectorKey
from pytest_steer.tasks.ifeval.offers import IFEVAL_OFFERS
from pytest_steer.tasks.ifeval.offers import ifeval_vector_keys as vector_keys

from .tiny_models import tiny_model

LAYER = 1  # of the 3-layer tiny models: a steered layer with layers after it


def _left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask and generate-style position_ids for a left-padded batch."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


_ROWS = [[5, 17, 33, 8, 61, 12], [44, 9, 70], [3, 88, 21, 56, 14]]


def _reference_hook(coefs: torch.Tensor, direction: torch.Tensor):
    """The textbook ActAdd hook: the layer returns a tensor; add coef * direction everywhere."""

    def hook(module, args, output):
        assert isinstance(output, torch.Tensor), "transformers' decoder layers return a tensor"
        return output + coefs[:, None, None] * direction

    return hook


# --- the public API is free to import ----------------------------------------------------------


def test_import_does_not_load_torch():
    code = ("import pytest_steer.methods.actadd, pytest_steer.methods.pasta, pytest_steer.methods.prompt, sys; "
            "from pytest_steer.spec import RunSpec; RunSpec(methods=('pasta', 'actadd', 'prompt')).configs(); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]


def test_middle_layer():
    assert [middle_layer(n) for n in (1, 2, 28, 30, 31)] == [0, 1, 14, 15, 15]


# --- paired prompts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "instructions", "expected"),
    [
        ("Write a poem. Do not use commas.", ["Do not use commas."], "Write a poem."),
        ("Write a poem. Use no commas. Make it short.", ["Use no commas."], "Write a poem. Make it short."),
        ("Answer in French. Explain tides. End with 'Bye'.", ["Answer in French.", "End with 'Bye'."],
         "Explain tides."),
        ("List three fruits in lowercase letters only, please.", ["in lowercase letters only"],
         "List three fruits, please."),
        ("Write a haiku.\n\nDo not use the letter e.\n\nTitle it.", ["Do not use the letter e."],
         "Write a haiku.\n\nTitle it."),
        ("Be brief. Explain gravity. Be brief.", ["Be brief."], "Explain gravity. Be brief."),
        ("Say hi.", ["Say hi."], ""),
    ],
    ids=["end", "middle", "two", "before-punctuation", "paragraph", "first-occurrence", "all"],
)
def test_prompt_without_instructions(prompt, instructions, expected):
    assert prompt_without_instructions(prompt, instructions) == expected


@pytest.mark.parametrize(
    ("instructions", "named"),
    [(["Use no commas."], "'Use no commas.'"), (["Be brief.", "brief"], "'brief'"), ([""], "''")],
    ids=["absent", "already-removed", "empty"],
)
def test_prompt_without_instructions_names_missing_text(instructions, named):
    with pytest.raises(ValueError, match=f"not found in the prompt: {named}"):
        prompt_without_instructions("Be brief. Explain gravity.", instructions)


# --- add_to_residual ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_add_to_residual_matches_reference_hook(arch):
    model = tiny_model(arch, layers=3)
    ids, mask, pos = _left_padded(_ROWS)
    torch.manual_seed(1)
    direction = torch.randn(32)
    coefs = torch.tensor([4.0, 0.0, -2.5])

    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        handle = model.model.layers[LAYER].register_forward_hook(_reference_hook(coefs, direction))
        try:
            expected = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        finally:
            handle.remove()
        with add_to_residual(model, LAYER, coefs[:, None] * direction):
            steered = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits

    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)
    assert torch.equal(steered[1], plain[1])  # the zero row is untouched, bit for bit
    for row in (0, 2):
        assert (steered[row] - plain[row]).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_row_does_not_depend_on_batch_partners(arch):
    model = tiny_model(arch, layers=3)
    torch.manual_seed(2)
    vectors = 3 * torch.randn(len(_ROWS), 32)
    ids, mask, pos = _left_padded(_ROWS)
    with torch.no_grad(), add_to_residual(model, LAYER, vectors):
        batched = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    for i, row in enumerate(_ROWS):
        with torch.no_grad(), add_to_residual(model, LAYER, vectors[i : i + 1]):
            alone = model(input_ids=torch.tensor([row])).logits
        torch.testing.assert_close(batched[i, -len(row):], alone[0], atol=1e-5, rtol=0)


def test_generate_with_kv_cache_is_steered_at_every_step():
    model = tiny_model("llama", layers=3)
    rows = _ROWS[:2]
    ids, mask, _ = _left_padded(rows)
    torch.manual_seed(3)
    direction, coefs = torch.randn(32), torch.tensor([8.0, 0.0])
    vectors = coefs[:, None] * direction
    settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}

    plain = model.generate(input_ids=ids, attention_mask=mask, **settings)
    with add_to_residual(model, LAYER, vectors):
        steered = model.generate(input_ids=ids, attention_mask=mask, **settings)
    assert not torch.equal(steered[0], plain[0])
    assert torch.equal(steered[1], plain[1])

    # Reference: greedy decoding without a cache, each step a full forward under the reference hook.
    handle = model.model.layers[LAYER].register_forward_hook(_reference_hook(coefs, direction))
    try:
        seq, att = ids, mask
        with torch.no_grad():
            for _ in range(settings["max_new_tokens"]):
                pos = (att.cumsum(-1) - 1).clamp(min=0)
                nxt = model(input_ids=seq, attention_mask=att, position_ids=pos).logits[:, -1].argmax(-1)
                seq, att = torch.cat([seq, nxt[:, None]], 1), torch.cat([att, torch.ones_like(nxt)[:, None]], 1)
    finally:
        handle.remove()
    assert torch.equal(steered, seq)


def test_batch_mismatch_raises_and_the_hook_is_removed():
    model = tiny_model("llama", layers=3)
    ids, mask, _ = _left_padded(_ROWS[:2])
    with torch.no_grad():
        plain = model(input_ids=ids, attention_mask=mask).logits
        with pytest.raises(ValueError, match="num_return_sequences"), add_to_residual(model, LAYER, torch.ones(2, 32)):
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=2, do_sample=False,
                           num_return_sequences=2, pad_token_id=0)
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, plain)
        with pytest.raises(ValueError, match="do not fit"), add_to_residual(model, LAYER, torch.ones(2, 31)):
            model(input_ids=ids, attention_mask=mask)


def test_add_to_residual_rejects_bad_layers_models_and_shapes():
    model = tiny_model("llama", layers=3)
    for layer in (-1, 3):
        with (
            pytest.raises(ValueError, match=r"outside the model, which has layers 0\.\.2"),
            add_to_residual(model, layer, torch.zeros(1, 32)),
        ):
            pass
    with (
        pytest.raises(ValueError, match="Linear has no decoder layer list"),
        add_to_residual(torch.nn.Linear(2, 2), 0, torch.zeros(1, 2)),
    ):
        pass
    with pytest.raises(ValueError, match=r"\[batch, hidden\]"), add_to_residual(model, 0, torch.zeros(32)):
        pass


class _TupleLayer(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
        return 2 * x, "extra"


class _TupleModel(torch.nn.Module):
    """Older transformers decoder layers return (hidden_states, ...)."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.layers = torch.nn.ModuleList([_TupleLayer()])


def test_add_to_residual_handles_layers_returning_tuples():
    model, x = _TupleModel(), torch.randn(2, 3, 4)
    vectors = torch.randn(2, 4, dtype=torch.float64)  # cast to the hidden dtype
    with add_to_residual(model, 0, vectors):
        hidden, extra = model.model.layers[0](x)
    assert hidden.dtype == torch.float32 and extra == "extra"
    torch.testing.assert_close(hidden, 2 * x + vectors.float()[:, None, :], atol=0, rtol=0)


# --- activations and vectors -------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_tiny(embedded):
    """A 3-layer random Llama over the embedded chat tokenizer: activations of size O(1), fast."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = embedded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval(), tok


_PROMPTS = ["Hi.", "Write a poem about the sea. Do not use commas.", "Name a colour.",
            "Explain how tides work to a child, in exactly three sentences.", "Count to five."]


def test_last_token_activations_batched_equals_one_at_a_time(chat_tiny):
    model, tok = chat_tiny
    batched = last_token_activations(model, tok, _PROMPTS, LAYER, batch_size=2)
    single = torch.cat([last_token_activations(model, tok, [p], LAYER) for p in _PROMPTS])
    assert batched.shape == (len(_PROMPTS), 32) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=0)
    batched.mul_(2)  # an ordinary tensor, not an inference-mode one


def test_last_token_activations_are_the_layer_output(chat_tiny):
    from pytest_steer.prompts import render_chat

    model, tok = chat_tiny
    acts = last_token_activations(model, tok, _PROMPTS[:1], LAYER)
    ids = tok([render_chat(tok, _PROMPTS[0])], add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[LAYER + 1]
    torch.testing.assert_close(acts[0], hidden[0, -1], atol=1e-6, rtol=0)


def test_last_token_activations_edge_cases(chat_tiny):
    model, tok = chat_tiny
    assert last_token_activations(model, tok, [], LAYER).shape == (0, 32)
    with pytest.raises(ValueError, match="batch_size"):
        last_token_activations(model, tok, _PROMPTS, LAYER, batch_size=0)


def test_instruction_vectors_are_mean_paired_differences(embedded):
    model, tok, layer = embedded.model, embedded.tokenizer, 2  # a low layer keeps the forwards short
    by_type: dict[str, list] = {}
    for case in load_cases():
        by_type.setdefault(case.tags[0], []).append(case)
    fw, end = by_type["keywords:forbidden_words"], by_type["startend:end_checker"]
    # a case with two instructions: each gets the difference its own text makes, the other kept in both
    both = dataclasses.replace(end[1], key="both", prompt=f"{end[1].prompt} {fw[0].data['instructions'][0]}",
                               tags=(end[1].tags[0], fw[0].tags[0]),
                               data={"instructions": (end[1].data["instructions"][0], fw[0].data["instructions"][0]),
                                     "kwargs": ({}, {})})
    cases = [fw[0], fw[1], end[0], both]

    vectors = instruction_vectors(model, tok, cases, layer, batch_size=3, offers=IFEVAL_OFFERS)

    def diff(case, removed):
        pair = [case.prompt, prompt_without_instructions(case.prompt, removed)]
        a, b = (last_token_activations(model, tok, [p], layer)[0] for p in pair)
        return a - b

    d = [diff(c, c.data["instructions"]) for c in cases[:3]]
    both_end, both_fw = (diff(both, [text]) for text in both.data["instructions"])
    expected = {"keywords:forbidden_words": (d[0] + d[1] + both_fw) / 3, "startend:end_checker": (d[2] + both_end) / 2}
    assert list(vectors) == list(expected)
    for kind, vec in vectors.items():
        assert vec.shape == (model.config.hidden_size,) and vec.dtype == torch.float32
        assert vec.device.type == "cpu" and torch.isfinite(vec).all() and vec.norm() > 0
        # The embedded model's activations reach ~100, where float32 rounding alone is ~1e-5.
        torch.testing.assert_close(vec, expected[kind], atol=1e-4, rtol=1e-5)


def test_instruction_vectors_name_the_case_they_cannot_pair():
    case = load_cases()[0]
    with pytest.raises(ValueError, match="case 'x' offers no instruction texts"):
        instruction_vectors(None, None, [dataclasses.replace(case, key="x", instructions=None)], 0)
    with pytest.raises(ValueError, match="case 'y': instruction text not found in the prompt: 'nope'"):
        instruction_vectors(None, None, [dataclasses.replace(case, key="y", instructions=("nope",))], 0)
    with pytest.raises(ValueError, match="no cases"):
        instruction_vectors(None, None, [], 0)


# --- ActivationSteering: the method behind the SteeringMethod protocol ----------------------------

FW, END = "keywords:forbidden_words", "startend:end_checker"
HL = "detectable_format:number_highlighted_sections"  # a format type: the clamp steers it


@pytest.fixture(scope="module")
def by_type() -> dict[str, list]:
    out: dict[str, list] = {}
    for case in load_cases():
        out.setdefault(case.tags[0], []).append(case)
    return out


@pytest.fixture(scope="module")
def tiny_lm(chat_tiny) -> LoadedModel:
    model, tok = chat_tiny
    return LoadedModel(model, tok, "tiny", "tiny-llama-3-layers", torch.device("cpu"), torch.float32)


def _prepared(lm, steered, held_out, layer=LAYER, store=None, rule="project") -> ActivationSteering:
    method = ActivationSteering(layer=layer, rule=rule)
    method.prepare(PrepareContext(model=lm, steered=steered, held_out=held_out, store=store,
                                  task=IFEVAL_OFFERS))
    return method


def test_method_values_labels_and_strength():
    m = ActivationSteering()
    assert (m.name, m.param, m.noop) == ("actadd", "coefficient", 0.0)
    assert m.check(0) == 0.0 and m.check("-2.5") == -2.5 and m.check(4) == 4.0
    for bad in (True, float("nan"), float("inf"), "abc", None):
        with pytest.raises(SteeringError, match="actadd coefficient"):
            m.check(bad)
    assert m.label(4.0, [1.0, 2.0, 4.0]) == "c4" and m.label(-0.5, [-0.5, 1.0]) == "c-0.5"
    assert m.strength(-3.0) == 3.0 and m.strength(0.0) == 0.0
    assert config(m, 2, [1, 2]).label == "actadd-c2"
    for bad_layer in (-1, True, "top", 2.0):
        with pytest.raises(SteeringError, match="must be .middle., .auto. or a layer index"):
            ActivationSteering(layer=bad_layer)  # type: ignore[arg-type]
    assert build_method("actadd", RunSpec(actadd_layer=2)).layer == 2  # type: ignore[attr-defined]


def test_prepare_resolves_the_layer_and_refuses_one_outside_the_model(tiny_lm, by_type):
    held = by_type[FW][:2]
    assert _prepared(tiny_lm, [], held, layer="middle").identity()["layer"] == middle_layer(3) == 1
    with pytest.raises(SteeringError, match=r"layer 3 is outside the model, which has layers 0\.\.2"):
        _prepared(tiny_lm, [], held, layer=3)
    with pytest.raises(SteeringError, match="call prepare"):
        ActivationSteering().identity()


def test_vectors_come_from_held_out_cases_only(tiny_lm, by_type):
    held = [*by_type[FW][:2], *by_type[END][:2]]
    steered = [by_type[FW][2], by_type[END][2]]
    method = _prepared(tiny_lm, steered, held)
    expected = instruction_vectors(tiny_lm.model, tiny_lm.tokenizer, held, LAYER, offers=IFEVAL_OFFERS)
    assert list(method.vectors) == [FW, END]
    for kind in expected:
        assert torch.equal(method.vectors[kind], expected[kind])

    # changing an evaluated case changes nothing; changing a held-out case changes vectors and identity
    reworded = [dataclasses.replace(steered[0], prompt="Reworded. " + steered[0].prompt), steered[1]]
    again = _prepared(tiny_lm, reworded, held)
    assert all(torch.equal(again.vectors[k], method.vectors[k]) for k in expected)
    assert again.identity() == method.identity()
    held2 = [dataclasses.replace(held[0], prompt="Please. " + held[0].prompt), *held[1:]]
    other = _prepared(tiny_lm, steered, held2)
    assert (other.vectors[FW] - method.vectors[FW]).abs().max() > 1e-4
    # END's cases are unchanged (their batch padding may move the last bits)
    torch.testing.assert_close(other.vectors[END], method.vectors[END], atol=1e-7, rtol=0)
    assert other.identity()["held_out"] != method.identity()["held_out"]


def test_prepare_names_missing_types_and_leaked_cases(tiny_lm, by_type):
    lang = "language:response_language"
    with pytest.raises(SteeringError, match=rf"no held-out case for instruction type\(s\) {lang}, .*add held-out"):
        _prepared(tiny_lm, [by_type[FW][2], by_type[lang][0]], by_type[FW][:2])
    with pytest.raises(SteeringError, match=f"case {by_type[FW][0].key!r} is both held out"):
        _prepared(tiny_lm, [by_type[FW][0]], by_type[FW][:2])
    untagged = dataclasses.replace(by_type[FW][2], instruction_id_list=())
    with pytest.raises(SteeringError, match=rf"case\(s\) {untagged.key!r} have none: tag them"):  # not mid-generation
        _prepared(tiny_lm, [untagged], by_type[FW][:2])
    no_text = dataclasses.replace(by_type[FW][1], instructions=None)
    with pytest.raises(SteeringError, match="cannot fit its vectors: case .* offers no instruction texts"):
        _prepared(tiny_lm, [], [by_type[FW][0], no_text])


def test_vectors_cache_round_trip(tiny_lm, by_type, tmp_path, monkeypatch):
    held = [*by_type[FW][:2], *by_type[END][:1]]
    store = ResultCache(tmp_path)
    fitted = _prepared(tiny_lm, [], held, store=store)
    assert store.stats.writes == 1

    def no_fitting(*args, **kwargs):
        raise AssertionError("vectors were fitted again instead of read from the cache")

    monkeypatch.setattr("pytest_steer.methods.actadd.fit_layers", no_fitting)
    loaded = _prepared(tiny_lm, [], held, store=store)
    assert store.stats.hits == 1 and loaded.identity() == fitted.identity()
    assert all(torch.equal(loaded.vectors[k], v) for k, v in fitted.vectors.items())  # float32 -> JSON -> float32
    assert loaded.targets == pytest.approx(fitted.targets, abs=0) and set(loaded.targets) == set(fitted.vectors)
    with pytest.raises(AssertionError, match="fitted again"):  # another layer is another key
        _prepared(tiny_lm, [], held, layer=0, store=store)


def test_add_rule_matches_a_forward_hook_reference(tiny_lm, by_type):
    """Per-row coefficients x the case's mean type vector, added at every position of left-padded rows."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    held = [*by_type[FW][:2], *by_type[END][:2]]
    both = dataclasses.replace(by_type[END][3], key="both", instruction_id_list=(FW, END), kwargs=({}, {}))
    cases = [by_type[FW][2], by_type[END][2], both]
    method = _prepared(tiny_lm, cases, held, rule="add")
    values = [4.0, None, -2.5]
    batch = encode(tok, [render_chat(tok, method.render(c, v)) for c, v in zip(cases, values, strict=True)])
    assert batch.attention_mask[:, 0].tolist().count(0) >= 1  # rows of different lengths: left padding
    v = method.vectors
    directions = torch.stack([v[FW], v[END], (v[FW] + v[END]) / 2])
    coefs = torch.tensor([4.0, 0.0, -2.5])
    kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    with torch.no_grad():
        plain = model(**kw).logits
        handle = model.model.layers[LAYER].register_forward_hook(
            lambda mod, args, out: out + coefs[:, None, None] * directions[:, None, :])
        try:
            expected = model(**kw).logits
        finally:
            handle.remove()
        with method.steer(model, batch, cases, values):
            got = model(**kw).logits
        with method.steer(model, batch, cases, [None, None, None]):
            untouched = model(**kw).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert torch.equal(got[1], plain[1]) and torch.equal(untouched, plain)
    assert (got[0] - plain[0]).abs().max() > 1e-2 and (got[2] - plain[2]).abs().max() > 1e-2


# --- the paper's rule: the projection clamp -------------------------------------------------------


def _unsteered_inputs(tok, method: ActivationSteering, cases) -> tuple[Any, dict[str, torch.Tensor]]:
    """The cases' unsteered prompts as one left-padded batch, and the forward arguments with the position
    ids that generation uses for left padding."""
    batch = encode(tok, [render_chat(tok, method.render(c, None)) for c in cases])
    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    return batch, dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos)


def _adjust_vectors(v, u, target_values):
    """The reference's `adjust_vectors`, written out again: move each row's projection on unit u to its target."""
    return v + (target_values - v @ u)[:, None] * u


def test_targets_are_mean_projections_of_with_instruction_activations(tiny_lm, by_type):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    held = by_type[FW][:3]
    vectors, targets = fit_instruction_vectors(model, tok, held, LAYER, offers=IFEVAL_OFFERS)
    with_acts = last_token_activations(model, tok, [c.prompt for c in held], LAYER)
    without = last_token_activations(
        model, tok, [prompt_without_instructions(c.prompt, c.data["instructions"]) for c in held], LAYER)
    d = (with_acts - without).mean(0)
    u = d / d.norm()
    torch.testing.assert_close(vectors[FW], d, atol=1e-6, rtol=0)
    assert targets[FW] == pytest.approx(float((with_acts @ u).mean()), abs=1e-5)


def test_project_rule_matches_a_reimplementation_of_the_reference_hook(tiny_lm, by_type):
    """The reference steers one unpadded prompt at a time with a TransformerLens hook on the layer's
    residual output: adjust_vectors(activation.squeeze(), u, z). Our batched, left-padded hook must give
    the same logits on every real token, at weight 1 (the paper's setting)."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    held = [*by_type[HL][:2], *by_type[END][:2]]
    cases = [by_type[HL][2], by_type[END][2], by_type[END][3]]
    method = _prepared(tiny_lm, cases, held)
    values = [1.0, 1.0, None]
    batch, kw = _unsteered_inputs(tok, method, cases)
    assert batch.attention_mask[:, 0].tolist().count(0) >= 1  # rows of different lengths: left padding
    with torch.no_grad():
        plain = model(**kw).logits
        with method.steer(model, batch, cases, values):
            got = model(**kw).logits
        for i, (case, value) in enumerate(zip(cases, values, strict=True)):
            real = batch.attention_mask[i].bool()
            ids = batch.input_ids[i][real][None]
            if value is None:
                assert torch.equal(got[i][real], plain[i][real])
                continue
            kind = case.tags[0]
            u = method.vectors[kind] / method.vectors[kind].norm()
            z = torch.full((ids.shape[1],), method.targets[kind])

            def hook(mod, args, out, u=u, z=z):
                return _adjust_vectors(out.squeeze(0), u, z).unsqueeze(0)

            handle = model.model.layers[LAYER].register_forward_hook(hook)
            try:
                expected = model(input_ids=ids).logits[0]
            finally:
                handle.remove()
            assert (expected - plain[i][real]).abs().max() > 1e-2  # the clamp does change the output
            assert (got[i][real] - expected).abs().max() < 1e-5


def test_project_rule_weight_zero_is_exact_and_weights_scale_the_clamp(tiny_lm, by_type):
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    cases = [by_type[HL][2], by_type[HL][3]]
    method = _prepared(tiny_lm, cases, by_type[HL][:2])
    batch = encode(tok, [render_chat(tok, method.render(c, None)) for c in cases])
    u, z = method.vectors[HL] / method.vectors[HL].norm(), method.targets[HL]
    seen = []  # the residual stream as the next layer reads it: after steering
    handle = model.model.layers[LAYER + 1].register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            with method.steer(model, batch, cases, [0.0, 0.5]):
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
            with method.steer(model, batch, cases, [1.0, 1.0]):
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    finally:
        handle.remove()
    plain, half, full = seen
    assert torch.equal(half[0], plain[0])  # weight 0: bit for bit unchanged
    # weight w moves the projection a share w of the way to z, and changes nothing orthogonal to u
    torch.testing.assert_close(half[1] @ u, 0.5 * z + 0.5 * (plain[1] @ u), atol=1e-4, rtol=0)
    torch.testing.assert_close(full @ u, torch.full_like(full @ u, z), atol=1e-4, rtol=0)
    ortho = (half[1] - plain[1]) - ((half[1] - plain[1]) @ u)[:, None] * u
    assert ortho.abs().max() < 1e-4
    assert ((plain[1] @ u) - z).abs().max() > 1e-2  # the clamp had something to move


def test_directions_are_keyed_per_language_with_a_noted_fallback(tiny_lm, by_type):
    lang = "language:response_language"
    held = [c for c in by_type[lang] if c.data["kwargs"][0]["language"] in ("de", "fr")][:2]
    steered = [c for c in by_type[lang] if c not in held and c.data["kwargs"][0]["language"] in ("de", "ko")]
    method = _prepared(tiny_lm, steered, held)
    assert {f"{lang}=de", f"{lang}=fr", lang} <= set(method.vectors)
    assert method.fallbacks == {f"{lang}=ko": lang}
    assert any(f"{lang}=ko (steered with {lang})" in n for n in method.notes())
    assert method._keys(next(c for c in steered if c.data["kwargs"][0]["language"] == "de")) == [[(f"{lang}=de", 1.0)]]
    assert method._keys(next(c for c in steered if c.data["kwargs"][0]["language"] == "ko")) == [[(lang, 1.0)]]
    with pytest.raises(SteeringError, match="rule 'clamp' must be one of project, add"):
        ActivationSteering(rule="clamp")
    assert build_method("actadd", RunSpec(actadd_rule="add")).rule == "add"  # type: ignore[attr-defined]


# --- keyword instructions: one direction per word, forbidden words by their inclusion direction ------

EX = "keywords:existence"


def _includes(base, key: str, words: list[str]):
    """A held-out `keywords:existence` case asking for `words`, made from an embedded case's prompt."""
    ask = "Include the keywords " + " and ".join(words) + "."
    return dataclasses.replace(base, key=key, prompt=f"{base.prompt.split('.')[0]}. {ask}", instructions=(ask,),
                               instruction_id_list=(EX,), kwargs=({"keywords": words},))


def test_vector_keys_follow_the_reference():
    lang = "language:response_language"
    assert vector_keys(lang, {"language": "de"}) == [VectorKey(f"{lang}=de", f"{lang}=de", lang)]
    assert vector_keys(END, {"end_phrase": "Bye."}) == [VectorKey(END, END, END)]
    assert vector_keys(EX, {"keywords": ["Cat", "dog", "cat"]}) == [
        VectorKey(f"{EX}=cat", f"{EX}=cat", EX, 1.0, 0.5, True),
        VectorKey(f"{EX}=dog", f"{EX}=dog", EX, 1.0, 0.5, True)]
    # a forbidden word is steered away from by its *inclusion* direction: same key as existence, sign -1
    assert vector_keys(FW, {"forbidden_words": ["water"]}) == [
        VectorKey(f"{FW}=water", f"{EX}=water", FW, -1.0, 1.0, True)]
    assert vector_keys(FW, {}) == [VectorKey(FW, FW, FW, 1.0, 1.0, True)]


def test_forbidden_words_fit_no_inclusion_direction_and_fall_back_to_their_type(tiny_lm, by_type):
    fw = by_type[FW][0]  # forbids broken, urgent, water
    held = [*by_type[FW][1:3], _includes(by_type[END][5], "inc-1", ["water", "broken"]),
            _includes(by_type[END][6], "inc-2", ["water"])]
    method = _prepared(tiny_lm, [fw], held)
    assert {FW, EX, f"{EX}=water", f"{EX}=broken"} <= set(method.vectors)
    assert not any(k.startswith(f"{FW}=") for k in method.vectors)  # forbidding a word is no example of including it
    assert method.fallbacks == {f"{FW}=urgent": FW}
    assert any(f"{FW}=urgent (steered with {FW})" in n for n in method.notes())
    third, minus = pytest.approx(1 / 3), pytest.approx(-1 / 3)
    assert method._keys(fw) == [[(f"{EX}=broken", minus), (FW, third), (f"{EX}=water", minus)]]
    # the inclusion direction of "water" is the mean difference of the two cases that include it
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    inc = held[2:]
    acts = last_token_activations(model, tok, [c.prompt for c in inc], LAYER) - last_token_activations(
        model, tok, [prompt_without_instructions(c.prompt, c.data["instructions"]) for c in inc], LAYER)
    torch.testing.assert_close(method.vectors[f"{EX}=water"], acts.mean(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(method.vectors[f"{EX}=broken"], acts[0], atol=1e-6, rtol=0)


@pytest.mark.parametrize("rule", ["project", "add"])
def test_keyword_rows_match_a_reimplementation_of_the_reference_keyword_hooks(tiny_lm, by_type, rule):
    """The reference steers keywords with one hook per word adding (W / words) * u_word to the layer's
    residual output (`direction_ablation_hook`), W < 0 for forbidden words and their inclusion directions;
    our W is value * |d_word| (fallback: the type's direction, sign +). Under both rules."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    fw, ex = by_type[FW][0], _includes(by_type[END][7], "inc-steered", ["water", "tap"])
    held = [*by_type[FW][1:3], _includes(by_type[END][5], "inc-1", ["water", "broken", "tap"])]
    cases, values = [fw, ex], [2.0, 1.5]
    method = _prepared(tiny_lm, cases, held, rule=rule)
    assert method.fallbacks == {f"{FW}=urgent": FW}
    batch, kw = _unsteered_inputs(tok, method, cases)
    v = method.vectors
    per_row = [[(f"{EX}=broken", -1), (FW, +1), (f"{EX}=water", -1)], [(f"{EX}=water", +1), (f"{EX}=tap", +1)]]
    seen = []
    probe = model.model.layers[LAYER + 1].register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            plain = model(**kw).logits
            with method.steer(model, batch, cases, values):
                got = model(**kw).logits
            for i, (words, value) in enumerate(zip(per_row, values, strict=True)):
                real = batch.attention_mask[i].bool()
                hooks = []
                for key, sign in words:  # the reference: one hook per word, weight W / len(words)
                    u, weight = v[key] / v[key].norm(), sign * value * float(v[key].norm()) / len(words)
                    hooks.append(model.model.layers[LAYER].register_forward_hook(
                        lambda mod, args, out, u=u, w=weight: out + (u * w)))
                try:
                    expected = model(input_ids=batch.input_ids[i][real][None]).logits[0]
                finally:
                    for h in hooks:
                        h.remove()
                assert (expected - plain[i][real]).abs().max() > 1e-2
                assert (got[i][real] - expected).abs().max() < 1e-5
    finally:
        probe.remove()
    # the sign: steering the forbidding row lowers its residual's projection on "water"'s inclusion direction
    u_water = v[f"{EX}=water"] / v[f"{EX}=water"].norm()
    before, after = seen[0][0] @ u_water, seen[1][0] @ u_water
    real = batch.attention_mask[0].bool()
    assert (after - before)[real].max() < 0
    assert ((seen[1][1] - seen[0][1]) @ u_water)[batch.attention_mask[1].bool()].min() > 0


# --- layer auto: a sweep over held-out cases per instruction type -----------------------------------


def _trials(kind: str, layer: int | None, follows: list[bool], perplexities: list[float]) -> list[LayerTrial]:
    return [LayerTrial(kind, layer, f, p) for f, p in zip(follows, perplexities, strict=True)]


def test_choose_layers_drops_degenerate_layers_and_prefers_unsteered_on_ties():
    fine = [5.0, 6.0, 4.0]
    trials = [
        *_trials(HL, None, [False, False, False], fine),
        *_trials(HL, 1, [True, False, False], fine),
        *_trials(HL, 2, [True, True, True], [5.0, 1.3, 4.0]),  # the most accurate, but one response loops
        *_trials(END, None, [True, False, False], [5.0, 6.0, 4.0]),
        *_trials(END, 0, [True, True, False], [2.6, 6.0, 4.0]),  # just above the mark: kept
        *_trials(END, 1, [True, True, False], fine),  # ties with 0: the lower layer
        *_trials(FW, None, [True, False, False], fine),
        *_trials(FW, 0, [True, False, False], fine),  # no better than unsteered: not steered
        *_trials(FW, 2, [True, True, True], [5.0, math.nan, 4.0]),  # an empty response counts as degenerate
    ]
    # the mark: half the median of the nine unsteered perplexities (5.0): 2.5
    assert degeneracy_mark(trials) == pytest.approx(2.5)
    assert choose_layers(trials) == {HL: 1, END: 0, FW: None}
    # floor 0, as the reference: an unsteered arm that loops scores 0 too, so a clean layer beats it
    looping = [*_trials(FW, None, [True, True, False], [5.0, 1.0, 6.0]), *_trials(FW, 0, [True, False, False], fine)]
    assert choose_layers(looping) == {FW: 0}
    # no arm follows: no information about the layer, so the middle swept layer, not "unsteered"
    blind = [*_trials(END, None, [False] * 3, fine), *(t for layer in (0, 1, 2)
                                                       for t in _trials(END, layer, [False] * 3, fine))]
    assert choose_layers(blind) == {END: 1}
    assert uninformed(blind) == {END} and uninformed(trials) == set()
    assert auto_layers(30) == [6, 11, 16, 21] and auto_layers(3) == [0, 1, 2] and auto_layers(1) == [0]


def test_sweep_budget_is_long_enough_for_end_judged_types():
    # the reference's 768-1024: at 384 most of the embedded model's end-phrase answers had not ended
    assert sweep_tokens(HL) == sweep_tokens(END) == AUTO_LONG_TOKENS >= 768
    assert AUTO_LONG_TOKENS > AUTO_TOKENS and sweep_tokens(END, 2048) == 2048
    assert sweep_tokens("change_case:english_lowercase") == AUTO_TOKENS
    assert sweep_tokens("change_case:english_lowercase", 500) == 500  # the run's own budget when larger


def test_ended_by_arm_counts_answers_that_ended_per_arm():
    trials = [LayerTrial(END, layer, False, 5.0, ended) for layer, ended in
              [(2, True), (2, True), (None, True), (None, False), (0, False), (0, False), (2, False)]]
    trials.append(LayerTrial(FW, None, True, 5.0, True))  # another type: not counted
    assert ended_by_arm(trials, END) == "unsteered 1/2, 0 0/2, 2 2/3"
    assert ended_by_arm(trials, FW) == "unsteered 1/1"


def test_sweep_generation_stops_once_every_answer_has_ended(tiny_lm, by_type, monkeypatch):
    """The long budget is a cap: once every row of the batch has ended, `generate` stops."""
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    cases = [by_type[END][0], by_type[END][1], by_type[HL][0]]
    method = ActivationSteering(layer="auto")
    first = [text for text, _ in method._greedy(model, tok, cases, None, 1)]
    firsts = sorted({tok(t, add_special_tokens=False)["input_ids"][0] for t in first})
    # every row's greedy first token is now an end of turn: each answer ends at once
    monkeypatch.setattr(model.generation_config, "eos_token_id", firsts)
    steps: list[int] = []
    hook = model.register_forward_pre_hook(lambda mod, args: steps.append(1))
    try:
        out = method._greedy(model, tok, cases, None, AUTO_LONG_TOKENS)
    finally:
        hook.remove()
    assert [ended for _, ended in out] == [True] * 3
    assert len(steps) < 5  # not AUTO_LONG_TOKENS steps


def test_response_perplexities_score_the_response_alone(embedded):
    """A loop is far more predictable to the model than a fluent answer; an empty response has none."""
    fluent = ("Dear Mr. Lee,\n\nThank you for your letter about the leaking tap in the kitchen. A plumber will "
              "visit on Thursday morning; please leave the back door unlocked.")
    loop = "I am sorry, " * 30
    model, tok = embedded.model, embedded.tokenizer
    got = response_perplexities(model, tok, [fluent, loop, ""], batch_size=2)
    assert got[1] < 0.5 * got[0] and math.isnan(got[2])  # below the mark a fluent unsteered answer would set
    assert response_perplexities(model, tok, [loop])[0] == pytest.approx(got[1], rel=1e-4)  # padding-free


def _sweep_tools(calls: list[int]) -> dict:
    """Stand-ins for the session's scorers: a response follows when it has a digit; perplexity from length."""

    def perplexities(responses):
        calls.append(len(responses))
        return [2.0 + len(r) % 7 if r else math.nan for r in responses]

    return {"follows": lambda case, response: any(ch.isdigit() for ch in response),
            "perplexities": perplexities, "scorer": "test"}


def test_auto_sweeps_held_out_cases_chooses_per_type_and_caches_the_sweep(tiny_lm, by_type, tmp_path, monkeypatch):
    monkeypatch.setattr(actadd, "AUTO_LONG_TOKENS", 12)  # a random tiny model never ends its answers
    held = [*by_type[HL][:2], *by_type[END][:2]]
    steered = [by_type[HL][2], by_type[END][2]]
    store, calls = ResultCache(tmp_path), []
    method = ActivationSteering(layer="auto")
    ctx = PrepareContext(model=tiny_lm, steered=steered, held_out=held, store=store, options=_sweep_tools(calls),
                         task=IFEVAL_OFFERS)
    method.prepare(ctx)
    assert calls == [4] * 4  # unsteered + 3 layers, the 4 held-out cases each
    assert set(method.layers) == {HL, END} and all(v in (None, 0, 1, 2) for v in method.layers.values())
    assert method.identity()["layer"] == {"auto": method.layers}
    assert any(n.startswith("actadd: rule project, layer auto over [0, 1, 2]: ") for n in method.notes())
    assert method.vectors == {}  # no single layer

    def no_generation(*args, **kwargs):
        raise AssertionError("the sweep ran again instead of being read from the cache")

    monkeypatch.setattr(ActivationSteering, "_greedy", no_generation)
    again = ActivationSteering(layer="auto")
    again.prepare(PrepareContext(model=tiny_lm, steered=steered, held_out=held, store=store,
                                 options=_sweep_tools(calls), task=IFEVAL_OFFERS))
    assert again.layers == method.layers and len(calls) == 4
    with pytest.raises(SteeringError, match="layer auto scores a sweep .* needs options 'follows'"):
        ActivationSteering(layer="auto").prepare(PrepareContext(model=tiny_lm, steered=steered, held_out=held))


def test_auto_notes_no_information_and_how_many_answers_ended_per_arm(tiny_lm, by_type, monkeypatch):
    """When no arm follows, the notes say "no information" (not "unsteered") and, for a type judged at the
    end, how many answers per arm ended within the budget: too short to judge, or steering did not help."""
    monkeypatch.setattr(actadd, "AUTO_LONG_TOKENS", 12)  # a random tiny model never ends its answers
    tools = {**_sweep_tools([]), "follows": lambda case, response: False}
    method = ActivationSteering(layer="auto")
    method.prepare(PrepareContext(model=tiny_lm, steered=[by_type[END][2], by_type[FW][2]],
                                  held_out=[*by_type[END][:2], *by_type[FW][:2]], options=tools))
    notes = method.notes()
    assert f"{END} 1 (no information: no arm of the sweep followed it)" in notes[0]
    assert f"{FW} 1 (no information" in notes[0]
    ended = [n for n in notes if n.startswith(f"actadd: auto's {END} answers ended within 12 tokens: ")]
    counts = {arm: sum(t.ended for t in method.sweep if t.kind == END and t.layer == arm) for arm in (None, 0, 1, 2)}
    assert ended == [f"actadd: auto's {END} answers ended within 12 tokens: unsteered {counts[None]}/2, "
                     f"0 {counts[0]}/2, 1 {counts[1]}/2, 2 {counts[2]}/2"]
    assert not any(n.startswith(f"actadd: auto's {FW}") for n in notes)  # judged early: no count


def test_per_type_layers_steer_each_row_at_its_layer_independently_of_batch_partners(tiny_lm, by_type, monkeypatch):
    """Under auto, a row's instructions are steered at their types' layers: the hook at each layer leaves
    rows of other layers bit for bit alone, so a row's logits are those of the row steered alone."""
    monkeypatch.setattr(actadd, "AUTO_LONG_TOKENS", 12)  # a random tiny model never ends its answers
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    held = [*by_type[HL][:2], *by_type[END][:2], *by_type[FW][:2]]
    cases = [by_type[HL][2], by_type[END][2], by_type[FW][2], by_type[HL][3]]
    method = ActivationSteering(layer="auto")
    method.prepare(PrepareContext(model=tiny_lm, steered=cases, held_out=held, options=_sweep_tools([]),
                                  task=IFEVAL_OFFERS))
    method._type_layers = {HL: 0, END: 2, FW: None}  # a choice the sweep could make
    values = [1.0, 1.0, 3.0, None]
    batch = encode(tok, [render_chat(tok, method.render(c, None)) for c in cases])
    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        plain = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos).logits
        with method.steer(model, batch, cases, values):
            got = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos).logits
        for i, (case, value) in enumerate(zip(cases, values, strict=True)):
            real = batch.attention_mask[i].bool()
            one = encode(tok, [batch.texts[i]])
            with method.steer(model, one, [case], [value]):
                alone = model(input_ids=one.input_ids).logits[0]
            assert (got[i][real] - alone).abs().max() < 1e-5
            kind = case.tags[0]
            layer = method.layers[kind]
            if value is None or layer is None:  # unsteered: by its value, or by auto's choice for its type
                assert torch.equal(got[i][real], plain[i][real])
                continue
            vectors, targets = method._fits[layer]
            u, z = vectors[kind] / vectors[kind].norm(), targets[kind]
            handle = model.model.layers[layer].register_forward_hook(
                lambda mod, args, out, u=u, z=z: _adjust_vectors(out.squeeze(0), u, z).unsqueeze(0))
            try:
                expected = model(input_ids=one.input_ids).logits[0]
            finally:
                handle.remove()
            assert (expected - plain[i][real]).abs().max() > 1e-3
            assert (got[i][real] - expected).abs().max() < 1e-5


def _sequential(hidden: torch.Tensor, units: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The one-direction clamp applied for each direction in turn (the rule before issue 28)."""
    for u, z in zip(units, targets, strict=True):
        u = u[:, None, :]
        hidden = hidden + (z[:, None, None] - (hidden * u).sum(-1, keepdim=True)) * u
    return hidden


def test_clamp_equals_the_sequential_rule_for_orthogonal_directions_and_is_exact_otherwise() -> None:
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(8, 3, generator=gen, dtype=torch.float64))
    orthogonal = q.T[:, None, :].expand(3, 2, 8).clone()  # three orthonormal directions for both rows
    targets = torch.randn(3, 2, generator=gen, dtype=torch.float64)
    steered = hidden + clamp(hidden, orthogonal, targets)
    assert torch.allclose(steered, _sequential(hidden, orthogonal, targets), atol=1e-10)

    # correlated unit directions (cos ~0.7): clamping in turn leaves the first projection off its target;
    # the simultaneous solution hits every target, and is the minimum-norm change in their span
    a = torch.nn.functional.normalize(torch.randn(8, generator=gen, dtype=torch.float64), dim=0)
    b = torch.nn.functional.normalize(a + torch.randn(8, generator=gen, dtype=torch.float64) * 0.7, dim=0)
    units = torch.stack([a, b])[:, None, :].expand(2, 2, 8).clone()
    units[1, 1] = 0  # row 1 has only the first direction: padding must leave it a one-direction clamp
    z = torch.tensor([[1.5, 1.5], [-2.0, 0.0]], dtype=torch.float64)
    steered = hidden + clamp(hidden, units, z)
    projections = torch.einsum("bsh,kh->bsk", steered[:1], torch.stack([a, b]))
    assert torch.allclose(projections, z[:, 0].expand(1, 5, 2), atol=1e-10)
    sequential = _sequential(hidden[:1], units[:, :1], z[:, :1])
    first = torch.einsum("bsh,h->bs", sequential, a)
    assert not torch.allclose(first, torch.full((1, 5), 1.5, dtype=torch.float64), atol=1e-3)
    exact = hidden[0] + (z[:, 0] - hidden[0] @ torch.stack([a, b]).T) @ torch.linalg.inv(
        torch.stack([a, b]) @ torch.stack([a, b]).T) @ torch.stack([a, b])  # the closed form, by hand
    assert torch.allclose(steered[0], exact, atol=1e-10)
    assert torch.allclose(steered[1], _sequential(hidden[1:], units[:1, 1:], z[:1, 1:])[0], atol=1e-10)
