"""Generation throughput (generated tokens/s): batched PASTA and activation steering vs unsteered vs the
batch-1 eager reference.

Variants, all at the same prompts, max_new_tokens, sampling settings and seed:

  (a) reference  the reference notebook's setup: batch 1, attn_implementation="eager", generate() called with
                 output_attentions=True and return_dict_in_generate=True (attention weights materialised),
                 PASTA on, one prompt at a time. Only --ref-prompts prompts are timed (it is slow); its
                 per-token rate is what the ratios and the grid estimate use.
  (b) unsteered  GenerationEngine with no steering methods, batched, SDPA.
  (c) PASTA      GenerationEngine with PASTA at one alpha (--alpha) for every row, batched, SDPA.
  (d) mixed      GenerationEngine with PASTA, rows cycling baseline/5/10/20/30/40/50 in the same batches.
  (e) actadd     GenerationEngine with activation steering at one coefficient (--coef) for every row; its
                 vectors are fitted once, before timing, from held-out cases (two per instruction type).

(a) also runs through GenerationEngine (batch_size=1, same chat template, highlight mask and Gumbel sampling);
the engine has no output_attentions option, so for (a) the model's `generate` is wrapped to add
output_attentions=True / return_dict_in_generate=True and hand the engine `.sequences`.

Throughput = sum of Generation.n_tokens (tokens really generated, EOS included, padding after EOS not)
/ wall time. Each variant gets a warm-up, then --repeats timed runs, interleaved a, b, c, d, a, b, ... so
that drift hits every variant alike (one block per variant with --static-cache); the MEDIAN is reported.
"slot tok/s" also counts the steps rows sit idle after their EOS (batch rows x decode steps): the raw
decode rate, independent of when rows happen to stop. Steering changes the text and so where rows stop,
so c/b in tok/s moves with content; c/b in slot tok/s is the cost of the steering itself.

On CPU every run is tagged with the cores other processes used meanwhile (/proc/stat): on a shared
machine a busy neighbour core makes torch's lock-step OpenMP threads 10-30x slower. Such runs are
marked * and left out of the median, extra rounds replace them (--extra-rounds, --time-budget), and
--threads auto starts with fewer threads when the machine is already busy.

    python bench/bench_generation.py --quick                       # ~1-2 minute smoke run on CPU
    python bench/bench_generation.py                               # embedded SmolLM2-135M on CPU
    python bench/bench_generation.py --model random:qwen2.5-1.5b --device cuda --dtype bfloat16 --batch-size 240
    python bench/bench_generation.py --model random:qwen2.5-1.5b --device cuda --dtype bfloat16 --batch-size 240 --grid

The prompts are the embedded Split-IFEval-style cases. Nothing is downloaded: "embedded" is the packaged
SmolLM2-135M-Instruct; "random:qwen2.5-1.5b" is a
randomly initialised model of Qwen2.5-1.5B-Instruct's shape (config inline below) that uses the embedded
SmolLM2 tokenizer for prompts (its ids, < 49152, are valid in Qwen's 151936 vocabulary).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pytest_steer.generation import (
    Generation,
    GenerationEngine,
    GenerationRequest,
    GenerationSettings,
    grid_requests,
)
from pytest_steer.methods import BASELINE_CONFIG, GridPoint, PrepareContext, SteeringMethod, config
from pytest_steer.methods.actadd import ActivationSteering
from pytest_steer.methods.pasta import PASTA
from pytest_steer.models import (
    LoadedModel,
    cache_root,
    embedded_gguf_path,
    load_model,
    parse_dtype,
)
from pytest_steer.tasks import IFEVAL_OFFERS, Case, load_cases

GRID_ALPHAS = (5.0, 10.0, 20.0, 30.0, 40.0, 50.0)  # the grid and the mixed variant (d) add baseline rows
HELD_OUT_PER_TYPE = 2  # cases per instruction type that fit the activation-steering vectors, never timed
GRID_CASES, GRID_TRIALS, GRID_NEW_TOKENS = 48, 5, 128

# Qwen2.5-1.5B-Instruct's architecture (its config.json), for a random-init model: no hub needed.
RANDOM_CONFIGS: dict[str, dict[str, Any]] = {
    "qwen2.5-1.5b": {
        "model_type": "qwen2",
        "hidden_size": 1536,
        "intermediate_size": 8960,
        "num_hidden_layers": 28,
        "num_attention_heads": 12,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "attention_dropout": 0.0,
        "use_sliding_window": False,
    },
}

def bench_cases() -> tuple[list[Case], list[Case]]:
    """The embedded cases: (timed cases, held-out cases for the activation-steering vectors)."""
    timed: list[Case] = []
    held_out: list[Case] = []
    per_type: dict[str, int] = {}
    for case in load_cases():
        kind = case.tags[0]
        per_type[kind] = per_type.get(kind, 0) + 1
        (held_out if per_type[kind] <= HELD_OUT_PER_TYPE else timed).append(case)
    return timed, held_out


# ---------------------------------------------------------------------------------------------
# Model


def embedded_tokenizer() -> Any:
    """SmolLM2's tokenizer: from the converted model cache if there is one, else straight from the GGUF file (~5 s,
    instead of converting the whole model, ~30 s)."""
    from transformers import AutoTokenizer

    cached = sorted((cache_root() / "models").glob("smollm2-135m-instruct-*/tokenizer_config.json"))
    if cached:
        return AutoTokenizer.from_pretrained(cached[-1].parent)
    gguf = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def build_model(name: str, device: torch.device, dtype: torch.dtype) -> tuple[LoadedModel, str]:
    """Load `name` (embedded / HF id / dir) or build `random:<shape>`; returns the model and a note on its tokenizer."""
    if not name.startswith("random:"):
        return load_model(name, device=device, dtype=dtype), "the model's own"
    shape = name.split(":", 1)[1]
    if shape not in RANDOM_CONFIGS:
        raise SystemExit(f"unknown random model {name!r}; known: " + ", ".join(f"random:{k}" for k in RANDOM_CONFIGS))
    from transformers import AutoConfig, AutoModelForCausalLM

    params = dict(RANDOM_CONFIGS[shape])
    config = AutoConfig.for_model(params.pop("model_type"), **params)
    torch.manual_seed(0)
    with torch.device(device):  # initialise directly on the device: fast on CUDA
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    model.eval()
    tok = embedded_tokenizer()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    assert len(tok) <= config.vocab_size
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id, gc.bos_token_id = tok.eos_token_id, tok.pad_token_id, tok.bos_token_id
    lm = LoadedModel(model=model, tokenizer=tok, name=name, identity=f"random-init:{shape}:seed0", device=device,
                     dtype=dtype)
    return lm, f"embedded SmolLM2-135M-Instruct tokenizer (vocab {len(tok)}; random model vocab {config.vocab_size})"


def parse_layers(spec: str) -> list[int]:
    """'8-23', '8..23', '8,9,12' or a mix like '2-4,10'."""
    out: list[int] = []
    for part in spec.replace("..", "-").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return sorted(set(out))


def layer_text(layers: Sequence[int]) -> str:
    ls = list(layers)
    return f"{ls[0]}..{ls[-1]}" if ls == list(range(ls[0], ls[-1] + 1)) else ",".join(map(str, ls))


# ---------------------------------------------------------------------------------------------
# Timing


class CpuMeter:
    """Measures how many CPU cores other processes kept busy while we ran (from /proc/stat, Linux only).

    Shared CPU machines have neighbours; with torch's OpenMP threads pinned in lock-step, one busy
    neighbour core can make a run 10-30x slower, so every CPU run is tagged with this number.
    """

    def __init__(self) -> None:
        self.ok = Path("/proc/stat").is_file()
        self.hz = os.sysconf("SC_CLK_TCK") if self.ok else 100

    def busy_s(self) -> float:
        if not self.ok:
            return 0.0
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / self.hz  # user nice system irq softirq steal

    def start(self) -> tuple[float, float, float]:
        return self.busy_s(), time.process_time(), time.perf_counter()

    def other_cores(self, mark: tuple[float, float, float]) -> float | None:
        if not self.ok:
            return None
        busy, own, t = mark
        wall = time.perf_counter() - t
        return max(0.0, (self.busy_s() - busy - (time.process_time() - own)) / wall) if wall > 0 else None

    def probe(self, seconds: float = 1.0) -> float | None:
        mark = self.start()
        time.sleep(seconds)
        return self.other_cores(mark)


METER = CpuMeter()
CONTENDED = 0.3  # tolerance, in cores, for other processes' load
CONTENDED_ABOVE = float("inf")  # CPU runs: busy cores of other processes above which a run is flagged (set in main)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclasses.dataclass
class Run:
    tokens: int  # sum of n_tokens
    slots: int  # sum over batches of rows x decode steps (max n_tokens of the batch)
    seconds: float
    batch_size: int  # the engine's batch size at the end (the engine halves it on OOM)
    peak_gib: float | None = None
    other_cores: float | None = None  # CPU only: cores other processes used meanwhile

    @property
    def contended(self) -> bool:
        return self.other_cores is not None and self.other_cores > CONTENDED_ABOVE

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds

    @property
    def slot_tps(self) -> float:
        return self.slots / self.seconds


def timed_generate(engine: GenerationEngine, requests: Sequence[GenerationRequest], device: torch.device) -> Run:
    slots = 0

    def on_batch(gens: list[Generation]) -> None:
        nonlocal slots
        slots += len(gens) * max(g.n_tokens for g in gens)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    mark = METER.start()
    t0 = time.perf_counter()
    gens = engine.generate(requests, on_batch=on_batch)
    sync(device)
    dt = time.perf_counter() - t0
    other = METER.other_cores(mark) if device.type == "cpu" else None
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Run(sum(g.n_tokens for g in gens), slots, dt, engine.batch_size, peak, other)


@contextlib.contextmanager
def reference_setup(model: Any) -> Iterator[dict[str, Any]]:
    """Eager attention, and generate() returning attentions (then handing the engine only the sequences)."""
    info: dict[str, Any] = {}
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    original = model.generate

    def generate(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = original(*args, output_attentions=True, return_dict_in_generate=True, **kwargs)
        att = getattr(out, "attentions", None)
        if not att or att[0] is None or att[0][0] is None:
            raise RuntimeError("generate(output_attentions=True) returned no attentions; "
                               "the reference setup is not reproduced")
        info["attn_shape"] = tuple(att[0][0].shape)
        info["attn_impl"] = model.config._attn_implementation
        return out.sequences

    model.generate = generate  # instance attribute shadows the method for the engine's call
    try:
        yield info
    finally:
        del model.generate
        model.set_attn_implementation(previous.removeprefix("pasta_"))


def fmt_runs(runs: Sequence[Run]) -> str:
    return ", ".join(f"{r.tps:.1f}" + ("*" if r.contended else "") for r in runs)


def clean(runs: Sequence[Run]) -> list[Run]:
    """The runs no neighbour process disturbed, or all runs if every one was disturbed."""
    quiet = [r for r in runs if not r.contended]
    return quiet or list(runs)


def median_run(runs: Sequence[Run]) -> Run:
    """Median wall time over the undisturbed runs (tokens are the same every run: seeded sampling)."""
    use = clean(runs)
    first = use[0]
    return Run(int(statistics.median(r.tokens for r in use)), int(statistics.median(r.slots for r in use)),
               statistics.median(r.seconds for r in use), first.batch_size,
               max((r.peak_gib for r in use if r.peak_gib is not None), default=None), first.other_cores)


def load_note(run: Run) -> str:
    if run.other_cores is None:
        return ""
    note = " (CONTENDED, excluded from median)" if run.contended else ""
    return f", other procs {run.other_cores:.2f} cores{note}"


# ---------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded",
                   help="'embedded' (default), an HF id or local dir, or random:qwen2.5-1.5b")
    p.add_argument("--device", default=None, help="cpu / cuda / cuda:1 (default: cuda if available)")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, float32 on CPU), float32, bfloat16, float16")
    p.add_argument("--batch-size", type=int, default=None, help="engine batch size (default 16 on CPU, 240 on CUDA)")
    p.add_argument("--rows", type=int, default=None,
                   help="rows per timed run of b/c/d/e (default: 2 x batch on CPU, batch on CUDA)")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default 64 on CPU, 128 on CUDA (grid: 128)")
    p.add_argument("--layers", default=None, help="PASTA layers, e.g. 8-23 (default: the middle, 8..23 of 28 layers)")
    p.add_argument("--alpha", type=float, default=10.0, help="PASTA alpha for (a) and (c) (default 10)")
    p.add_argument("--coef", type=float, default=4.0, help="activation-steering coefficient for (e) (default 4)")
    p.add_argument("--actadd-layer", default="middle", help="activation-steering layer: middle (default) or an index")
    p.add_argument("--ref-prompts", type=int, default=2, help="prompts timed for the reference (a) (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the median is reported (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (default: the model's generation_config)")
    p.add_argument("--top-p", type=float, default=None,
                   help="top-p (default: the model's; 1.0 turns the top-p sort off)")
    p.add_argument("--top-k", type=int, default=None, help="top-k (default: the model's)")
    p.add_argument("--stop-at-eos", action="store_true",
                   help="let rows stop at EOS; by default every row runs to max_new_tokens, so variants generate the "
                        "same tokens and tok/s compares compute, not where steered text happens to end")
    p.add_argument("--static-cache", action="store_true",
                   help="GenerationSettings(static_cache=True) for b/c/d/e (compiled decode on CUDA)")
    p.add_argument("--grid", action="store_true",
                   help="time the seed-scale grid (48 cases x 7 configs x 5 trials x 128 tokens) instead")
    p.add_argument("--quick", action="store_true", help="small smoke run (~1-2 minutes on 2 CPU cores)")
    p.add_argument("--skip-reference", action="store_true", help="skip (a) (no c/a ratio or grid estimate)")
    p.add_argument("--threads", default="auto",
                   help="torch CPU threads; auto = torch's default, minus the cores other processes keep busy at start")
    p.add_argument("--extra-rounds", type=int, default=None,
                   help="CPU: extra rounds for variants whose runs a neighbour process disturbed "
                        "(default 2 on CPU, 0 on CUDA)")
    p.add_argument("--time-budget", type=float, default=420.0,
                   help="no extra rounds start after this many seconds of timing (default 420)")
    return p.parse_args(argv)


def choose_threads(spec: str, device: torch.device) -> str:
    """Set torch's CPU threads; returns a note for the header."""
    default = torch.get_num_threads()
    if spec != "auto":
        torch.set_num_threads(int(spec))
        return f"{torch.get_num_threads()} (--threads)"
    if device.type != "cpu":
        return f"{default} (default)"
    other = METER.probe(1.0)
    if other is None or other <= CONTENDED:
        return f"{default} (default; other processes {other or 0:.2f} cores at start)"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or default)
    n = max(1, min(default, cores - math.ceil(other - CONTENDED)))
    torch.set_num_threads(n)
    return (f"{n} (auto: other processes kept {other:.2f} of {cores} cores busy at start; OpenMP threads sharing "
            f"a busy core run many times slower)")


