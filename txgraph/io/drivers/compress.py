"""The ``compress`` filter: every write through it is a compressed write below.

Reproduces QEMU 7.2's block/filter-compress.c:

* ``compress_open``: the driver of ``file`` must take compressed writes
  (``block_driver_can_compress``: qcow2, qcow, vmdk, throttle, copy-on-read),
  else "Compression is not supported for underlying format: NAME";
* ``compress_co_pwritev_part``: a write goes down with
  ``BDRV_REQ_WRITE_COMPRESSED``; zero writes, discards and reads go down as
  they are (:class:`~txgraph.io.driver.FilterNode`);
* ``compress_refresh_limits``: the request alignment is the cluster size below
  (``bdrv_get_info``, through filters), so the generic layer pads a smaller or
  unaligned write to whole clusters first (``bdrv_pad_request``): the head and
  tail clusters are read through this node (``bdrv_padding_rmw_read``; zeroes
  past the end) and the whole clusters are written. A cluster the format has
  already allocated cannot be compressed again: the format answers EIO.

Difference, on purpose: the padded tail of an image whose size is not a multiple
of the cluster size ends at the image end here; QEMU writes the whole cluster and
the node below grows in memory to cover it (``bdrv_co_write_req_finish``). The
stream written is the same (the format pads its last cluster with zeroes).

Lock discipline: ``_serial`` serialises padded writes (QEMU marks them
serialising), so a concurrent write cannot change a head or tail cluster between
its read and its write; aligned writes do not take it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from txgraph.errors import OpenError
from txgraph.io.driver import DriverNode, FilterNode
from txgraph.io.drivers.copy_on_read import get_cluster_size
from txgraph.io.registry import register
from txgraph.model.drivers import driver_spec

__all__ = ["CompressNode"]


@register("compress")
class CompressNode(FilterNode):
    """``bdrv_compress``."""

    driver_name = "compress"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        below = self.filtered.driver_name
        spec = driver_spec(below)
        if spec is None or not spec.can_compress:
            raise OpenError(f"Compression is not supported for underlying format: {below}")
        self._serial = threading.Lock()

    def write(self, offset: int, data: bytes) -> None:
        align = get_cluster_size(self.filtered)
        stop = offset + len(data)
        start = offset - offset % align
        aligned_end = -(-stop // align) * align
        padded = []  # the clusters to read first: the head's, the tail's
        if offset != start:
            padded.append(start)
        if stop != aligned_end:
            padded.append(aligned_end - align)
        if not padded:
            self.filtered.write_compressed(offset, data)
            return
        with self._serial:
            end = min(aligned_end, max(self.size(), stop))  # see the module docstring
            buf = bytearray(end - start)
            for lo in sorted(set(padded)):  # the head and the tail cluster (once if one)
                hi = min(lo + align, end)
                if lo < hi:
                    buf[lo - start : hi - start] = self.read(lo, hi - lo)
            buf[offset - start : stop - start] = data
            self.filtered.write_compressed(start, bytes(buf))
