"""Where a run's missing rows are generated: the backends (`base.Backend`), and the registry that names them.

Built in: "local" (this process, the default) and "ray" (replicas on a Ray cluster, `backends/ray/`). Each
backend declares its options, which steering methods it can run and which of its options, once set, selects it
(`--steer-ray ADDRESS` selects "ray" without `--steer-backend ray`); the registry hands the options to the
command line and the ini file, picks the backend from the settings and builds it from its own options' values.
Importing this package is free: the registry names each built-in as "module:Class" and imports it on first use,
and a backend's module imports its heavy libraries inside its functions.

Typed loosely here (`Any`): the protocol names the run (`session.run.SteerRun`), which sits above the registry.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError
from ..options import Option, Settings, nearest

__all__ = ["BACKEND_OPTION", "BackendEntry", "backend_entry", "backend_name", "backend_names", "backend_options",
           "build_backend", "check_methods", "register_backend"]

#: built-in backends: name -> "module:Class". Adding one = its module (a class shaped like `base.Backend`)
#: plus one line here.
_BUILTIN = {
    "local": "pytest_steer.backends.local:LocalBackend",
    "ray": "pytest_steer.backends.ray:RayBackend",
}


@dataclass(frozen=True)
class BackendEntry:
    """A registered backend: its class, and what it declares (read without building it)."""

    name: str
    cls: Any  # a class shaped like `base.Backend`
    origin: str = ""  # the module that registered it (user backends)

    @property
    def options(self) -> tuple[Option, ...]:
        return tuple(self.cls.options)

    @property
    def methods(self) -> tuple[str, ...] | None:
        """The steering methods it can run; None: every registered method (it runs the package's engine)."""
        found = self.cls.methods
        return None if found is None else tuple(found)

    def values(self, settings: Settings) -> dict[str, Any]:
        """The backend's own settings out of a run's settings: what it is built from."""
        return {o.name: settings[o.name] for o in self.options}


_USER: dict[str, BackendEntry] = {}
_LOADED: dict[str, BackendEntry] = {}


def backend_names() -> tuple[str, ...]:
    return (*_BUILTIN, *_USER)


def backend_entry(name: str) -> BackendEntry:
    """The registered backend `name`; UsageError with a "did you mean" hint otherwise."""
    if name in _USER:
        return _USER[name]
    if name not in _BUILTIN:
        raise UsageError(f"--steer-backend {name}: {_unknown(name)}")
    if name not in _LOADED:
        module, cls_name = _BUILTIN[name].split(":")
        _LOADED[name] = BackendEntry(name, getattr(importlib.import_module(module), cls_name))
    return _LOADED[name]


def _unknown(name: str) -> str:
    hint = nearest(name, backend_names())
    return (f"no backend {name!r}; registered: {', '.join(backend_names())}" + (f"; did you mean {hint!r}?" if hint
            else "") + " (register your own with pytest_steer.register_backend in a conftest.py)")


def _parse_backend(value: Any) -> str:
    """A name; whether it is registered is checked when the backend is built: pytest reads the command line once
    before the conftest.py files that register backends load."""
    name = str(value).strip()
    if not name or any(c.isspace() for c in name):
        raise argparse.ArgumentTypeError(f"{value!r} is not a backend name, e.g. local")
    return name


BACKEND_OPTION = Option("backend", _parse_backend, None,
                        "where rows are generated: local (this process) or a registered backend, e.g. "
                        + ", ".join(n for n in _BUILTIN if n != "local")
                        + "; a backend's own option may select it (default: local)", marker=False)


def backend_options() -> tuple[Option, ...]:
    """`--steer-backend`, then every registered backend's own options, built-ins first."""
    return (BACKEND_OPTION, *(o for name in backend_names() for o in backend_entry(name).options))


def backend_name(settings: Settings) -> str:
    """The backend the settings choose: `--steer-backend`, else the one whose selecting option is set, else local.

    Two choices that disagree (`--steer-backend local` with `--steer-ray auto`) are one UsageError."""
    chosen = settings["backend"]
    selected = {}  # backend -> the option of its own that is set and selects it
    for name in backend_names():
        entry = backend_entry(name)
        flag = next((o for o in entry.options if o.name == entry.cls.selected_by), None)
        if flag is not None and settings[flag.name] is not None:
            selected[name] = flag.cli
    others = [cli for name, cli in selected.items() if name != chosen]
    if others and (chosen is not None or len(others) > 1):
        given = [f"--steer-backend {chosen}"] if chosen is not None else []
        raise UsageError(f"{' and '.join([*given, *others])} choose different backends; give one of them")
    return chosen or next(iter(selected), "local")


def unused_options(settings: Settings) -> str | None:
    """One line naming the options of backends other than the chosen one that are set away from their default
    (`--steer-backend local --steer-ray-replicas 4`): they do nothing, which the user should hear. A warning,
    not an error: an ini file may configure Ray for the runs that use it."""
    chosen = backend_name(settings)
    unused = [o.cli for name in backend_names() if name != chosen for o in backend_entry(name).options
              if settings[o.name] != o.default]
    if not unused:
        return None
    return (f"{', '.join(unused)} set, but the backend is {chosen!r}: {'they do' if len(unused) > 1 else 'it does'} "
            f"nothing in this run")


def build_backend(settings: Settings) -> Any:
    """The chosen backend (`backend_name`), built from its own options' values; builds start nothing."""
    entry = backend_entry(backend_name(settings))
    return entry.cls.from_options(entry.values(settings))


def check_methods(backend: Any, methods: Iterable[str]) -> None:
    """Refuse, in one line and before any model loads, a steering method the backend cannot run."""
    can = backend.methods
    if can is None:
        return
    for method in methods:
        if method not in can:
            raise UsageError(f"backend {backend.name!r} cannot run steering method {method!r} (it runs "
                             f"{', '.join(can) or 'none'}); drop {method} from --steer-methods or choose another "
                             "--steer-backend")


def register_backend(cls: Any) -> None:
    """Make a user's backend selectable with `--steer-backend <cls.name>` (see docs/extending.md).

    `cls` is shaped like the built-ins (`base.Backend`): `name`, `options` (each named `<name>` or
    `<name>_<param>`), `methods`, `from_options`. Register in a conftest.py: its options are then on the command
    line and in the ini file.
    """
    name = str(cls.name)
    if name in _BUILTIN:
        raise ValueError(f"{name!r} is a built-in backend's name; choose another")
    for o in cls.options:
        if o.name != name and not o.name.startswith(f"{name}_"):
            raise ValueError(f"backend {name!r}: option {o.name!r} must be named {name}_<param>, so that it cannot "
                             "collide with another backend's or a method's")
    caller = sys._getframe(1).f_globals.get("__name__", "")
    _USER[name] = BackendEntry(name, cls, str(caller))
