"""Settings in general: the `Option` type, the value parsers and `resolve` (CLI > marker > ini > default).

Which options exist is not decided here: the run's own options are in `spec`, each steering method
declares its grid and settings (`methods/`), each task its selection options (`tasks/`). Parsers are
plain functions raising `argparse.ArgumentTypeError`, so pytest prints `argument --steer-x: ...` and
ini and marker values go through the same code. This module imports nothing from the package.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import UsageError


class Settings(Protocol):
    """A run's resolved settings by option name (`spec.RunSpec`, or a plain dict)."""

    def __getitem__(self, name: str, /) -> Any: ...


def nearest(word: str, choices: Any, cutoff: float = 0.6) -> str | None:
    """The closest of `choices` to a mistyped `word`, for "did you mean" hints."""
    import difflib

    by_lower = {str(c).lower(): str(c) for c in choices}  # `LOCAL` is a typo of `local` too
    found = difflib.get_close_matches(str(word).lower(), by_lower, n=1, cutoff=cutoff)
    return by_lower[found[0]] if found else None


#: an error quotes what it got; past these lengths a word of it (a pasted file, a 100k-character value) is cut
#: and the message shortened in its middle, keeping its end, which says what to do
MAX_WORD, MAX_MESSAGE = 300, 1000  # a deep project path is still shown whole
_LONG_WORD = re.compile(rf"\S{{{MAX_WORD + 1},}}")


def shorten(message: str) -> str:
    """`message` with every word longer than MAX_WORD cut, and at most about MAX_MESSAGE characters."""
    message = _LONG_WORD.sub(lambda m: f"{m[0][:MAX_WORD // 2]}... ({len(m[0]):,} characters)", message)
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE * 2 // 3]} ... ({len(message):,} characters) ... {message[-MAX_MESSAGE // 3:]}"


def _text(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)


#: bounds on what one option can ask for: each grid value is a config run on every case and trial, and
#: a trial a full pass over the grid; past these, collection alone ran out of memory (issue 29's probe)
MAX_GRID_VALUES = 256
MAX_TRIALS = 1000


def _bounded_grid(name: str, values: list[Any]) -> list[Any]:
    if len(values) > MAX_GRID_VALUES:
        raise argparse.ArgumentTypeError(f"{len(values)} {name} values are more than {MAX_GRID_VALUES}: each one is a "
                                         "config run on every case and trial; sweep fewer at a time")
    return values


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
    except OverflowError:  # an integer past float's range, e.g. 10**400 from a marker or 400 digits of text
        raise argparse.ArgumentTypeError(f"{what} {value!r} is too large") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"{what} {value!r} must be finite")
    return x


def _items(value: Any) -> list[Any]:
    """The items of a list, or of comma-separated text read as numbers where they are numbers, else names."""
    if isinstance(value, (list, tuple)):
        return list(value)
    out: list[Any] = []
    for part in (p.strip() for p in _text(value).split(",")):
        if part:
            try:
                out.append(int(part) if part.lstrip("+-").isdigit() else float(part))
            except ValueError:
                out.append(part)
    return out


def parse_values(value: Any) -> tuple[Any, ...]:
    """A user method's grid, e.g. "1,2" or [1, 2]: numbers where they read as numbers, else names; the
    method's own `check` judges each value when the grid is built."""
    out = _items(value)
    if not out:
        raise argparse.ArgumentTypeError("give at least one grid value, e.g. 1,2")
    return _no_repeats("value", _bounded_grid("value", out))


def grid_parser(param: str, check: Callable[[Any], Any], noop: Any, example: str) -> Callable[[Any], tuple[Any, ...]]:
    """The parser of a method's grid option: a list whose every value passes the method's own `check`
    (the one rule for that parameter) and is not its no-op (the baseline, always included)."""

    def parse(value: Any) -> tuple[Any, ...]:
        out = []
        for item in _items(value):
            try:
                v = check(item)
            except ValueError as exc:  # the method's SteeringError: its message names the value
                raise argparse.ArgumentTypeError(str(exc)) from None
            if v == noop and not isinstance(v, bool):
                raise argparse.ArgumentTypeError(f"{param} {item} is the unsteered baseline (always included); "
                                                 f"give other values, e.g. {example}")
            out.append(v)
        if not out:
            raise argparse.ArgumentTypeError(f"give at least one {param}, e.g. {example}")
        return _no_repeats(param, _bounded_grid(param, out))

    parse.__name__ = f"parse_{param}s"
    return parse


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