def main(argv: Sequence[str] | None = None) -> int:
    global CONTENDED_ABOVE
    args = parse_args(argv)
    if not args.stop_at_eos:  # fixed-length rows: the engine sees no end-of-turn token
        GenerationEngine._eos_ids = lambda self: []  # type: ignore[method-assign]
    device = torch.device(args.device) if args.device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.type == "cuda"
    dtype = parse_dtype(args.dtype, device)
    threads_note = choose_threads(args.threads, device)
    if not cuda:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        CONTENDED_ABOVE = max(0, cores - torch.get_num_threads()) + CONTENDED
    if args.batch_size is None:
        args.batch_size = 8 if args.quick else (240 if cuda else 16)
    if args.rows is None:
        args.rows = args.batch_size if (cuda or args.quick) else 2 * args.batch_size
    args.user_max_new_tokens = args.max_new_tokens
    if args.max_new_tokens is None:
        args.max_new_tokens = 24 if args.quick else (128 if cuda else 64)
    if args.quick:  # one batch per run, long enough that decode (what steering costs) dominates prefill
        args.ref_prompts = min(args.ref_prompts, 1)
        args.time_budget = min(args.time_budget, 90.0)
    if args.extra_rounds is None:
        args.extra_rounds = 0 if cuda else (1 if args.quick else 2)

    t_load = time.perf_counter()
    lm, tok_note = build_model(args.model, device, dtype)
    t_load = time.perf_counter() - t_load
    model = lm.model
    n_layers = model.config.get_text_config().num_hidden_layers
    cases, held_out = bench_cases()

    card = torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    n_params = sum(p.numel() for p in model.parameters())
    print("== bench_generation ==")
    print(f"model       : {lm.name} ({type(model).__name__}, {n_params / 1e6:.0f}M params, {n_layers} layers, "
          f"{model.config.num_attention_heads} heads), loaded in {t_load:.1f}s")
    print(f"tokenizer   : {tok_note}")
    print(f"device      : {device} | card: {card} | dtype: {str(dtype).removeprefix('torch.')} | "
          f"cpu cores: {os.cpu_count()}")
    print(f"threads     : {threads_note}")
    print(f"versions    : torch {torch.__version__}, transformers {transformers.__version__}, "
          f"python {platform.python_version()}")
    print(f"cases       : embedded cases, {len(cases)} timed, {len(held_out)} held out for the actadd vectors")
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, seed=args.seed, do_sample=True,
                                  temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                  static_cache=args.static_cache)
    rs = settings.resolved(model)
    print(f"sampling    : seeded Gumbel (engine), temperature={rs.temperature}, top_p={rs.top_p}, top_k={rs.top_k}, "
          f"seed={args.seed}; " + ("EOS stops rows early" if args.stop_at_eos else "every row runs to max_new_tokens"))
    pasta = PASTA(parse_layers(args.layers) if args.layers else "middle")
    actadd = ActivationSteering("middle" if args.actadd_layer == "middle" else int(args.actadd_layer))
    t_fit = time.perf_counter()
    ctx = PrepareContext(model=lm, steered=cases, held_out=held_out, task=IFEVAL_OFFERS)
    pasta.prepare(ctx)
    actadd.prepare(ctx)
    t_fit = time.perf_counter() - t_fit
    print(f"PASTA       : layers {layer_text(list(pasta.heads(model)))} (all heads), scale_position=include, "
          f"alpha={args.alpha:g}")
    print(f"actadd      : layer {actadd.identity()['layer']}, coefficient {args.coef:g}, {len(actadd.vectors)} vectors "
          f"from {len(held_out)} held-out cases (both methods prepared in {t_fit:.1f}s, before timing)")
    if args.grid:
        return run_grid(args, lm, pasta, cases, settings, device)
    return run_variants(args, lm, {"pasta": pasta, "actadd": actadd}, cases, settings, device)


