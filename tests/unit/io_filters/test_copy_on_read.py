"""copy-on-read: reads populate the top; ``bottom`` limits what is copied."""

from __future__ import annotations

import pytest

from txgraph.errors import OpenError
from txgraph.io.runtime import Runtime

from .memnode import MemNode


def _chain() -> Runtime:
    # base (0x0b everywhere) <- mid (0x0c in its first 4 KiB) <- top (empty)
    rt = Runtime()
    rt.open_node("base", "x-test-mem", {"fill": 11, "size": 65536}, {}, False)
    rt.open_node("mid", "x-test-mem", {"size": 65536}, {"backing": "base"}, False)
    rt.node("mid").write(0, bytes([12]) * 4096)
    rt.open_node("top", "x-test-mem", {"size": 65536}, {"backing": "mid"}, False)
    return rt


def _top(rt: Runtime) -> MemNode:
    node = rt.node("top")
    assert isinstance(node, MemNode)
    return node


def test_reads_copy_into_the_top() -> None:
    rt = _chain()
    rt.open_node("cor", "copy-on-read", {}, {"file": "top"}, False)
    assert rt.node("cor").read(2048, 4096) == bytes([12]) * 2048 + bytes([11]) * 2048
    top = _top(rt)
    assert top.alloc[4:12] == [True] * 8 and not top.alloc[3] and not top.alloc[12]
    writes = top.writes
    rt.node("cor").read(2048, 4096)  # already in the top: no more copies
    assert top.writes == writes


def test_bottom_stops_copying_below_it() -> None:
    rt = _chain()
    rt.open_node("cor", "copy-on-read", {"bottom": "mid"}, {"file": "top"}, False)
    data = rt.node("cor").read(0, 8192)
    assert data == bytes([12]) * 4096 + bytes([11]) * 4096
    top = _top(rt)
    assert all(top.alloc[:8]) and not any(top.alloc[8:16])  # base data stayed in base


def test_unknown_bottom() -> None:
    rt = _chain()
    with pytest.raises(OpenError, match="Bottom node 'nope' not found"):
        rt.open_node("cor", "copy-on-read", {"bottom": "nope"}, {"file": "top"}, False)
