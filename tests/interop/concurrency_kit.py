"""Shared pieces of the concurrency, crash and full-disk tests.

* checksummed blocks: every block names its writer, round and index and
  carries a CRC, so a block read back proves where it came from and that it is
  whole;
* an in-process export of a qcow2 (or raw) image over txgraph's NBD server;
* a peer daemon (qemu-storage-daemon or ``txgraph serve``) exporting an image
  through the same QMP commands, for differential and kill -9 tests.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from txgraph.io.nbd.server import NbdServer
from txgraph.io.runtime import Runtime
from txgraph.peers import QMPProcess

BLOCK = 4096
_HDR = struct.Struct(">8sIIII")  # magic, writer, round, index, crc of the rest
_MAGIC = b"TXGBLOCK"


def env_int(name: str, default: int) -> int:
    """A count the default suite keeps small; long runs raise it by environment variable."""
    return int(os.environ.get(name, default))


def make_block(writer: int, rnd: int, index: int) -> bytes:
    body = bytes(
        ((writer * 131 + rnd * 17 + index * 7 + i) * 2654435761 >> 13) & 0xFF for i in range(64)
    ) * ((BLOCK - _HDR.size) // 64 + 1)
    body = body[: BLOCK - _HDR.size]
    return _HDR.pack(_MAGIC, writer, rnd, index, zlib.crc32(body)) + body


def check_block(data: bytes, writer: int, rnd: int, index: int) -> str | None:
    """None if ``data`` is exactly that block, else what is wrong with it."""
    if data == make_block(writer, rnd, index):
        return None
    magic, w, r, i, crc = _HDR.unpack_from(data)
    if magic != _MAGIC:
        return "not a block (never written, or zeros)"
    if zlib.crc32(data[_HDR.size :]) != crc:
        return f"torn block (header says writer {w} round {r} index {i})"
    return f"block of writer {w} round {r} index {i} instead"


@contextmanager
def serve_image(workdir: Path, image: Path, fmt: str) -> Iterator[tuple[Runtime, NbdServer, str]]:
    """Export ``image`` (``qcow2`` or ``raw``) writable as ``disk`` in this process."""
    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(image)}, {}, False)
    rt.open_node("fmt", fmt, {}, {"file": "f"}, False)
    server = NbdServer(rt)
    sock = str(workdir / "nbd.sock")
    server.start({"type": "unix", "path": sock})
    server.add_export("disk", "fmt", True)
    try:
        yield rt, server, sock
    finally:
        if server.running:
            server.stop()
        rt.close_all()


def export_over_qmp(peer: QMPProcess, image: Path, fmt: str, sock: str, **file_opts: Any) -> None:
    """The same QMP sequence on QSD and on ``txgraph serve``: image -> NBD export ``disk``."""
    peer.cmd(
        "blockdev-add",
        {
            "driver": fmt,
            "node-name": "fmt",
            "file": {"driver": "file", "filename": str(image), **file_opts},
        },
    )
    peer.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": sock}}})
    peer.cmd(
        "block-export-add",
        {"type": "nbd", "id": "e0", "node-name": "fmt", "name": "disk", "writable": True},
    )


__all__ = ["BLOCK", "check_block", "env_int", "export_over_qmp", "make_block", "serve_image"]
