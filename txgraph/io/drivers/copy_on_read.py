"""The ``copy-on-read`` filter: reads copy data from the backing chain into the top.

Reproduces QEMU 7.2's block/copy-on-read.c (``cor_open``, ``cor_co_preadv_part``):
for each stretch of a read, the data is copied into ``file`` (the top of the
chain) when the top does not define it itself and, if ``bottom`` is given, a
layer between the top's backing and ``bottom`` (inclusive) does; stretches only
below ``bottom`` are read without copying. The copy is a write of unchanged
data (BLK_PERM_WRITE_UNCHANGED), serialised against writes through this node
as QEMU serialises copy-on-read requests (``mark_request_serialising``) so a
guest write cannot be overwritten by stale copied data. ``bottom`` naming a
node outside the chain fails with ``Bottom node '<x>' not found``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from txgraph.errors import OpenError
from txgraph.io.driver import DriverNode, FilterNode
from txgraph.io.registry import register

__all__ = ["CopyOnReadNode", "allocated_above"]

#: Drivers that pass I/O through their ``file`` child unchanged.
_FILTERS = frozenset({"throttle", "copy-on-read", "blkdebug", "compress", "preallocate"})


def _skip_filters(node: DriverNode | None) -> DriverNode | None:
    while node is not None and node.driver_name in _FILTERS and "file" in node.children:
        node = node.children["file"]
    return node


def _chain(top: DriverNode) -> list[DriverNode]:
    """Top, its backing, its backing's backing... (filters skipped, ``bdrv_cow_bs``)."""
    out: list[DriverNode] = []
    node = _skip_filters(top)
    while node is not None and node not in out:
        out.append(node)
        node = _skip_filters(node.children.get("backing"))
    return out


def allocated_above(layers: list[DriverNode], bottom: str | None, offset: int,
                    length: int) -> tuple[bool, int]:
    """``bdrv_is_allocated_above(layers[0], bottom, include_base=true)``.

    Returns whether some layer down to ``bottom`` defines the first stretch,
    and that stretch's length.
    """
    n = length
    for layer in layers:
        st = layer.block_status(offset, n)
        n = max(1, min(n, st.length))
        if st.allocated:
            return True, n
        if layer.node_name == bottom:
            break
    return False, n


@register("copy-on-read")
class CopyOnReadNode(FilterNode):
    """Reads populate the top image; everything else passes through."""

    driver_name = "copy-on-read"

    def __init__(self, node_name: str, options: Mapping[str, Any],
                 children: Mapping[str, DriverNode], read_only: bool) -> None:
        super().__init__(node_name, options, children, read_only)
        if "file" not in self.children:
            raise OpenError('A block device must be specified for "file"')
        bottom = options.get("bottom")
        self.bottom: str | None = None if bottom is None else str(bottom)
        if self.bottom is not None:
            names = [n.node_name for n in _chain(self.children["file"])]
            if self.bottom not in names:
                raise OpenError(f"Bottom node '{self.bottom}' not found")
        self._serial = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        top = self.children["file"]
        base = _skip_filters(top)
        assert base is not None
        layers = _chain(top)
        parts: list[bytes] = []
        pos, end = offset, offset + length
        while pos < end:
            st = base.block_status(pos, end - pos)
            n = max(1, min(st.length, end - pos))
            copy = False
            if not st.allocated:
                if self.bottom is None:
                    copy = True
                else:
                    copy, n = allocated_above(layers[1:], self.bottom, pos, n)
            if copy:
                with self._serial:
                    data = top.read(pos, n)
                    top.write(pos, data)  # write-unchanged: same bytes, now in the top
            else:
                data = top.read(pos, n)
            parts.append(data)
            pos += n
        return b"".join(parts)

    def write(self, offset: int, data: bytes) -> None:
        with self._serial:
            self.children["file"].write(offset, data)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        with self._serial:
            self.children["file"].write_zeroes(offset, length, may_unmap=may_unmap)

    def discard(self, offset: int, length: int) -> None:
        with self._serial:
            self.children["file"].discard(offset, length)

