"""The package's import layering: no cycles, and no module imports one above it.

Layers keep the plugin cheap to load and the parts testable alone: a leaf (a steering method, the
cache) must work without the engine, and the engine without pytest. The graph is read from the
source with `ast`, so function-level (lazy) imports count too: deferring an import hides its cost,
not the dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

import pytest_steer

PACKAGE = "pytest_steer"

#: Layers, top (imports anything) to bottom (imports only its own layer). A module may import its own
#: layer or any layer below it; cycles are caught separately. Keys are module names relative to the
#: package; a key ending in ".*" covers a subpackage (its __init__ and every module in it). The
#: package's own __init__ (lazy exports) has no rank.
RANKS: dict[str, int] = {
    # 5: pytest glue
    "plugin": 5,
    # 4: one session: start, the run's rows, the worker payload, finish and display
    "session.*": 4,
    "backends.base": 4,  # the backend protocol: it names the run
    "backends.local": 4,
    "backends.ray.*": 4,  # a backend of the run: replicas hold a SteerRun each
    "finish": 4,  # deprecated shims of modules merged into session/finish.py
    "reporting": 4,
    # 3: reporting, and the run's settings (every backend's, method's and task's options)
    "report.*": 3,
    "spec": 3,
    # 2: engine, metrics and statistics
    "generation": 2,
    "metrics.*": 2,
    "reduce": 2,
    "stats": 2,
    "gates": 2,
    "evaluation": 2,
    "analysis": 2,
    "dose": 2,
    "baselines": 2,
    # 1: leaves: data, options, records and the steering methods
    "methods.*": 1,
    "steering": 1,  # PASTA's old home, moving into methods/
    "tasks.base": 1,  # the generic Case, Task and split
    "tasks.ifeval.*": 1,  # the IFEval task: its cases, options, scorer
    "models": 1,
    "cache": 1,
    "files": 1,  # atomic writes and manifests, under the cache and the results files
    "cases": 1,  # deprecated shim of tasks.base and tasks.ifeval
    "options": 1,
    "results": 1,
    "scores": 1,
    "prompts": 1,
    "tasks": 2,  # the registry: one line per built-in task
    "backends": 2,  # the registry: one line per built-in backend, named as "module:Class" (no import)
    # 0: the floor, importing nothing of the package: the records (Case, GridPoint, Sample, Score, Metric) and
    # the one error family
    "records": 0,
    "errors": 0,
}
LAYER_NAMES = {5: "plugin", 4: "session", 3: "reporting", 2: "engine/metrics/stats", 1: "leaves", 0: "records"}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "pytest_steer.cache"
    target: str  # imported module of the package
    line: int
    runtime: bool  # False inside `if TYPE_CHECKING:`: never executed, so no part of a cycle


def package_modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package by dotted name; a package's __init__ is named after the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((package, *parts))] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(nodes: Iterable[ast.AST], runtime: bool = True) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement at any depth (module, class, function), and whether it runs."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, runtime
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _walk(node.body, False)
            yield from _walk(node.orelse, runtime)
        else:
            yield from _walk(ast.iter_child_nodes(node), runtime)


def module_imports(name: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    """The package modules `name` imports, relative imports resolved against its package."""
    is_package = path.name == "__init__.py"
    base = name if is_package else name.rpartition(".")[0]
    found = []
    for node, runtime in _walk([ast.parse(path.read_text(encoding="utf-8"), str(path))]):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                module = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from .report import html` imports the submodule; `from .cache import key_hash` the module
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        for target in targets:
            while target and target not in modules:  # `import pytest_steer.x.y` -> the deepest module that exists
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append(Import(name, target, node.lineno, runtime))
    return found


def import_graph(root: Path, package: str) -> list[Import]:
    modules = package_modules(root, package)
    return [imp for name, path in modules.items() for imp in module_imports(name, path, modules)]


def rank(module: str, package: str, ranks: Mapping[str, int]) -> int | None:
    """The layer of `module`, None for the package's own __init__ (exempt) or a module with no rank."""
    rel = module.removeprefix(package).removeprefix(".")
    if not rel:
        return None
    if rel in ranks:
        return ranks[rel]
    for key, value in ranks.items():
        if key.endswith(".*") and (rel == key[:-2] or rel.startswith(key[:-1])):
            return value
    return None


