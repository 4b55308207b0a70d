"""What `--steer-actadd-layer auto` costs next to the fixed middle layer, measured in one run on the embedded model.

Prepares activation steering on `make eval`'s split (the embedded cases, HELD_OUT_PER_TYPE held out per
instruction type) three ways in the same process: `middle` (fit the vectors at one layer), `auto` with an
empty cache (fit at the sweep's layers, then generate and score the held-out sweep), and `auto` again on
that cache (read, no generation). Prints the seconds and the ratio auto / middle; both run on the same
machine in the same process, so load from other processes hits them alike.

    python bench/bench_layer_auto.py
"""

from __future__ import annotations

import os
import tempfile
import time

import torch

from pytest_steer.cache import ResultCache
from pytest_steer.methods import PrepareContext
from pytest_steer.methods.actadd import AUTO_CASES, AUTO_TOKENS, ActivationSteering, auto_layers
from pytest_steer.models import load_model
from pytest_steer.session.run import _layer_sweep_tools
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import ifeval_task


def _timed(method: ActivationSteering, ctx: PrepareContext) -> float:
    start = time.perf_counter()
    method.prepare(ctx)
    return time.perf_counter() - start


def main() -> None:
    lm = load_model()
    task = ifeval_task()
    split = task.load(RunSpec())
    steered, held = tuple(split.evaluated), split.held_out
    tools = _layer_sweep_tools(lm, task)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        middle_s = _timed(ActivationSteering(), PrepareContext(lm, steered, held, task=task))
        store = ResultCache(tmp)
        auto = ActivationSteering(layer="auto")
        auto_s = _timed(auto, PrepareContext(lm, steered, held, store=store, options=tools, task=task))
        cached_s = _timed(ActivationSteering(layer="auto"), PrepareContext(lm, steered, held, store=store,
                                                                            options=tools, task=task))
    kinds = len({t for c in steered for t in c.instruction_id_list})
    grid = auto_layers(lm.model.config.num_hidden_layers)
    print(f"model {lm.name}, {len(steered)} evaluated and {len(held)} held-out cases, {kinds} instruction types; "
          f"threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    print(f"auto sweep: layers {grid}, up to {AUTO_CASES} held-out cases per type x {len(grid) + 1} settings x "
          f"{AUTO_TOKENS} new tokens")
    print(f"prepare middle: {middle_s:.1f} s; auto (empty cache): {auto_s:.1f} s; auto (cached): {cached_s:.1f} s; "
          f"auto / middle = {auto_s / middle_s:.1f}; auto - middle = {auto_s - middle_s:.1f} s")
    print("chosen: " + "; ".join(auto.notes()))


if __name__ == "__main__":
    main()
