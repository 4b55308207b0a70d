"""The run's settings: parsed from `--steer-*` options, `steer_*` ini keys and `@pytest.mark.steer`.

Precedence: command line > marker > ini > default. Parsing lives here (plain functions raising
`argparse.ArgumentTypeError`) so the pytest glue stays thin and the same parsers serve ini values.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

SEED_TYPES = (
    "keywords:forbidden_words",
    "detectable_format:number_highlighted_sections",
    "language:response_language",
    "startend:end_checker",
)


def parse_alphas(text: str) -> tuple[float, ...]:
    """"5,10,20" -> (5.0, 10.0, 20.0). Each alpha must be finite and > 0; 1 is a no-op and is refused."""
    out = []
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        try:
            a = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"alpha {part!r} is not a number; give a list like 5,10,20") from None
        if not (math.isfinite(a) and a > 0) or a == 1:
            raise argparse.ArgumentTypeError(f"alpha {part} must be finite, > 0 and != 1 (the baseline is always included)")
        out.append(a)
    if not out:
        raise argparse.ArgumentTypeError("give at least one alpha, e.g. 5,10,20")
    return tuple(dict.fromkeys(out))


def parse_positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def parse_batch_size(text: str) -> int | str:
    return "auto" if str(text).strip() == "auto" else parse_positive_int(text)


def parse_layers(text: str) -> str | list[int] | dict[int, list[int]]:
    """"middle" (default: the seed study's 8..23 of 28, scaled), "all", "8-23", "8,9,10" or JSON {"8": [0, 1]}."""
    text = str(text).strip()
    if text in ("middle", "all"):
        return text
    try:
        if text.startswith("{"):
            raw = json.loads(text)
            return {int(k): [int(h) for h in v] for k, v in raw.items()}
        layers: list[int] = []
        for part in text.split(","):
            if "-" in part:
                lo, hi = part.split("-")
                layers.extend(range(int(lo), int(hi) + 1))
            elif part:
                layers.append(int(part))
    except (ValueError, AttributeError, TypeError):
        raise argparse.ArgumentTypeError(
            f"cannot read layers {text!r}; use middle, all, 8-23, 8,9,10 or JSON like {{\"8\": [0, 1]}}"
        ) from None
    if not layers:
        raise argparse.ArgumentTypeError("no layers given")
    return layers


def parse_choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true/false)")


def parse_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def parse_types(text: str) -> tuple[str, ...]:
    """Comma-separated instruction ids; "seed" = the seed study's four, "all" = no filter."""
    text = str(text).strip()
    if text == "seed":
        return SEED_TYPES
    if text == "all":
        return ()
    return tuple(t.strip() for t in text.split(",") if t.strip())


