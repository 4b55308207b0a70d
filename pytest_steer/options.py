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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .methods.base import nearest

SEED_TYPES = (
    "keywords:forbidden_words",
    "detectable_format:number_highlighted_sections",
    "language:response_language",
    "startend:end_checker",
)


def _text(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


def _no_repeats(name: str, values: list[Any]) -> tuple[Any, ...]:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise argparse.ArgumentTypeError(f"{name} {v!r} is given twice; list each value once")
        seen.add(v)
    return tuple(values)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise argparse.ArgumentTypeError(f"{what} {value!r} is not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"{what} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{what} {value!r} must be finite")
    return x


def _numbers(value: Any, what: str, example: str, problem: Callable[[float], str | None]) -> tuple[float, ...]:
    """A comma-separated list (or a list) of finite numbers, each passing `problem` (None = fine), no repeats."""
    out = []
    for part in _text(value).replace(" ", "").split(","):
        if part:
            x = _number(part, what)
            why = problem(x)
            if why:
                raise argparse.ArgumentTypeError(f"{what} {part} {why}")
            out.append(x)
    if not out:
        raise argparse.ArgumentTypeError(f"give at least one {what}, e.g. {example}")
    return _no_repeats(what, out)


def parse_alphas(value: Any) -> tuple[float, ...]:
    """ "5,10,20" or [5, 10] -> (5.0, 10.0). Each alpha must be finite and > 0; 1 is a no-op and is refused."""
    return _numbers(value, "alpha", "5,10,20", lambda a: None if a > 0 and a != 1 else
                    "must be > 0 and != 1 (1 is the unsteered baseline, always included)")


def parse_coefficients(value: Any) -> tuple[float, ...]:
    """Activation-steering coefficients, e.g. "1,2,4"; 0 is the no-op and is refused."""
    return _numbers(value, "coefficient", "1,2,4", lambda c: None if c != 0 else
                    "is the unsteered baseline (always included); give non-zero values")


PROMPT_VARIANTS = ("restate", "system", "both", "marked")


def parse_variants(value: Any) -> tuple[str, ...]:
    """Prompt-emphasis variants, e.g. "restate,system"; see README "Prompt emphasis"."""
    out = [v.strip() for v in _text(value).split(",") if v.strip()]
    for v in out:
        if v not in PROMPT_VARIANTS:
            hint = nearest(v, PROMPT_VARIANTS)
            raise argparse.ArgumentTypeError(
                f"prompt variant {v!r} is not one of {', '.join(PROMPT_VARIANTS)}"
                + (f"; did you mean {hint!r}?" if hint else "")
            )
    if not out:
        raise argparse.ArgumentTypeError(f"give at least one prompt variant of {', '.join(PROMPT_VARIANTS)}")
    return _no_repeats("prompt variant", out)


def parse_methods(value: Any) -> tuple[str, ...]:
    """Steering methods to sweep, e.g. "pasta,actadd,prompt".

    Names are checked against the registry when the grid is built (a user's method registers in a
    conftest.py, which loads after the command line is first parsed).
    """
    out = [v.strip() for v in _text(value).split(",") if v.strip()]
    if not out:
        raise argparse.ArgumentTypeError("give at least one steering method, e.g. pasta,actadd,prompt")
    return _no_repeats("method", out)


def parse_int(value: Any) -> int:
    """An integer; refuses bools and non-integral numbers (trials=2.5, trials=True)."""
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer")
    try:
        return int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None


def parse_positive_int(value: Any) -> int:
    n = parse_int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def parse_batch_size(value: Any) -> int | str:
    return "auto" if str(value).strip() == "auto" else parse_positive_int(value)


def parse_layers(value: Any) -> str | tuple[int, ...] | tuple[tuple[int, tuple[int, ...]], ...]:
    """ "middle" (the seed study's 8..23 of 28, scaled), "all", "8-23", "8,9,10", [8, 9] or {"8": [0, 1]}.

    Returned hashable: a tuple of layers, or sorted (layer, heads) pairs.
    """
    if isinstance(value, dict):
        raw: Any = value
    else:
        text = _text(value).strip()
        if text in ("middle", "all"):
            return text
        raw = None
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f'cannot read layers {text!r}; JSON like {{"8": [0, 1]}}') from None
    try:
        if raw is not None:
            return tuple(sorted((int(k), tuple(int(h) for h in v)) for k, v in raw.items()))
        layers: list[int] = []
        for part in text.replace(" ", "").split(","):
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise argparse.ArgumentTypeError(
                        f"layer range {part!r} runs backwards; write it low-high, e.g. {hi}-{lo}"
                    )
                layers.extend(range(int(lo), int(hi) + 1))
            elif part:
                layers.append(int(part))
    except (ValueError, AttributeError, TypeError):
        raise argparse.ArgumentTypeError(
            f'cannot read layers {value!r}; use middle, all, 8-23, 8,9,10 or JSON like {{"8": [0, 1]}}'
        ) from None
    if not layers or min(layers) < 0:
        raise argparse.ArgumentTypeError(f"layers {value!r} select no valid layer; use e.g. middle or 8-23")
    return _no_repeats("layer", layers)


def parse_layer(value: Any) -> str | int:
    """One layer index, "middle", or "auto" (activation steering picks one per instruction type)."""
    if str(value).strip() in ("middle", "auto"):
        return str(value).strip()
    n = parse_int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"layer {n} is negative; give an index from 0, middle or auto")
    return n


