"""Combined configs (two methods on one row) and activation steering's instruction-removed setting."""

from __future__ import annotations

import pytest
import torch

from pytest_steer.generation import GenerationEngine, GenerationRequest, GenerationSettings
from pytest_steer.methods import PrepareContext, SteeringError
from pytest_steer.methods.actadd import ActivationSteering, prompt_without_instructions
from pytest_steer.methods.prompt import PromptEmphasis
from pytest_steer.models import LoadedModel
from pytest_steer.prompts import encode, render_chat
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import IFEVAL_OFFERS, load_cases

GRID = dict(methods=("pasta", "actadd", "prompt"), alphas=(10.0,), actadd_coefs=(4.0,),
            prompt_variants=("restate", "marked"), actadd_setting=("kept", "removed"))


@pytest.fixture(scope="module")
def tiny_lm(embedded) -> LoadedModel:
    """A 3-layer random Llama over the embedded chat tokenizer."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = embedded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()
    return LoadedModel(model, tok, "tiny", "tiny-llama-3-layers", torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def prepared(tiny_lm):
    """(steered cases, {name: prepared method}): one end-checker case steered, three held out."""
    cases = [c for c in load_cases() if c.tags == ("startend:end_checker",)]
    steered, held_out = cases[:1], cases[1:4]
    methods = {"actadd": ActivationSteering(layer=1, settings=("kept", "removed")), "prompt": PromptEmphasis()}
    for m in methods.values():
        m.prepare(PrepareContext(model=tiny_lm, steered=steered, held_out=held_out, task=IFEVAL_OFFERS))
    return steered, methods


def _greedy(model, tok, messages, steer=None) -> str:
    """By hand: render, encode, steer (or not) and decode greedily, 12 tokens."""
    enc = encode(tok, [render_chat(tok, messages)])
    with torch.inference_mode(), steer(enc) if steer else torch.inference_mode():
        out = model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, do_sample=False,
                             max_new_tokens=12, pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
    return str(tok.decode(out[0, enc.input_ids.shape[1]:], skip_special_tokens=True)).strip()


def test_combined_rows_equal_applying_the_two_methods_by_hand(tiny_lm, prepared):
    steered, methods = prepared
    case = steered[0]
    configs = {c.label: c for c in RunSpec(**GRID, combine=("prompt-restate+actadd-c4",)).configs()}
    combined = configs["prompt-restate+actadd-c4"]
    assert (combined.method, combined.strength) == ("prompt+actadd", configs["prompt-restate"].strength + 4.0)
    engine = GenerationEngine(tiny_lm.model, tiny_lm.tokenizer, methods,
                              GenerationSettings(max_new_tokens=12, do_sample=False))
    rows = engine.generate([GenerationRequest(case, c, 0) for c in
                            (combined, configs["prompt-restate"], configs["actadd-c4"])])
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    restated = methods["prompt"].render(case, "restate")
    by_hand = _greedy(model, tok, restated, lambda enc: methods["actadd"].steer(model, enc, [case], [4.0]))
    assert rows[0].text == by_hand
    # both parts matter here: the combined row is neither single method's row
    assert rows[0].text != rows[1].text and rows[0].text != rows[2].text
    assert rows[1].text == _greedy(model, tok, restated)


def test_removed_setting_renders_the_prompt_without_its_instructions_and_steers_it(tiny_lm, prepared):
    steered, methods = prepared
    case = steered[0]
    configs = {c.label: c for c in RunSpec(**GRID).configs()}
    assert [c for c in configs if c.startswith("actadd")] == ["actadd-c4", "actadd-removed-c0", "actadd-removed-c4"]
    removed = configs["actadd-removed-c4"]
    assert removed.method == "actadd-removed" and removed.steering() == (("actadd", "removed:4.0"),)
    engine = GenerationEngine(tiny_lm.model, tiny_lm.tokenizer, methods,
                              GenerationSettings(max_new_tokens=12, do_sample=False))
    bare = [{"role": "user", "content": prompt_without_instructions(case.prompt, case.data["instructions"])}]
    assert engine.messages(GenerationRequest(case, removed, 0)) == bare
    assert case.data["instructions"][0] not in bare[0]["content"]
    rows = engine.generate([GenerationRequest(case, configs[k], 0) for k in ("actadd-removed-c0", "actadd-removed-c4")])
    model, tok = tiny_lm.model, tiny_lm.tokenizer
    assert rows[0].text == _greedy(model, tok, bare)
    assert rows[1].text == _greedy(model, tok, bare, lambda enc: methods["actadd"].steer(model, enc, [case],
                                                                                          ["removed:4.0"]))
    assert rows[0].text != rows[1].text


@pytest.mark.parametrize(("combine", "match"), [
    ("prompt-restate+actadd-removed-c4", "prompt and actadd both change the prompt"),
    ("pasta-alpha10+prompt-marked", "pasta highlights text of the case's prompt, which prompt"),
    ("pasta-alpha10+actadd-removed-c4", "pasta highlights text of the case's prompt, which actadd"),
    ("actadd-c4+actadd-removed-c4", "applies actadd twice"),
    ("actadd-c2+prompt-restate", "'actadd-c2' is not a config of this grid.*did you mean 'actadd-c4'"),
    ("prompt-restate", "two or more"),
])
def test_combinations_that_cannot_compose_are_refused_before_any_work(combine, match):
    with pytest.raises(SteeringError, match=match):
        RunSpec(**GRID, combine=(combine,)).configs()


def test_pasta_composes_with_prompt_emphasis_that_keeps_the_prompt():
    labels = [c.label for c in RunSpec(**GRID, combine=("pasta-alpha10+prompt-restate",)).configs()]
    assert labels[-1] == "pasta-alpha10+prompt-restate"