def upward_imports(imports: list[Import], package: str, ranks: Mapping[str, int]) -> list[str]:
    out = []
    for imp in imports:
        src, dst = rank(imp.source, package, ranks), rank(imp.target, package, ranks)
        if src is not None and dst is not None and dst > src:
            kind = "" if imp.runtime else " (TYPE_CHECKING)"
            out.append(f"{imp.source} ({LAYER_NAMES.get(src, src)}) imports {imp.target} "
                       f"({LAYER_NAMES.get(dst, dst)}) at line {imp.line}{kind}")
    return sorted(set(out))


def cycles(imports: list[Import]) -> list[list[str]]:
    """One cycle (a -> b -> ... -> a) per strongly connected component of the runtime import graph."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if imp.runtime:
            graph.setdefault(imp.source, set()).add(imp.target)
            graph.setdefault(imp.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: Mapping[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search inside it."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


# ---------------------------------------------------------------------------------------------
# The package


ROOT = Path(pytest_steer.__file__).resolve().parent


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    return import_graph(ROOT, PACKAGE)


def test_every_module_has_a_layer() -> None:
    unranked = [m for m in package_modules(ROOT, PACKAGE) if m != PACKAGE and rank(m, PACKAGE, RANKS) is None]
    assert not unranked, f"give these modules a layer in RANKS (tests/test_layers.py): {unranked}"


def test_no_import_cycles(graph: list[Import]) -> None:
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_module_imports_a_layer_above_it(graph: list[Import]) -> None:
    found = upward_imports(graph, PACKAGE, RANKS)
    assert not found, ("imports against the layering (top to bottom: plugin, session, reporting, "
                       "engine/metrics/stats, leaves):\n" + "\n".join(found))


# ---------------------------------------------------------------------------------------------
# The checker itself, on a small package with known faults


def _package(tmp_path: Path, files: Mapping[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def test_checker_resolves_every_import_form(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "top.py": "from .sub import leaf\nimport pkg.low\n",
        "low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .top import X\n"
                  "def f():\n    from . import top\n    from .sub.leaf import g\n",
        "sub/__init__.py": "",
        "sub/leaf.py": "from .. import low\nfrom ..low import f\nfrom pkg.sub import other\nimport os\n",
        "sub/other.py": "",
    })
    edges = {(i.source, i.target, i.runtime) for i in import_graph(root, "pkg")}
    assert edges == {
        ("pkg.top", "pkg.sub.leaf", True), ("pkg.top", "pkg.low", True),
        ("pkg.low", "pkg.top", False), ("pkg.low", "pkg.top", True), ("pkg.low", "pkg.sub.leaf", True),
        ("pkg.sub.leaf", "pkg.low", True), ("pkg.sub.leaf", "pkg.sub.other", True),
    }


def test_checker_finds_cycles_and_upward_imports(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "a.py": "from . import b\n",
        "b.py": "def f():\n    from . import c\n",  # a function-level import still closes the cycle
        "c.py": "import pkg.a\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import e\n",
        "e.py": "from . import d\n",  # a cycle only through TYPE_CHECKING is no cycle
    })
    imports = import_graph(root, "pkg")
    assert cycles(imports) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]
    ranks = {"a": 2, "b": 2, "c": 1, "d": 1, "e": 2}
    assert upward_imports(imports, "pkg", ranks) == [
        "pkg.c (leaves) imports pkg.a (engine/metrics/stats) at line 1",
        "pkg.d (leaves) imports pkg.e (engine/metrics/stats) at line 3 (TYPE_CHECKING)",
    ]


# ---------------------------------------------------------------------------------------------
# The house rules of issue 21: a thin plugin, a generic options module, no upward tie to the plugin


def _imported_modules(graph: list[Import], source: str) -> set[str]:
    return {imp.target for imp in graph if imp.source == source}


def test_options_imports_nothing_but_the_error_family(graph: list[Import]) -> None:
    assert _imported_modules(graph, f"{PACKAGE}.options") <= {f"{PACKAGE}.errors"}


#: who may import the IFEval task package from outside it: the registry's one line, the deprecated shims of its
#: old homes, and the package's lazy public exports
IFEVAL_IMPORTERS = {f"{PACKAGE}.tasks", f"{PACKAGE}.cases", f"{PACKAGE}.metrics.instruction", f"{PACKAGE}.metrics",
                    PACKAGE}


def test_nothing_outside_the_ifeval_package_imports_it(graph: list[Import]) -> None:
    inside = f"{PACKAGE}.tasks.ifeval"
    found = sorted({f"{imp.source} (line {imp.line})" for imp in graph
                    if (imp.target == inside or imp.target.startswith(inside + "."))
                    and not (imp.source == inside or imp.source.startswith(inside + "."))
                    and imp.source not in IFEVAL_IMPORTERS})
    assert not found, f"IFEval-specific imports outside tasks/ifeval/: {found}"


def _third_party_imports(path: Path) -> set[str]:
    """The top-level names of the absolute imports of a module, at any depth (lazy ones included)."""
    found = set()
    for node, _ in _walk([ast.parse(path.read_text(encoding="utf-8"), str(path))]):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_nothing_outside_the_ray_backend_imports_ray_or_it(graph: list[Import]) -> None:
    """Ray is one backend among others: only backends/ray/ imports it, and only through the registry's name
    ("module:Class", no import) does the rest of the package reach that backend."""
    inside = f"{PACKAGE}.backends.ray"
    outside = {m: p for m, p in package_modules(ROOT, PACKAGE).items()
               if m != inside and not m.startswith(inside + ".")}
    assert f"{PACKAGE}.session.run" in outside and len(outside) > 40  # the walk sees the package
    assert sorted(m for m, p in outside.items() if "ray" in _third_party_imports(p)) == []
    assert "ray" in _third_party_imports(ROOT / "backends" / "ray" / "__init__.py")  # the check can see one
    assert sorted({f"{imp.source} (line {imp.line})" for imp in graph if imp.source in outside
                   and (imp.target == inside or imp.target.startswith(inside + "."))}) == []


def test_the_floor_imports_no_package_module(graph: list[Import]) -> None:
    """Case, GridPoint, Sample, Score, Metric and the errors sit below everything that passes them around."""
    floor = [m for m in package_modules(ROOT, PACKAGE) if rank(m, PACKAGE, RANKS) == 0]
    assert floor == [f"{PACKAGE}.errors", f"{PACKAGE}.records"]
    for module in floor:
        assert _imported_modules(graph, module) == set(), module


def test_the_plugin_reaches_at_most_three_package_modules(graph: list[Import]) -> None:
    found = _imported_modules(graph, f"{PACKAGE}.plugin")
    assert len(found) <= 3, f"the plugin imports {sorted(found)}; route the work through the session"


def _takes_the_plugin(path: Path) -> list[str]:
    """Functions with a parameter named or annotated like the plugin object."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, [a.vararg, a.kwarg])]:
                note = ast.unparse(arg.annotation) if arg.annotation is not None else ""
                if arg.arg == "plugin" or "SteerPlugin" in note:
                    out.append(f"{path.name}:{node.lineno} {node.name}({arg.arg})")
    return out


def test_no_module_takes_the_plugin_object_as_an_argument() -> None:
    found = [f for path in package_modules(ROOT, PACKAGE).values() for f in _takes_the_plugin(path)]
    assert not found, found


def test_the_plugin_check_finds_a_function_that_takes_the_plugin(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("def finish(plugin):\n    pass\n\ndef ok(run: 'SteerRun'):\n    pass\n"
                   "def worker(p: 'SteerPlugin') -> None:\n    pass\n", encoding="utf-8")
    assert _takes_the_plugin(bad) == ["m.py:1 finish(plugin)", "m.py:6 worker(p)"]
