"""Server side of the NBD handshake: fixed newstyle negotiation and option haggling.

Reproduces the observable behaviour of QEMU's ``nbd_negotiate`` /
``nbd_negotiate_options`` (nbd/server.c) for the options txgraph serves:

* greeting ``NBDMAGIC IHAVEOPT`` with FIXED_NEWSTYLE | NO_ZEROES; client flags
  outside those two close the connection (``nbd_negotiate``);
* ``NBD_OPT_EXPORT_NAME``: unknown export closes the connection, otherwise the
  export size and transmission flags (plus 124 zero bytes unless NO_ZEROES);
* ``NBD_OPT_INFO`` / ``NBD_OPT_GO`` (``nbd_negotiate_handle_info``): NAME and
  DESCRIPTION on request, BLOCK_SIZE always, then EXPORT, then ACK;
  ``NBD_REP_ERR_UNKNOWN`` for a missing export, ``NBD_REP_ERR_INVALID`` for a
  malformed payload;
* ``NBD_OPT_LIST`` (``nbd_negotiate_handle_list``), ``NBD_OPT_ABORT`` (ACK and
  close), ``NBD_OPT_STRUCTURED_REPLY``, ``NBD_OPT_LIST/SET_META_CONTEXT`` with
  ``base:allocation`` (``nbd_negotiate_meta_queries``);
* ``NBD_OPT_STARTTLS`` is refused by policy (no TLS credentials) and any other
  option gets ``NBD_REP_ERR_UNSUP``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from txgraph.io.nbd import protocol as P
from txgraph.io.nbd.wire import Disconnected, recv_exact, send_parts

__all__ = ["ExportView", "Session", "negotiate"]

#: Longest option payload we read at all; larger ones are drained and refused.
_MAX_OPTION = 64 * 1024


class ExportView(Protocol):
    """What negotiation needs to know about an export."""

    name: str
    description: str | None
    writable: bool

    def size(self) -> int: ...


@dataclass
class Session:
    """Result of a successful negotiation: the export and what the client asked for."""

    export: ExportView
    structured: bool = False
    #: meta context id -> name (only ``base:allocation`` is offered)
    meta: dict[int, str] = field(default_factory=dict)


def transmission_flags(export: ExportView, structured: bool) -> int:
    """Per-export flags, the set QEMU 7.2's storage daemon advertises (``nbd_export_create``).

    Every connection sees the same node objects, so caches are coherent across
    connections and MULTI_CONN holds for writable exports too.
    """
    flags = (
        P.FLAG_HAS_FLAGS
        | P.FLAG_SEND_FLUSH
        | P.FLAG_SEND_FUA
        | P.FLAG_SEND_CACHE
        | P.FLAG_CAN_MULTI_CONN
    )
    if export.writable:
        flags |= P.FLAG_SEND_TRIM | P.FLAG_SEND_WRITE_ZEROES | P.FLAG_SEND_FAST_ZERO
    else:
        flags |= P.FLAG_READ_ONLY
    if structured:
        flags |= P.FLAG_SEND_DF
    return flags


class _Negotiator:
    def __init__(
        self,
        sock: socket.socket,
        lookup: Callable[[str], ExportView | None],
        listing: Callable[[], Sequence[ExportView]],
        attach: Callable[[ExportView], bool],
    ) -> None:
        self.sock = sock
        self.lookup = lookup
        self.listing = listing
        self.attach = attach
        self.fixed = False
        self.no_zeroes = False
        self.structured = False
        self.meta: dict[int, str] = {}

    # -- replies ---------------------------------------------------------------------------
    def reply(self, opt: int, rep: int, payload: bytes = b"") -> None:
        send_parts(
            self.sock, [P.OPT_REPLY_HDR.pack(P.REPLY_MAGIC_OPT, opt, rep, len(payload)), payload]
        )

    def error(self, opt: int, rep: int, msg: str) -> None:
        # QEMU puts a human-readable message in error replies; clients print it.
        self.reply(opt, rep, msg.encode())

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> Session | None:
        send_parts(
            self.sock,
            [struct.pack(">QQH", P.NBDMAGIC, P.IHAVEOPT, P.FLAG_FIXED_NEWSTYLE | P.FLAG_NO_ZEROES)],
        )
        (cflags,) = struct.unpack(">I", recv_exact(self.sock, 4))
        if cflags & ~(P.FLAG_C_FIXED_NEWSTYLE | P.FLAG_C_NO_ZEROES):
            return None  # unknown client flags: QEMU drops the client
        self.fixed = bool(cflags & P.FLAG_C_FIXED_NEWSTYLE)
        self.no_zeroes = bool(cflags & P.FLAG_C_NO_ZEROES)
        while True:
            magic, opt, length = P.OPT_HDR.unpack(recv_exact(self.sock, P.OPT_HDR.size))
            if magic != P.IHAVEOPT:
                return None
            if length > _MAX_OPTION:
                self._drain(length)
                if not self.fixed:
                    return None
                self.error(opt, P.REP_ERR_TOO_BIG, "option payload too large")
                continue
            data = recv_exact(self.sock, length)
            result = self.handle(opt, data)
            if result is not None:
                return result if isinstance(result, Session) else None

    def _drain(self, length: int) -> None:
        while length:
            length -= len(recv_exact(self.sock, min(length, 1 << 20)))

    def handle(self, opt: int, data: bytes) -> Session | bool | None:
        """Handle one option; a Session ends negotiation, False closes the connection."""
        if opt == P.OPT_EXPORT_NAME:
            return self.export_name(data)
        if not self.fixed:
            # Without fixed newstyle only EXPORT_NAME is meaningful; QEMU disconnects.
            return False
        if opt == P.OPT_ABORT:
            self.reply(opt, P.REP_ACK)
            return False
        if opt == P.OPT_LIST:
            if data:
                self.error(opt, P.REP_ERR_INVALID, "no payload expected in option 3")
                return None
            for exp in self.listing():
                name = exp.name.encode()
                self.reply(
                    opt,
                    P.REP_SERVER,
                    struct.pack(">I", len(name)) + name + (exp.description or "").encode(),
                )
            self.reply(opt, P.REP_ACK)
            return None
        if opt in (P.OPT_INFO, P.OPT_GO):
            return self.info(opt, data)
        if opt == P.OPT_STRUCTURED_REPLY:
            if data:
                self.error(opt, P.REP_ERR_INVALID, "no payload expected in option 8")
            elif self.structured:
                self.error(opt, P.REP_ERR_INVALID, "structured reply already negotiated")
            else:
                self.structured = True
                self.reply(opt, P.REP_ACK)
            return None
        if opt in (P.OPT_LIST_META_CONTEXT, P.OPT_SET_META_CONTEXT):
            self.meta_context(opt, data)
            return None
        if opt == P.OPT_STARTTLS:
            self.error(opt, P.REP_ERR_POLICY, "TLS not configured")
            return None
        self.error(opt, P.REP_ERR_UNSUP, f"Unsupported option {opt}")
        return None

    def export_name(self, data: bytes) -> Session | bool:
        exp = self.lookup(data.decode(errors="replace"))
        if exp is None or not self.attach(exp):
            return False
        flags = transmission_flags(exp, self.structured)
        send_parts(
            self.sock,
            [struct.pack(">QH", exp.size(), flags), b"" if self.no_zeroes else bytes(124)],
        )
        return Session(exp, self.structured, dict(self.meta))

    def info(self, opt: int, data: bytes) -> Session | None:
        parsed = _parse_info_request(data)
        if parsed is None:
            self.error(opt, P.REP_ERR_INVALID, f"request data length {len(data)} is not valid")
            return None
        name, requests = parsed
        exp = self.lookup(name)
        if exp is None:
            self.error(opt, P.REP_ERR_UNKNOWN, f"export '{name}' not present")
            return None
        # The client counts as a user of the export from before it learns it may
        # start, so block-export-del mode=safe never misses it.
        if opt == P.OPT_GO and not self.attach(exp):
            self.error(opt, P.REP_ERR_UNKNOWN, f"export '{name}' not present")
            return None
        if P.INFO_NAME in requests:
            self.reply(opt, P.REP_INFO, struct.pack(">H", P.INFO_NAME) + exp.name.encode())
        if P.INFO_DESCRIPTION in requests and exp.description:
            self.reply(
                opt, P.REP_INFO, struct.pack(">H", P.INFO_DESCRIPTION) + exp.description.encode()
            )
        # Byte-granular access, 4 KiB preferred, QEMU's 32 MiB ceiling.
        self.reply(
            opt, P.REP_INFO, struct.pack(">HIII", P.INFO_BLOCK_SIZE, 1, 4096, P.MAX_BUFFER_SIZE)
        )
        self.reply(
            opt,
            P.REP_INFO,
            struct.pack(
                ">HQH", P.INFO_EXPORT, exp.size(), transmission_flags(exp, self.structured)
            ),
        )
        self.reply(opt, P.REP_ACK)
        if opt == P.OPT_GO:
            return Session(exp, self.structured, dict(self.meta))
        return None

    def meta_context(self, opt: int, data: bytes) -> None:
        if not self.structured:
            self.error(
                opt,
                P.REP_ERR_INVALID,
                "request option meta context when structured reply is not negotiated",
            )
            return
        parsed = _parse_meta_request(data)
        if parsed is None:
            self.error(opt, P.REP_ERR_INVALID, f"request data length {len(data)} is not valid")
            return
        name, queries = parsed
        if self.lookup(name) is None:
            self.error(opt, P.REP_ERR_UNKNOWN, f"export '{name}' not present")
            return
        if opt == P.OPT_LIST_META_CONTEXT:
            chosen = P.META_BASE_ALLOCATION in queries or not queries or "base:" in queries
        else:
            chosen = P.META_BASE_ALLOCATION in queries
            self.meta = {0: P.META_BASE_ALLOCATION} if chosen else {}
        if chosen:
            ctx = P.META_BASE_ALLOCATION.encode()
            self.reply(opt, P.REP_META_CONTEXT, struct.pack(">I", 0) + ctx)
        self.reply(opt, P.REP_ACK)


def _parse_info_request(data: bytes) -> tuple[str, set[int]] | None:
    if len(data) < 6:
        return None
    (nlen,) = struct.unpack_from(">I", data)
    if nlen > P.MAX_STRING_SIZE or len(data) < 4 + nlen + 2:
        return None
    name = data[4 : 4 + nlen].decode(errors="replace")
    (count,) = struct.unpack_from(">H", data, 4 + nlen)
    if len(data) != 4 + nlen + 2 + 2 * count:
        return None
    reqs = set(struct.unpack_from(f">{count}H", data, 6 + nlen))
    return name, reqs


def _parse_meta_request(data: bytes) -> tuple[str, list[str]] | None:
    try:
        (nlen,) = struct.unpack_from(">I", data)
        if nlen > P.MAX_STRING_SIZE:
            return None
        pos = 4 + nlen
        name = data[4:pos].decode(errors="replace")
        (count,) = struct.unpack_from(">I", data, pos)
        pos += 4
        queries: list[str] = []
        for _ in range(count):
            (qlen,) = struct.unpack_from(">I", data, pos)
            pos += 4
            if qlen > P.MAX_STRING_SIZE or pos + qlen > len(data):
                return None
            queries.append(data[pos : pos + qlen].decode(errors="replace"))
            pos += qlen
    except struct.error:
        return None
    return (name, queries) if pos == len(data) else None


def negotiate(
    sock: socket.socket,
    lookup: Callable[[str], ExportView | None],
    listing: Callable[[], Sequence[ExportView]],
    attach: Callable[[ExportView], bool],
) -> Session | None:
    """Run the handshake; None means the connection must be closed.

    ``attach(export)`` registers the client with the export just before the
    final reply; False means the export went away meanwhile.
    """
    try:
        return _Negotiator(sock, lookup, listing, attach).run()
    except (Disconnected, struct.error):
        return None
