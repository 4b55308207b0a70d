"""The generation engine: per-row seeding, pairing, batching independence, OOM halving."""

from __future__ import annotations

import math

import pytest
import torch

from pytest_steer.generation import (
    GenerationEngine, GenerationRequest, GenerationSettings, GumbelSampler, OutOfMemory, grid_requests,
    hash_uniform, row_seed,
)
from pytest_steer.steering import PASTA, SteeringError

PROMPTS = [
    ("fw", "Write two sentences about the sea. Do not use the word blue.", ("Do not use the word blue.",)),
    ("end", "Give one tip for sleeping well. End your reply with the exact phrase 'Sleep tight.'",
     ("End your reply with the exact phrase 'Sleep tight.'",)),
    ("hl", "Describe a bicycle in a short paragraph. Highlight at least 2 sections with markdown, i.e. *highlighted section*.",
     ("Highlight at least 2 sections with markdown, i.e. *highlighted section*.",)),
]


def _engine(embedded, batch_size=8, **settings):
    s = GenerationSettings(**{"max_new_tokens": 6, "seed": 7, "temperature": 1.0, **settings})
    return GenerationEngine(embedded.model, embedded.tokenizer, PASTA(list(range(6, 18)), alpha=10.0), s, batch_size=batch_size)


def _req(i, alpha, trial):
    key, prompt, instr = PROMPTS[i]
    return GenerationRequest(key, prompt, instr, alpha, trial)


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


def test_rows_do_not_depend_on_batch_partners(embedded):
    eng = _engine(embedded)
    target = _req(0, 10.0, 2)
    alone = eng.generate([target])[0]
    crowd = [_req(1, None, 0), _req(2, 5.0, 1), target, _req(1, 20.0, 3)]
    together = eng.generate(crowd)[2]
    assert together.text == alone.text and together.seed == alone.seed
    eng.batch_size = 1
    assert [g.text for g in eng.generate(crowd)] == [g.text for g in _engine(embedded).generate(crowd)]


def test_trials_are_paired_across_configs_and_distinct_across_trials(embedded):
    eng = _engine(embedded)
    gens = eng.generate([_req(0, None, 0), _req(0, 10.0, 0), _req(0, None, 1)])
    assert gens[0].seed == gens[1].seed != gens[2].seed
    assert gens[0].text != gens[2].text  # different trials sample differently


def test_steering_changes_output_and_alpha_one_does_not(embedded):
    eng = _engine(embedded, do_sample=False, max_new_tokens=8)
    base, one, strong = eng.generate([_req(1, None, 0), _req(1, 1.0, 0), _req(1, 50.0, 0)])
    assert one.text == base.text
    assert strong.text != base.text


def test_greedy_matches_plain_generate(embedded):
    eng = _engine(embedded, do_sample=False, max_new_tokens=15)
    eng.control = None
    got = eng.generate([_req(0, None, 0)])[0]
    from pytest_steer.prompts import render_chat

    tok = embedded.tokenizer
    ids = tok(render_chat(tok, PROMPTS[0][1]), return_tensors="pt", add_special_tokens=False)
    out = embedded.model.generate(**ids, max_new_tokens=15, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert got.text == expected


def test_finish_reason_and_token_counts(embedded):
    eng = _engine(embedded, max_new_tokens=3)
    g = eng.generate([_req(0, None, 0)])[0]
    assert g.finish_reason == "length" and g.n_tokens == 3
    eng.settings = GenerationSettings(max_new_tokens=40, do_sample=False)
    g = eng.generate([GenerationRequest("hi", "Reply with just the word OK.", None, None, 0)])[0]
    assert g.finish_reason == "stop" and g.n_tokens < 40 and g.text


def test_errors_come_before_generation(embedded, monkeypatch):
    eng = _engine(embedded)
    monkeypatch.setattr(eng, "_generate_batch", lambda batch: pytest.fail("generated before validating"))
    with pytest.raises(SteeringError, match="case 'orig' has no `instructions`"):
        eng.generate([GenerationRequest("orig", "Say hi.", None, 10.0, 0)])
    with pytest.raises(SteeringError, match="case 'bad'.*not found in its prompt"):
        eng.generate([GenerationRequest("bad", "Say hi.", ("Say bye.",), 10.0, 0)])
    eng.control = PASTA([99])
    with pytest.raises(SteeringError, match="layer 99 is outside the model"):
        eng.generate([_req(0, 10.0, 0)])
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=1.5)


def test_out_of_memory_halves_the_batch_and_keeps_finished_rows(embedded, monkeypatch, caplog):
    eng = _engine(embedded, batch_size=8)
    reqs = grid_requests([type("C", (), {"key": k, "prompt": p, "instructions": i}) for k, p, i in PROMPTS],
                         [None, 10.0], [0, 1])
    expected = [g.text for g in eng.generate(reqs)]
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
    assert [g.text for g in got] == expected
    assert sizes[:3] == [8, 4, 2] and eng.batch_size == 2
    assert sum(seen) == len(reqs)
    assert sum("batch size halved" in r.message for r in caplog.records) == 1


def test_progress_reports_done_total_and_rate(embedded):
    eng = _engine(embedded, batch_size=2)
    seen = []
    eng.generate([_req(i, None, 0) for i in range(3)], on_progress=seen.append)
    assert [p.done for p in seen] == [2, 3] and seen[-1].total == 3
    assert seen[-1].tokens_per_s > 0 and math.isfinite(seen[0].eta_s)


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