def parse_trials(value: Any) -> int:
    """Sampled trials per config: 1 to `MAX_TRIALS` (each trial is a test per config and case)."""
    n = parse_positive_int(value)
    if n > MAX_TRIALS:
        raise argparse.ArgumentTypeError(f"{n} trials are more than {MAX_TRIALS}: each trial is a test per config and "
                                         "case; 3 to 10 trials are what the statistics need")
    return n


def _word_or_number(value: Any, words: tuple[str, ...], number: str, parse: Callable[[Any], int]) -> str | int:
    """One of `words`, or what `parse` reads; text that is neither names the words (with the nearest one)."""
    text = str(value).strip()
    if text in words:
        return text
    if isinstance(value, str) and not text.lstrip("+-").isdigit():
        hint = nearest(text, words)
        raise argparse.ArgumentTypeError(f"{value!r} is not {number}{', ' if len(words) > 1 else ' or '}"
                                         f"{' or '.join(words) if len(words) < 3 else ', '.join(words)}"
                                         + (f"; did you mean {hint!r}?" if hint else ""))
    return parse(value)


def parse_batch_size(value: Any) -> int | str:
    """A batch size >= 1, or "auto"."""
    return _word_or_number(value, ("auto",), "a whole number >= 1", parse_positive_int)


#: a bound on layer ranges (`--steer-layers 0-N` lists every index); the model's own count is checked later
MAX_LAYERS = 10_000


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
                if int(hi) >= MAX_LAYERS:  # the range is built in memory: its size must not be the user's typo
                    raise argparse.ArgumentTypeError(
                        f"layer range {part!r} ends past layer {MAX_LAYERS - 1}; no model has that many layers; "
                        "give your model's layers, e.g. middle or 8-23"
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
    n = _word_or_number(value, ("middle", "auto"), "a layer index", parse_int)
    if isinstance(n, str):
        return n
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


def parse_list(value: Any) -> tuple[str, ...]:
    """A comma-separated list of names (or a list), no repeats; may be empty."""
    return _no_repeats("value", [t.strip() for t in _text(value).split(",") if t.strip()])


def parse_positive_number(value: Any) -> float:
    x = _number(value, "value")
    if not x > 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be > 0")
    return x


BUILTIN_QUALITY = ("offline", "fluency")


def parse_path(value: Any) -> str:
    """A file or directory path. An empty one is refused: it is what an unset variable in a script gives
    (`--steer-cache-dir "$CACHE"`), and read as "the default" it made `--steer-clear-cache` clear the shared
    default cache, and as a report dir the project folder."""
    text = str(value)
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty (an unset variable?); give a path, or leave the option "
                                         "out for its default")
    return text


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
    parse: Callable[[Any], Any]
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

    @property
    def dest(self) -> str:
        return "steer_" + self.name


class MarkerError(UsageError):
    """A bad @pytest.mark.steer argument (or ini value)."""


def resolve(
    options: Sequence[Option],
    get_cli: Callable[[str], Any],
    get_ini: Callable[[str], Any],
    marker_kwargs: Mapping[str, Any],
    marker_args: tuple[Any, ...] = (),
    marker_only: Mapping[str, Callable[[Any], Any]] | None = None,
) -> dict[str, Any]:
    """Merge the setting sources for every option: CLI > marker > ini > default.

    Marker values go through the same parsers as command-line text; errors name the keyword and value.
    `marker_only` are keywords with no CLI or ini form (name -> parser), set only when given.
    """
    extra = dict(marker_only or {})
    allowed = sorted({o.name for o in options if o.marker} | set(extra))
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
    marked: dict[str, Any] = {}  # parsed even where the command line wins: a bad value is an error in any run
    for o in options:
        if o.name in marker_kwargs and o.marker:
            try:
                marked[o.name] = o.parse(marker_kwargs[o.name])
            except argparse.ArgumentTypeError as exc:
                raise MarkerError(f"@pytest.mark.steer({o.name}={marker_kwargs[o.name]!r}): {exc}") from None
    out: dict[str, Any] = {}
    for o in options:
        cli = get_cli(o.name)
        if cli is not None and not (o.flag and cli is False):
            out[o.name] = cli
        elif o.name in marked:
            out[o.name] = marked[o.name]
        else:
            ini = get_ini(o.name)
            if ini in (None, "", []):
                out[o.name] = o.default
            else:
                try:
                    out[o.name] = o.parse(ini)
                except argparse.ArgumentTypeError as exc:
                    raise MarkerError(f"ini option {o.ini} = {ini!r}: {exc}") from None
    for name, parse in extra.items():
        if name in marker_kwargs:
            try:
                out[name] = parse(marker_kwargs[name])
            except argparse.ArgumentTypeError as exc:
                raise MarkerError(f"@pytest.mark.steer({name}=...): {exc}") from None
    return out
