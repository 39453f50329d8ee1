"""The ``vhdx`` headers and metadata log: CRC-32C, header updates, log search, replay, writes.

Reproduces QEMU 7.2's block/vhdx.c header handling (``vhdx_parse_header``:
a header is valid with a good CRC-32C over its 4 KiB, signature ``head`` and
version 1; the higher sequence number wins, equal ones only when both headers
are identical; ``vhdx_update_header`` rewrites the inactive header with the
next sequence number, the session's file-write GUID and optionally a new
data-write GUID or log GUID, keeping the inactive header's other fields) and
block/vhdx-log.c: ``vhdx_parse_log`` (log offset/version/length checks,
``vhdx_log_search`` for the active sequence, replay when writable and
QEMU's EPERM text when read-only), ``vhdx_log_flush`` (descriptors written
to their file offsets, the file grown to the entry's last offset, then an
empty log) and ``vhdx_log_write_and_flush`` (every BAT update goes through a
one-entry log sequence under a fresh log GUID).

The log is a circular buffer of 4 KiB sectors; every walk here is bounded by
the log length and stops at the end of the file (sectors past it read as
zeroes, which no valid entry starts with).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from txgraph.errors import IOFailure, OpenError
from txgraph.io.formats.base import BDRV_MAX_LENGTH

if TYPE_CHECKING:
    from txgraph.io.formats.vhdx import VhdxNode

__all__ = ["crc32c", "Header", "LogState", "parse_log", "log_write_and_flush", "update_headers"]

MiB = 1 << 20
SECTOR = 4096
HEADER_OFFSETS = (64 << 10, 128 << 10)
_HEADER_FMT = "<4sIQ16s16s16sHHIQ"
_ENTRY_FMT = "<4sIIIQII16sQQ"  # log entry header: 64 bytes
_DESC_FMT = "<4sIQQQ"  # log descriptor: 32 bytes
_ZERO_GUID = bytes(16)


def _table() -> list[int]:
    out = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        out.append(c)
    return out


_CRC_TABLE = _table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) as QEMU's ``crc32c(0xffffffff, ...)``; ``crc`` continues one."""
    c = crc ^ 0xFFFFFFFF
    t = _CRC_TABLE
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def checksum_ok(buf: bytes, off: int = 4) -> bool:
    """``vhdx_checksum_is_valid``: the CRC with its own field read as zero."""
    zeroed = buf[:off] + bytes(4) + buf[off + 4 :]
    return crc32c(zeroed) == int(struct.unpack_from("<I", buf, off)[0])


def with_checksum(buf: bytes | bytearray, off: int = 4) -> bytes:
    """``vhdx_update_checksum``: store the CRC of ``buf`` (field zeroed) at ``off``."""
    out = bytearray(buf)
    out[off : off + 4] = bytes(4)
    out[off : off + 4] = struct.pack("<I", crc32c(out))
    return bytes(out)


@dataclass
class Header:
    """One of the two 4 KiB headers, as QEMU holds it (``VHDXHeader`` incl. reserved bytes)."""

    raw: bytearray
    valid: bool = False

    def field(self, index: int) -> int | bytes:
        value: int | bytes = struct.unpack_from(_HEADER_FMT, self.raw)[index]
        return value

    @property
    def seq(self) -> int:
        return int(self.field(2))

    @property
    def log_guid(self) -> bytes:
        return bytes(self.raw[48:64])

    @property
    def log_version(self) -> int:
        return int(self.field(6))

    @property
    def log_length(self) -> int:
        return int(self.field(8))

    @property
    def log_offset(self) -> int:
        return int(self.field(9))


def parse_headers(node: VhdxNode) -> tuple[list[Header], int]:
    """``vhdx_parse_header``: both headers and the index of the current one."""
    headers = []
    for off in HEADER_OFFSETS:
        raw = bytearray(node.fread(off, SECTOR))
        h = Header(raw)
        sig, version = struct.unpack_from("<4s", raw)[0], struct.unpack_from("<H", raw, 66)[0]
        h.valid = checksum_ok(bytes(raw)) and sig == b"head" and version == 1
        headers.append(h)
    h1, h2 = headers
    if h1.valid and not h2.valid:
        cur = 0
    elif h2.valid and not h1.valid:
        cur = 1
    elif not h1.valid:
        raise OpenError("No valid VHDX header found")
    elif h1.seq != h2.seq:
        cur = 0 if h1.seq > h2.seq else 1
    elif h1.raw == h2.raw:  # Disk2VHD writes two identical headers
        cur = 0
    else:
        raise OpenError("No valid VHDX header found")
    return headers, cur


