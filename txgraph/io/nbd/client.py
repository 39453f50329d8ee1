"""A blocking NBD client: fixed-newstyle negotiation and one request at a time.

Behaves like QEMU's nbd/client.c (``nbd_receive_negotiate``,
``nbd_opt_info_or_go``, ``nbd_receive_export_list``) for what txgraph needs:
it asks for structured replies and ``base:allocation`` when wanted, opens the
export with NBD_OPT_GO (falling back to NBD_OPT_EXPORT_NAME when a server does
not know GO), and checks every reply's cookie. Thread-safe: requests are
serialised by a lock; use one client per thread for parallel I/O.
"""

from __future__ import annotations

import errno as E
import itertools
import socket
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from txgraph.io.nbd import protocol as P
from txgraph.io.nbd.wire import Disconnected, connect, parse_address, recv_exact, send_parts

__all__ = ["NbdClient", "NbdError", "Extent"]


class NbdError(Exception):
    """A request or the negotiation failed; ``errno`` is the host errno."""

    def __init__(self, msg: str, errno_: int = E.EIO) -> None:
        super().__init__(msg)
        self.errno = errno_


@dataclass(frozen=True)
class Extent:
    length: int
    flags: int


class NbdClient:
    """One connection to one export."""

    def __init__(
        self,
        addr: Mapping[str, Any],
        export: str = "",
        *,
        structured: bool = True,
        meta: bool = True,
        timeout: float | None = 30.0,
    ) -> None:
        self._family, self._where = parse_address(addr)
        self.export = export
        self.sock: socket.socket = connect(self._family, self._where, timeout)
        self._lock = threading.Lock()
        self._cookies = itertools.count(1)
        self.structured = False
        self.meta_id: int | None = None
        self.size = 0
        self.flags = 0
        self.min_block = 1
        self.max_block = P.MAX_BUFFER_SIZE
        try:
            self._negotiate(structured, meta)
        except BaseException:
            self.sock.close()
            raise

    # -- negotiation ---------------------------------------------------------------------------
    def _greeting(self) -> None:
        magic, opt_magic, hflags = struct.unpack(">QQH", recv_exact(self.sock, 18))
        if magic != P.NBDMAGIC or opt_magic != P.IHAVEOPT:
            raise NbdError("Server is not a newstyle NBD server")
        if not hflags & P.FLAG_FIXED_NEWSTYLE:
            raise NbdError("Server does not support fixed newstyle negotiation")
        self._no_zeroes = bool(hflags & P.FLAG_NO_ZEROES)
        cflags = P.FLAG_C_FIXED_NEWSTYLE | (P.FLAG_C_NO_ZEROES if self._no_zeroes else 0)
        send_parts(self.sock, [struct.pack(">I", cflags)])

    def _send_opt(self, opt: int, data: bytes = b"") -> None:
        send_parts(self.sock, [P.OPT_HDR.pack(P.IHAVEOPT, opt, len(data)), data])

    def _read_opt_reply(self, opt: int) -> tuple[int, bytes]:
        magic, ropt, rtype, length = P.OPT_REPLY_HDR.unpack(
            recv_exact(self.sock, P.OPT_REPLY_HDR.size)
        )
        if magic != P.REPLY_MAGIC_OPT or ropt != opt:
            raise NbdError("Unexpected option reply")
        return rtype, recv_exact(self.sock, length)

    def _negotiate(self, structured: bool, meta: bool) -> None:
        self._greeting()
        if structured:
            self._send_opt(P.OPT_STRUCTURED_REPLY)
            rtype, _ = self._read_opt_reply(P.OPT_STRUCTURED_REPLY)
            self.structured = rtype == P.REP_ACK
        name = self.export.encode()
        if self.structured and meta:
            ctx = P.META_BASE_ALLOCATION.encode()
            self._send_opt(
                P.OPT_SET_META_CONTEXT,
                struct.pack(">I", len(name)) + name + struct.pack(">II", 1, len(ctx)) + ctx,
            )
            while True:
                rtype, data = self._read_opt_reply(P.OPT_SET_META_CONTEXT)
                if rtype == P.REP_META_CONTEXT:
                    self.meta_id = struct.unpack_from(">I", data)[0]
                    continue
                break
        self._send_opt(
            P.OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">HH", 1, P.INFO_BLOCK_SIZE)
        )
        while True:
            rtype, data = self._read_opt_reply(P.OPT_GO)
            if rtype == P.REP_INFO:
                (kind,) = struct.unpack_from(">H", data)
                if kind == P.INFO_EXPORT:
                    self.size, self.flags = struct.unpack_from(">QH", data, 2)
                elif kind == P.INFO_BLOCK_SIZE:
                    self.min_block, _, self.max_block = struct.unpack_from(">III", data, 2)
                continue
            if rtype == P.REP_ACK:
                return
            if rtype == P.REP_ERR_UNSUP:
                break  # an old server: fall back to EXPORT_NAME
            raise NbdError(
                data.decode(errors="replace") or f"option error 0x{rtype:x}",
                E.ENOENT if rtype == P.REP_ERR_UNKNOWN else E.EINVAL,
            )
        self._send_opt(P.OPT_EXPORT_NAME, name)
        self.size, self.flags = struct.unpack(">QH", recv_exact(self.sock, 10))
        if not self._no_zeroes:
            recv_exact(self.sock, 124)

    @staticmethod
    def list_exports(addr: Mapping[str, Any]) -> list[tuple[str, str]]:
        """NBD_OPT_LIST: ``[(name, description)]`` (``nbd_receive_export_list``)."""
        family, where = parse_address(addr)
        self = NbdClient.__new__(NbdClient)
        self.sock = connect(family, where, 30.0)
        try:
            self._greeting()
            self._send_opt(P.OPT_LIST)
            out: list[tuple[str, str]] = []
            while True:
                rtype, data = self._read_opt_reply(P.OPT_LIST)
                if rtype != P.REP_SERVER:
                    break
                (nlen,) = struct.unpack_from(">I", data)
                out.append((data[4 : 4 + nlen].decode(), data[4 + nlen :].decode()))
            self._send_opt(P.OPT_ABORT)
            return out
        finally:
            self.sock.close()

    # -- transmission ----------------------------------------------------------------------------
    @property
    def read_only(self) -> bool:
        return bool(self.flags & P.FLAG_READ_ONLY)

    def _request(
        self, cmd: int, offset: int, length: int, data: bytes = b"", flags: int = 0
    ) -> tuple[bytes, list[Extent]]:
        with self._lock:
            cookie = next(self._cookies)
            try:
                send_parts(
                    self.sock,
                    [P.REQUEST.pack(P.REQUEST_MAGIC, flags, cmd, cookie, offset, length), data],
                )
                return self._receive(cookie, cmd, offset, length)
            except Disconnected as e:
                # The connection is unusable after a half-done exchange.
                raise NbdError(f"connection lost: {e}", E.ESHUTDOWN) from None

    def _receive(
        self, cookie: int, cmd: int, offset: int, length: int
    ) -> tuple[bytes, list[Extent]]:
        (magic,) = struct.unpack(">I", recv_exact(self.sock, 4))
        if magic == P.SIMPLE_REPLY_MAGIC:
            err, rcookie = struct.unpack(">IQ", recv_exact(self.sock, 12))
            if rcookie != cookie:
                raise Disconnected("reply to an unknown request")
            if err:
                raise NbdError(f"server error {err}", P.nbd_to_errno(err))
            return (recv_exact(self.sock, length) if cmd == P.CMD_READ else b""), []
        if magic != P.STRUCTURED_REPLY_MAGIC:
            raise Disconnected("bad reply magic")
        buf = bytearray(length) if cmd == P.CMD_READ else bytearray()
        extents: list[Extent] = []
        error: NbdError | None = None
        first = True
        while True:
            # Every chunk carries its own magic; the first one's was read above.
            if not first and struct.unpack(">I", recv_exact(self.sock, 4))[0] != magic:
                raise Disconnected("bad reply magic")
            first = False
            rflags, rtype, rcookie, rlen = struct.unpack(">HHQI", recv_exact(self.sock, 16))
            if rcookie != cookie:
                raise Disconnected("reply to an unknown request")
            body = recv_exact(self.sock, rlen)
            if rtype == P.REPLY_TYPE_OFFSET_DATA:
                (off,) = struct.unpack_from(">Q", body)
                buf[off - offset : off - offset + rlen - 8] = body[8:]
            elif rtype == P.REPLY_TYPE_OFFSET_HOLE:
                off, hlen = struct.unpack_from(">QI", body)
                buf[off - offset : off - offset + hlen] = bytes(hlen)
            elif rtype == P.REPLY_TYPE_BLOCK_STATUS:
                for i in range(4, rlen, 8):
                    extents.append(Extent(*struct.unpack_from(">II", body, i)))
            elif rtype & (1 << 15):
                err, mlen = struct.unpack_from(">IH", body)
                error = NbdError(
                    body[6 : 6 + mlen].decode(errors="replace") or f"error {err}",
                    P.nbd_to_errno(err),
                )
            if rflags & P.REPLY_FLAG_DONE:
                break
        if error is not None:
            raise error
        return bytes(buf), extents

    def read(self, offset: int, length: int, *, fua: bool = False) -> bytes:
        """``NBD_CMD_READ`` (with ``fua``, the flag QEMU's server answers with a flush
        first; QEMU's own client never sends it)."""
        return self._request(P.CMD_READ, offset, length, flags=P.CMD_FLAG_FUA if fua else 0)[0]

    def write(self, offset: int, data: bytes, *, fua: bool = False) -> None:
        self._request(P.CMD_WRITE, offset, len(data), data, P.CMD_FLAG_FUA if fua else 0)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self._request(
            P.CMD_WRITE_ZEROES, offset, length, flags=0 if may_unmap else P.CMD_FLAG_NO_HOLE
        )

    def trim(self, offset: int, length: int) -> None:
        self._request(P.CMD_TRIM, offset, length)

    def flush(self) -> None:
        self._request(P.CMD_FLUSH, 0, 0)

    def block_status(self, offset: int, length: int, *, one: bool = False) -> list[Extent]:
        return self._request(
            P.CMD_BLOCK_STATUS, offset, length, flags=P.CMD_FLAG_REQ_ONE if one else 0
        )[1]

    def raw_request(
        self, cmd: int, offset: int, length: int, data: bytes = b"", flags: int = 0
    ) -> tuple[bytes, list[Extent]]:
        """Send any request (tests use it for out-of-range and malformed commands)."""
        return self._request(cmd, offset, length, data, flags)

    def close(self) -> None:
        try:
            with self._lock:
                send_parts(
                    self.sock,
                    [P.REQUEST.pack(P.REQUEST_MAGIC, 0, P.CMD_DISC, next(self._cookies), 0, 0)],
                )
        except Disconnected:
            pass
        finally:
            self.sock.close()

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
