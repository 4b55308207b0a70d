"""What the dose pass costs next to generation, measured in one run on the embedded model.

Generates the rows of a small `make eval`-like grid (baseline, PASTA alpha 10, activation steering
c=1, prompt emphasis `restate`) for a few embedded cases, then computes every steered row's dose
(`pytest_steer.dose.doses`) the way the session does (one teacher-forced pass per case and trial),
and prints both times and their ratio. Both phases run in the same process on the same machine, so
load from other processes hits them alike; the ratio, not the seconds, is the result.

    python bench/bench_dose.py                 # 4 cases, 48 new tokens
    python bench/bench_dose.py --cases 8 --max-new-tokens 96
"""

from __future__ import annotations

import argparse
import time

import torch

from pytest_steer.dose import doses
from pytest_steer.generation import GenerationEngine, GenerationRequest, GenerationSettings
from pytest_steer.methods import PrepareContext, config
from pytest_steer.methods.actadd import ActivationSteering
from pytest_steer.methods.base import BASELINE_CONFIG
from pytest_steer.methods.pasta import PASTA
from pytest_steer.methods.prompt import PromptEmphasis
from pytest_steer.models import load_model
from pytest_steer.tasks import IFEVAL_OFFERS, load_cases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=48)
    args = p.parse_args()
    lm = load_model()
    cases = load_cases()
    kinds = list(dict.fromkeys(c.tags[0] for c in cases))[:2]
    by_kind = {k: [c for c in cases if c.tags[0] == k] for k in kinds}
    steered = [c for k in kinds for c in by_kind[k][: (args.cases + 1) // 2]][: args.cases]
    held = [c for k in kinds for c in by_kind[k][(args.cases + 1) // 2:][:4]]
    methods = {"pasta": PASTA(), "actadd": ActivationSteering(), "prompt": PromptEmphasis()}
    for m in methods.values():
        m.prepare(PrepareContext(model=lm, steered=steered, held_out=held, task=IFEVAL_OFFERS))
    engine = GenerationEngine(lm.model, lm.tokenizer, methods,
                              GenerationSettings(max_new_tokens=args.max_new_tokens, seed=0))
    configs = [BASELINE_CONFIG, config(methods["pasta"], 10.0), config(methods["actadd"], 1.0),
               config(methods["prompt"], "restate")]
    requests = [GenerationRequest(c, cfg, 0) for cfg in configs for c in steered]
    with torch.inference_mode():
        start = time.perf_counter()
        gens = engine.generate(requests)
        gen_s = time.perf_counter() - start
        base = {g.request.case.key: g.text for g in gens if g.request.config.is_baseline}
        start = time.perf_counter()
        kl: dict[str, list[float]] = {}
        for case in steered:
            rows = [g.request for g in gens if g.request.case.key == case.key and not g.request.config.is_baseline]
            for r, d in zip(rows, doses(engine, rows, base[case.key]), strict=True):
                kl.setdefault(r.config.label, []).append(d)
        dose_s = time.perf_counter() - start
    tokens = sum(g.n_tokens for g in gens)
    print(f"model {lm.name}, {len(steered)} cases x {len(configs)} configs, {tokens} generated tokens, "
          f"threads {torch.get_num_threads()}")
    print(f"generation: {gen_s:.1f} s; dose pass ({len(requests) - len(steered)} steered rows): {dose_s:.1f} s; "
          f"dose / generation = {dose_s / gen_s:.3f}")
    print("mean dose (KL nats/token): " + ", ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in kl.items()))


if __name__ == "__main__":
    main()
