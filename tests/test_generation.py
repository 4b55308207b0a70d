"""The generation engine: method-agnostic batches, no-op values, per-row seeding, pairing, OOM halving.

The engine tests run a 2-layer random Llama with the embedded chat tokenizer (`tiny_model_dir`):
what they check (equal tokens, seeds, batching) does not need a model that writes sense, and it is
many times faster than the embedded model on a CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from pytest_steer.generation import (
    GenerationEngine,
    GenerationRequest,
    GenerationSettings,
    GumbelSampler,
    OutOfMemory,
    grid_requests,
    hash_uniform,
    row_seed,
)
from pytest_steer.methods import BASELINE_CONFIG, PrepareContext, SteeringError, config
from pytest_steer.methods.actadd import ActivationSteering
from pytest_steer.methods.pasta import PASTA
from pytest_steer.methods.prompt import PromptEmphasis
from pytest_steer.models import load_model
from pytest_steer.prompts import render_chat
from pytest_steer.tasks import Case
from pytest_steer.tasks.ifeval import IFEVAL_OFFERS, ifeval_case

FW, END, HL = "keywords:forbidden_words", "startend:end_checker", "detectable_format:number_highlighted_sections"


def _case(key: str, task: str, instruction: str, kind: str) -> Case:
    return ifeval_case(key, f"{task} {instruction}", (instruction,), (kind,), ({},))


CASES = [
    _case("fw", "Write two sentences about the sea.", "Do not use the word blue.", FW),
    _case("end", "Give one tip for sleeping well.", "End your reply with the exact phrase 'Sleep tight.'", END),
    _case("hl", "Describe a bicycle in a short paragraph.",
          "Highlight at least 2 sections with markdown, i.e. *highlighted section*.", HL),
]
HELD_OUT = [
    _case("h-fw", "Describe a forest at night.", "Do not use the word dark.", FW),
    _case("h-end", "Give a tip for saving money.", "End your reply with the exact phrase 'Every penny counts.'", END),
    _case("h-hl", "Explain how tides work.", "Highlight at least 2 sections with markdown.", HL),
]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.fixture(scope="module")
def methods(lm):
    """PASTA, activation steering and prompt emphasis, prepared for CASES."""
    out = {"pasta": PASTA([0, 1]), "actadd": ActivationSteering(), "prompt": PromptEmphasis()}
    for m in out.values():
        m.prepare(PrepareContext(model=lm, steered=CASES, held_out=HELD_OUT, task=IFEVAL_OFFERS))
    return out


def _engine(lm, methods, batch_size=8, **settings):
    s = GenerationSettings(**{"max_new_tokens": 6, "seed": 7, "temperature": 1.0, **settings})
    return GenerationEngine(lm.model, lm.tokenizer, methods, s, batch_size=batch_size)


def _req(methods, i, method=None, value=None, trial=0):
    cfg = BASELINE_CONFIG if method is None else config(methods[method], value)
    return GenerationRequest(CASES[i], cfg, trial)


def _tokens(gens):
    return [(g.text, g.n_tokens, g.finish_reason, g.seed) for g in gens]


# --- sampling primitives ---------------------------------------------------------------------


def test_hash_uniform_is_uniform_and_counter_based():
    seeds = torch.arange(2000)
    u = hash_uniform(seeds, 3, 64)
    assert u.min() > 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.005
    # the same (seed, step, index) always gives the same number; another step gives another
    assert torch.equal(hash_uniform(seeds[5:9], 3, 64), u[5:9])
    assert not torch.equal(hash_uniform(seeds[5:9], 4, 64), u[5:9])


def test_gumbel_sampler_reproduces_softmax_frequencies():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, 0.5])
    n = 20000
    sampler = GumbelSampler(range(n), prompt_len=0)
    picks = sampler(torch.zeros(n, 0, dtype=torch.long), logits.expand(n, -1).clone()).argmax(-1)
    freq = torch.bincount(picks, minlength=5).float() / n
    expected = torch.softmax(logits, -1)
    # 4 binomial standard errors at n=20000 is < 0.015 for every p here
    assert torch.allclose(freq, expected, atol=0.015), (freq, expected)


def test_row_seed_pairs_configs_and_separates_trials():
    assert row_seed(0, "k", 1) == row_seed(0, "k", 1)
    assert len({row_seed(0, "k", t) for t in range(50)}) == 50
    assert row_seed(0, "k", 1) != row_seed(1, "k", 1)


@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
@pytest.mark.parametrize("temperature", [0.2, 1.0, 3.0])
def test_top_p_on_candidates_equals_the_full_sort(top_p, temperature):
    from transformers.generation.logits_process import TopPLogitsWarper

    from pytest_steer.generation import TopPCandidates

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(64, 5000, generator=g) * 4 / temperature
    ids = torch.zeros(64, 1, dtype=torch.long)
    expected = TopPLogitsWarper(top_p)(ids, scores.clone())
    got = TopPCandidates(top_p, k=64)(ids, scores.clone())  # small k: some rows need the fallback
    assert torch.equal(torch.isinf(got), torch.isinf(expected))
    kept = ~torch.isinf(got)
    assert torch.allclose(got[kept], scores[kept])


def test_grid_requests_cover_every_case_config_and_trial(methods):
    cfgs = [BASELINE_CONFIG, config(methods["pasta"], 5.0), config(methods["prompt"], "system")]
    reqs = grid_requests(CASES[:2], cfgs, range(2))
    assert len(reqs) == 2 * 3 * 2
    assert {(r.key, r.config.label, r.trial) for r in reqs} == {
        (c.key, cfg.label, t) for c in CASES[:2] for cfg in cfgs for t in range(2)}


# --- the engine --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pasta", "actadd", "prompt"])
def test_noop_value_equals_unsteered_output(lm, methods, name):
    """Each method at its no-op value generates the baseline's tokens, and a strong value does not."""
    strong = {"pasta": 50.0, "actadd": 64.0, "prompt": "both"}[name]
    rows = [_req(methods, i, trial=1) for i in range(3)]
    rows += [_req(methods, i, name, methods[name].noop, trial=1) for i in range(3)]
    rows += [_req(methods, i, name, strong, trial=1) for i in range(3)]
    gens = _engine(lm, methods).generate(rows)
    base, noop, steered = gens[:3], gens[3:6], gens[6:]
    assert _tokens(noop) == _tokens(base)
    # and the same as an engine without steering methods, on the model's own kernel (PASTA.prepare switched it)
    lm.model.set_attn_implementation("sdpa")
    assert _tokens(_engine(lm, {}).generate(rows[:3])) == _tokens(base)
    assert [g.text for g in steered] != [g.text for g in base]


