"""Tiny in-memory drivers for the filter tests (registered under test-only names)."""

from __future__ import annotations

import errno as E
from collections.abc import Mapping
from typing import Any

from txgraph.errors import IOFailure
from txgraph.io.driver import BlockStatus, DriverNode
from txgraph.io.registry import register

GRAIN = 512


@register("x-test-mem")
class MemNode(DriverNode):
    """A byte array; with a ``backing`` child it tracks which 512-byte grains it defines."""

    driver_name = "x-test-mem"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        self.buf = bytearray(int(options.get("size", 1 << 20)))
        fill = options.get("fill")
        if fill is not None:
            self.buf[:] = bytes([int(fill)]) * len(self.buf)
        # Without a backing file every grain is "allocated", like a raw image.
        self.alloc = [("backing" not in self.children) or bool(options.get("full", False))] * (
            len(self.buf) // GRAIN
        )
        self.fail: set[str] = set()
        self.writes = 0

    def _maybe_fail(self, op: str) -> None:
        if op in self.fail:
            raise IOFailure("Input/output error", E.EIO)

    def read(self, offset: int, length: int) -> bytes:
        self._maybe_fail("read")
        if "backing" not in self.children:
            return bytes(self.buf[offset : offset + length])
        out = bytearray()
        for pos in range(offset, offset + length, GRAIN):
            g = pos // GRAIN
            n = min(GRAIN - pos % GRAIN, offset + length - pos)
            out += (
                self.buf[pos : pos + n] if self.alloc[g] else self.children["backing"].read(pos, n)
            )
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        self._maybe_fail("write")
        if self.read_only:
            raise IOFailure("Operation not permitted", E.EPERM)
        self.writes += 1
        self.buf[offset : offset + len(data)] = data
        for g in range(offset // GRAIN, (offset + len(data) + GRAIN - 1) // GRAIN):
            self.alloc[g] = True

    def flush(self) -> None:
        self._maybe_fail("flush")

    def size(self) -> int:
        return len(self.buf)

    def block_status(self, offset: int, length: int) -> BlockStatus:
        g = offset // GRAIN
        first = self.alloc[g]
        end = g
        while end < len(self.alloc) and self.alloc[end] == first and (end - g) * GRAIN < length:
            end += 1
        n = min(length, end * GRAIN - offset)
        return BlockStatus(offset, n, allocated=first, zero=False)