@dataclass(frozen=True)
class Option:
    """One setting: its CLI flag, ini key, marker keyword, parser, default and help."""

    name: str
    parse: Callable[[str], Any]
    default: Any
    help: str
    flag: bool = False  # store_true on the command line
    marker: bool = True  # may be set per test with @pytest.mark.steer(name=...)

    @property
    def cli(self) -> str:
        return "--steer-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "steer_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option("model", str, "embedded", "model: 'embedded' (SmolLM2-135M-Instruct), a Hugging Face id or a local directory", marker=False),
    Option("device", str, "auto", "torch device for the model (auto: cuda if present)", marker=False),
    Option("devices", str, None, "device per xdist worker: auto (round-robin over visible GPUs) or a list like cuda:0,cuda:1", marker=False),
    Option("dtype", str, "auto", "model dtype: auto (bf16 on CUDA, float32 on CPU), float32, bfloat16, float16", marker=False),
    Option("attn", parse_choice("sdpa", "eager"), "sdpa", "attention kernel that PASTA steers: sdpa or eager", marker=False),
    Option("trust_remote_code", parse_bool, False, "allow model code from the hub (off unless asked)", flag=True, marker=False),
    Option("dataset", str, "embedded", "cases: 'embedded', a .jsonl/.json/.parquet/.csv file or a Hugging Face dataset id"),
    Option("split", str, "train", "dataset split for Hugging Face datasets"),
    Option("types", parse_types, SEED_TYPES, "instruction types to keep, comma-separated; 'seed' (the four of the seed study) or 'all'"),
    Option("per_type", parse_positive_int, 4, "cases sampled per instruction type"),
    Option("case_seed", int, 123, "seed of the balanced case sampling"),
    Option("alphas", parse_alphas, (5.0, 10.0, 20.0), "PASTA strengths to sweep, comma-separated (the baseline is always added)"),
    Option("trials", parse_positive_int, 3, "sampled trials per config"),
    Option("layers", parse_layers, "middle", "PASTA layers (all heads): middle, all, 8-23, 8,9,10 or JSON {layer: [heads]}"),
    Option("scale_position", parse_choice("include", "exclude", "generation"), "include", "PASTA scale position"),
    Option("max_new_tokens", parse_positive_int, 96, "new tokens per response"),
    Option("temperature", parse_float, None, "sampling temperature (default: the model's generation_config)"),
    Option("top_p", parse_float, None, "nucleus sampling p (default: the model's generation_config)"),
    Option("top_k", int, None, "top-k sampling (default: the model's generation_config)"),
    Option("greedy", parse_bool, False, "greedy decoding instead of sampling", flag=True),
    Option("seed", int, 0, "sampling seed; each row's seed derives from (seed, case, trial)"),
    Option("quality", str, "fluency", "quality scorer: 'fluency' (offline) or a reward model id/path, e.g. OpenAssistant/reward-model-deberta-v3-large-v2"),
    Option("quality_batch_size", parse_positive_int, 8, "batch size of the quality scorer"),
    Option("reward_max_length", parse_positive_int, 1024, "max tokens of a (prompt, response) pair for reward models"),
    Option("reward_tf32", parse_bool, False, "TF32 matmuls for the reward model on CUDA (faster; scores drift slightly from fp32)", flag=True),
    Option("relevance", parse_bool, False, "also score prompt/response relevance with MiniLM embeddings", flag=True),
    Option("batch_size", parse_batch_size, "auto", "generation batch size, or auto (32 on CPU, 512 on CUDA); halved automatically on out-of-memory"),
    Option("on_missing", parse_choice("error", "warn"), "error", "instruction text not found in its prompt: error, or warn and run the row unsteered"),
    Option("max_quality_drop", parse_float, 0.5, "quality drop from baseline allowed for the recommended alpha"),
    Option("report_dir", str, "steer-report", "where results, figures and the HTML report go", marker=False),
    Option("html", parse_bool, True, "write the pytest-html report into the report dir when --html is not given", marker=False),
    Option("cache", parse_bool, True, "reuse finished generations and scores from the on-disk cache", marker=False),
    Option("cache_dir", str, None, "cache directory (default: $PYTEST_STEER_CACHE or ~/.cache/pytest-steer/results)", marker=False),
    Option("clear_cache", parse_bool, False, "empty the cache before the run", flag=True, marker=False),
    Option("static_cache", parse_bool, False, "static KV cache (compiled decoding on CUDA) for large grids"),
    Option("save_baseline", str, None, "save this run's summary and per-example results to a JSON file (to commit or keep as a CI artifact)", marker=False),
    Option("compare", str, None, "compare this run with a saved baseline file and fail tests whose metrics regressed", marker=False),
    Option("compare_margin", parse_float, 0.05, "allowed regression when comparing with a saved baseline", marker=False),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides which rows a test needs and how they are generated and scored."""

    dataset: str = "embedded"
    split: str = "train"
    types: tuple[str, ...] = SEED_TYPES
    per_type: int = 4
    case_seed: int = 123
    alphas: tuple[float, ...] = (5.0, 10.0, 20.0)
    trials: int = 3
    layers: Any = "middle"
    scale_position: str = "include"
    max_new_tokens: int = 96
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    greedy: bool = False
    seed: int = 0
    quality: str = "fluency"
    quality_batch_size: int = 8
    reward_max_length: int = 1024
    reward_tf32: bool = False
    relevance: bool = False
    batch_size: int | str = "auto"
    on_missing: str = "error"
    max_quality_drop: float = 0.5
    static_cache: bool = False
    include_baseline: bool = field(default=True, compare=False)

    def key(self) -> str:
        """A short stable id of the generation-relevant settings (not which tests include the baseline)."""
        d = dataclasses.asdict(self)
        d.pop("include_baseline")
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def configs(self) -> list[float | None]:
        """The sweep: None (baseline) first, then the alphas in the order given."""
        return [None, *self.alphas]


SPEC_FIELDS = {f.name for f in dataclasses.fields(RunSpec)}
MARKER_ONLY = {"include_baseline"}


def resolve(get_cli: Callable[[str], Any], get_ini: Callable[[str], Any], marker_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Merge one setting source over another for every option: CLI > marker > ini > default."""
    unknown = set(marker_kwargs) - {o.name for o in OPTIONS if o.marker} - MARKER_ONLY
    if unknown:
        allowed = sorted({o.name for o in OPTIONS if o.marker} | MARKER_ONLY)
        raise ValueError(f"@pytest.mark.steer got unknown keyword(s) {sorted(unknown)}; allowed: {', '.join(allowed)}")
    out: dict[str, Any] = {}
    for o in OPTIONS:
        cli = get_cli(o.name)
        if cli is not None and not (o.flag and cli is False):
            out[o.name] = cli
        elif o.name in marker_kwargs:
            out[o.name] = _coerce(o, marker_kwargs[o.name])
        else:
            ini = get_ini(o.name)
            out[o.name] = o.parse(ini) if ini not in (None, "", []) else o.default
    if "include_baseline" in marker_kwargs:
        out["include_baseline"] = bool(marker_kwargs["include_baseline"])
    return out


def _coerce(o: Option, value: Any) -> Any:
    """Marker values may be Python objects already (a list of alphas); strings go through the parser."""
    if isinstance(value, str):
        return o.parse(value)
    if o.name == "alphas":
        return parse_alphas(",".join(str(v) for v in value))
    if o.name == "types":
        return tuple(value)
    if o.name == "layers" and isinstance(value, dict):
        return {int(k): list(v) for k, v in value.items()}
    if o.name == "layers":
        return list(value)
    return value


def spec_from(settings: Mapping[str, Any]) -> RunSpec:
    """A hashable RunSpec: layer lists become tuples, {layer: heads} a sorted tuple of pairs."""
    values = {k: v for k, v in settings.items() if k in SPEC_FIELDS}
    layers = values.get("layers")
    if isinstance(layers, dict):
        values["layers"] = tuple(sorted((int(k), tuple(int(h) for h in v)) for k, v in layers.items()))
    elif isinstance(layers, (list, tuple)):
        values["layers"] = tuple(int(x) for x in layers)
    if "types" in values:
        values["types"] = tuple(values["types"])
    return RunSpec(**values)
