"""The package's layers, checked from its source with ``ast`` (nothing is imported).

Three rules from docs/architecture.md: no module imports another module's ``_private`` name
(a helper two modules share is public, in the lower of the two); featdisco's modules import
each other without a cycle; and no module imports from a layer above its own. Imports inside functions count as edges like module-level
ones (a function-level import is how a cycle hides); the one exception is a function-level
import of a module that wraps an optional extra (``umap``, ``ray``, ``anthropic``, ...), which
is lazy so that the extra stays optional.

Run as a script for the figures: ``python tests/test_layers.py``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "featdisco"

# Import names of the packages the optional extras in pyproject.toml install.
OPTIONAL_EXTRAS = {"anthropic", "uvloop", "ray", "sentence_transformers", "torch", "llama_cpp", "umap"}

@dataclass(frozen=True)
class Import:
    """One ``import`` statement's target as seen from ``importer``."""

    importer: str
    target: str  # the featdisco module imported (a submodule when the name is one)
    name: str | None  # the name taken from it (``from target import name``), if any
    in_function: bool
    line: int


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


class _Walker(ast.NodeVisitor):
    def __init__(self, importer: str) -> None:
        self.importer = importer
        self.depth = 0
        self.found: list[Import] = []

    def _scope(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope

    def visit_If(self, node: ast.If) -> None:
        # ``if TYPE_CHECKING:`` imports never run
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE and alias.name in MODULES:
                self.found.append(Import(self.importer, alias.name, None, self.depth > 0, node.lineno))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = _absolute(self.importer, node)
        if module.split(".")[0] != PACKAGE:
            return
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            if sub in MODULES:
                self.found.append(Import(self.importer, sub, None, self.depth > 0, node.lineno))
            elif module in MODULES:
                self.found.append(Import(self.importer, module, alias.name, self.depth > 0, node.lineno))


def imports() -> Iterator[Import]:
    for module, path in MODULES.items():
        walker = _Walker(module)
        walker.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        yield from walker.found


def _wraps_an_extra(module: str) -> bool:
    """Whether ``module`` imports an optional extra's package (anywhere in it)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        if any(n.split(".")[0] in OPTIONAL_EXTRAS for n in names):
            return True
    return False


def private_imports() -> set[tuple[str, str, str]]:
    """(importer, module, name) for each ``_private`` name one module takes from another."""
    return {(i.importer, i.target, i.name) for i in imports()
            if i.name and i.name.startswith("_") and not i.name.startswith("__") and i.target != i.importer}


def graph() -> dict[str, set[str]]:
    """importer -> the featdisco modules it imports (extras' wrappers imported lazily left out)."""
    extra = {m for m in MODULES if _wraps_an_extra(m)}
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in imports():
        if i.target != i.importer and not (i.in_function and i.target in extra):
            edges[i.importer].add(i.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(out)


def test_the_walker_sees_imports_at_every_level() -> None:
    """The checks below are only as good as the import list: it must hold module-level,
    function-level and relative imports, and resolve a submodule named in ``from``."""
    found = list(imports())
    assert len(found) > 300
    assert any(i.in_function for i in found) and any(not i.in_function for i in found)
    pairs = {(i.importer, i.target) for i in found}
    assert ("featdisco.estimator", "featdisco.dictionary") in pairs
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_name() -> None:
    found = private_imports()
    assert not found, "private names imported across modules (make them public, or move them):\n" + \
        "\n".join(f"  {a} imports {m}.{n}" for a, m, n in sorted(found))


def test_no_import_cycles() -> None:
    found = cycles(graph())
    assert not found, "import cycles (function-level imports count):\n" + \
        "\n".join("  " + " <-> ".join(c) for c in found)


# The layers of docs/architecture.md, ground first: each top-level module or package of
# featdisco (``featdisco.X``) on one. A module may import its own layer and those below.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "quotes"),
    ("llm",),
    ("embedders", "prompts"),
    ("storage",),
    ("transcripts", "rundir", "curation", "cluster_ids"),
    ("stages", "api", "runsummary"),
    ("executors", "dictionary"),
    ("pipeline",),
    ("analysis",),
    ("evidence", "estimator"),
    ("report", ""),  # "": featdisco/__init__.py, the public API
    ("cli", "__main__"),
]
# Upward imports that remain, each with the move that ends it (none now).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def layer_of(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else ""
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def upward_imports() -> set[tuple[str, str]]:
    """(importer, imported) where the imported module's layer is above the importer's."""
    out = set()
    for a, targets in graph().items():
        for b in targets:
            la, lb = layer_of(a), layer_of(b)
            if la is not None and lb is not None and lb > la:
                out.add((a, b))
    return out


def test_every_module_has_a_layer() -> None:
    unplaced = sorted({m.split(".")[1] for m in MODULES if "." in m and layer_of(m) is None})
    assert not unplaced, (f"featdisco.{', featdisco.'.join(unplaced)}: not on any layer; add each to "
                          "LAYERS here and to the picture in docs/architecture.md")


def test_no_module_imports_from_a_layer_above() -> None:
    found = upward_imports() - KNOWN_UPWARD
    assert not found, "imports from a higher layer (move the name down, or the module up):\n" + \
        "\n".join(f"  {a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})" for a, b in sorted(found))


if __name__ == "__main__":
    edges = graph()
    found = cycles(edges)
    private = private_imports()
    fn_level = sum(1 for i in imports() if i.in_function)
    print(f"modules {len(MODULES)}, import edges {sum(map(len, edges.values()))}, "
          f"function-level featdisco imports {fn_level}")
    print(f"private cross-module imports: {len(private)}")
    for a, m, n in sorted(private):
        print(f"  {a} imports {m}.{n}")
    print(f"import cycles (strongly connected groups): {len(found)}, "
          f"modules in them: {sum(map(len, found))}")
    for c in found:
        print("  " + " <-> ".join(c))
    up = upward_imports()
    print(f"imports from a higher layer: {len(up)}")
    for a, b in sorted(up):
        print(f"  {a} imports {b}")
