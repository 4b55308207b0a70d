"""Dose: mean per-token KL(steered || unsteered), teacher-forced on the baseline response, checked
against one unpadded forward per row; no-op values have dose 0."""

from __future__ import annotations

import math

import pytest
import torch

from pytest_steer.dose import doses
from pytest_steer.generation import GenerationEngine, GenerationRequest
from pytest_steer.methods import PrepareContext, config
from pytest_steer.methods.actadd import ActivationSteering
from pytest_steer.methods.pasta import PASTA
from pytest_steer.methods.prompt import PromptEmphasis
from pytest_steer.models import LoadedModel
from pytest_steer.prompts import encode, render_chat
from pytest_steer.tasks import IFEVAL_OFFERS, load_cases

RESPONSE = "Here is a short answer, with a comma and three more words."


@pytest.fixture(scope="module")
def engine(embedded) -> GenerationEngine:
    from transformers import AutoModelForCausalLM, LlamaConfig

    tok = embedded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.float32).eval()
    lm = LoadedModel(model, tok, "tiny", "tiny-dose", torch.device("cpu"), torch.float32)
    cases = load_cases()
    kind = cases[0].tags[0]
    held = [c for c in cases if c.tags[0] == kind][1:3]
    methods = {"pasta": PASTA(layers=[0, 1]), "actadd": ActivationSteering(layer=1), "prompt": PromptEmphasis()}
    for m in methods.values():
        m.prepare(PrepareContext(model=lm, steered=[cases[0]], held_out=held, task=IFEVAL_OFFERS))
    return GenerationEngine(model, tok, methods)


def _requests(engine: GenerationEngine, values: list[tuple[str, object]]) -> list[GenerationRequest]:
    case = load_cases()[0]
    return [GenerationRequest(case, config(engine.methods[m], v), 0) for m, v in values]


def _one_at_a_time(engine: GenerationEngine, request: GenerationRequest) -> torch.Tensor:
    """Log-probs over the response tokens of one row, unpadded, batch of one (unsteered for None)."""
    tok, model = engine.tokenizer, engine.model
    enc = encode(tok, [render_chat(tok, engine.messages(request))])
    response = torch.tensor(tok(RESPONSE, add_special_tokens=False)["input_ids"])[None]
    ids = torch.cat([enc.input_ids, response], 1)
    method = engine.methods.get(request.config.method)
    with torch.inference_mode():
        if method is None:
            logits = model(input_ids=ids).logits
        else:
            with method.steer(model, enc, [request.case], [request.config.value]):
                logits = model(input_ids=ids).logits
    start = enc.input_ids.shape[1] - 1
    return logits[0, start:start + response.shape[1]].log_softmax(-1)


def test_dose_matches_kl_of_single_row_forwards(engine):
    from pytest_steer.methods.base import BASELINE_CONFIG

    reqs = _requests(engine, [("pasta", 10.0), ("actadd", 1.0), ("prompt", "restate"), ("actadd", 3.0)])
    got = doses(engine, reqs, RESPONSE)
    base = _one_at_a_time(engine, GenerationRequest(reqs[0].case, BASELINE_CONFIG, 0))
    for req, dose in zip(reqs, got, strict=True):
        steered = _one_at_a_time(engine, req)
        expected = float((steered.exp() * (steered - base)).sum(-1).mean())
        assert dose == pytest.approx(expected, abs=1e-5)
        assert dose > 1e-6  # each of these configs does change the next-token distributions


def test_no_op_values_have_dose_zero_and_bad_input_is_refused(engine):
    got = doses(engine, _requests(engine, [("pasta", 1.0), ("actadd", 0.0), ("prompt", "none")]), RESPONSE)
    assert got == pytest.approx([0.0, 0.0, 0.0], abs=1e-7)
    assert all(math.isnan(d) for d in doses(engine, _requests(engine, [("actadd", 1.0)]), ""))
    assert doses(engine, [], RESPONSE) == []
    with pytest.raises(ValueError, match="one case and trial"):
        doses(engine, [*_requests(engine, [("actadd", 1.0)]),
                       GenerationRequest(load_cases()[1], config(engine.methods["actadd"], 1.0), 0)], RESPONSE)


def test_off_target_dose_is_the_kl_on_a_neutral_passage_per_case_and_config(tiny_model_dir, tmp_path):
    """The off-target dose: 0 for the baseline, the KL on the case's neutral passage for a steered row, one value
    per (case, config) whatever the trial, and read from the cache by the next run."""
    from pytest_steer.cache import ResultCache
    from pytest_steer.dose import neutral_text
    from pytest_steer.session.run import ModelSettings, SteerRun
    from pytest_steer.spec import RunSpec

    spec = RunSpec(methods=("actadd", "prompt"), actadd_layer=1, actadd_coefs=(4.0,), prompt_variants=("restate",),
                   trials=2, max_new_tokens=4, per_type=1)
    run = SteerRun(ModelSettings(str(tiny_model_dir)), ResultCache(tmp_path))
    rows = run.rows(spec, 0) + run.rows(spec, 1)
    off = {(r.key, r.config, r.trial): r.scores["off_target_dose"] for r in rows}
    assert all(v == 0.0 for (_, c, _), v in off.items() if c == "baseline")
    steered = [r for r in rows if r.config != "baseline" and r.trial == 0]
    assert run.off_target_rows == len(steered)  # once per (case, config), not per trial
    cases = {c.key: c for c in run.cases(spec)}
    for r in steered:
        assert off[(r.key, r.config, 1)] == off[(r.key, r.config, 0)]
        cfg = spec.config(r.config)
        expected = doses(run.engine(spec), [GenerationRequest(cases[r.key], cfg, 0)], neutral_text(r.key))[0]
        assert off[(r.key, r.config, 0)] == pytest.approx(expected, abs=1e-6) and expected > 0
        assert r.scores["off_target_dose"] != r.scores["dose"]  # another text than the baseline's response
    again = SteerRun(ModelSettings(str(tiny_model_dir)), ResultCache(tmp_path))
    assert {(r.key, r.config): r.scores["off_target_dose"] for r in again.rows(spec, 0)} == {
        (k, c): v for (k, c, t), v in off.items() if t == 0}
    assert again.off_target_rows == 0
