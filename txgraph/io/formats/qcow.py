"""The ``qcow`` (version 1) format: header checks, two-level map, reads and writes.

Reproduces QEMU 7.2's block/qcow.c: ``qcow_open``'s checks in order and
their texts, the backing file name from the header, ``get_cluster_offset``
(L1 -> L2 -> cluster; bit 63 marks a compressed cluster whose length sits in
the bits above the offset mask), compressed clusters read as raw deflate
streams (``decompress_cluster``), and the write path: a missing L2 table is
appended at the end of the file rounded up to the cluster size, a missing
cluster likewise, and - as in QEMU - the rest of a partly written new
cluster is not copied from the backing (qemu-img gives images with a backing
512-byte clusters, so guest writes always cover whole clusters). A partial
write into a compressed cluster decompresses it into a new cluster first.
Encrypted (AES, crypt method 1) images open as in qemu-storage-daemon 7.2
(``qcrypto_block_qcow_open``: the password zero-padded or cut to 16 bytes is
the AES-128-CBC key, IVs plain64 of the *guest* sector); data is decrypted
after the read and encrypted before the write, a new cluster's sectors the
write does not cover get encrypted zeroes (``get_cluster_offset``), and
block status reports such data without a host offset.
"""

from __future__ import annotations

import errno as E
import struct
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus
from txgraph.io.formats.base import (
    DATA,
    UNALLOC,
    ImageFormatNode,
    Run,
    be,
    could_not_open,
    eio,
)
from txgraph.io.formats.sync import pwrite_sync, truncate_child
from txgraph.io.formats.table_cache import CountingCache
from txgraph.io.layer import driver_write
from txgraph.io.qcow2.deflate import raw_deflate
from txgraph.io.qcow2.inflate import InflateError, inflate_cluster
from txgraph.io.registry import register
from txgraph.io.truncate import truncate

__all__ = ["QcowNode"]

_MAGIC = 0x514649FB
_COMPRESSED = 1 << 63
_INT_MAX = 2**31 - 1


