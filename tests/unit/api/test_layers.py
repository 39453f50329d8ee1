"""The package's layers as ../shared/DESIGN.md draws them, checked on the source.

Arrows point one way: model <- checker <- ops -> io -> model. Nothing in model
or checker does I/O, io knows nothing of ops or QMP, no package code imports
the test tree, and no two modules import each other (directly or around a
circle) at import time. Imports are read from the source with :mod:`ast`,
function-level ones included (a function-level import hides a circle, it does
not remove it), and importing a submodule counts as importing its packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[3] / "txgraph"

#: what each layer may import from txgraph (itself always allowed)
ALLOWED = {
    # QEMU's QDict key order decides json: filenames and first-error texts, so the
    # option model uses qobject's pure encoder (no I/O there either)
    "txgraph.model": {"txgraph.errors", "txgraph.qobject"},
    "txgraph.checker": {"txgraph.model", "txgraph.errors"},
    "txgraph.io": {"txgraph.model", "txgraph.errors"},
    "txgraph.qobject": {"txgraph.errors"},
    # symbolic verification sits beside plan: it drives scratch engines, reuses the
    # checker's encoding and replays counterexamples on QSD (oracle); nothing below imports it
    "txgraph.symbolic": {
        "txgraph.model",
        "txgraph.checker",
        "txgraph.ops",
        "txgraph.plan",
        "txgraph.qmp",
        "txgraph.oracle",
        "txgraph.errors",
    },
    # the verifying proxy sits above the plan layer: it reaches the block layer only
    # through engines (the mirror's dry run, the upstream QEMU), never ops or io directly
    "txgraph.proxy": {
        "txgraph.plan",
        "txgraph.qmp",
        "txgraph.oracle",
        "txgraph.errors",
    },
}

#: third-party modules a layer must not reach (no I/O below ops)
FORBIDDEN_EXTERNAL = {
    "txgraph.model": {"subprocess", "socket", "mmap", "z3"},
    "txgraph.checker": {"subprocess", "socket", "mmap"},
    "txgraph.proxy": {"subprocess", "mmap"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported module, at import time?)`` for every import statement of ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested_top = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # typing-only imports do not run
            if isinstance(child, ast.Import):
                found.extend((alias.name, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.append((base, top))
                found.extend((f"{base}.{alias.name}", top) for alias in child.names)
            visit(child, nested_top)

    visit(tree, True)
    return found


def _modules() -> dict[str, list[tuple[str, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str | None:
    return next(
        (layer for layer in ALLOWED if module == layer or module.startswith(layer + ".")), None
    )


def test_layers_import_only_what_design_allows() -> None:
    modules = _modules()
    bad: list[str] = []
    for module, imports in modules.items():
        layer = _layer(module)
        if layer is None:
            continue
        for target, _top in imports:
            if not target.startswith("txgraph"):
                if target.split(".")[0] in FORBIDDEN_EXTERNAL.get(layer, set()):
                    bad.append(f"{module} imports {target}")
                continue
            if target == "txgraph":
                continue
            ok = (
                target == layer
                or target.startswith(layer + ".")
                or any(target == a or target.startswith(a + ".") for a in ALLOWED[layer])
            )
            if not ok:
                bad.append(f"{module} imports {target}")
    assert bad == []


def test_no_package_code_imports_the_test_tree() -> None:
    bad = [
        f"{m} imports {t}"
        for m, imports in _modules().items()
        for t, _ in imports
        if t == "tests" or t.startswith("tests.")
    ]
    assert bad == []


def test_no_import_circles() -> None:
    modules = _modules()
    graph: nx.DiGraph[str] = nx.DiGraph()
    for module, imports in modules.items():
        graph.add_node(module)
        for target, _top in imports:
            # importing a.b.c runs a/__init__ and a/b/__init__ first: those are edges too
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                dep = ".".join(parts[:i])
                # ``from pkg import name`` names a module when pkg.name is one
                if dep in modules and dep != module and not module.startswith(dep + "."):
                    graph.add_edge(module, dep)
    circles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert circles == []
