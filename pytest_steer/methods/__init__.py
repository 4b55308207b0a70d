"""Steering methods behind one protocol (`base.SteeringMethod`), and the registry that names them.

Built in: "pasta" (attention steering), "actadd" (instruction activation steering, Stolfo et al.
2025) and "prompt" (prompt emphasis, the non-mechanistic baseline). Each method declares its grid
option and its own settings (`Option`s); the registry hands them to the command line, the ini file
and the marker, and builds each method from the values of its own options. Importing this package is
free: the method modules import torch inside their functions.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..options import Option, Settings, nearest, parse_values
from .base import BASELINE, BASELINE_CONFIG, GridPoint, PrepareContext, SteeringError, SteeringMethod, config, user_turn

__all__ = [
    "BASELINE", "BASELINE_CONFIG", "GridPoint", "MethodEntry", "PrepareContext", "SteeringError", "SteeringMethod",
    "build_method", "config", "method_entry", "method_names", "method_options", "register_method", "user_turn",
]

#: built-in methods: name -> "module:Class". Adding one = its module (a class with `grid`, `options` and
#: `from_options`) plus one line here.
_BUILTIN = {
    "pasta": "pytest_steer.methods.pasta:PASTA",
    "actadd": "pytest_steer.methods.actadd:ActivationSteering",
    "prompt": "pytest_steer.methods.prompt:PromptEmphasis",
}


@dataclass(frozen=True)
class MethodEntry:
    """A registered method: how to build it from its options' values, its grid option and its settings."""

    name: str
    build: Callable[[Mapping[str, Any]], SteeringMethod]
    grid: Option
    options: tuple[Option, ...] = ()
    origin: str = ""  # the module that registered it (user methods)

    def values(self, settings: Settings) -> dict[str, Any]:
        """The method's own settings out of a run's settings: what it is built from and prepared with."""
        return {o.name: settings[o.name] for o in self.options}


_USER: dict[str, MethodEntry] = {}
_LOADED: dict[str, MethodEntry] = {}


def _builtin(name: str) -> MethodEntry:
    if name not in _LOADED:
        module, cls_name = _BUILTIN[name].split(":")
        cls = getattr(importlib.import_module(module), cls_name)
        _LOADED[name] = MethodEntry(name, cls.from_options, cls.grid, tuple(cls.options))
    return _LOADED[name]


def method_names() -> tuple[str, ...]:
    return (*_BUILTIN, *_USER)


def method_entry(name: str) -> MethodEntry:
    """The registered method `name`; SteeringError with a "did you mean" hint otherwise."""
    if name in _USER:
        return _USER[name]
    if name not in _BUILTIN:
        hint = nearest(name, method_names())
        raise SteeringError(f"unknown steering method {name!r}; registered: {', '.join(method_names())}"
                            + (f"; did you mean {hint!r}?" if hint else "")
                            + " (register your own with pytest_steer.register_method in a conftest.py)")
    return _builtin(name)


def method_options() -> tuple[Option, ...]:
    """Every registered method's grid option and settings, built-ins first."""
    return tuple(o for name in method_names() for o in (method_entry(name).grid, *method_entry(name).options))


def register_method(name: str, factory: Callable[[Mapping[str, Any]], SteeringMethod], values: Sequence[Any] = (),
                    *, options: Sequence[Option] = (), grid: Option | None = None) -> None:
    """Make a user's method selectable with `--steer-methods name` (see docs/extending.md).

    `factory` is a class shaped like the built-ins (`grid`, `options`, `from_options`), or a function.
    Without a `grid` its grid is the option `<name>_values` (`--steer-<name>-values`, ini `steer_<name>_values`, marker
    `<name>_values`), `values` its default; or pass your own `grid` Option. `options` are its settings,
    each named `<name>_<param>`. `factory(values)` builds the method from a mapping of its options' values.
    Register in a conftest.py for command-line options; a test module's registration serves ini and marker.
    """
    if name in _BUILTIN or name == BASELINE:
        raise ValueError(f"{name!r} is a built-in name; choose another")
    if isinstance(factory, type) and hasattr(factory, "from_options"):  # the built-ins' shape: a class that
        grid = grid or getattr(factory, "grid", None)  # declares its grid and options, built from their values
        options = options or tuple(getattr(factory, "options", ()))
        factory = factory.from_options
    if grid is None:
        if not values:
            raise ValueError(f"method {name!r} needs at least one grid value (values=[...]) or a grid= Option")
        grid = Option(f"{name}_values", parse_values, tuple(values),
                      f"{name}: grid values to sweep, comma-separated (the baseline is always added)")
    for o in (grid, *options):
        if not o.name.startswith(f"{name}_"):
            raise ValueError(f"method {name!r}: option {o.name!r} must be named {name}_<param>, e.g. "
                             f"{name}_{o.name}, so that it cannot collide with another method's")
    caller = sys._getframe(1).f_globals.get("__name__", "")
    _USER[name] = MethodEntry(name, factory, grid, tuple(options), str(caller))


def build_method(name: str, settings: Settings) -> SteeringMethod:
    """The method `name` built from its own options' values in `settings` (a RunSpec or a mapping)."""
    entry = method_entry(name)
    return entry.build(entry.values(settings))
