"""The interop tests share the image helpers of tests/unit/io (one copy of the code)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if "imgkit" not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        "imgkit", Path(__file__).resolve().parents[1] / "unit" / "io" / "imgkit.py"
    )
    assert _spec is not None and _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["imgkit"] = _mod
    _spec.loader.exec_module(_mod)

from imgkit import (
    convert_raw,
    open_chain,
    open_node,
    open_qcow2,
    poke,
    qemu_img,
    qemu_io,
    qsd_open_error,
    run,
    txgraph_open_error,
)

__all__ = [
    "convert_raw",
    "open_chain",
    "open_node",
    "open_qcow2",
    "poke",
    "qemu_img",
    "qemu_io",
    "qsd_open_error",
    "run",
    "txgraph_open_error",
]