def test_rows_do_not_depend_on_batch_partners(lm, methods):
    """All three methods and the baseline in one batch: every row equals the row generated alone."""
    crowd = [
        _req(methods, 0, "pasta", 10.0, 2), _req(methods, 1), _req(methods, 2, "actadd", 4.0, 1),
        _req(methods, 1, "prompt", "restate", 3), _req(methods, 0, "prompt", "both"), _req(methods, 2, "pasta", 30.0),
        _req(methods, 1, "actadd", -8.0, 2), _req(methods, 0),
    ]
    together = _engine(lm, methods, batch_size=len(crowd)).generate(crowd)
    alone = _engine(lm, methods, batch_size=1).generate(crowd)
    assert _tokens(together) == _tokens(alone)
    shuffled = [crowd[i] for i in (5, 2, 7, 0, 3, 6, 1, 4)]
    again = _engine(lm, methods, batch_size=3).generate(shuffled)
    assert _tokens(again) == [_tokens(together)[i] for i in (5, 2, 7, 0, 3, 6, 1, 4)]


def test_trials_are_paired_across_configs_and_distinct_across_trials(lm, methods):
    eng = _engine(lm, methods)
    gens = eng.generate([_req(methods, 0), _req(methods, 0, "actadd", 2.0), _req(methods, 0, "prompt", "system"),
                         _req(methods, 0, trial=1)])
    assert gens[0].seed == gens[1].seed == gens[2].seed == row_seed(7, "fw", 0) != gens[3].seed
    assert gens[0].text != gens[3].text  # different trials sample differently


