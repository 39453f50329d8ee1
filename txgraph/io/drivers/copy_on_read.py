"""The ``copy-on-read`` filter: reads copy data from the backing chain into the top.

Reproduces QEMU 7.2's block/copy-on-read.c (``cor_open``, ``cor_co_preadv_part``)
and the generic copy of block/io.c (``bdrv_aligned_preadv`` with
``BDRV_REQ_COPY_ON_READ``, ``bdrv_co_do_copy_on_readv``):

* without ``bottom``, a read that the top (the ``file`` child) does not fully
  define itself is served by a copy: the range is widened to whole clusters of
  the top (``bdrv_round_to_clusters``), and every stretch the top does not
  allocate is read from the top (through its backing chain) and written back
  into it, as a *zero write* when the stretch reads as zeroes (so qcow2 gets
  zero clusters, not data clusters) and as a data write otherwise; stretches
  the top allocates are read directly;
* with ``bottom``, a stretch unallocated in the top is copied only if a layer
  from the top's backing down to ``bottom`` (inclusive) allocates it
  (``bdrv_is_allocated_above(..., include_base=true)``); stretches defined only
  below ``bottom`` are read without copying;
* the copy is a write of unchanged data (BLK_PERM_WRITE_UNCHANGED) that
  bypasses the top's generic write layer (``bdrv_driver_pwritev``: no
  detect-zeroes, no unmap), serialised against writes through this node as
  QEMU serialises copy-on-read requests (``mark_request_serialising``), so a
  guest write cannot be overwritten by stale copied data;
* ``bottom`` naming a node outside the chain fails with ``Bottom node '<x>' not found``.

The top's children are looked up on every request, so the filter keeps working
when it was inserted by ``blockdev-reopen`` and when its chain changes below it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from txgraph.errors import OpenError
from txgraph.io.chain import allocated_above, chain
from txgraph.io.driver import DriverNode, FilterNode, driver_write, driver_write_zeroes, is_zero
from txgraph.io.registry import register
from txgraph.io.settings import opt_str

__all__ = ["CopyOnReadNode", "allocated_above", "copy_on_readv", "get_cluster_size"]

#: ``MAX_BOUNCE_BUFFER`` of block/io.c: the largest stretch copied at once
_MAX_BOUNCE = 32768 * 512


def get_cluster_size(node: DriverNode) -> int:
    """``bdrv_get_cluster_size``: the format's cluster size, seen through filters and raw."""
    cur: DriverNode | None = node
    while cur is not None:
        size = getattr(cur, "cluster_size", None)
        if isinstance(size, int) and size > 0:
            return size
        if isinstance(cur, FilterNode):
            cur = cur.filtered
        elif (
            cur.driver_name == "raw"
            and not getattr(cur, "offset", 0)
            and not getattr(cur, "has_size", False)
        ):
            cur = cur.children.get("file")
        else:
            break
    return 1  # no clusters: byte granularity (request alignment of buffered I/O)


def copy_on_readv(top: DriverNode, offset: int, length: int) -> bytes:
    """``bdrv_aligned_preadv`` with ``BDRV_REQ_COPY_ON_READ`` on ``top``, then
    ``bdrv_co_do_copy_on_readv``: copy what ``top`` does not allocate, cluster-aligned."""
    if length <= 0:
        return b""
    first = top.block_status(offset, length)
    if first.allocated and first.length >= length:
        return top.read(offset, length)
    cs = get_cluster_size(top)
    c0 = offset // cs * cs
    c1 = min(-(-(offset + length) // cs) * cs, max(top.size(), offset + length))
    out = bytearray(length)
    pos = c0
    while pos < c1:
        st = top.block_status(pos, c1 - pos)
        n = min(st.length, c1 - pos)
        if n <= 0:
            break  # the image ends inside the cluster
        lo, hi = max(pos, offset), min(pos + n, offset + length)
        if not st.allocated:
            n = min(n, _MAX_BOUNCE)
            hi = min(pos + n, offset + length)
            data = top.read(pos, n)
            if top.has_write_zeroes and is_zero(data):
                driver_write_zeroes(top, pos, n, may_unmap=False)
            else:
                driver_write(top, pos, data)
            if hi > lo:
                out[lo - offset : hi - offset] = data[lo - pos : hi - pos]
        elif hi > lo:
            out[lo - offset : hi - offset] = top.read(lo, hi - lo)
        pos += n
    return bytes(out)


@register("copy-on-read")
class CopyOnReadNode(FilterNode):
    """Reads populate the top image; everything else passes through."""

    driver_name = "copy-on-read"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        if "file" not in self.children:
            raise OpenError('A block device must be specified for "file"')
        self.bottom: str | None = opt_str(options, "bottom")
        if self.bottom is not None:
            names = [n.node_name for n in chain(self.children["file"])]
            if self.bottom not in names:
                raise OpenError(f"Bottom node '{self.bottom}' not found")
        self._serial = threading.Lock()

    def read(self, offset: int, length: int) -> bytes:
        """``cor_co_preadv_part``."""
        top = self.children["file"]
        st = top.block_status(offset, length) if length > 0 else None
        if st is not None and st.allocated and st.length >= length:
            return top.read(offset, length)  # the top defines it all: nothing to copy
        with self._serial:
            if self.bottom is None:
                return copy_on_readv(top, offset, length)
            layers = chain(top)
            parts: list[bytes] = []
            pos, end = offset, offset + length
            while pos < end:
                st = top.block_status(pos, end - pos)
                n = max(1, min(st.length, end - pos))
                if not st.allocated:
                    copy, n = allocated_above(layers[1:], self.bottom, pos, n)
                    if copy:
                        parts.append(copy_on_readv(top, pos, n))
                        pos += n
                        continue
                parts.append(top.read(pos, n))
                pos += n
            return b"".join(parts)

    def write(self, offset: int, data: bytes) -> None:
        with self._serial:
            self.children["file"].write(offset, data)

    def write_compressed(self, offset: int, data: bytes) -> None:
        """``cor_co_pwritev_compressed``: forwarded to ``file`` as a compressed write."""
        with self._serial:
            self.children["file"].write_compressed(offset, data)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        with self._serial:
            self.children["file"].write_zeroes(offset, length, may_unmap=may_unmap)

    def discard(self, offset: int, length: int) -> None:
        with self._serial:
            self.children["file"].discard(offset, length)