@register("qcow")
class QcowNode(ImageFormatNode):
    """A qcow v1 image over ``file``, with an optional ``backing``."""

    driver_name = "qcow"
    supports_backing = True

    def open_image(self) -> None:
        """``qcow_open``: header checks in QEMU's order, L1 table, backing name."""
        #: QEMU's 16-table L2 cache and one-cluster decompression cache (under ``lock``)
        self._l2_cache = CountingCache(16)
        self._cluster_cache: tuple[int, bytes] | None = None
        h = self.fread(0, 48)
        magic, version, backing_offset, backing_size, _mtime, size = be("IIQIIQ", h)
        cluster_bits, l2_bits = h[32], h[33]
        (crypt,) = be("I", h, 36)
        (l1_offset,) = be("Q", h, 40)
        if magic != _MAGIC:
            raise OpenError("Image not in qcow format")
        if version != 1:
            raise OpenError(f"qcow (v1) does not support qcow version {version}")
        if size <= 1:
            raise OpenError("Image size is too small (must be at least 2 bytes)")
        if cluster_bits < 9 or cluster_bits > 16:
            raise OpenError("Cluster size must be between 512 and 64k")
        if l2_bits < 9 - 3 or l2_bits > 16 - 3:
            raise OpenError("L2 table size must be between 512 and 64k")
        enc = self.options.get("encrypt.format")
        if crypt:
            if crypt != 1:
                raise OpenError("invalid encryption method in qcow header")
            if enc is not None and enc != "aes":
                raise OpenError(
                    f"Header reported 'aes' encryption format but options specify '{enc}'"
                )
            if "encrypt.key-secret" not in self.options:
                # qcrypto_block_open's qcow (AES-CBC) option check
                raise OpenError("Parameter 'encrypt.key-secret' is required for cipher")
            self._open_aes()
        elif enc is not None:
            raise OpenError(f"No encryption in image header, but options specified format '{enc}'")
        self.cluster_bits = cluster_bits
        self.cluster_size = self.csize = 1 << cluster_bits
        self.l2_bits = l2_bits
        self.l2_size = 1 << l2_bits
        self.offset_mask = (1 << (63 - cluster_bits)) - 1
        self.virtual_size = size // 512 * 512
        shift = cluster_bits + l2_bits
        if size > 2**64 - 1 - (1 << shift):
            raise OpenError("Image too large")
        l1_size = (size + (1 << shift) - 1) >> shift
        if l1_size > _INT_MAX // 8:
            raise OpenError("Image too large")
        self.l1_size = l1_size
        self.l1_offset = l1_offset
        self.l1 = self.read_table(l1_offset, l1_size * 8)
        if backing_offset:
            if backing_size > 1023:
                raise OpenError("Backing file name too long")
            try:
                name = self.fread(backing_offset, backing_size)
            except IOFailure as err:
                raise could_not_open(self.filename, err.errno) from None
            self.backing_file = name.split(b"\0", 1)[0].decode("utf-8", "replace")

    crypto: Any = None

    def _open_aes(self) -> None:
        """``qcrypto_block_qcow_open``: the secret is the key; nothing can verify it."""
        from txgraph.io.crypto.cipher import SectorCipher
        from txgraph.io.crypto.secret import SECRET_OPTION, SecretRef

        ref = self.options.get(SECRET_OPTION)
        if not isinstance(ref, SecretRef):
            raise OpenError("Parameter 'encrypt.key-secret' is required for cipher")
        password = ref.resolve().encode("utf-8").split(b"\0", 1)[0]
        self.crypto = SectorCipher(
            "aes-128", "cbc", "plain64", None, (password[:16] + bytes(16))[:16]
        )

    def _crypt(self, guest: int, data: bytes, encrypt: bool) -> bytes:
        """``qcrypto_block_{en,de}crypt`` of whole sectors numbered by the guest offset."""
        assert guest % 512 == 0 and len(data) % 512 == 0
        sector = guest // 512
        out: bytes = (
            self.crypto.encrypt(sector, data) if encrypt else self.crypto.decrypt(sector, data)
        )
        return out

    def info(self) -> Any:
        info = super().info()
        if self.crypto is not None:
            info.extra["encrypted"] = True
        return info

    def _l1(self, index: int) -> int:
        off = index * 8
        if index >= self.l1_size or off + 8 > len(self.l1):
            return 0
        return int.from_bytes(self.l1[off : off + 8], "big")

    # -- mapping ------------------------------------------------------------------------
    def _l2_table(self, l2_offset: int, new: bool = False) -> bytearray:
        """``get_cluster_offset``'s L2 lookup: a cached table, else ``l2_load`` on the file
        and the whole table read. A new table is written as zeroes and flushed
        (``bdrv_co_pwrite_sync``); it enters the cache only once that succeeded."""
        table = None if new else self._l2_cache.find(l2_offset)
        if table is not None:
            return table
        self.file.debug_event("l2_load")
        if new:
            table = bytearray(self.l2_size * 8)
            pwrite_sync(self.file, l2_offset, bytes(table))
        else:
            table = bytearray(self.fread(l2_offset, self.l2_size * 8))
        return self._l2_cache.insert(l2_offset, table)

    def _l2_entries(self, l2_offset: int, index: int, count: int) -> list[int]:
        table = self._l2_table(l2_offset)
        return list(struct.unpack_from(f">{count}Q", table, index * 8))

    def map_run(self, offset: int, length: int) -> Run:
        cs = self.csize
        cluster = offset >> self.cluster_bits
        within = offset & (cs - 1)
        l1_index = cluster >> self.l2_bits
        l2_index = cluster & (self.l2_size - 1)
        want = min(length, cs - within)
        l2_offset = self._l1(l1_index)
        if not l2_offset:
            # the rest of this L2 range is unallocated
            span = ((self.l2_size - l2_index) << self.cluster_bits) - within
            return Run(UNALLOC, min(length, span))
        clusters = min(self.l2_size - l2_index, 1 + (within + length - 1) // cs)
        entries = self._l2_entries(l2_offset, l2_index, clusters)
        first = entries[0]
        if first & _COMPRESSED:
            return Run("compressed", want, first)
        n = want
        for i, entry in enumerate(entries[1:], 1):
            if n >= length:
                break
            if first == 0 and entry != 0:
                break
            if first != 0 and entry != first + i * cs:
                break
            n = min(length, n + cs)
        if first == 0:
            return Run(UNALLOC, n)
        return Run(DATA, n, first + within)

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        out = bytearray(length)
        pos = 0
        with self.lock:
            while pos < length:
                run = self.map_run(offset + pos, length - pos)
                n = min(run.length, length - pos)
                if run.kind == DATA:
                    self.file.debug_event("read_aio")  # qcow_co_preadv
                if run.kind == DATA and self.crypto is not None:
                    # whole sectors (the run's cluster continues to its sector boundary)
                    guest = offset + pos
                    head = guest % 512
                    span = (head + n + 511) // 512 * 512
                    plain = self._crypt(guest - head, self.fread(run.host - head, span), False)
                    out[pos : pos + n] = plain[head : head + n]
                elif run.kind == DATA:
                    out[pos : pos + n] = self.fread(run.host, n)
                elif run.kind == "compressed":
                    within = (offset + pos) & (self.csize - 1)
                    out[pos : pos + n] = self._decompress(run.host)[within : within + n]
                else:
                    if "backing" in self.children:
                        # qcow_co_preadv raises it on the file, as qcow2 does
                        self.file.debug_event("read_backing_aio")
                    self._read_backing(offset + pos, out, pos, n)
                pos += n
        return bytes(out)

    def _decompress(self, entry: int) -> bytes:
        """``decompress_cluster``: a raw deflate stream of at most the stored length; the
        last cluster decompressed is kept (``cluster_cache_offset``) and not read again."""
        offset = entry & self.offset_mask
        if self._cluster_cache is not None and self._cluster_cache[0] == offset:
            return self._cluster_cache[1]
        csize = (entry >> (63 - self.cluster_bits)) & (self.csize - 1)
        self.file.debug_event("read_compressed")
        data = self.fread(offset, csize)
        try:
            out = inflate_cluster(data, self.csize)  # decompress_buffer's one inflate call
        except InflateError:
            raise eio() from None
        self._cluster_cache = (offset, out)
        return out

    def block_status(self, offset: int, length: int) -> BlockStatus:
        with self.lock:
            run = self.map_run(offset, min(length, self.virtual_size - offset))
        if run.kind == "compressed" or (run.kind == DATA and self.crypto is not None):
            # qcow_co_block_status: compressed or encrypted data has no usable host offset
            return BlockStatus(offset, min(run.length, length), True, False)
        return super().block_status(offset, length)

    def make_empty(self) -> None:
        """``qcow_make_empty`` (vvfat's commit calls it): a zeroed L1 table, the file cut
        back to its end, an empty L2 cache."""
        with self.lock:
            length = self.l1_size * 8
            self.l1 = bytearray(len(self.l1))
            self.file.write(self.l1_offset, bytes(length))
            self.file.flush()
            truncate(self.file, self.l1_offset + length)
            self._l2_cache.clear()

    # -- writes -------------------------------------------------------------------------
    def _alloc(self, size_align: int) -> int:
        end = self.file_length()
        return (end + size_align - 1) // size_align * size_align

    def _encrypt_part(self, offset: int, data: bytes) -> bytes:
        """Encrypt ``data`` at guest ``offset``, widened to whole sectors with what the guest
        reads there now (the block layer's read-modify-write for sub-sector writes)."""
        head = offset % 512
        span = (head + len(data) + 511) // 512 * 512
        if head or span != len(data):
            plain = bytearray(
                self.read(offset - head, min(span, self.virtual_size - offset + head))
            )
            plain.extend(bytes(span - len(plain)))
            plain[head : head + len(data)] = data
        else:
            plain = bytearray(data)
        return self._crypt(offset - head, bytes(plain), True)

    def _zero_fill_new(self, host: int, guest_cluster: int, start: int, length: int) -> None:
        """``get_cluster_offset``: a new encrypted cluster's other sectors hold encrypted
        zeroes, so they read back as zeroes."""
        cs = self.csize
        for i in range(0, cs, 512):
            if i < start or i >= start + length:
                self.file.debug_event("write_aio")
                self.file.write(host + i, self._crypt(guest_cluster + i, bytes(512), True))

    def _l2_for_write(self, cluster: int) -> tuple[int, bytearray]:
        """``get_cluster_offset``'s L2 step when allocating: the table of ``cluster``,
        appended at the end of the file (rounded up to a cluster) when missing.

        In QEMU's order, each write made durable before the next
        (``bdrv_co_pwrite_sync``): the L1 entry (the table in memory first, so a
        failed write or flush leaves it pointing at the new offset, as QEMU's does),
        then the zeroed table."""
        l1_index = cluster >> self.l2_bits
        l2_offset = self._l1(l1_index)
        if not l2_offset:
            l2_offset = self._alloc(self.csize)
            self.set_table_entry(self.l1, l1_index, l2_offset, 8, "big")
            self.file.debug_event("l1_update")
            pwrite_sync(self.file, self.l1_offset + l1_index * 8, struct.pack(">Q", l2_offset))
            return l2_offset, self._l2_table(l2_offset, new=True)
        return l2_offset, self._l2_table(l2_offset)

    def _l2_update(self, l2_offset: int, table: bytearray, l2_index: int, entry: int) -> None:
        """``get_cluster_offset``'s L2 update: the cached table first, then the entry
        written and flushed (``bdrv_co_pwrite_sync``) - a failure leaves the cached entry
        pointing at the new cluster, as QEMU's does."""
        packed = struct.pack(">Q", entry)
        table[l2_index * 8 : l2_index * 8 + 8] = packed
        pwrite_sync(self.file, l2_offset + l2_index * 8, packed)

    def write_compressed(self, offset: int, data: bytes) -> None:
        """``qcow_co_pwritev_compressed``: one whole cluster (or the image's last, zero
        padded) as a raw deflate stream (zlib's default level, 4 KiB window, memLevel 9),
        appended unaligned at the end of the file; any other length is EINVAL, which is
        what a backup with ``compress`` into a qcow image of 4 KiB or 512-byte clusters
        meets (its copy chunks are 64 KiB). Data that does not shrink is written as a
        normal cluster. As in QEMU, a cluster already allocated keeps its L2 entry and
        gets the compressed bytes at its offset (only a fresh target is written so)."""
        cs = self.csize
        buf = bytes(data)
        if len(buf) != cs:
            if len(buf) > cs or offset + len(buf) != self.size():
                raise IOFailure("Invalid argument", E.EINVAL)
            buf += bytes(cs - len(buf))  # the image's last, partial cluster
        packed = raw_deflate(buf)
        if len(packed) >= cs:
            driver_write(self, offset, data)  # could not compress: qcow_co_pwritev
            return
        with self.lock:
            cluster = offset >> self.cluster_bits
            l2_offset, table = self._l2_for_write(cluster)
            l2_index = cluster & (self.l2_size - 1)
            entry = int.from_bytes(table[l2_index * 8 : l2_index * 8 + 8], "big")
            if not entry:
                self.file.debug_event("cluster_alloc")
                end = self.file_length()  # bdrv_getlength: compressed data is not aligned
                entry = end | _COMPRESSED | len(packed) << (63 - self.cluster_bits)
                self.file.debug_event("l2_update_compressed")
                self._l2_update(l2_offset, table, l2_index, entry)
            self.file.debug_event("write_compressed")
            self.file.write(entry & self.offset_mask, packed)

    def write_run(self, offset: int, data: bytes) -> int:
        """``qcow_co_pwritev`` for the part of ``data`` inside one cluster."""
        cs = self.csize
        cluster = offset >> self.cluster_bits
        within = offset & (cs - 1)
        n = min(len(data), cs - within)
        l2_index = cluster & (self.l2_size - 1)
        l2_offset, table = self._l2_for_write(cluster)
        entry = int.from_bytes(table[l2_index * 8 : l2_index * 8 + 8], "big")
        # encrypted: whole sectors, so the host write starts ``head`` bytes earlier
        head = offset % 512 if self.crypto is not None else 0
        payload = (
            self._encrypt_part(offset, bytes(data[:n]))
            if self.crypto is not None
            else bytes(data[:n])
        )
        if entry and not entry & _COMPRESSED:
            self.file.debug_event("write_aio")
            self.file.write(entry + within - head, payload)
            return n
        self.file.debug_event("cluster_alloc")
        if entry & _COMPRESSED and n < cs:
            content = bytearray(self._decompress(entry))
        else:
            content = None
        host = self._alloc(cs)
        if content is not None:
            # QEMU writes the decompressed cluster as it is; the data follows below
            self.file.debug_event("write_aio")
            self.file.write(host, bytes(content))
        else:
            if host + cs > 2**63 - 1:
                raise IOFailure("Argument list too long", E.E2BIG)
            # the file holds the new cluster before the L2 entry names it
            truncate_child(self.file, host + cs)
            if self.crypto is not None:
                self._zero_fill_new(host, offset - within, within - head, len(payload))
        # QEMU's order: the L2 entry, durable, before the data write
        self.file.debug_event("l2_update")
        self._l2_update(l2_offset, table, l2_index, host)
        self.file.debug_event("write_aio")
        self.file.write(host + within - head, payload)
        return n
