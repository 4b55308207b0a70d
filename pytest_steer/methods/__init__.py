"""Steering methods behind one protocol (`base.SteeringMethod`), and the registry that names them.

Built in: "pasta" (attention steering), "actadd" (instruction activation steering, Stolfo et al.
2025) and "prompt" (prompt emphasis, the non-mechanistic baseline). Importing this package is free:
the method modules import torch inside their functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .base import BASELINE, BASELINE_CONFIG, Config, PrepareContext, SteeringError, SteeringMethod, config, user_turn

if TYPE_CHECKING:
    from ..options import RunSpec

__all__ = [
    "BASELINE", "BASELINE_CONFIG", "Config", "PrepareContext", "SteeringError", "SteeringMethod", "build_method",
    "config", "method_names", "register_method", "user_turn",
]

#: built-in methods: name -> (module, class); each class has `from_spec(spec)`
_BUILTIN = {
    "pasta": ("pytest_steer.methods.pasta", "PASTA"),
    "actadd": ("pytest_steer.methods.actadd", "ActivationSteering"),
    "prompt": ("pytest_steer.methods.prompt", "PromptEmphasis"),
}
_USER: dict[str, tuple[Callable[[RunSpec], SteeringMethod], tuple[Any, ...]]] = {}


def method_names() -> tuple[str, ...]:
    return (*_BUILTIN, *_USER)


def register_method(name: str, factory: Callable[[RunSpec], SteeringMethod], values: Sequence[Any]) -> None:
    """Make a user's method selectable with `--steer-methods name`; `values` is its grid.

    `factory(spec)` builds the method for a run; call this in a conftest.py (see README).
    """
    if name in _BUILTIN or name == BASELINE:
        raise ValueError(f"{name!r} is a built-in name; choose another")
    if not values:
        raise ValueError(f"method {name!r} needs at least one grid value")
    _USER[name] = (factory, tuple(values))


def user_values(name: str) -> tuple[Any, ...]:
    return _USER[name][1]


def build_method(name: str, spec: RunSpec) -> SteeringMethod:
    """The method `name` configured by `spec`."""
    if name in _USER:
        return _USER[name][0](spec)
    if name not in _BUILTIN:
        from .base import nearest

        hint = nearest(name, method_names())
        raise SteeringError(f"unknown steering method {name!r}; registered: {', '.join(method_names())}"
                            + (f"; did you mean {hint!r}?" if hint else "")
                            + " (register your own with pytest_steer.register_method in a conftest.py)")
    module, cls = _BUILTIN[name]
    method: SteeringMethod = getattr(importlib.import_module(module), cls).from_spec(spec)
    return method
