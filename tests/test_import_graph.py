"""The import graph of distill_ret/ has no cycle and no import that runs upward in the layer order
data -> models -> losses -> training -> teachers/dgr/fgd -> modes -> main.

Every module is parsed with `ast` (nothing is imported, so no side effect runs); every `import` and `from ... import`
statement counts, at module level or inside a function, class or `if`. Imports by name through `importlib` (the
mode table of main.py, the task registry of training/tasks.py, the model families of hf/__init__.py) are registries
resolved at run time and are not edges here.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "distill_ret"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE

# The layer of every module, by module or package prefix (the longest prefix wins). A module may import from its
# own layer or any lower one. Top-level modules sit where their imports and users put them:
# - errors, distributed: imported by everything that reports a user error or asks which process it is; they import
#   nothing of the package (layer 0, like the package root).
# - evaluation, significance, bm25: work on data only (runs, qrels, per-query values, lexical retrieval); teachers,
#   trainers and modes use them, so they sit with data (layer 1).
# - hf (checkpoint import, tokenizers and digests): converts between files and models, beside models (layer 2);
#   its `export` module is mode `export` and reads training checkpoints (a mode, layer 6).
# - index (the sharded encoding engine and top-k search): built on training's mesh helpers and used by teachers
#   and students, so it sits with training (layer 4).
# - demo, report: modes composed of everything below (layer 6); main dispatches to modes (layer 7).
LAYER_NAMES = ("base", "data", "models", "losses", "training", "methods", "modes", "main")
LAYERS = {
    PACKAGE: 0,
    f"{PACKAGE}.errors": 0,
    f"{PACKAGE}.distributed": 0,
    f"{PACKAGE}.data": 1,
    f"{PACKAGE}.evaluation": 1,
    f"{PACKAGE}.significance": 1,
    f"{PACKAGE}.bm25": 1,
    f"{PACKAGE}.models": 2,
    f"{PACKAGE}.hf": 2,
    f"{PACKAGE}.losses": 3,
    f"{PACKAGE}.training": 4,
    f"{PACKAGE}.index": 4,
    f"{PACKAGE}.teachers": 5,
    f"{PACKAGE}.dgr": 5,
    f"{PACKAGE}.fgd": 5,
    f"{PACKAGE}.hf.export": 6,
    f"{PACKAGE}.demo": 6,
    f"{PACKAGE}.report": 6,
    f"{PACKAGE}.modes": 6,
    f"{PACKAGE}.retrieve_mode": 6,
    f"{PACKAGE}.main": 7,
}


def module_names(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every .py file under `root` (a package's __init__ is named by the package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(name: str, modules: dict[str, pathlib.Path]) -> str | None:
    """The module a dotted name refers to: itself, or the nearest enclosing module (an attribute of a package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, path: pathlib.Path, modules: dict[str, pathlib.Path], package: str) -> set[str]:
    """The package's modules that `module` imports anywhere in its body."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, one level up per extra dot
                anchor = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                base = f"{anchor}.{node.module}" if node.module else anchor
            else:
                base = node.module
            names = [f"{base}.{alias.name}" for alias in node.names]  # a submodule, or an attribute of `base`
        else:
            continue
        for name in names:
            if name == package or name.startswith(package + "."):
                target = _resolve(name, modules)
                if target and target != module:
                    targets.add(target)
    return targets


def import_graph(root: pathlib.Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = module_names(root, package)
    return {module: imports_of(module, path, modules, package) for module, path in modules.items()}


def layer_of(module: str, layers: dict[str, int] = LAYERS) -> int | None:
    """The layer of the longest prefix of `module` in `layers` (the package root only matches itself)."""
    matches = [prefix for prefix in layers
               if module == prefix or (module.startswith(prefix + ".") and prefix != PACKAGE)]
    return layers[max(matches, key=len)] if matches else None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a path that returns to its start) per strongly connected component with more than one module."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for child in sorted(graph.get(node, ())):
            if child not in index:
                connect(child)
                low[node] = min(low[node], low[child])
            elif child in on_stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def upward_imports(graph: dict[str, set[str]], layers: dict[str, int] = LAYERS) -> list[str]:
    return [f"{module} ({LAYER_NAMES[layer_of(module, layers)]}) imports {target} "
            f"({LAYER_NAMES[layer_of(target, layers)]})"
            for module, targets in sorted(graph.items()) for target in sorted(targets)
            if layer_of(target, layers) > layer_of(module, layers)]


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_parser_sees_module_and_function_level_imports(graph):
    assert f"{PACKAGE}.errors" in graph[f"{PACKAGE}.main"]  # module level: from distill_ret.errors import UserError
    assert f"{PACKAGE}.teachers.cross_encoder" in graph[f"{PACKAGE}.teachers.loader"]  # inside a function
    assert f"{PACKAGE}.models.bert" in graph[f"{PACKAGE}.hf.bert"]  # from distill_ret.models.bert import BertConfig


def test_every_module_has_a_layer(graph):
    missing = [module for module in graph if layer_of(module) is None]
    assert not missing, f"give these modules a layer in LAYERS: {missing}"


def test_no_import_cycle(graph):
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_no_import_runs_upward(graph):
    upward = upward_imports(graph)
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path):
    """The checker itself, on a small package: a function-level cycle and a relative upward import are found."""
    package = tmp_path / PACKAGE
    (package / "models").mkdir(parents=True)
    (package / "training").mkdir()
    files = {
        "__init__.py": "",
        "models/__init__.py": "",
        "models/a.py": "def f():\n    from distill_ret.models import b\n",
        "models/b.py": "import distill_ret.models.c as c\n",
        "models/c.py": "from distill_ret.models.a import f\nfrom ..training import t\n",
        "training/__init__.py": "",
        "training/t.py": "from distill_ret.models import c\nimport numpy\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    graph = import_graph(package, PACKAGE)
    assert graph[f"{PACKAGE}.models.c"] == {f"{PACKAGE}.models.a", f"{PACKAGE}.training.t"}
    assert cycles(graph) == [[f"{PACKAGE}.models.a", f"{PACKAGE}.models.b", f"{PACKAGE}.models.c",
                              f"{PACKAGE}.models.a"]]
    assert upward_imports(graph) == [f"{PACKAGE}.models.c (models) imports {PACKAGE}.training.t (training)"]
