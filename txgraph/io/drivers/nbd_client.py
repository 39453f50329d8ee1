"""The ``nbd`` protocol driver: a node whose data lives in a remote NBD export.

Reproduces QEMU 7.2's block/nbd.c as far as a blocking client can: options
``server.type`` (``unix``/``inet``), ``server.path`` / ``server.host`` /
``server.port`` and ``export``; connection and negotiation errors with QEMU's
texts (``Failed to connect to '<addr>': <strerror>``, ``Requested export not
available``, ``Could not open image: Permission denied`` for a writable open
of a read-only export, ``auto-read-only`` falling back to read-only); requests
larger than the server's maximum block size are split (``nbd_co_preadv``
respects ``max_transfer``); block status comes from ``base:allocation``
(``nbd_client_co_block_status``); the filename is QEMU's URI form.
"""

from __future__ import annotations

import errno as E
import os
import socket
from collections.abc import Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo
from txgraph.io.hostpath import host_path
from txgraph.io.nbd import protocol as P
from txgraph.io.nbd.client import NbdClient, NbdError
from txgraph.io.nbd.wire import Disconnected
from txgraph.io.registry import register
from txgraph.io.settings import opt_bool
from txgraph.model.nbd_uri import NbdAddressError, exact_filename, server_address

__all__ = ["NbdNode"]


def _server_address(options: Mapping[str, Any]) -> dict[str, Any]:
    """``nbd_process_options`` up to ``nbd_config``: legacy host/port/path, then ``server.*``."""
    try:
        return server_address(options)
    except NbdAddressError as err:
        raise OpenError(str(err)) from None


def _resolve(addr: dict[str, Any]) -> list[dict[str, Any]]:
    """``inet_parse_connect_saddr``: getaddrinfo on the host and service strings, as QEMU.

    Every address found is a candidate, tried in order (``inet_connect_saddr``).
    """
    if addr["type"] != "inet":
        # An empty path is a zero-filled sun_path for QEMU: the unnamed abstract socket.
        return [addr if addr["path"] else {"type": "unix", "path": "\0"}]
    try:
        found = socket.getaddrinfo(
            host_path(addr["host"]), host_path(addr["port"]), type=socket.SOCK_STREAM
        )
    except socket.gaierror as err:
        raise OpenError(
            f"address resolution failed for {addr['host']}:{addr['port']}: {err.strerror}"
        ) from None
    except UnicodeError:
        raise OpenError(
            f"address resolution failed for {addr['host']}:{addr['port']}: "
            "Name or service not known"
        ) from None
    return [{"type": "inet", "host": str(ai[4][0]), "port": str(ai[4][1])} for ai in found]


def _connect(candidates: list[dict[str, Any]], export: str) -> NbdClient:
    """The first candidate address that accepts the connection (the last error otherwise)."""
    error: OSError | None = None
    for addr in candidates:
        try:
            return NbdClient(addr, export)
        except OSError as e:
            error = e
    assert error is not None
    raise error


@register("nbd")
class NbdNode(DriverNode):
    """A connection to one export, requests serialised over it."""

    driver_name = "nbd"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        self.addr = _server_address(options)
        self.export = str(options.get("export", ""))
        # Typed before connecting: the inherited default is the string "off".
        auto_read_only = opt_bool(options, "auto-read-only", False)
        where = (
            self.addr["path"]
            if self.addr["type"] == "unix"
            else f"{self.addr['host']}:{self.addr['port']}"
        )
        try:
            self.client = _connect(_resolve(self.addr), self.export)
        except OSError as e:
            raise OpenError(
                f"Failed to connect to '{where}': {os.strerror(e.errno or E.ECONNREFUSED)}"
            ) from None
        except NbdError as e:
            raise OpenError(
                "Requested export not available"
                if e.errno == E.ENOENT
                else f"Could not open image: {e}"
            ) from None
        except Disconnected:
            raise OpenError(
                "Failed to read initial magic: Unexpected end-of-file before all data were read"
            ) from None
        if self.client.read_only and not read_only:
            if auto_read_only:
                self.read_only = True
            else:
                self.client.close()
                raise OpenError("Could not open image: Permission denied")

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except NbdError as e:
            raise IOFailure(os.strerror(e.errno), e.errno) from None
        except Disconnected:
            raise IOFailure(os.strerror(E.EIO), E.EIO) from None

    def _chunks(self, offset: int, length: int) -> list[tuple[int, int]]:
        step = max(512, min(self.client.max_block, P.MAX_BUFFER_SIZE))
        return [(o, min(step, offset + length - o)) for o in range(offset, offset + length, step)]

    def read(self, offset: int, length: int) -> bytes:
        if length <= self.client.max_block:
            return self._call(self.client.read, offset, length)  # type: ignore[no-any-return]
        return b"".join(self._call(self.client.read, o, n) for o, n in self._chunks(offset, length))

    def write(self, offset: int, data: bytes) -> None:
        if self.read_only:
            raise IOFailure("Operation not permitted", E.EPERM)
        view = memoryview(data)
        for o, n in self._chunks(offset, len(data)):
            self._call(self.client.write, o, bytes(view[o - offset : o - offset + n]))

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        if self.read_only:
            raise IOFailure("Operation not permitted", E.EPERM)
        if not self.client.flags & P.FLAG_SEND_WRITE_ZEROES:
            super().write_zeroes(offset, length, may_unmap=may_unmap)
            return
        self._call(self.client.write_zeroes, offset, length, may_unmap=may_unmap)

    def discard(self, offset: int, length: int) -> None:
        if self.client.flags & P.FLAG_SEND_TRIM and not self.read_only:
            self._call(self.client.trim, offset, length)

    def flush(self) -> None:
        if self.client.flags & P.FLAG_SEND_FLUSH:
            self._call(self.client.flush)

    def size(self) -> int:
        return self.client.size

    def block_status(self, offset: int, length: int) -> BlockStatus:
        if self.client.meta_id is None:
            return BlockStatus(offset, length, allocated=True, zero=False)
        ext = self._call(self.client.block_status, offset, min(length, 0xFFFFFFFF & ~511), one=True)
        if not ext:
            return BlockStatus(offset, length, allocated=True, zero=False)
        n = max(1, min(ext[0].length, length))
        return BlockStatus(offset, n, allocated=True, zero=bool(ext[0].flags & P.STATE_ZERO))

    def info(self) -> ImageInfo:
        name = exact_filename(self.options)
        return ImageInfo(
            format="nbd",
            virtual_size=self.size(),
            filename=name,
            extra={"read-only-export": self.client.read_only},
        )

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
            self.client = None  # type: ignore[assignment]
