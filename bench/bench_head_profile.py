"""What `--steer-layers profile` (PASTA's head profiling) costs next to the fixed `middle` layers, measured in one
run on the embedded model.

Prepares PASTA on `make eval`'s split three ways in the same process: `middle` (locate the instruction spans),
`profile` with an empty cache (the layer pass and the head pass over held-out cases, `pasta_profile`), and
`profile` again on that cache (read, no generation). Prints the load average, the rows the profile generated,
the three prepare times and profile - middle, and the heads chosen; all in one process on the same machine, so
load from other processes hits them alike.

    python bench/bench_head_profile.py
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from pytest_steer.cache import ResultCache
from pytest_steer.methods import PrepareContext
from pytest_steer.methods.pasta import PASTA
from pytest_steer.methods.pasta_profile import PROFILE_CASES, PROFILE_TOKENS, TOP_LAYERS, top_k
from pytest_steer.models import load_model
from pytest_steer.session.run import _layer_sweep_tools
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import ifeval_task


def _timed(method: PASTA, ctx: PrepareContext) -> float:
    start = time.perf_counter()
    method.prepare(ctx)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded",
                        help="hub id or model directory (default: the embedded SmolLM2-135M-Instruct)")
    args = parser.parse_args()
    lm = load_model(args.model)
    task = ifeval_task()
    split = task.load(RunSpec())
    steered, held = tuple(split.evaluated), split.held_out
    tools = _layer_sweep_tools(lm, task)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        middle_s = _timed(PASTA(), PrepareContext(lm, steered, held, task=task))
        store = ResultCache(Path(tmp))
        profiled = PASTA(layers="profile")
        profile_s = _timed(profiled, PrepareContext(lm, steered, held, store=store, options=tools, task=task))
        cached_s = _timed(PASTA(layers="profile"), PrepareContext(lm, steered, held, store=store, options=tools,
                                                                   task=task))
    assert profiled.profile is not None
    print(f"model {lm.name}, {len(steered)} evaluated and {len(held)} held-out cases; threads "
          f"{torch.get_num_threads()}, load average {load:.2f} at start, {os.getloadavg()[0]:.2f} at end")
    layers, per_layer = lm.model.config.num_hidden_layers, lm.model.config.num_attention_heads
    print(f"profile: {profiled.profile.cases} held-out cases ({PROFILE_CASES} per type) x ({layers} layers + "
          f"unsteered + {TOP_LAYERS} layers x {per_layer} heads) = "
          f"{profiled.profile.rows} greedy responses of {PROFILE_TOKENS} tokens; keeps {top_k(layers * per_layer)} of "
          f"{layers * per_layer} heads")
    print(f"prepare middle: {middle_s:.1f} s; profile (empty cache): {profile_s:.1f} s; profile (cached): "
          f"{cached_s:.2f} s; profile - middle = {profile_s - middle_s:.1f} s")
    print("chosen: " + "; ".join(profiled.notes()))


if __name__ == "__main__":
    main()
