"""What `--steer-actadd-layer auto` decides and costs, measured in one run on the embedded model.

Prepares activation steering on `make eval`'s split (the embedded cases, HELD_OUT_PER_TYPE held out per
instruction type) three ways in the same process: `middle` (fit the vectors at one layer), `auto` with an
empty cache (fit at the sweep's layers, then generate and score the held-out sweep), and `auto` again on
that cache (read, no generation). Prints the seconds and the ratio auto / middle (both run on the same
machine in the same process, so load from other processes hits them alike), then per instruction type
what the sweep saw: per arm (unsteered, each layer) the held-out accuracy, the responses' perplexities
(the response alone under the model), how many are degenerate under the calibrated mark, how many ended
within their token budget, whether the arm was dropped, and the layer chosen.

`--types` keeps only some instruction types (IFEval's `types` option), e.g. the end-judged one alone,
whose sweep answers run up to 1024 tokens:

    python bench/bench_layer_auto.py
    python bench/bench_layer_auto.py --types startend:end_checker
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
from pytest_steer.methods.actadd import (
    AUTO_CASES,
    ActivationSteering,
    LayerTrial,
    auto_layers,
    choose_layers,
    degeneracy_mark,
    degenerate,
)
from pytest_steer.models import load_model
from pytest_steer.session.run import _layer_sweep_tools
from pytest_steer.spec import RunSpec
from pytest_steer.tasks import ifeval_task
from pytest_steer.tasks.ifeval import parse_types


def _timed(method: ActivationSteering, ctx: PrepareContext) -> float:
    start = time.perf_counter()
    method.prepare(ctx)
    return time.perf_counter() - start


def _table(trials: list[LayerTrial]) -> list[str]:
    """Per type and arm: accuracy, perplexities, degenerate and ended counts, dropped, and the choice."""
    mark, chosen = degeneracy_mark(trials), choose_layers(trials)
    lines = [f"degeneracy mark (half the median unsteered perplexity): {mark:.2f}"]
    for kind in dict.fromkeys(t.kind for t in trials):
        rows = [t for t in trials if t.kind == kind]
        arms = list(dict.fromkeys(t.layer for t in rows))
        lines.append(f"{kind} (up to {rows[0].tokens} new tokens), chosen: "
                     f"{'unsteered' if chosen[kind] is None else f'layer {chosen[kind]}'}")
        for layer in arms:
            arm = [t for t in rows if t.layer == layer]
            bad = sum(degenerate(t, mark) for t in arm)
            ppl = ", ".join(f"{t.perplexity:.2f}" for t in arm)
            name = "unsteered" if layer is None else f"layer {layer}"
            lines.append(f"  {name:10} accuracy {sum(t.follows for t in arm)}/{len(arm)}, perplexity [{ppl}], "
                         f"degenerate {bad}, ended {sum(t.ended for t in arm)}/{len(arm)}"
                         + (", dropped (scores 0)" if bad else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=parse_types, default=None,
                        help="instruction types to sweep, comma-separated (default: make eval's seed types)")
    parser.add_argument("--model", default="embedded",
                        help="hub id or model directory (default: the embedded SmolLM2-135M-Instruct)")
    args = parser.parse_args()
    task = ifeval_task()
    spec = RunSpec() if args.types is None else RunSpec(types=args.types)
    try:  # an unknown type fails here, before the model loads
        split = task.load(spec)
    except ValueError as e:
        parser.error(str(e))
    start_load, start = os.getloadavg()[0], time.perf_counter()
    lm = load_model(args.model)
    steered, held = tuple(split.evaluated), split.held_out
    tools = _layer_sweep_tools(lm, task, spec.max_new_tokens)
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        middle_s = _timed(ActivationSteering(), PrepareContext(lm, steered, held, task=task))
        store = ResultCache(Path(tmp))
        auto = ActivationSteering(layer="auto")
        auto_s = _timed(auto, PrepareContext(lm, steered, held, store=store, options=tools, task=task))
        cached_s = _timed(ActivationSteering(layer="auto"), PrepareContext(lm, steered, held, store=store,
                                                                            options=tools, task=task))
    kinds = len({t for c in steered for t in c.tags})
    grid = auto_layers(lm.model.config.num_hidden_layers)
    print(f"model {lm.name}, {len(steered)} evaluated and {len(held)} held-out cases, {kinds} instruction types; "
          f"threads {torch.get_num_threads()}, load average {start_load:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end; wall {time.perf_counter() - start:.0f} s")
    print(f"auto sweep: layers {grid}, up to {AUTO_CASES} held-out cases per type x {len(grid) + 1} settings")
    print(f"prepare middle: {middle_s:.1f} s; auto (empty cache): {auto_s:.1f} s; auto (cached): {cached_s:.1f} s; "
          f"auto / middle = {auto_s / middle_s:.1f}; auto - middle = {auto_s - middle_s:.1f} s")
    print("\n".join(_table(auto.sweep)))
    print("chosen: " + "; ".join(auto.notes()))


if __name__ == "__main__":
    main()
