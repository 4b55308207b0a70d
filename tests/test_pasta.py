"""PASTA as an additive bias must equal the paper's post-softmax rescaling, on SDPA and eager; and the
method's validation, layer resolution and highlighting behind the SteeringMethod protocol."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from pytest_steer.methods import PrepareContext, SteeringError, build_method, config, user_turn
from pytest_steer.methods.pasta import PASTA, middle_layers
from pytest_steer.models import load_model
from pytest_steer.prompts import encode, render_chat
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import Case
from pytest_steer.tasks.ifeval import ifeval_case

from .tiny_models import tiny_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

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
    heads_of: dict[int, list[int]] = _REF.get("heads", {})  # type: ignore[assignment]
    if _REF and module.layer_idx in heads_of:
        hl: torch.Tensor = _REF["highlight"]  # type: ignore[assignment]
        bsz, prompt_len = hl.shape
        kv_len = k.shape[2]
        alpha = torch.tensor(_REF["alphas"]).expand(bsz)[:, None]
        coeff = torch.ones(bsz, kv_len)
        in_prompt = torch.zeros(bsz, kv_len, dtype=torch.bool)
        in_prompt[:, :prompt_len] = True
        hl_full = torch.zeros(bsz, kv_len, dtype=torch.bool)
        hl_full[:, :prompt_len] = hl
        if _REF["scale_position"] == "include":
            coeff = torch.where(in_prompt & ~hl_full, 1.0 / alpha, coeff)
        elif _REF["scale_position"] == "exclude":
            coeff = torch.where(in_prompt & ~hl_full, alpha, coeff)
        else:
            coeff = torch.where(in_prompt, alpha, coeff)
        heads = torch.zeros(probs.shape[1])
        heads[heads_of[module.layer_idx]] = 1.0
        c = 1 + (coeff[:, None, None, :] - 1) * heads[None, :, None, None]
        probs = probs * c
        probs = probs / probs.sum(-1, keepdim=True)
    out = torch.matmul(probs.to(v.dtype), v).transpose(1, 2).contiguous()
    return out, probs


AttentionInterface.register("pasta_reference", _reference_attention)
AttentionMaskInterface.register("pasta_reference", eager_mask)


def _reference_logits(model, ids, att, method: PASTA, highlight, alphas):
    _REF.update(heads=method.heads(model), highlight=highlight, alphas=alphas, scale_position=method.scale_position)
    previous = model.config._attn_implementation
    model.set_attn_implementation("pasta_reference")
    try:
        return model(input_ids=ids, attention_mask=att).logits
    finally:
        _REF.clear()
        model.set_attn_implementation(previous)


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


HEAD_CONFIGS = [[0, 1], {1: [0, 2]}, ((0, (3,)), (1, (1,)))]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("layers", HEAD_CONFIGS, ids=["layers", "heads", "spec-pairs"])
@pytest.mark.parametrize("scale_position,alpha", [("include", 10.0), ("exclude", 0.01), ("generation", 3.0)])
@pytest.mark.parametrize("base", ["sdpa", "eager"])
def test_bias_matches_post_softmax_reference(arch, layers, scale_position, alpha, base):
    model = tiny_model(arch)
    ids, att, hl = _batch(model)
    method = PASTA(layers=layers, scale_position=scale_position)
    alphas = [alpha, 1.0, alpha * 2]  # per-row alphas, one row unsteered
    expected = _reference_logits(model, ids, att, method, hl, alphas)
    model.set_attn_implementation(base)
    with method.steer_highlight(model, hl, alphas):
        got = model(input_ids=ids, attention_mask=att).logits
    plain = model(input_ids=ids, attention_mask=att).logits
    keep = att.bool()  # padded query rows are garbage under any mask; compare real tokens
    # fp32: the two orders of computation agree to ~1e-7 on logits of magnitude ~0.4
    torch.testing.assert_close(got[keep], expected[keep], atol=1e-6, rtol=0)
    # the steering really changed the steered rows, and it was switched off after the block
    assert (plain[0][keep[0]] - got[0][keep[0]]).abs().max() > 1e-3
    assert model.config._attn_implementation == base


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_generate_with_kv_cache_matches_reference(arch):
    """Decode steps (one query, cache, GQA packing) see the same bias as a full forward pass."""
    model = tiny_model(arch)
    ids, att, hl = _batch(model, extra=0)
    method, alphas = PASTA(layers=[0, 1]), [20.0, 1.0, 5.0]
    with method.steer_highlight(model, hl, alphas):
        out = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=6, do_sample=False,
                             pad_token_id=0, eos_token_id=None, output_logits=True, return_dict_in_generate=True)
    full = out.sequences
    full_att = torch.cat([att, torch.ones(att.shape[0], full.shape[1] - ids.shape[1], dtype=att.dtype)], 1)
    ref = _reference_logits(model, full, full_att, method, hl, alphas)
    for step, logits in enumerate(out.logits):
        torch.testing.assert_close(logits, ref[:, ids.shape[1] - 1 + step], atol=1e-6, rtol=0)


def test_alpha_one_is_a_no_op_and_per_row_alpha_matches_single_rows():
    model = tiny_model("qwen2")
    ids, att, hl = _batch(model)
    keep = att.bool()
    method = PASTA(layers=[0, 1])
    plain = model(input_ids=ids, attention_mask=att).logits
    with method.steer_highlight(model, hl, 1.0):
        same = model(input_ids=ids, attention_mask=att).logits
    assert torch.allclose(plain[keep], same[keep], atol=1e-6)

    alphas = [1.0, 30.0, 4.0]
    with method.steer_highlight(model, hl, alphas):
        mixed = model(input_ids=ids, attention_mask=att).logits
    for i, a in enumerate(alphas):
        with method.steer_highlight(model, hl, a):
            single = model(input_ids=ids, attention_mask=att).logits
        assert torch.allclose(mixed[i][keep[i]], single[i][keep[i]], atol=1e-5)
    assert torch.allclose(mixed[0][keep[0]], plain[0][keep[0]], atol=1e-6)
    assert (mixed[1][keep[1]] - plain[1][keep[1]]).abs().max() > 1e-3


def test_static_cache_generation_matches_dynamic():
    """With a static KV cache the keys run to max_cache_len; the bias pads with zeros and masks still apply."""
    model = tiny_model("llama")
    ids, att, hl = _batch(model, extra=0)
    method, alphas = PASTA(layers=[0, 1]), [8.0, 1.0, 30.0]
    outs = {}
    for impl in ("dynamic", "static"):
        with method.steer_highlight(model, hl, alphas):
            outs[impl] = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=6, do_sample=False,
                                        pad_token_id=0, eos_token_id=None,
                                        cache_implementation=None if impl == "dynamic" else "static")
    assert torch.equal(outs["dynamic"], outs["static"])


# --- values, labels, identity ---------------------------------------------------------------------


@pytest.mark.parametrize("value", [0.0, -2.0, math.inf, math.nan, True, "abc", None, [2.0]])
def test_check_refuses_bad_alphas(value):
    with pytest.raises(SteeringError, match="pasta alpha"):
        PASTA().check(value)


def test_check_label_and_strength():
    m = PASTA()
    assert m.check(1) == 1.0 and m.check("2.5") == 2.5  # the no-op is a valid value for a method
    assert (m.name, m.param, m.noop) == ("pasta", "alpha", 1.0)
    assert m.label(10.0, [5.0, 10.0]) == "alpha10"
    assert m.label(10.0, [10.0, 10.0000001]) != m.label(10.0000001, [10.0, 10.0000001])
    assert m.strength(1.0) == 0.0 and m.strength(10.0) == pytest.approx(math.log(10)) == m.strength(0.1)
    assert config(m, 20.0, [5.0, 20.0]).label == "pasta-alpha20"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(scale_position="middle"), "unknown PASTA scale_position"),
        (dict(layers=[]), "select no layer"),
        (dict(layers="top"), "use 'middle', 'all'"),
        (dict(layers=[-1]), "negative"),
        (dict(layers=[True]), "not a layer index"),
        (dict(layers=[1, 1]), "given twice"),
        (dict(layers={0: []}), "selects no heads"),
        (dict(layers={0: 3}), "must be a list of head indices"),
        (dict(layers=[0, (1, (0,))]), "mix whole layers"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(SteeringError, match=match):
        PASTA(**kwargs)


def test_layer_forms_share_one_identity_and_from_spec_reads_the_run_spec():
    assert PASTA([8, 9]).identity() == PASTA((8, 9)).identity() == {
        "method": "pasta", "head_config": [8, 9], "scale_position": "include"}
    heads = PASTA({"8": [0, 1]}).identity()
    assert heads == PASTA(((8, (0, 1)),)).identity() and heads["head_config"] == {"8": [0, 1]}
    m = build_method("pasta", RunSpec(layers=((1, (0, 2)),), scale_position="exclude"))
    assert isinstance(m, PASTA) and m.identity()["head_config"] == {"1": [0, 2]}
    assert m.identity()["scale_position"] == "exclude"
    with pytest.raises(SteeringError, match="call prepare"):
        PASTA("middle").identity()


@pytest.mark.parametrize(("n_layers", "expected"), [(28, range(8, 24)), (30, range(9, 26)), (2, range(1, 2))])
def test_middle_scales_the_seed_study_layers(n_layers, expected):
    assert middle_layers(n_layers) == list(expected)
    model = tiny_model("llama", layers=n_layers)
    assert list(PASTA("middle").heads(model)) == list(expected)
    assert PASTA("all").heads(model) == {i: [0, 1, 2, 3] for i in range(n_layers)}


def test_layer_or_head_outside_the_model_is_rejected_before_running():
    model = tiny_model("llama")
    hl = torch.zeros(1, 4, dtype=torch.bool)
    with pytest.raises(SteeringError, match="layer 7 is outside the model"):
        with PASTA([7]).steer_highlight(model, hl, 2.0):
            pass
    with pytest.raises(SteeringError, match=r"heads \[9\] of layer 0 are outside"):
        with PASTA({0: [9]}).steer_highlight(model, hl, 2.0):
            pass
    with pytest.raises(SteeringError, match="2 alphas for 1 batch rows"):
        with PASTA([0]).steer_highlight(model, hl, [2.0, 3.0]):
            pass
    assert model.config._attn_implementation == "sdpa"  # a failed block leaves the model as it was


def test_model_without_attention_interface_is_rejected():
    from transformers import GPT2Config, GPT2LMHeadModel

    class Legacy(GPT2LMHeadModel):
        _supports_attention_backend = False

    model = Legacy(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=10))
    with pytest.raises(SteeringError, match="does not route attention through"):
        with PASTA([0]).steer_highlight(model, torch.zeros(1, 3, dtype=torch.bool), 2.0):
            pass


# --- prepare and highlighting from rendered prompts ---------------------------------------------------


@pytest.fixture(scope="module")
def chat_lm(tiny_model_dir):
    """A 2-layer random Llama with the embedded chat tokenizer."""
    return load_model(tiny_model_dir)


def _case(key: str, prompt: str, instructions: tuple[str, ...] | None) -> Case:
    return ifeval_case(key, prompt, instructions, ("keywords:forbidden_words",), ({},))


RAIN = _case("rain", "Write a poem about rain. Do not use the word wet.", ("Do not use the word wet.",))
CAT = _case("cat", "Describe a cat. Answer in French.", ("Answer in French.",))


def _prepare(method: PASTA, lm, steered, on_missing="error") -> None:
    method.prepare(PrepareContext(model=lm, steered=steered, held_out=(), on_missing=on_missing))


def test_highlight_marks_instruction_tokens_of_steered_rows(chat_lm):
    tok = chat_lm.tokenizer
    method = PASTA([0, 1])
    _prepare(method, chat_lm, [RAIN, CAT])
    cases = [RAIN, CAT, RAIN]
    batch = encode(tok, [render_chat(tok, method.render(c, 5.0)) for c in cases])
    mask, alphas = method.highlight(batch, cases, [5.0, 20.0, None])
    assert mask.shape == batch.input_ids.shape and alphas == [5.0, 20.0, 1.0]
    marked = tok.decode(batch.input_ids[0][mask[0]])
    assert "Do not use the word wet" in marked and "rain" not in marked and "im_start" not in marked
    assert tok.decode(batch.input_ids[1][mask[1]]).strip() == "Answer in French."
    assert not mask[2].any()  # a row at None (baseline or another method) is not highlighted
    # left padding: the shorter prompt is padded on the left, and padding is never highlighted
    assert batch.attention_mask[1, 0] == 0 and not mask[1][batch.attention_mask[1] == 0].any()


def test_steer_equals_steer_highlight_and_none_rows_are_unchanged(chat_lm):
    model, tok = chat_lm.model, chat_lm.tokenizer
    method = PASTA([0, 1])
    _prepare(method, chat_lm, [RAIN, CAT])
    cases, values = [RAIN, CAT], [30.0, None]
    batch = encode(tok, [render_chat(tok, user_turn(c)) for c in cases])
    mask, alphas = method.highlight(batch, cases, values)
    kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    with torch.no_grad():
        plain = model(**kw).logits
        with method.steer(model, batch, cases, values):
            got = model(**kw).logits
        with method.steer_highlight(model, mask, alphas):
            expected = model(**kw).logits
    keep = batch.attention_mask.bool()
    assert torch.equal(got, expected)
    assert torch.allclose(got[1][keep[1]], plain[1][keep[1]], atol=1e-6)
    assert (got[0][keep[0]] - plain[0][keep[0]]).abs().max() > 1e-3


def test_prepare_rejects_cases_without_instructions(chat_lm):
    with pytest.raises(SteeringError, match="case 'orig' offers no text to highlight.*IFEval's `instructions`"):
        _prepare(PASTA([0]), chat_lm, [RAIN, _case("orig", "Say hi.", None)])


def test_prepare_missing_instruction_errors_or_warns_once_per_case(chat_lm):
    bad = _case("k1", "Say hi.", ("Say bye.",))
    with pytest.raises(SteeringError, match=r"case 'k1'.*not found in its prompt: 'Say bye\.'.*--steer-on-missing"):
        _prepare(PASTA([0]), chat_lm, [RAIN, bad])
    method = PASTA([0])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _prepare(method, chat_lm, [bad, RAIN, bad], on_missing="warn")  # k1 twice (two alphas): one warning
    assert [str(w.message) for w in caught if "k1" in str(w.message)] == [
        "case 'k1': instruction text not found in its prompt: 'Say bye.'; its PASTA rows run unsteered"]
    assert method.unsteerable == {"k1"}
    tok = chat_lm.tokenizer
    batch = encode(tok, [render_chat(tok, user_turn(c)) for c in (bad, RAIN)])
    mask, alphas = method.highlight(batch, [bad, RAIN], [10.0, 10.0])
    assert alphas == [1.0, 10.0] and not mask[0].any() and mask[1].any()
    with pytest.raises(SteeringError, match="on_missing must be"):
        _prepare(method, chat_lm, [RAIN], on_missing="ignore")


def test_a_case_prepare_never_saw_is_refused_at_steer_time(chat_lm):
    tok = chat_lm.tokenizer
    method = PASTA([0])
    _prepare(method, chat_lm, [RAIN])
    bad = _case("k2", "Say hi.", ("Say bye.",))
    batch = encode(tok, [render_chat(tok, user_turn(bad))])
    with pytest.raises(SteeringError, match="case 'k2'.*not given this case"):
        method.highlight(batch, [bad], [5.0])
    orig = _case("orig", "Say hi.", None)
    with pytest.raises(SteeringError, match="case 'orig'.*no highlights"):
        method.highlight(encode(tok, [render_chat(tok, user_turn(orig))]), [orig], [5.0])


def test_prepare_resolves_middle_and_switches_to_the_steerable_kernel(chat_lm):
    method = PASTA("middle")
    _prepare(method, chat_lm, [RAIN])
    assert method.identity()["head_config"] == [1]  # middle of 2 layers
    assert chat_lm.model.config._attn_implementation == "pasta_sdpa"


def test_shared_split_ifeval_rows_are_located_in_the_chat_prompt(chat_lm):
    """Real Split-IFEval rows: every instruction substring maps to highlighted tokens of the chat prompt."""
    from pytest_steer.tasks import load_cases

    path = SHARED_DATA / "split_ifeval_dev.jsonl"
    if not path.is_file():
        pytest.skip(f"shared test data not found at {path}")
    cases = load_cases(path)
    assert len(cases) == 20 and all("instructions" in c.data for c in cases)
    tok = chat_lm.tokenizer
    method = PASTA([0])
    _prepare(method, chat_lm, cases)
    for case in cases:
        batch = encode(tok, [render_chat(tok, user_turn(case))])
        mask, _ = method.highlight(batch, [case], [2.0])
        marked = tok.decode(batch.input_ids[0][mask[0]])
        for sub in case.data["instructions"]:
            # the highlighted tokens cover the substring (token edges may add a space or punctuation)
            assert sub.strip() in marked, (case.key, sub, marked)