def make_rows(cases: Sequence[Case], n: int, config_of: Callable[[int], GridPoint]) -> list[GenerationRequest]:
    """n rows over the cases (trial = how many times the case list has wrapped)."""
    return [GenerationRequest(cases[i % len(cases)], config_of(i), i // len(cases)) for i in range(n)]


@dataclasses.dataclass
class Variant:
    key: str
    label: str
    methods: Mapping[str, SteeringMethod]
    rows: list[GenerationRequest]
    settings: GenerationSettings
    batch_size: int
    runs: list[Run] = dataclasses.field(default_factory=list)
    failed: str | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def engine(self, lm: LoadedModel, settings: GenerationSettings | None = None) -> GenerationEngine:
        return GenerationEngine(lm.model, lm.tokenizer, self.methods, settings or self.settings,
                                batch_size=self.batch_size, sort_by_length=self.key != "a")

    @contextlib.contextmanager
    def backend(self, lm: LoadedModel) -> Iterator[None]:
        """(a): eager + output_attentions; the others start from plain SDPA, PASTA switches to its twin per batch."""
        if self.key == "a":
            with reference_setup(lm.model) as info:
                yield
            self.info.update(info)
            return
        lm.model.set_attn_implementation(lm.model.config._attn_implementation.removeprefix("pasta_"))
        yield

    def warm_up(self, lm: LoadedModel, full: bool) -> None:
        n_new = self.settings.max_new_tokens if full else min(8, self.settings.max_new_tokens)
        with self.backend(lm):
            engine = self.engine(lm, dataclasses.replace(self.settings, max_new_tokens=n_new))
            engine.generate(self.rows[: self.batch_size])

    def run(self, lm: LoadedModel, device: torch.device) -> Run:
        with self.backend(lm):
            run = timed_generate(self.engine(lm), self.rows, device)
        self.runs.append(run)
        return run

    def enough(self, repeats: int) -> bool:
        return self.failed is not None or sum(not r.contended for r in self.runs) >= repeats


def reference_variant(args: argparse.Namespace, pasta: PASTA, cases: Sequence[Case],
                      settings: GenerationSettings) -> Variant:
    steered = config(pasta, args.alpha)
    return Variant("a", "reference: batch 1, eager+output_attentions", {"pasta": pasta},
                   make_rows(cases, args.ref_prompts, lambda i: steered),
                   dataclasses.replace(settings, static_cache=False), 1)


def print_run(v: Variant, run: Run) -> None:
    print(f"  ({v.key}) run {len(v.runs)}: {run.tokens} tokens in {run.seconds:.2f}s = {run.tps:.1f} tok/s"
          + (f", peak {run.peak_gib:.2f} GiB" if run.peak_gib is not None else "") + load_note(run), flush=True)


def measure(variants: Sequence[Variant], lm: LoadedModel, device: torch.device, args: argparse.Namespace) -> None:
    """Warm up each variant, then time rounds a b c d, a b c d, ... (blocks per variant with a static cache)."""
    t0 = time.perf_counter()

    def attempt(v: Variant) -> None:
        try:
            if not v.info.get("warm"):
                v.warm_up(lm, full=args.static_cache and v.key != "a")
                v.info["warm"] = True
            print_run(v, v.run(lm, device))
        except Exception:
            v.failed = traceback.format_exc()
            print(f"  ({v.key}) FAILED:\n{v.failed}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    rounds = args.repeats + args.extra_rounds
    if args.static_cache:
        # compiled graphs are keyed on the attention function: switching it every run would recompile
        for v in variants:
            for i in range(rounds):
                over = time.perf_counter() - t0 > args.time_budget
                if v.failed or (i >= args.repeats and (v.enough(args.repeats) or over)):
                    break
                attempt(v)
        return
    # interleaved so that drift on a noisy machine hits every variant alike
    for i in range(rounds):
        todo = [v for v in variants if not v.failed and (i < args.repeats or not v.enough(args.repeats))]
        if not todo or (i >= args.repeats and time.perf_counter() - t0 > args.time_budget):
            break
        if i >= args.repeats:
            print(f"  extra round {i - args.repeats + 1} for {', '.join(v.key for v in todo)} "
                  f"(runs disturbed by other processes)", flush=True)
        for v in todo:
            attempt(v)


def run_variants(args: argparse.Namespace, lm: LoadedModel, methods: Mapping[str, SteeringMethod],
                 cases: Sequence[Case], settings: GenerationSettings, device: torch.device) -> int:
    pasta, actadd = methods["pasta"], methods["actadd"]
    assert isinstance(pasta, PASTA)
    bs = args.batch_size
    steered, coef = config(pasta, args.alpha), config(actadd, args.coef)
    mix = [BASELINE_CONFIG, *(config(pasta, a, GRID_ALPHAS) for a in GRID_ALPHAS)]
    variants = [] if args.skip_reference else [reference_variant(args, pasta, cases, settings)]
    variants += [
        Variant("b", "unsteered (engine, no methods)", {}, make_rows(cases, args.rows, lambda i: BASELINE_CONFIG),
                settings, bs),
        Variant("c", f"PASTA, alpha={args.alpha:g} on all rows", {"pasta": pasta},
                make_rows(cases, args.rows, lambda i: steered), settings, bs),
        Variant("d", "PASTA mixed: baseline/" + "/".join(f"{a:g}" for a in GRID_ALPHAS) + " rows", {"pasta": pasta},
                make_rows(cases, args.rows, lambda i: mix[i % len(mix)]), settings, bs),
        Variant("e", f"actadd, coefficient {args.coef:g} on all rows", {"actadd": actadd},
                make_rows(cases, args.rows, lambda i: coef), settings, bs),
    ]
    print(f"batch       : {bs} | rows per run (b-e): {args.rows} | reference (a): {args.ref_prompts} prompt(s) at "
          f"batch 1 | max_new_tokens: {args.max_new_tokens} | repeats: {args.repeats} (median) | "
          f"static cache: {args.static_cache}")
    print()
    measure(variants, lm, device, args)
    ref = next((v for v in variants if v.key == "a"), None)
    if ref is not None and ref.info.get("attn_impl"):
        print(f"  (a) ran with attn_implementation={ref.info['attn_impl']!r}, generate(output_attentions=True, "
              f"return_dict_in_generate=True): layer-0 attentions of the prefill step {ref.info.get('attn_shape')}")

    print()
    print(f"{'variant':<50} {'batch':>5} {'rows':>5} {'tokens':>7} {'median s':>9} {'tok/s':>8} {'slot tok/s':>10}  "
          "all runs tok/s")
    med: dict[str, Run] = {}
    for v in variants:
        name = f"({v.key}) {v.label}"
        if not v.runs:
            print(f"{name:<50} FAILED")
            continue
        r = med[v.key] = median_run(v.runs)
        batch = 1 if v.key == "a" else r.batch_size
        peak = f"  peak {max(x.peak_gib or 0.0 for x in v.runs):.2f} GiB" if r.peak_gib is not None else ""
        print(f"{name:<50} {batch:>5} {len(v.rows):>5} {r.tokens:>7} {r.seconds:>9.2f} {r.tps:>8.1f} "
              f"{r.slot_tps:>10.1f}  [{fmt_runs(v.runs)}]{peak}")
    print("tok/s = generated tokens (sum of n_tokens) / median wall time; slot tok/s also counts the steps "
          "rows idle after their EOS.")
    if any(r.contended for v in variants for r in v.runs):
        print("* = run disturbed by other processes on this machine (> "
              f"{CONTENDED_ABOVE:.1f} busy cores besides ours); left out of the median unless every run was.")
    if "a" in med:
        print(f"(a) per-token latency: {1000 / med['a'].tps:.1f} ms/token at batch 1 (prefill included)")

    def ratio(x: str, y: str, slot: bool = False) -> str:
        if x not in med or y not in med:
            return "n/a"
        return f"{(med[x].slot_tps / med[y].slot_tps) if slot else (med[x].tps / med[y].tps):.2f}x"

    print(f"decode-slot ratios (independent of when rows hit EOS): c/b = {ratio('c', 'b', True)}  "
          f"d/b = {ratio('d', 'b', True)}  e/b = {ratio('e', 'b', True)}")
    print(f"ratios: PASTA steered/unsteered (c/b) = {ratio('c', 'b')}  actadd steered/unsteered (e/b) = "
          f"{ratio('e', 'b')}  batched-steered/reference (c/a) = {ratio('c', 'a')}  mixed/unsteered (d/b) = "
          f"{ratio('d', 'b')}")
    return 1 if any(v.failed for v in variants) else 0


def run_grid(args: argparse.Namespace, lm: LoadedModel, pasta: PASTA, all_cases: Sequence[Case],
             settings: GenerationSettings, device: torch.device) -> int:
    n_cases, n_trials, n_new = (4, 2, 8) if args.quick else (GRID_CASES, GRID_TRIALS, GRID_NEW_TOKENS)
    if args.user_max_new_tokens is not None:  # the grid is defined at 128 tokens; an explicit value overrides
        n_new = args.user_max_new_tokens
    settings = dataclasses.replace(settings, max_new_tokens=n_new)
    cases = list(all_cases[:n_cases])
    if len(cases) < n_cases:
        print(f"[note] only {len(cases)} cases available for the grid (wanted {n_cases})")
    configs = [BASELINE_CONFIG, *(config(pasta, a, GRID_ALPHAS) for a in GRID_ALPHAS)]
    requests = grid_requests(cases, configs, range(n_trials))
    print(f"grid        : {len(cases)} cases x {len(configs)} configs (baseline + alphas "
          f"{', '.join(f'{a:g}' for a in GRID_ALPHAS)}) x {n_trials} trials = {len(requests)} rows, "
          f"{n_new} new tokens, batch {args.batch_size}, mixed batches, static cache: {args.static_cache}")
    print()
    ref_runs: list[Run] = []
    if not args.skip_reference:
        ref = reference_variant(args, pasta, all_cases, settings)
        measure([ref], lm, device, argparse.Namespace(**{**vars(args), "static_cache": False}))
        ref_runs = ref.runs
        if ref_runs:
            r = median_run(ref_runs)
            print(f"(a) reference: {ref.info.get('attn_impl')} + output_attentions, batch 1, "
                  f"{args.ref_prompts} prompt(s): "
                  f"median {r.tps:.1f} tok/s = {1000 / r.tps:.1f} ms/token [{fmt_runs(ref_runs)}]")

    methods = {"pasta": pasta}
    engine = GenerationEngine(lm.model, lm.tokenizer, methods, settings, batch_size=args.batch_size)
    try:
        n_warm = n_new if args.static_cache else min(8, n_new)
        GenerationEngine(lm.model, lm.tokenizer, methods, dataclasses.replace(settings, max_new_tokens=n_warm),
                         batch_size=args.batch_size).generate(requests[: args.batch_size])
        done = [0]

        def progress(p: Any) -> None:
            done[0] += 1
            print(f"  batch {done[0]}: {p.done}/{p.total} rows, {p.new_tokens} tokens, {p.elapsed_s:.1f}s, "
                  f"{p.tokens_per_s:.1f} tok/s", flush=True)

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        mark = METER.start()
        t0 = time.perf_counter()
        gens = engine.generate(requests, on_progress=progress)
        sync(device)
        wall = time.perf_counter() - t0
        other = METER.other_cores(mark) if device.type == "cpu" else None
    except Exception:
        print("grid FAILED:\n" + traceback.format_exc())
        return 1
    tokens = sum(g.n_tokens for g in gens)
    stopped = sum(g.finish_reason == "stop" for g in gens)
    print()
    print(f"grid engine : {len(gens)} rows, {tokens} generated tokens ({stopped} rows stopped at EOS) in {wall:.1f}s "
          f"= {tokens / wall:.1f} tok/s, final batch size {engine.batch_size}"
          + (f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else "")
          + (f", other procs {other:.2f} cores" + (" (CONTENDED: timing inflated)" if other > CONTENDED_ABOVE else "")
             if other is not None else ""))
    if ref_runs:
        ref_run = median_run(ref_runs)
        est = tokens / ref_run.tps
        print(f"reference   : {ref_run.tps:.1f} tok/s measured on {args.ref_prompts} prompt(s) "
              "(batch 1, eager + output_attentions) "
              f"-> estimated {est:.0f}s = {est / 3600:.2f} h for the same {tokens} tokens")
        print(f"ratios: grid engine/reference (est.) speedup = {est / wall:.1f}x  "
              f"(grid wall {wall:.1f}s vs est. {est:.0f}s)")
    else:
        print("ratios: grid engine/reference (est.) speedup = n/a (reference skipped or failed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
