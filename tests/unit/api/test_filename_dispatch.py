"""One home per driver for filenames: the generic modules name no driver.

``txgraph/ops/filenames.py`` (``bdrv_refresh_filename`` and friends) and
``txgraph/io/chain.py`` (the filter walk) must find everything driver-specific
through the driver specs (``refresh_filename``, ``gather_child_options``,
``flat_opts``, ``is_filter``); ``bdrv_find_protocol`` finds drivers by the specs'
``protocol_names``. A driver name written into them as a string would be a second
home for that driver's rule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import txgraph
from txgraph.io.chain import FILTER_DRIVERS
from txgraph.model.drivers import DRIVER_SPECS
from txgraph.ops.inherit import _PROTOCOLS

ROOT = Path(txgraph.__file__).parent


@pytest.mark.parametrize("module", ["ops/filenames.py", "io/chain.py"])
def test_generic_modules_name_no_driver(module: str) -> None:
    tree = ast.parse((ROOT / module).read_text())
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    assert not literals & set(DRIVER_SPECS), sorted(literals & set(DRIVER_SPECS))


def test_filter_list_is_the_specs_filters() -> None:
    assert set(FILTER_DRIVERS) == {n for n, s in DRIVER_SPECS.items() if s.is_filter}
    for name, child in FILTER_DRIVERS.items():
        spec = DRIVER_SPECS[name]
        assert child == "backing" if spec.filtered_child_is_backing else spec.child(child)


def test_protocols_come_from_the_specs() -> None:
    assert _PROTOCOLS["fat"] == "vvfat" and _PROTOCOLS["nbd+unix"] == "nbd"
    assert all(DRIVER_SPECS[d].parse_filename is not None for d in _PROTOCOLS.values())