def parse_choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if text not in choices:
            hint = nearest(text, choices)
            raise argparse.ArgumentTypeError(
                f"{value!r} is not one of {', '.join(choices)}" + (f"; did you mean {hint!r}?" if hint else "")
            )
        return text

    return parse


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    low = str(value).strip().lower() if isinstance(value, str) else None
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r} is not a boolean (true/false)")


def parse_temperature(value: Any) -> float | None:
    """A sampling temperature: finite and > 0 (greedy decoding is --steer-greedy, not temperature 0)."""
    if value is None:
        return None
    x = _number(value, "temperature")
    if x <= 0:
        raise argparse.ArgumentTypeError(f"temperature {value!r} must be > 0; for greedy decoding use --steer-greedy")
    return x


def parse_top_p(value: Any) -> float | None:
    """Nucleus sampling's p, in (0, 1]."""
    if value is None:
        return None
    x = _number(value, "top-p")
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"top-p {value!r} must be in (0, 1]; 1 keeps every token")
    return x


def parse_top_k(value: Any) -> int | None:
    """Top-k sampling's k, >= 1."""
    if value is None:
        return None
    n = parse_int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"top-k {value!r} must be >= 1")
    return n


def parse_fraction(value: Any) -> float:
    x = _number(value, "value")
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be >= 0")
    return x


def parse_positive_number(value: Any) -> float:
    x = _number(value, "value")
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return x


def parse_ray_address(value: Any) -> str:
    """ "local" (start a Ray instance here), "auto" (the running cluster) or an address (host:port, ray://...)."""
    text = str(value).strip()
    if not text or any(c.isspace() for c in text):
        raise argparse.ArgumentTypeError(f"{value!r} is not local, auto or a Ray cluster address (host:port or "
                                         "ray://host:10001)")
    return text


def parse_types(value: Any) -> tuple[str, ...]:
    """Comma-separated instruction ids; "seed" = the seed study's four, "all" = no filter."""
    text = _text(value).strip()
    if text == "seed":
        return SEED_TYPES
    if text == "all":
        return ()
    return _no_repeats("type", [t.strip() for t in text.split(",") if t.strip()])


BUILTIN_QUALITY = ("offline", "fluency")


