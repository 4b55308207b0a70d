"""A run's settings: which options exist, and the hashable `RunSpec` that decides a test's rows.

The run's own options (model, generation, scoring, report) are declared here; every registered
backend, steering method and task adds its own (`backends.backend_options`, `methods.method_options`,
`tasks.task_options`). One list, so
the command line, the ini file and the marker offer the same names, and the keys derive from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .backends import backend_options
from .errors import UsageError
from .methods import BASELINE_CONFIG, GridPoint, SteeringError, config, method_entry, method_names, method_options
from .options import (
    Option,
    nearest,
    parse_batch_size,
    parse_bool,
    parse_choice,
    parse_fraction,
    parse_int,
    parse_list,
    parse_methods,
    parse_path,
    parse_positive_int,
    parse_quality,
    parse_temperature,
    parse_top_k,
    parse_top_p,
    parse_trials,
)
from .options import resolve as resolve_options
from .tasks import task_options

RUN_OPTIONS: tuple[Option, ...] = (
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
    Option("methods", parse_methods, ("pasta",), "steering methods to sweep: pasta, actadd, prompt (comma-separated)"),
    Option("combine", parse_list, (),
           "combined configs, each two or more of the grid's configs applied at once, joined by '+' "
           "(comma-separated), e.g. prompt-restate+actadd-c1"),
    Option("trials", parse_trials, 3, "sampled trials per config"),
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
        "headline quality: 'offline' (damage: answer x repetition x word order x topic x language x refusal x ending), "
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
        "recommendation budget: rise of the repetition rate (worst window) against the baseline; only with a reward "
        "model or fluency as the headline (the offline quality already counts repetition)",
    ),
    Option("report_dir", parse_path, "steer-report", "where results, figures and the HTML report go", marker=False),
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
        parse_path,
        None,
        "cache directory (default: $PYTEST_STEER_CACHE or ~/.cache/pytest-steer/results)",
        marker=False,
    ),
    Option("clear_cache", parse_bool, False, "empty the cache before the run", flag=True, marker=False),
    Option("static_cache", parse_bool, False, "static KV cache (compiled decoding on CUDA) for large grids"),
    Option(
        "save_baseline",
        parse_path,
        None,
        "save this run's summary and per-example results to a JSON file (to commit or keep as a CI artifact)",
        marker=False,
    ),
    Option(
        "compare",
        parse_path,
        None,
        "compare this run with a saved baseline file and fail tests whose metrics regressed",
        marker=False,
    ),
    Option(
        "compare_margin", parse_fraction, 0.05, "allowed regression when comparing with a saved baseline", marker=False
    ),
)
#: keywords only the marker has
MARKER_ONLY = {"include_baseline": parse_bool}


def declared_options() -> tuple[Option, ...]:
    """The run's options, then every registered backend's, task's and method's; a name declared twice is an
    error."""
    out: dict[str, Option] = {}
    for o in (*RUN_OPTIONS, *backend_options(), *task_options(), *method_options()):
        if o.name in out and out[o.name] is not o:
            raise SteeringError(f"option {o.name!r} is declared twice (by the run, a backend, a task or a method); "
                                "give each option its own name")
        out[o.name] = o
    return tuple(out.values())


def resolve(get_cli: Any, get_ini: Any, marker_kwargs: Mapping[str, Any],
            marker_args: tuple[Any, ...] = ()) -> dict[str, Any]:
    """`options.resolve` over every declared option (CLI > marker > ini > default)."""
    return resolve_options(declared_options(), get_cli, get_ini, marker_kwargs, marker_args, MARKER_ONLY)


def _default(name: str) -> Any:
    return next(o.default for o in RUN_OPTIONS if o.name == name)


@dataclass(frozen=True, init=False)
class RunSpec:
    """Everything that decides which rows a test needs and how they are generated and scored.

    The run's own settings are fields; the task's and the methods' settings are in `options`, read as
    `spec["alphas"]` (or `spec.alphas`). `RunSpec(methods=("pasta",), alphas=(10.0,))` takes any
    declared option by name; unnamed ones take their declared default.
    """

    task: str = _default("task")
    methods: tuple[str, ...] = _default("methods")
    combine: tuple[str, ...] = _default("combine")
    trials: int = _default("trials")
    max_new_tokens: int = _default("max_new_tokens")
    temperature: float | None = _default("temperature")
    top_p: float | None = _default("top_p")
    top_k: int | None = _default("top_k")
    greedy: bool = _default("greedy")
    seed: int = _default("seed")
    quality: str = _default("quality")
    quality_batch_size: int = _default("quality_batch_size")
    reward_max_length: int = _default("reward_max_length")
    reward_tf32: bool = _default("reward_tf32")
    batch_size: int | str = _default("batch_size")
    on_missing: str = _default("on_missing")
    max_quality_drop: float = _default("max_quality_drop")
    max_repetition_rise: float = _default("max_repetition_rise")
    static_cache: bool = _default("static_cache")
    #: (name, value) of the task's and the methods' options, sorted by name
    options: tuple[tuple[str, Any], ...] = ()
    include_baseline: bool = field(default=True, compare=False)

    def __init__(self, **settings: Any) -> None:
        own = {f.name: f for f in dataclasses.fields(self) if f.name != "options"}
        given = dict(settings.pop("options", ()))
        for name, f in own.items():
            object.__setattr__(self, name, settings.pop(name, f.default))
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "combine", tuple(self.combine))
        declared = {o.name: o for o in declared_options()}
        for name in settings:
            if name not in declared:
                hint = nearest(name, [*own, *declared])
                raise TypeError(f"RunSpec got unknown setting {name!r}"
                                + (f"; did you mean {hint!r}?" if hint else ""))
        values = {o.name: o.default for o in self.owned_options()}
        values.update(given)
        values.update(settings)
        object.__setattr__(self, "options", tuple(sorted(values.items())))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RunSpec:
        """The spec of resolved settings: the run's own, and only the options its task and methods own
        (another method's option cannot split one unit into two)."""
        own = {f.name for f in dataclasses.fields(cls)} - {"options"}
        probe = cls(**{k: v for k, v in settings.items() if k in own})
        mine = {o.name for o in probe.owned_options()}
        return cls(**{k: v for k, v in settings.items() if k in own or k in mine})

    def owned_options(self) -> tuple[Option, ...]:
        """The options of this spec's task and of its methods (a method not registered yet has none)."""
        out = list(task_options(self.task))
        for name in self.methods:
            if name in method_names():
                entry = method_entry(name)
                out += [entry.grid, *entry.options]
        return tuple(out)

    def __getitem__(self, name: str) -> Any:
        """Any setting by option name: a field, an option of this spec, or a declared option's default."""
        if name in self.__dataclass_fields__ and name != "options":
            return getattr(self, name)
        for k, v in self.options:
            if k == name:
                return v
        for o in declared_options():
            if o.name == name:
                return o.default
        raise KeyError(f"no setting {name!r}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "options":
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"RunSpec has no setting {name!r}") from None

    def flat(self) -> dict[str, Any]:
        """Every setting by name, the options inline (the stored baseline's and the report's layout)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "options"}
        out.update(self.options)
        return out

    def key(self) -> str:
        """A short stable id of the settings that decide the rows (not the batch size, nor which tests include
        the baseline)."""
        d = self.flat()
        d.pop("include_baseline")
        d.pop("batch_size")  # rows do not depend on their batch partners (per-row seeding), so neither on this
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]

    def values(self, method: str) -> tuple[Any, ...]:
        """The grid values of one method: its grid option's value."""
        return tuple(self[method_entry(method).grid.name])

    def configs(self) -> list[GridPoint]:
        """The sweep as `GridPoint`s: the baseline first, then each method's values in the order given (a method
        may add settings of its own, `expand`), then the combined configs (`methods.combine`). Built and checked
        once per spec (the spec is frozen); every caller gets its own list."""
        cached = self.__dict__.get("_configs")
        if cached is None:
            cached = self._build_configs()
            object.__setattr__(self, "_configs", cached)
        return list(cached)

    def _build_configs(self) -> list[GridPoint]:
        from .methods import build_method
        from .methods.combine import combined_config

        out = [BASELINE_CONFIG]
        built = {}
        for name in self.methods:
            method = built[name] = build_method(name, self)
            grid = self.values(name)
            expand = getattr(method, "expand", None)
            grid = tuple(expand(grid)) if callable(expand) else grid
            labelled: dict[str, Any] = {}
            for v in grid:
                c = config(method, v, grid)
                if c.value == method.noop:
                    raise SteeringError(f"{name} {method.param} {v!r} is the unsteered baseline (always "
                                        "included); give other values")
                if c.label in labelled:  # two values under one label would pool their rows and lose some
                    raise SteeringError(f"method {name!r} labels both {labelled[c.label]!r} and {v!r} as "
                                        f"{c.label!r}; its label() must give each grid value its own label")
                labelled[c.label] = v
                out.append(c)
        for label in self.combine:
            c = combined_config(label, out, built)
            if c.label in {o.label for o in out}:
                raise SteeringError(f"combined config {label!r} is given twice")
            out.append(c)
        return out

    def config(self, label: str) -> GridPoint:
        """The config with this label; KeyError names the labels there are."""
        for c in self.configs():
            if c.label == label:
                return c
        raise KeyError(f"no config {label!r} in this grid; there are {', '.join(c.label for c in self.configs())}")


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse combinations of settings that would make the statistics lie, before any work starts.

    Greedy decoding makes every trial of a case the same response: several trials would repeat one
    row, and a reader (or a test that counts rows) would take copies for evidence.
    """
    if settings.get("greedy") and int(settings.get("trials", 1)) > 1:
        raise UsageError(f"--steer-greedy makes all {settings['trials']} trials of a case identical copies; "
                         "add --steer-trials 1 (or drop --steer-greedy to sample several trials)")


def spec_from(settings: Mapping[str, Any]) -> RunSpec:
    """A hashable RunSpec from resolved settings (values are parsed and hashable already), checked by
    `check_settings`."""
    check_settings(settings)
    return RunSpec.from_settings(settings)
