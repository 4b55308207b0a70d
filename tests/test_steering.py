"""PASTA as an additive bias must equal the paper's post-softmax rescaling, on SDPA and eager."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from pytest_steer.steering import PASTA, SteeringError, highlight_batch

from .tiny_models import tiny_model

# --- the straightforward eager reference: softmax, scale columns, renormalise --------------------

_REF: dict[str, object] = {}


def _reference_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    from transformers.models.llama.modeling_llama import repeat_kv

    k = repeat_kv(key, module.num_key_value_groups)
    v = repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, k.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = torch.softmax(scores.float(), dim=-1)
    ctl: PASTA | None = _REF.get("ctl")  # type: ignore[assignment]
    if ctl is not None and module.layer_idx in _REF["heads"]:
        hl: torch.Tensor = _REF["highlight"]  # type: ignore[assignment]
        bsz, prompt_len = hl.shape
        kv_len = k.shape[2]
        alpha = torch.tensor(ctl.alphas).expand(bsz)[:, None]
        coeff = torch.ones(bsz, kv_len)
        in_prompt = torch.zeros(bsz, kv_len, dtype=torch.bool)
        in_prompt[:, :prompt_len] = True
        hl_full = torch.zeros(bsz, kv_len, dtype=torch.bool)
        hl_full[:, :prompt_len] = hl
        if ctl.scale_position == "include":
            coeff = torch.where(in_prompt & ~hl_full, 1.0 / alpha, coeff)
        elif ctl.scale_position == "exclude":
            coeff = torch.where(in_prompt & ~hl_full, alpha, coeff)
        else:
            coeff = torch.where(in_prompt, alpha, coeff)
        heads = torch.zeros(probs.shape[1])
        heads[_REF["heads"][module.layer_idx]] = 1.0
        c = 1 + (coeff[:, None, None, :] - 1) * heads[None, :, None, None]
        probs = probs * c
        probs = probs / probs.sum(-1, keepdim=True)
    out = torch.matmul(probs.to(v.dtype), v).transpose(1, 2).contiguous()
    return out, probs


AttentionInterface.register("pasta_reference", _reference_attention)
AttentionMaskInterface.register("pasta_reference", eager_mask)


def _reference_logits(model, ids, att, ctl, highlight):
    cfg = model.config
    _REF.update(ctl=ctl, highlight=highlight, heads=ctl.heads(cfg.num_hidden_layers, cfg.num_attention_heads))
    model.set_attn_implementation("pasta_reference")
    try:
        return model(input_ids=ids, attention_mask=att).logits
    finally:
        _REF.clear()
        model.set_attn_implementation("sdpa")


def _batch(model, seed=0, prompt_lens=(9, 6, 4), extra=5):
    """A left-padded batch of prompts plus `extra` 'generated' tokens, and a random highlight."""
    g = torch.Generator().manual_seed(seed)
    bsz, width = len(prompt_lens), max(prompt_lens)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (bsz, width + extra), generator=g)
    att = torch.ones(bsz, width + extra, dtype=torch.long)
    hl = torch.rand(bsz, width, generator=g) < 0.4
    for i, n in enumerate(prompt_lens):
        att[i, : width - n] = 0
        hl[i, : width - n] = False
    return ids, att, hl


HEAD_CONFIGS = [[0, 1], {1: [0, 2]}, {0: [3], 1: [1]}]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("head_config", HEAD_CONFIGS, ids=["layers", "heads", "mixed"])
@pytest.mark.parametrize("scale_position,alpha", [("include", 10.0), ("exclude", 0.01), ("generation", 3.0)])
@pytest.mark.parametrize("base", ["sdpa", "eager"])
def test_bias_matches_post_softmax_reference(arch, head_config, scale_position, alpha, base):
    model = tiny_model(arch)
    ids, att, hl = _batch(model)
    ctl = PASTA(head_config=head_config, alpha=alpha, scale_position=scale_position)
    expected = _reference_logits(model, ids, att, ctl, hl)
    model.set_attn_implementation(base)
    with ctl.steer(model, highlight=hl):
        got = model(input_ids=ids, attention_mask=att).logits
    plain = model(input_ids=ids, attention_mask=att).logits
    keep = att.bool()
    assert torch.allclose(got[keep], expected[keep], atol=1e-5), (got - expected)[keep].abs().max()
    # the steering really changed something, and it was switched off after the block
    assert (plain[keep] - got[keep]).abs().max() > 1e-3
    assert model.config._attn_implementation == base


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_generate_with_kv_cache_matches_reference(arch):
    """Decode steps (one query, cache, GQA packing) see the same bias as a full forward pass."""
    model = tiny_model(arch)
    ids, att, hl = _batch(model, extra=0)
    ctl = PASTA(head_config=[0, 1], alpha=[20.0, 1.0, 5.0])
    with ctl.steer(model, highlight=hl):
        out = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=6, do_sample=False,
                             pad_token_id=0, eos_token_id=None, output_logits=True, return_dict_in_generate=True)
    full = out.sequences
    full_att = torch.cat([att, torch.ones(att.shape[0], full.shape[1] - ids.shape[1], dtype=att.dtype)], 1)
    ref = _reference_logits(model, full, full_att, ctl, hl)
    for step, logits in enumerate(out.logits):
        assert torch.allclose(logits, ref[:, ids.shape[1] - 1 + step], atol=1e-4)


def test_alpha_one_is_a_no_op_and_per_row_alpha_matches_single_rows():
    model = tiny_model("qwen2")
    ids, att, hl = _batch(model)
    keep = att.bool()  # padded query rows are garbage under any mask; compare real tokens
    plain = model(input_ids=ids, attention_mask=att).logits
    with PASTA([0, 1], alpha=1.0).steer(model, hl):
        same = model(input_ids=ids, attention_mask=att).logits
    assert torch.allclose(plain[keep], same[keep], atol=1e-6)

    alphas = [1.0, 30.0, 4.0]
    with PASTA([0, 1], alpha=alphas).steer(model, hl):
        mixed = model(input_ids=ids, attention_mask=att).logits
    for i, a in enumerate(alphas):
        with PASTA([0, 1], alpha=a).steer(model, hl):
            single = model(input_ids=ids, attention_mask=att).logits
        assert torch.allclose(mixed[i][keep[i]], single[i][keep[i]], atol=1e-5)
    assert torch.allclose(mixed[0][keep[0]], plain[0][keep[0]], atol=1e-6)
    assert (mixed[1][keep[1]] - plain[1][keep[1]]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(head_config=[0], alpha=0.0), "alpha must be a finite number > 0"),
        (dict(head_config=[0], alpha=-2.0), "alpha must be a finite number > 0"),
        (dict(head_config=[0], alpha=math.inf), "alpha must be a finite number > 0"),
        (dict(head_config=[0], alpha=[2.0, math.nan]), "alpha must be a finite number > 0"),
        (dict(head_config=[0], scale_position="middle"), "unknown scale_position"),
        (dict(head_config=[]), "selects no layers"),
    ],
)
def test_bad_control_arguments(kwargs, match):
    with pytest.raises(SteeringError, match=match):
        PASTA(**kwargs)


def test_layer_or_head_outside_the_model_is_rejected_before_running():
    model = tiny_model("llama")
    hl = torch.zeros(1, 4, dtype=torch.bool)
    with pytest.raises(SteeringError, match="layer 7 is outside the model"):
        with PASTA([7]).steer(model, hl):
            pass
    with pytest.raises(SteeringError, match=r"heads \[9\] of layer 0 are outside"):
        with PASTA({0: [9]}).steer(model, hl):
            pass
    with pytest.raises(SteeringError, match="2 alphas for 1 batch rows"):
        with PASTA([0], alpha=[2.0, 3.0]).steer(model, hl):
            pass


def test_model_without_attention_interface_is_rejected():
    from transformers import GPT2Config, GPT2LMHeadModel

    class Legacy(GPT2LMHeadModel):
        _supports_attention_backend = False

    model = Legacy(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10))
    with pytest.raises(SteeringError, match="does not route attention through"):
        with PASTA([0]).steer(model, torch.zeros(1, 3, dtype=torch.bool)):
            pass


def test_highlight_batch_marks_instruction_tokens(embedded):
    tok = embedded.tokenizer
    prompts = ["Write a poem about rain. Do not use the word wet.", "Describe a cat."]
    batch = highlight_batch(tok, prompts, [["Do not use the word wet."], None], keys=["a", "b"])
    assert batch.input_ids.shape == batch.highlight.shape
    marked = tok.decode(batch.input_ids[0][batch.highlight[0]])
    assert "Do not use the word wet" in marked and "rain" not in marked
    assert not batch.highlight[1].any()
    # left padding: the shorter prompt is padded on the left, and padding is never highlighted
    assert batch.attention_mask[1, 0] == 0 and batch.attention_mask[:, -1].all()


def test_highlight_batch_missing_substring(embedded):
    tok = embedded.tokenizer
    with pytest.raises(SteeringError, match="case 'k1'.*not found"):
        highlight_batch(tok, ["Say hi."], [["Say bye."]], keys=["k1"])
    with pytest.warns(UserWarning, match="runs unsteered"):
        batch = highlight_batch(tok, ["Say hi."], [["Say bye."]], keys=["k1"], on_missing="warn")
    assert batch.unsteerable == [True] and not batch.highlight.any()


def test_shared_split_ifeval_rows_are_located_in_the_chat_prompt(embedded):
    """Real Split-IFEval rows: every instruction substring maps to highlighted tokens of the chat prompt."""
    from pathlib import Path

    from pytest_steer.cases import load_cases

    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "split_ifeval_dev.jsonl"
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path}")
    cases = load_cases(path)
    assert len(cases) == 20 and all(c.steerable for c in cases)
    tok = embedded.tokenizer
    for case in cases:
        for sub in case.instructions:
            batch = highlight_batch(tok, [case.prompt], [[sub]], keys=[case.key])
            marked = tok.decode(batch.input_ids[0][batch.highlight[0]])
            # the highlighted tokens cover the substring (token edges may add a space or punctuation)
            assert sub.strip() in marked, (case.key, sub, marked)


def test_static_cache_generation_matches_dynamic():
    """With a static KV cache the keys run to max_cache_len; the bias pads with zeros and masks still apply."""
    model = tiny_model("llama")
    ids, att, hl = _batch(model, extra=0)
    ctl = PASTA(head_config=[0, 1], alpha=[8.0, 1.0, 30.0])
    outs = {}
    for impl in ("dynamic", "static"):
        with ctl.steer(model, highlight=hl):
            outs[impl] = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=6, do_sample=False,
                                        pad_token_id=0, eos_token_id=None,
                                        cache_implementation=None if impl == "dynamic" else "static")
    assert torch.equal(outs["dynamic"], outs["static"])
