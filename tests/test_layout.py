"""The code's shape: no import circles, no upward imports, no long modules or functions.

Walks the source with `ast` (every import counts, also those inside functions; imports under
`if TYPE_CHECKING:` are exempt), so it checks the tree as written, without importing anything.
Run alone: `python -m pytest tests/test_layout.py -q`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fusion", "reports", "harness")
# Layer of each top-level package: an import may only point to the same or a lower layer.
LAYER = {"fusion": 0, "reports": 1, "harness": 2}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 100


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(name: str, modules: set[str]) -> str | None:
    """The longest project module that `name` (a module or a name inside one) refers to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(name: str, path: Path, modules: set[str]) -> set[str]:
    """Project modules imported by one module (its package `__init__`s too), TYPE_CHECKING blocks aside."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod; `from pkg import name` imports pkg itself.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                       for alias in node.names]
        for target in targets:
            resolved = _resolve(target, modules)
            if resolved and resolved != name:
                found.add(resolved)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    # Importing a.b.c runs a/__init__ and a/b/__init__ first.
    for module in list(found):
        parts = module.split(".")
        for i in range(1, len(parts)):
            parent = ".".join(parts[:i])
            if parent in modules and parent != name and not name.startswith(parent + "."):
                found.add(parent)
    return found


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    modules = set(files)
    return {name: imports_of(name, path, modules) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
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
            connect(v)
    return found


def test_no_import_circles() -> None:
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_imports_point_down() -> None:
    wrong = [f"{src} imports {dst}" for src, dsts in import_graph().items() for dst in sorted(dsts)
             if LAYER[dst.split(".")[0]] > LAYER[src.split(".")[0]]]
    assert not wrong, "upward imports (fusion < reports < harness): " + "; ".join(wrong)


def test_library_code_never_imports_the_cli() -> None:
    wrong = [f"{src} imports {dst}" for src, dsts in import_graph().items() for dst in sorted(dsts)
             if dst.startswith("harness.cli") and not src.startswith("harness.cli")]
    assert not wrong, "; ".join(wrong)


def test_modules_are_short() -> None:
    long = {name: n for name, path in source_files().items()
            if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_short() -> None:
    long = []
    for name, path in source_files().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_the_checker_sees_a_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The walk itself works: a circle through a function-level import is found, TYPE_CHECKING is not."""
    pkg = tmp_path / "fusion"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from fusion import b\n")
    (pkg / "b.py").write_text("def f():\n    from fusion.a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fusion import a\n")
    global ROOT
    saved = ROOT
    ROOT = tmp_path
    try:
        files = {module_name(p): p for p in sorted(pkg.rglob("*.py"))}
        graph = {n: imports_of(n, p, set(files)) for n, p in files.items()}
    finally:
        ROOT = saved
    assert cycles(graph) == [["fusion.a", "fusion.b"]]
    assert graph["fusion.c"] == set()


if __name__ == "__main__":
    raise SystemExit(pytest.main([__file__, "-q"]))
