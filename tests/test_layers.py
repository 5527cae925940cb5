"""The package's layers, read from the source: imports only go downward and never in a
circle. A `TYPE_CHECKING` import counts: hiding a cycle from the interpreter does not remove
it from the design."""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

import pytest

import syncd

PACKAGE = Path(syncd.__file__).parent

# Lowest first: a module may import from its own layer or any layer before it.
LAYERS = (
    "core",
    "cron",
    "demo_job",
    "config",
    "tasklog",
    "store",
    "pool",
    "service",
    "schedule",
    "control",
    "daemon",
    "ctl",
    "web",
    "bridge",
    "demo",
    "cli",
    "__main__",
)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, modules: Collection[str]) -> set[str]:
    """Every syncd module `path` imports: `from a import b` is the module `a.b` when there is
    one, else the module `a` (b is a name inside it)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = {module_name(p, root): p for p in root.rglob("*.py")}
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def upward_imports(graph: Mapping[str, Iterable[str]]) -> list[str]:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    bad = []
    for module, targets in sorted(graph.items()):
        if module == "syncd":
            continue
        if layer_of(module) not in rank:
            bad.append(f"{module}: in no layer (add it to LAYERS)")
            continue
        for target in sorted(targets):
            if target == "syncd":
                continue  # the package root holds only __version__
            if rank.get(layer_of(target), len(LAYERS)) > rank[layer_of(module)]:
                bad.append(f"{module} imports {target}, a layer above it")
    return bad


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan), as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_imports_only_go_down_the_layers() -> None:
    assert upward_imports(import_graph(PACKAGE)) == []


def test_every_package_says_what_it_owns() -> None:
    for init in PACKAGE.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc.splitlines()) == 1, f"{init}: needs a one-line docstring"


def plant(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "syncd"
    for rel, text in files.items():
        path = pkg / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_a_planted_cycle_is_found_and_named(tmp_path: Path) -> None:
    pkg = plant(
        tmp_path,
        {
            "__init__.py": "",
            "store/__init__.py": '"""x"""',
            "store/a.py": "from syncd.store.b import B\n",
            "store/b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from syncd.store import a\n"
            ),
        },
    )
    assert cycles(import_graph(pkg)) == [["syncd.store.a", "syncd.store.b"]]


@pytest.mark.parametrize("relative", [False, True])
def test_a_planted_upward_import_is_found_and_named(tmp_path: Path, relative: bool) -> None:
    line = "from ..pool import runner\n" if relative else "from syncd.pool.runner import Child\n"
    pkg = plant(
        tmp_path,
        {
            "__init__.py": "",
            "store/__init__.py": "",
            "store/db.py": line,
            "pool/__init__.py": "",
            "pool/runner.py": "from syncd.store.db import x\n",
        },
    )
    bad = upward_imports(import_graph(pkg))
    assert bad == ["syncd.store.db imports syncd.pool.runner, a layer above it"]
    assert cycles(import_graph(pkg)) == [["syncd.pool.runner", "syncd.store.db"]]


def test_tests_share_helpers_only_through_tests_helpers() -> None:
    """A test module imports no other test module and no conftest: what tests share lives
    in tests/helpers/ (fixtures come from its plugin)."""
    root = Path(__file__).parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        if {"helpers", "bench"} & set(path.relative_to(root).parts):
            continue  # the helpers themselves, and the bench (scripts run by hand)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("tests") and not name.startswith("tests.helpers"):
                    bad.append(f"{path.relative_to(root)} imports {name}")
    assert bad == []


def test_the_shared_fixtures_are_defined_once() -> None:
    """`clock`, `store`, `workdir` and `make_daemon` come from tests/helpers/fixtures.py;
    a module that defines its own would quietly test something else."""
    root = Path(__file__).parent
    shared = {"clock", "store", "workdir", "make_daemon"}
    again = []
    for path in sorted(root.rglob("*.py")):
        if "helpers" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef) and node.name in shared:
                again.append(f"{path.relative_to(root)}: {node.name}")
    assert again == []