def parse_quality(value: Any) -> str:
    """ "offline" (degeneration-aware, default), "fluency", or a reward model id/path.

    A near miss of a built-in name is a typo, not a hub id: caught here, before any network call.
    """
    text = str(value).strip()
    if text in BUILTIN_QUALITY:
        return text
    hint = nearest(text, BUILTIN_QUALITY, cutoff=0.75)
    if hint or not text:
        raise argparse.ArgumentTypeError(
            f"quality scorer {text!r} is not one of {', '.join(BUILTIN_QUALITY)}"
            + (f"; did you mean {hint!r}?" if hint else "")
            + " (or give a reward model id or directory)"
        )
    return text


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
    Option(
        "model",
        str,
        "embedded",
        "model: 'embedded' (SmolLM2-135M-Instruct), a Hugging Face id or a local directory",
        marker=False,
    ),
    Option(
        "device",
        str,
        "auto",
        "torch device for the model: auto (cuda if present), cpu, cuda, cuda:N, mps",
        marker=False,
    ),
    Option(
        "devices",
        str,
        None,
        "device per xdist worker: auto (round-robin over visible GPUs) or a list like cuda:0,cuda:1",
        marker=False,
    ),
    Option(
        "dtype",
        parse_choice("auto", "float32", "bfloat16", "float16"),
        "auto",
        "model dtype: auto (bf16 on CUDA, float32 on CPU), float32, bfloat16, float16",
        marker=False,
    ),
    Option(
        "attn", parse_choice("sdpa", "eager"), "sdpa", "attention kernel that PASTA steers: sdpa or eager", marker=False
    ),
    Option(
        "trust_remote_code",
        parse_bool,
        False,
        "allow model code from the hub (off unless asked)",
        flag=True,
        marker=False,
    ),
    Option(
        "task",
        str,
        "ifeval",
        "task: 'ifeval' or a name registered with pytest_steer.register_task (e.g. in conftest.py)",
    ),
    Option(
        "dataset", str, "embedded", "cases: 'embedded', a .jsonl/.json/.parquet/.csv file or a Hugging Face dataset id"
    ),
    Option("split", str, "train", "dataset split for Hugging Face datasets"),
    Option(
        "types",
        parse_types,
        SEED_TYPES,
        "instruction types to keep, comma-separated; 'seed' (the four of the seed study) or 'all'",
    ),
    Option("per_type", parse_positive_int, 4, "cases sampled per instruction type"),
    Option("case_seed", parse_int, 123, "seed of the balanced case sampling"),
    Option("methods", parse_methods, ("pasta",), "steering methods to sweep: pasta, actadd, prompt (comma-separated)"),
    Option(
        "alphas",
        parse_alphas,
        (5.0, 10.0, 20.0),
        "PASTA strengths to sweep, comma-separated (the baseline is always added)",
    ),
    Option(
        "layers", parse_layers, "middle", "PASTA layers (all heads): middle, all, 8-23, 8,9,10 or JSON {layer: [heads]}"
    ),
    Option("scale_position", parse_choice("include", "exclude", "generation"), "include", "PASTA scale position"),
    Option("actadd_coefs", parse_coefficients, (1.0, 2.0, 4.0), "activation-steering coefficients to sweep"),
    Option("actadd_layer", parse_layer, "middle",
           "layer whose output activation steering edits: middle, an index, or auto (a held-out sweep per type)"),
    Option("actadd_rule", parse_choice("project", "add"), "project",
           "activation-steering rule: project (the paper's projection clamp) or add (coefficient x raw vector)"),
    Option(
        "prompt_variants",
        parse_variants,
        ("restate", "system"),
        "prompt-emphasis variants to sweep: restate, system, both, marked",
    ),
    Option("trials", parse_positive_int, 3, "sampled trials per config"),
    Option("max_new_tokens", parse_positive_int, 96, "new tokens per response"),
    Option("temperature", parse_temperature, None, "sampling temperature (default: the model's generation_config)"),
    Option("top_p", parse_top_p, None, "nucleus sampling p (default: the model's generation_config)"),
    Option("top_k", parse_top_k, None, "top-k sampling (default: the model's generation_config)"),
    Option("greedy", parse_bool, False, "greedy decoding instead of sampling", flag=True),
    Option("seed", parse_int, 0, "sampling seed; each row's seed derives from (seed, case, trial)"),
    Option(
        "quality",
        parse_quality,
        "offline",
        "headline quality: 'offline' (content x diversity x word order x topic x language x refusal), "
        "'fluency', or a reward model id/path, e.g. OpenAssistant/reward-model-deberta-v3-large-v2",
    ),
    Option("quality_batch_size", parse_positive_int, 8, "batch size of the quality scorers"),
    Option("reward_max_length", parse_positive_int, 1024, "max tokens of a (prompt, response) pair for reward models"),
    Option(
        "reward_tf32",
        parse_bool,
        False,
        "TF32 matmuls for the reward model on CUDA (faster; scores drift slightly from fp32)",
        flag=True,
    ),
    Option(
        "batch_size",
        parse_batch_size,
        "auto",
        "generation batch size, or auto (32 on CPU, 512 on CUDA); halved automatically on out-of-memory",
    ),
    Option(
        "on_missing",
        parse_choice("error", "warn"),
        "error",
        "instruction text not found in its prompt: error, or warn and run the row unsteered",
    ),
    Option(
        "max_quality_drop",
        parse_fraction,
        0.1,
        "recommendation budget: relative drop of the headline quality against the baseline (offline: of its "
        "geometric mean)",
    ),
    Option(
        "max_repetition_rise",
        parse_fraction,
        0.1,
        "recommendation budget: rise of the repetition rate (rep-4) against the baseline; only with a reward "
        "model or fluency as the headline (the offline quality already counts repetition)",
    ),
    Option("report_dir", str, "steer-report", "where results, figures and the HTML report go", marker=False),
    Option(
        "html",
        parse_bool,
        True,
        "write the pytest-html report into the report dir when --html is not given",
        marker=False,
    ),
    Option("cache", parse_bool, True, "reuse finished generations and scores from the on-disk cache", marker=False),
    Option(
        "cache_dir",
        str,
        None,
        "cache directory (default: $PYTEST_STEER_CACHE or ~/.cache/pytest-steer/results)",
        marker=False,
    ),
    Option("clear_cache", parse_bool, False, "empty the cache before the run", flag=True, marker=False),
    Option("static_cache", parse_bool, False, "static KV cache (compiled decoding on CUDA) for large grids"),
    Option(
        "save_baseline",
        str,
        None,
        "save this run's summary and per-example results to a JSON file (to commit or keep as a CI artifact)",
        marker=False,
    ),
    Option(
        "compare",
        str,
        None,
        "compare this run with a saved baseline file and fail tests whose metrics regressed",
        marker=False,
    ),
    Option(
        "compare_margin", parse_fraction, 0.05, "allowed regression when comparing with a saved baseline", marker=False
    ),
    Option(
        "ray",
        parse_ray_address,
        None,
        "generate on a Ray cluster, sharded by case: local (start one here), auto (the running cluster) or its "
        "address; needs pip install 'pytest-steer[ray]'",
        marker=False,
    ),
    Option("ray_replicas", parse_positive_int, 2, "Ray replicas, each loading the model once", marker=False),
    Option("ray_gpus_per_replica", parse_fraction, 0.0, "GPUs each Ray replica reserves", marker=False),
    Option("ray_cpus_per_replica", parse_positive_number, 1.0, "CPUs each Ray replica reserves", marker=False),
)
OPTIONS_BY_NAME = {o.name: o for o in OPTIONS}
#: which option holds each built-in method's grid values
METHOD_VALUES = {"pasta": "alphas", "actadd": "actadd_coefs", "prompt": "prompt_variants"}


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides which rows a test needs and how they are generated and scored."""

    task: str = "ifeval"
    dataset: str = "embedded"
    split: str = "train"
    types: tuple[str, ...] = SEED_TYPES
    per_type: int = 4
    case_seed: int = 123
    methods: tuple[str, ...] = ("pasta",)
    alphas: tuple[float, ...] = (5.0, 10.0, 20.0)
    layers: Any = "middle"
    scale_position: str = "include"
    actadd_coefs: tuple[float, ...] = (1.0, 2.0, 4.0)
    actadd_layer: str | int = "middle"
    actadd_rule: str = "project"
    prompt_variants: tuple[str, ...] = ("restate", "system")
    trials: int = 3
    max_new_tokens: int = 96
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    greedy: bool = False
    seed: int = 0
    quality: str = "offline"
    quality_batch_size: int = 8
    reward_max_length: int = 1024
    reward_tf32: bool = False
    batch_size: int | str = "auto"
    on_missing: str = "error"
    max_quality_drop: float = 0.1
    max_repetition_rise: float = 0.1
    static_cache: bool = False
    include_baseline: bool = field(default=True, compare=False)

    def key(self) -> str:
        """A short stable id of the settings that decide the rows (not the batch size, nor which tests include
        the baseline)."""
        d = dataclasses.asdict(self)
        d.pop("include_baseline")
        d.pop("batch_size")  # rows do not depend on their batch partners (per-row seeding), so neither on this
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def values(self, method: str) -> tuple[Any, ...]:
        """The grid values of one method (a user's registered method: the values it was registered with)."""
        if method in METHOD_VALUES:
            return tuple(getattr(self, METHOD_VALUES[method]))
        from .methods import user_values

        return user_values(method)

    def configs(self) -> list[Any]:
        """The sweep as `Config`s: the baseline first, then each method's values in the order given."""
        from .methods import build_method
        from .methods.base import BASELINE_CONFIG, SteeringError, config

        out = [BASELINE_CONFIG]
        for name in self.methods:
            method = build_method(name, self)
            grid = self.values(name)
            labelled: dict[str, Any] = {}
            for v in grid:
                c = config(method, v, grid)
                if c.label in labelled:  # two values under one label would pool their rows and lose some
                    raise SteeringError(f"method {name!r} labels both {labelled[c.label]!r} and {v!r} as "
                                        f"{c.label!r}; its label() must give each grid value its own label")
                labelled[c.label] = v
                out.append(c)
        return out

    def config(self, label: str) -> Any:
        """The config with this label; KeyError names the labels there are."""
        for c in self.configs():
            if c.label == label:
                return c
        raise KeyError(f"no config {label!r} in this grid; there are {', '.join(c.label for c in self.configs())}")


SPEC_FIELDS = {f.name for f in dataclasses.fields(RunSpec)}
MARKER_ONLY = {"include_baseline"}


class MarkerError(ValueError):
    """A bad @pytest.mark.steer argument."""


def resolve(
    get_cli: Callable[[str], Any],
    get_ini: Callable[[str], Any],
    marker_kwargs: Mapping[str, Any],
    marker_args: tuple[Any, ...] = (),
) -> dict[str, Any]:
    """Merge the setting sources for every option: CLI > marker > ini > default.

    Marker values go through the same parsers as command-line text; errors name the keyword and value.
    """
    allowed = sorted({o.name for o in OPTIONS if o.marker} | MARKER_ONLY)
    if marker_args:
        raise MarkerError(
            f"@pytest.mark.steer takes keywords only, got positional {marker_args[0]!r}; "
            f"write e.g. alphas={marker_args[0]!r}"
        )
    for k in marker_kwargs:
        if k not in allowed:
            hint = nearest(k, allowed)
            raise MarkerError(
                f"@pytest.mark.steer got unknown keyword {k!r}"
                + (f"; did you mean {hint!r}?" if hint else f"; allowed: {', '.join(allowed)}")
            )
    out: dict[str, Any] = {}
    for o in OPTIONS:
        cli = get_cli(o.name)
        if cli is not None and not (o.flag and cli is False):
            out[o.name] = cli
        elif o.name in marker_kwargs:
            try:
                out[o.name] = o.parse(marker_kwargs[o.name])
            except argparse.ArgumentTypeError as exc:
                raise MarkerError(f"@pytest.mark.steer({o.name}={marker_kwargs[o.name]!r}): {exc}") from None
        else:
            ini = get_ini(o.name)
            if ini in (None, "", []):
                out[o.name] = o.default
            else:
                try:
                    out[o.name] = o.parse(ini)
                except argparse.ArgumentTypeError as exc:
                    raise MarkerError(f"ini option {o.ini} = {ini!r}: {exc}") from None
    if "include_baseline" in marker_kwargs:
        try:
            out["include_baseline"] = parse_bool(marker_kwargs["include_baseline"])
        except argparse.ArgumentTypeError as exc:
            raise MarkerError(f"@pytest.mark.steer(include_baseline=...): {exc}") from None
    return out


def spec_from(settings: Mapping[str, Any]) -> RunSpec:
    """A hashable RunSpec from resolved settings (values are parsed and hashable already)."""
    return RunSpec(**{k: v for k, v in settings.items() if k in SPEC_FIELDS})