def update_headers(node: VhdxNode, new_data_guid: bool, log_guid: bytes | None) -> None:
    """``vhdx_update_headers``: ``vhdx_update_header`` twice (both headers end up current)."""
    for _ in range(2):
        idx = 1 - node.cur_header
        active, inactive = node.headers[node.cur_header], node.headers[idx]
        raw = inactive.raw
        struct.pack_into("<Q", raw, 8, (active.seq + 1) & 0xFFFFFFFFFFFFFFFF)
        raw[16:32] = node.session_guid
        if new_data_guid:
            raw[32:48] = os.urandom(16)
        if log_guid is not None:
            raw[48:64] = log_guid
        # vhdx_write_header re-reads the reserved bytes from the file before the checksum
        on_disk = bytearray(node.fread(HEADER_OFFSETS[idx], SECTOR))
        on_disk[:80] = raw[:80]
        inactive.raw = bytearray(with_checksum(bytes(on_disk)))
        node.file.write(HEADER_OFFSETS[idx], bytes(inactive.raw))
        node.file.flush()
        node.cur_header = idx


@dataclass
class LogState:
    """``VHDXLogEntries``: the circular log's geometry and pointers (byte indices)."""

    offset: int = 0
    length: int = 0
    read: int = 0
    write: int = 0
    tail: int = 0
    sequence: int = 0


@dataclass(frozen=True)
class _Desc:
    """A log descriptor (``desc`` with its data sector, or ``zero``)."""

    sig: bytes
    trailing: int
    lead_or_zero: int
    file_offset: int
    data: bytes = b""


@dataclass
class _Entry:
    """One validated log entry: its header fields and descriptors with their data sectors."""

    seq: int
    flushed: int
    last: int
    descs: list[_Desc] = field(default_factory=list)


def _inc(idx: int, length: int) -> int:
    idx += SECTOR
    return 0 if idx >= length else idx


def _sector(node: VhdxNode, log: LogState) -> bytes:
    data = node.fread(log.offset + log.read, SECTOR)
    log.read = _inc(log.read, log.length)
    return data


def _desc_sectors(count: int) -> int:
    return (count + 2 + 127) // 128


