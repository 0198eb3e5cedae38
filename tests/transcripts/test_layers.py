"""The transcripts package reads bottom-up (issue 24): raw records, containers, formats, the
format registry, the reader. No import goes in a circle, none names another module's
private name, a format never imports the registry or the reader that dispatches to it, and
imports sit at the top of a module (inside a function only for an optional extra)."""

from __future__ import annotations

import ast
from pathlib import Path

import featdisco.transcripts

ROOT = Path(featdisco.transcripts.__file__).parent
PACKAGE = "featdisco.transcripts"
OPTIONAL = ("anthropic", "llama_cpp", "umap", "torch", "sentence_transformers")  # extras may load late


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join((PACKAGE, *parts)).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def _imports(tree: ast.Module) -> list[tuple[str, list[str], bool]]:
    """(module, names, inside a function) of every absolute ``from X import ...``."""
    found: list[tuple[str, list[str], bool]] = []

    def walk(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, [a.name for a in child.names], in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, [], in_function) for a in child.names)
            walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    walk(tree, False)
    return found


def _graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, tree in modules.items():
        for module, names, _ in _imports(tree):
            targets = [f"{module}.{n}" if f"{module}.{n}" in modules else module for n in names] or [module]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_no_import_cycle() -> None:
    graph = _graph(_modules())
    state: dict[str, int] = {}  # 1 on the path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, " -> ".join([*path[path.index(nxt):], nxt]) if nxt in path else nxt
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_no_private_names_across_modules_and_no_late_imports() -> None:
    for name, tree in _modules().items():
        for module, names, in_function in _imports(tree):
            if module.startswith("featdisco"):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                assert not private, f"{name} imports {private} from {module}"
            if in_function:
                assert module.startswith(OPTIONAL), f"{name} imports {module} inside a function"


def test_formats_never_import_their_registry_or_reader() -> None:
    for name, tree in _modules().items():
        if not name.startswith(f"{PACKAGE}.formats.") :
            continue
        for module, names, _ in _imports(tree):
            assert module != f"{PACKAGE}.read", name
            if module == f"{PACKAGE}.formats":
                assert set(names) <= {n.removeprefix(f"{PACKAGE}.formats.") for n in _modules()
                                      if n.startswith(f"{PACKAGE}.formats.")}, (name, names)
