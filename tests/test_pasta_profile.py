"""PASTA's head profiling (`--steer-layers profile`) finds the one head built to matter, and caches what it found."""

from __future__ import annotations

import pytest
import torch

from pytest_steer.cache import ResultCache
from pytest_steer.methods import PrepareContext, SteeringError, config
from pytest_steer.methods.pasta import PASTA
from pytest_steer.methods.pasta_profile import top_k
from pytest_steer.models import LoadedModel
from pytest_steer.tasks.base import Case

LAYER, HEAD = 1, 2  # the head built to copy the instruction's token
WORD = " zebra"


def _copying_model(tok) -> torch.nn.Module:
    """A 2-layer, 4-head Llama where only head HEAD of layer LAYER writes to the residual stream, and it copies:
    its value is the token's embedding along `d`, which the LM head reads as WORD. Queries and keys are zero,
    so unsteered attention is uniform over the context and WORD loses to a fixed default token; steered towards
    the instruction (WORD repeated), the head reads WORD and the model says it. MLPs write nothing."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    hidden, heads, dim = 64, 4, 16
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=8, num_hidden_layers=2,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()
    word = tok(WORD, add_special_tokens=False).input_ids
    assert len(word) == 1
    default = tok(" the", add_special_tokens=False).input_ids[0]
    with torch.no_grad():
        emb = torch.randn(len(tok), hidden)
        emb[:, :dim] *= 0.1  # the copied subspace: (almost) only WORD lives there
        emb[:, -1] = 3.0  # a constant direction the default token's logit reads
        emb[word[0], :dim] = 0.0
        emb[word[0], 0] = 8.0
        model.model.embed_tokens.weight.copy_(emb)
        for i, layer in enumerate(model.model.layers):
            attn = layer.self_attn
            attn.q_proj.weight.zero_()
            attn.k_proj.weight.zero_()
            attn.v_proj.weight.zero_()
            attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
            if i == LAYER:
                attn.v_proj.weight[HEAD * dim:(HEAD + 1) * dim, :dim] = torch.eye(dim)
                attn.o_proj.weight[:dim, HEAD * dim:(HEAD + 1) * dim] = torch.eye(dim)
        head = torch.zeros(len(tok), hidden)
        head[word[0], 0] = 1.0
        head[default, -1] = 1.2
        model.lm_head.weight.copy_(head)
    return model


def _case(key: str, ask: str) -> Case:
    instruction = "zebra zebra zebra zebra zebra zebra."
    return Case(key, f"{ask} {instruction}", tags=("copy:word",), data={"instructions": (instruction,)})


def _follows(case: Case, response: str) -> bool:
    return WORD.strip() in response


def _log_likelihoods(prompts, responses):
    return [0.0] * len(responses)


@pytest.fixture(scope="module")
def copying(embedded) -> LoadedModel:
    return LoadedModel(_copying_model(embedded.tokenizer), embedded.tokenizer, "copying", "copying-llama",
                       torch.device("cpu"), torch.float32)


def _ctx(lm, store=None, calls=None):
    def follows(case, response):
        if calls is not None:
            calls.append(response)
        return _follows(case, response)

    steered = [_case("steered", "Describe the weather in a few words, then stop talking about it.")]
    held_out = [_case("held-1", "Name a large animal that lives in the grassland of Africa today.")]
    return PrepareContext(lm, steered, held_out, store, options={"follows": follows,
                                                                 "log_likelihoods": _log_likelihoods})


def test_the_construction_needs_the_head_steered(copying):
    """The premise: unsteered, the model does not say the word; steering every head of LAYER makes it."""
    ctx = _ctx(copying)
    whole = PASTA(layers=[LAYER])
    whole.prepare(ctx)
    unsteered = PASTA(layers=[0])  # layer 0 writes nothing: steering it is the unsteered model
    unsteered.prepare(ctx)
    from pytest_steer.methods.pasta_profile import _run

    steered, plain = _run(whole, ctx, ctx.held_out, [{LAYER: [HEAD]}, {}], 100.0)
    assert steered[0] == 1.0 and plain[0] == 0.0


def test_profiling_finds_the_constructed_head_and_caches_it(copying, tmp_path):
    store, calls = ResultCache(tmp_path), []
    method = PASTA(layers="profile")
    assert config(method, 10, [10]).label == "pasta-profiled-alpha10"
    assert config(method, 10, [10]).method == "pasta-profiled"
    method.prepare(_ctx(copying, store, calls))
    assert method.heads(copying.model) == {LAYER: [HEAD]}
    assert top_k(2 * 4) == 1
    profile = method.profile
    assert profile is not None and not profile.cached
    assert [c.accuracy for c in profile.layers] == [0.0, 1.0] and profile.baseline == 0.0
    assert {c.heads[0]: c.accuracy for c in profile.heads if c.layer == LAYER} == {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0}
    assert method.identity()["head_config"] == {"profiled": {str(LAYER): [HEAD]}}
    assert f"layer {LAYER}: {HEAD}" in method.notes()[0]
    # a second run reads the profile: no response is generated or judged again
    again, before = PASTA(layers="profile"), len(calls)
    again.prepare(_ctx(copying, store, calls))
    assert len(calls) == before and again.profile is not None and again.profile.cached
    assert again.heads(copying.model) == {LAYER: [HEAD]} and "read from the cache" in again.notes()[0]


def test_profiling_without_a_judge_says_what_it_needs(copying):
    ctx = _ctx(copying)
    with pytest.raises(SteeringError, match="needs options 'follows'"):
        PASTA(layers="profile").prepare(PrepareContext(copying, ctx.steered, ctx.held_out))
    with pytest.raises(SteeringError, match="call prepare"):
        PASTA(layers="profile").identity()
