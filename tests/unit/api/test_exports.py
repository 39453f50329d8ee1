"""The public API, in the style of trio's ``test_exports.py``.

``txgraph.__all__`` is the contract: every name in it exists, is documented, is
defined inside the package, and is what a static analyser sees too: the names
bound at the top of ``txgraph/__init__.py`` (what an editor's completion reads),
the names a fresh interpreter finds, and the types mypy reveals (none ``Any``,
which is what the old lazy ``__getattr__`` gave users) are the same set.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import types
from pathlib import Path

from mypy import api as mypy_api

import txgraph

ROOT = Path(__file__).resolve().parents[3]
INIT = ROOT / "txgraph" / "__init__.py"


def _public(names: object) -> set[str]:
    assert isinstance(names, (list, tuple, set))
    return {str(n) for n in names}


def test_every_public_name_exists_is_documented_and_lives_in_the_package() -> None:
    assert len(txgraph.__all__) == len(set(txgraph.__all__)), "a name is listed twice"
    for name in txgraph.__all__:
        assert hasattr(txgraph, name), f"{name} is in __all__ but not defined"
        obj = getattr(txgraph, name)
        if name == "__version__":
            assert isinstance(obj, str) and re.fullmatch(r"\d+\.\d+\.\d+", obj)
            continue
        assert isinstance(obj, (type, types.FunctionType)), f"{name} is neither class nor function"
        assert obj.__doc__ and obj.__doc__.strip(), f"{name} has no docstring"
        assert obj.__module__.startswith("txgraph."), f"{name} comes from {obj.__module__}"
        assert obj.__name__ == name, f"{name} is an alias of {obj.__name__}"


def test_the_errors_exported_are_the_whole_qmp_error_tree() -> None:
    from txgraph import errors

    assert set(errors.__all__) <= set(txgraph.__all__)
    for name in errors.__all__:
        assert issubclass(getattr(txgraph, name), txgraph.TxgraphError)


def test_static_top_level_bindings_are_exactly_all() -> None:
    """What a completion engine reads from the source: no name hidden behind code."""
    tree = ast.parse(INIT.read_text())
    bound: set[str] = set()
    declared: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module != "__future__":
            bound.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                assert isinstance(target, ast.Name)
                if target.id == "__all__":
                    declared = _public(ast.literal_eval(node.value))
                else:
                    bound.add(target.id)
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
    assert "__getattr__" not in bound, "a module __getattr__ hides names from static analysers"
    assert {n for n in bound if not n.startswith("_")} | {"__version__"} == declared


def test_a_fresh_interpreter_sees_exactly_all() -> None:
    """Run apart from the suite, whose own imports would add submodule attributes."""
    # ``annotations`` is the binding ``from __future__ import annotations`` leaves behind
    code = (
        "import __future__, json, types, txgraph; print(json.dumps(sorted("
        "n for n, v in vars(txgraph).items() if not n.startswith('_')"
        " and not isinstance(v, (types.ModuleType, __future__._Feature)))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    assert set(json.loads(out)) | {"__version__"} == set(txgraph.__all__)


def test_mypy_sees_every_export_with_its_real_type(tmp_path: Path) -> None:
    """``from txgraph import *`` under mypy --strict: each name resolves, none is ``Any``."""
    snippet = tmp_path / "uses_txgraph.py"
    lines = ["from txgraph import *", "import txgraph"]
    lines += [f"reveal_type(txgraph.{name})" for name in txgraph.__all__]
    lines += [f"reveal_type({name})" for name in txgraph.__all__]
    lines += ["txgraph.not_a_public_name"]
    snippet.write_text("\n".join(lines) + "\n")
    # the repository's cache: `make lint` has just filled it, so this costs about a second
    out, err, _rc = mypy_api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "--no-error-summary",
            "--show-error-codes",
            str(snippet),
        ]
    )
    assert err == ""
    revealed = re.findall(r':(\d+): note: Revealed type is "(.*)"', out)
    assert len(revealed) == 2 * len(txgraph.__all__), out
    for (_line, shown), name in zip(revealed, [*txgraph.__all__, *txgraph.__all__]):
        # Any may appear in a parameter; the name itself must be the real thing
        if name == "__version__":
            assert shown == "str", f"mypy sees {name} as {shown}"
        else:
            obj = getattr(txgraph, name)
            real = f"{obj.__module__}.{obj.__name__}"
            assert shown.endswith(f"-> {real}") or (
                isinstance(obj, types.FunctionType) and "-> txgraph." in shown
            ), f"mypy sees {name} as {shown}"
    errors = [line for line in out.splitlines() if ": error:" in line]
    # the one deliberate mistake is the only error: the names above all type-check
    assert len(errors) == 1 and "not_a_public_name" in errors[0], out


def test_engine_round_trip_through_the_top_level_api() -> None:
    engine = txgraph.Engine()
    assert engine.execute(
        {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n"}}
    ) == {"return": {}}
    assert isinstance(engine.context.session, txgraph.Session)
    verdict = txgraph.check(engine.context.session.graph)
    assert isinstance(verdict, txgraph.Verdict)
    assert verdict.ok