def _validate_entry(node: VhdxNode, log: LogState, seq: int) -> _Entry | None:
    """``vhdx_validate_log_entry`` at ``log.read``; an invalid descriptor fails the open."""
    head = node.fread(log.offset + log.read, 64)
    sig, _crc, length, _tail, eseq, count, _r, guid, flushed, last = struct.unpack(_ENTRY_FMT, head)
    ok = (
        sig == b"loge"
        and length <= log.length
        and not length % SECTOR
        and eseq != 0
        and guid == node.headers[node.cur_header].log_guid
        and count * 32 <= length
        and (seq == 0 or eseq == seq + 1)
    )
    if not ok:
        log.read = _inc(log.read, log.length)
        return None
    nsec = _desc_sectors(count)
    desc_buf = b"".join(_sector(node, log) for _ in range(nsec))
    descs = []
    for i in range(count):
        dsig, trailing, lead_or_zero, foff, dseq = struct.unpack_from(
            _DESC_FMT, desc_buf, 64 + 32 * i
        )
        valid = dseq == eseq and not foff % SECTOR
        if not (valid and (dsig == b"desc" or (dsig == b"zero" and not lead_or_zero % SECTOR))):
            raise _LogInvalid
        descs.append((dsig, trailing, lead_or_zero, foff))
    crc = crc32c(desc_buf[:4] + bytes(4) + desc_buf[8:])
    data_secs = []
    for _ in range(max(0, length // SECTOR - nsec)):
        sec = _sector(node, log)
        data_secs.append(sec)
        crc = crc32c(sec, crc)
    if crc != struct.unpack_from("<I", desc_buf, 4)[0]:
        return None
    entry = _Entry(eseq, flushed, last)
    it = iter(data_secs)  # the data sectors follow in the order of the data descriptors
    for dsig, trailing, lead_or_zero, foff in descs:
        data = next(it, b"") if dsig == b"desc" else b""
        entry.descs.append(_Desc(dsig, trailing, lead_or_zero, foff, data))
    return entry


class _LogInvalid(Exception):
    """An invalid descriptor inside a valid entry (QEMU's -EINVAL from vhdx_log_read_desc)."""


def _search(node: VhdxNode, log: LogState) -> list[_Entry]:
    """``vhdx_log_search``: the valid sequence with the highest sequence number."""
    cur = LogState(log.offset, log.length, 0, log.length)
    best: list[_Entry] = []
    end = node.file_length()
    while True:
        tail = cur.read
        if cur.offset + cur.read >= end:
            # zeroes to the end of the log: nothing valid, the walk would just wrap - unless
            # its last header read lies past BDRV_MAX_LENGTH, which fails (-EIO)
            if cur.offset + cur.length - SECTOR + 64 > BDRV_MAX_LENGTH:
                raise IOFailure("Input/output error", 5)
            break
        first = _validate_entry(node, cur, 0)
        seq_chain: list[_Entry] = []
        if first is not None:
            seq_chain = [first]
            curr_seq = 0
            while True:
                nxt = _validate_entry(node, cur, curr_seq)
                if nxt is None:
                    break
                seq_chain.append(nxt)
                curr_seq = nxt.seq
        if seq_chain and (not best or seq_chain[0].seq > best[0].seq):
            best = seq_chain
        if cur.read < tail:
            break
    return best


def _flush_entries(node: VhdxNode, entries: list[_Entry]) -> None:
    """``vhdx_log_flush``: apply each entry's descriptors, then mark the log empty."""
    node.user_visible_write()
    for entry in entries:
        if entry.flushed > node.file_length():
            raise IOFailure("Invalid argument", 22)
        for d in entry.descs:
            if d.sig == b"desc":
                if len(d.data) != SECTOR:
                    raise IOFailure("Invalid argument", 22)
                hi, lo = (
                    struct.unpack_from("<I", d.data, 4)[0],
                    struct.unpack_from("<I", d.data, 4092)[0],
                )
                if hi << 32 | lo != entry.seq:
                    raise IOFailure("Invalid argument", 22)
                lead, trail = struct.pack("<Q", d.lead_or_zero), struct.pack("<I", d.trailing)
                node.file.write(d.file_offset, lead + d.data[8:4092] + trail)
            elif d.lead_or_zero >= SECTOR:
                node.file.write_zeroes(d.file_offset, d.lead_or_zero // SECTOR * SECTOR)
            node.file.flush()
        if node.file_length() < entry.last and entry.last % MiB:
            node.grow((entry.last >> 20) + 1 << 20)
    # bdrv_flush(bs): the vhdx node itself, through its generic layer (so its file
    # child sees flush_to_os), not only the file
    node.flush()
    node.log.read = node.log.write = 0
    update_headers(node, False, _ZERO_GUID)


def parse_log(node: VhdxNode) -> bool:
    """``vhdx_parse_log``; returns whether a log was replayed."""
    hdr = node.headers[node.cur_header]
    log = node.log
    log.offset, log.length = hdr.log_offset, hdr.log_length
    einval = OpenError(f"Could not open '{node.filename}': Invalid argument")
    if log.offset < MiB or log.offset % MiB or hdr.log_version != 0:
        raise einval
    if hdr.log_guid == _ZERO_GUID or log.length == 0:
        return False
    if log.length % MiB:
        raise einval
    try:
        entries = _search(node, log)
    except _LogInvalid:
        raise einval from None
    except IOFailure as err:  # a log sector past BDRV_MAX_LENGTH
        raise OpenError(f"Could not open '{node.filename}': {os.strerror(err.errno)}") from None
    if not entries:
        return False
    if node.read_only:
        # the "To replay the log, run: qemu-img check -r all" part is a hint (not in QMP)
        raise OpenError(
            f"VHDX image file '{node.filename}' opened read-only, but contains a log that needs "
            "to be replayed"
        )
    # the sequence's first header decides (vhdx_log_search keeps it as the candidate's)
    log.sequence = entries[0].seq + 1
    try:
        _flush_entries(node, entries)
    except IOFailure as err:
        raise OpenError(f"Could not open '{node.filename}': {os.strerror(err.errno)}") from None
    return True


def log_write(node: VhdxNode, data: bytes, offset: int) -> _Entry:
    """``vhdx_log_write``: one entry holding ``data`` for file ``offset`` (4 KiB sectors)."""
    hdr = node.headers[node.cur_header]
    if len(data) > hdr.log_length:
        raise IOFailure("Invalid argument", 22)
    if hdr.log_guid != _ZERO_GUID:
        raise IOFailure("Operation not supported", 95)  # one flushed entry at a time
    update_headers(node, False, os.urandom(16))
    log = node.log
    log.sequence = log.sequence or 1
    start = offset - offset % SECTOR
    end = offset + len(data)
    sectors = (end - start + SECTOR - 1) // SECTOR
    image = bytearray(node.fread(start, sectors * SECTOR))  # merged with the file's bytes
    image[offset - start : offset - start + len(data)] = data
    nsec = _desc_sectors(sectors)
    flen = node.file_length()
    guid = node.headers[node.cur_header].log_guid
    total = (nsec + sectors) * SECTOR
    buf = bytearray(total)
    struct.pack_into(
        _ENTRY_FMT, buf, 0, b"loge", 0, total, log.tail, log.sequence, sectors, 0, guid, flen, flen
    )
    for i in range(sectors):
        sec = image[i * SECTOR : (i + 1) * SECTOR]
        lead = struct.unpack_from("<Q", sec)[0]
        trail = struct.unpack_from("<I", sec, 4092)[0]
        struct.pack_into(
            _DESC_FMT, buf, 64 + 32 * i, b"desc", trail, lead, start + i * SECTOR, log.sequence
        )
        d = (nsec + i) * SECTOR
        struct.pack_into("<4sI", buf, d, b"data", log.sequence >> 32)
        buf[d + 8 : d + 4092] = sec[8:4092]
        struct.pack_into("<I", buf, d + 4092, log.sequence & 0xFFFFFFFF)
    out = with_checksum(bytes(buf))
    node.user_visible_write()
    pos = log.write
    for i in range(nsec + sectors):
        nxt = _inc(pos, log.length)
        if nxt == log.read:
            raise IOFailure("Invalid argument", 22)  # log full
        node.file.write(log.offset + pos, out[i * SECTOR : (i + 1) * SECTOR])
        pos = nxt
    entry = _Entry(log.sequence, flen, flen)
    for i in range(sectors):
        lead, trail = (
            struct.unpack_from("<Q", image, i * SECTOR)[0],
            struct.unpack_from("<I", image, i * SECTOR + 4092)[0],
        )
        data = out[(nsec + i) * SECTOR : (nsec + i + 1) * SECTOR]
        entry.descs.append(_Desc(b"desc", trail, lead, start + i * SECTOR, data))
    log.write = pos
    log.sequence += 1
    log.tail = log.write
    return entry


def log_write_and_flush(node: VhdxNode, data: bytes, offset: int) -> None:
    """``vhdx_log_write_and_flush``: data stable, the entry written and stable, then applied.

    Both flushes are QEMU's ``bdrv_flush(bs)`` of the vhdx node (not of its file):
    the generic layer raises ``flush_to_os`` on the file child (and ``flush_to_disk``
    when the node was written since its last flush) before flushing it, so a blkdebug
    file's rules fail the guest's allocating write there, as in QEMU 7.2."""
    node.flush()
    entry = log_write(node, data, offset)
    node.flush()
    write = node.log.write
    _flush_entries(node, [entry])
    # QEMU copies back its log view, whose read index caught up with the write index
    node.log.read = node.log.write = write
