"""docs/architecture.md stays in step with the code.

Every path it names exists (a module moved or renamed must be moved in the
doc too), and every package of txgraph/ is named there (a new package gets
its line), and the layer table says what tests/unit/api/test_layers.py checks.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.api.test_layers import ALLOWED

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "architecture.md"


def _named_paths() -> set[str]:
    return set(re.findall(r"`((?:txgraph|tests|docs|tools)/[\w./-]*?)`", DOC.read_text()))


def test_every_path_the_doc_names_exists() -> None:
    paths = _named_paths()
    assert len(paths) > 40
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []


def test_every_package_is_named() -> None:
    named = _named_paths()
    packages = sorted(
        str(p.parent.relative_to(ROOT)) for p in (ROOT / "txgraph").glob("*/__init__.py")
    )
    assert [p for p in packages if p not in named] == []


def test_the_layer_table_is_the_one_the_import_test_checks() -> None:
    text = DOC.read_text()
    table = dict(re.findall(r"^\| `(txgraph/\w+)` \| (.*) \|$", text, re.M))
    as_doc = {
        layer.replace(".", "/"): sorted(
            a.replace(".", "/") + (".py" if a == "txgraph.errors" else "") for a in allowed
        )
        for layer, allowed in ALLOWED.items()
    }
    assert set(table) == set(as_doc)
    for layer, allowed in as_doc.items():
        assert sorted(re.findall(r"`(txgraph/[\w./]+)`", table[layer])) == allowed, layer
