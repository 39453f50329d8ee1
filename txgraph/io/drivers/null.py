"""The ``null-co`` / ``null-aio`` drivers: a sink of a given size.

Reproduces QEMU 7.2's block/null.c (``null_file_open``, ``null_co_preadv``,
``null_co_block_status``): default size 1 GiB, length rounded up to whole
sectors, a negative size refused with qemu_opt_get_size's text (QEMU 7.2 aborts
there), a size above ``BDRV_MAX_LENGTH`` refused as ``File too large``
(``bdrv_refresh_total_sectors``), writes are dropped, reads return zeros (``read-zeroes=off`` leaves the
buffer undefined in QEMU; txgraph returns zeros anyway, which is a valid
"undefined"), ``latency-ns`` delays every request.
"""

from __future__ import annotations

import errno as E
import os
import time
from collections.abc import Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo
from txgraph.io.registry import register
from txgraph.io.settings import opt_bool, opt_int
from txgraph.model.drivers import driver_spec

__all__ = ["NullNode", "BDRV_MAX_LENGTH"]

#: ``BDRV_MAX_LENGTH``: INT64_MAX aligned down to ``BDRV_MAX_ALIGNMENT`` (1 GiB)
BDRV_MAX_LENGTH = ((1 << 63) - 1) // (1 << 30) * (1 << 30)

#: ``null_co_runtime_opts``' defaults, from the driver's spec (one source for all layers)
_spec = driver_spec("null-co")
assert _spec is not None
_DEFAULTS = _spec.defaults


@register("null-co", "null-aio")
class NullNode(DriverNode):
    """A node whose data is discarded; reads see zeros."""

    driver_name = "null-co"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        self.driver_name = str(options.get("driver", "null-co"))
        # a negative size: QEMU 7.2 aborts (qemu_opt_get_size with &error_abort) after
        # printing this text; opt_int refuses with the same words
        self._size = opt_int(options, "size", _DEFAULTS["size"])
        if self._size > BDRV_MAX_LENGTH:
            # bdrv_refresh_total_sectors: longer than the block layer can address.
            raise IOFailure(os.strerror(E.EFBIG), E.EFBIG)
        self.read_zeroes = opt_bool(options, "read-zeroes", _DEFAULTS["read-zeroes"])
        self.latency_ns = opt_int(options, "latency-ns", _DEFAULTS["latency-ns"], minimum=-(2**63))
        if self.latency_ns < 0:
            raise OpenError("latency-ns is invalid")

    def _delay(self) -> None:
        if self.latency_ns:
            time.sleep(self.latency_ns / 1e9)

    def read(self, offset: int, length: int) -> bytes:
        self._delay()
        return bytes(length)

    def write(self, offset: int, data: bytes) -> None:
        self._delay()

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self._delay()

    def flush(self) -> None:
        self._delay()

    def size(self) -> int:
        # QEMU keeps lengths in whole 512-byte sectors, rounding up.
        return (self._size + 511) // 512 * 512

    def block_status(self, offset: int, length: int) -> BlockStatus:
        # null_co_block_status: OFFSET_VALID, plus ZERO with read-zeroes; without it the
        # range is neither data nor zero, so not allocated (qemu-img map: present false)
        return BlockStatus(
            offset, length, allocated=self.read_zeroes, zero=self.read_zeroes, host_offset=offset
        )

    def info(self) -> ImageInfo:
        return ImageInfo(
            format=self.driver_name,
            virtual_size=self.size(),
            filename=f"{self.driver_name}://",
            actual_size=0,
        )