def test_on_batch_sees_every_row_once(lm, methods):
    reqs = grid_requests(CASES, [BASELINE_CONFIG, config(methods["pasta"], 5.0)], [0])
    seen: list[GenerationRequest] = []
    sizes: list[int] = []

    def on_batch(gens):
        sizes.append(len(gens))
        seen.extend(g.request for g in gens)

    gens = _engine(lm, methods, batch_size=4).generate(reqs, on_batch=on_batch)
    assert sizes == [4, 2] and sorted(map(id, seen)) == sorted(map(id, reqs))
    assert [g.request for g in gens] == reqs  # results come back in request order


def test_greedy_matches_plain_generate(lm):
    eng = _engine(lm, {}, do_sample=False, max_new_tokens=12)
    got = eng.generate([GenerationRequest(CASES[0], BASELINE_CONFIG, 0)])[0]
    tok = lm.tokenizer
    ids = tok(render_chat(tok, CASES[0].prompt), return_tensors="pt", add_special_tokens=False)
    out = lm.model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    eos = lm.model.generation_config.eos_token_id
    stop = next((j for j, t in enumerate(new) if t == eos), len(new))
    assert got.text == tok.decode(new[:stop], skip_special_tokens=True).strip()


def test_finish_reason_and_token_counts(lm, monkeypatch):
    eng = _engine(lm, {}, do_sample=False, max_new_tokens=5)
    request = GenerationRequest(CASES[1], BASELINE_CONFIG, 0)
    first = eng.generate([request])[0]
    assert first.finish_reason == "length" and first.n_tokens == 5
    # make the third generated token the end-of-turn token: the row stops there and counts it
    tok = lm.tokenizer
    ids = tok(render_chat(tok, CASES[1].prompt), return_tensors="pt", add_special_tokens=False)
    new = lm.model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)[0, -5:]
    stop_token = int(new[2])
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", stop_token)
    g = eng.generate([request])[0]
    n = new.tolist().index(stop_token) + 1
    assert g.finish_reason == "stop" and g.n_tokens == n <= 3
    assert g.text == tok.decode(new[: n - 1], skip_special_tokens=True).strip()


def test_unknown_method_is_refused_before_generation(lm, methods, monkeypatch):
    eng = _engine(lm, {"pasta": methods["pasta"]})
    monkeypatch.setattr(eng, "_generate_batch", lambda batch: pytest.fail("generated before validating"))
    with pytest.raises(SteeringError, match="row 'fw' asks for steering method 'actadd'.*engine has pasta"):
        eng.generate([_req(methods, 0), _req(methods, 0, "actadd", 2.0)])
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=1.5)


def test_out_of_memory_halves_the_batch_and_keeps_finished_rows(lm, methods, monkeypatch, caplog):
    eng = _engine(lm, methods, batch_size=8)
    reqs = grid_requests(CASES, [BASELINE_CONFIG, config(methods["pasta"], 10.0)], [0, 1])
    expected = _tokens(eng.generate(reqs))
    real = eng._generate_batch
    sizes: list[int] = []

    def flaky(batch):
        sizes.append(len(batch))
        if len(batch) > 3:
            raise OutOfMemory("CUDA out of memory (injected)")
        return real(batch)

    monkeypatch.setattr(eng, "_generate_batch", flaky)
    seen: list[int] = []
    got = eng.generate(reqs, on_batch=lambda gens: seen.extend([len(gens)]))
    assert _tokens(got) == expected
    assert sizes[:3] == [8, 4, 2] and eng.batch_size == 2
    assert sum(seen) == len(reqs)
    assert sum("batch size halved" in r.message for r in caplog.records) == 1


def test_progress_reports_done_total_and_rate(lm, methods):
    seen = []
    _engine(lm, methods, batch_size=2).generate([_req(methods, i) for i in range(3)], on_progress=seen.append)
    assert [p.done for p in seen] == [2, 3] and seen[-1].total == 3
    assert seen[-1].tokens_per_s > 0 and math.isfinite(seen[0].eta_s)
