"""Rewriting the qcow2 header cluster: a new backing file name and backing format.

Reproduces QEMU 7.2's ``qcow2_change_backing_file`` and the header rebuild it
ends with, ``qcow2_update_header`` (block/qcow2.c). The whole first cluster is
rebuilt from the in-memory state, not patched:

* the header fields (v2: 72 bytes; v3: at least 112, i.e. the compression
  type byte and its 7 zero padding bytes, then any header bytes past 112 that
  QEMU does not know, kept verbatim); ``size`` is the sector-rounded size QEMU
  keeps (``total_sectors * 512``);
* the header extensions in QEMU's order: backing format (only when a format
  is set), external data file name (only with the data-file bit), crypto
  header pointer (only with a crypto header), feature name table (v3 with
  clusters larger than 4 KiB only), bitmaps (only with bitmaps QEMU loaded),
  the unknown extensions in the reverse of the order they had at open, the
  end marker; every extension is
  padded to 8 bytes;
* the backing file name right after the end marker (its offset and size go
  into the header fields), zeros up to the end of the cluster.

If any of it does not fit in the cluster, nothing is written and the error
is ``ENOSPC`` (qemu-img prints "No space left in the file header"). QEMU
refuses a name longer than 1023 bytes and any backing file over a raw
external data file with ``EINVAL`` before looking at the header. The format
name is cut to 15 bytes as QEMU's ``bs->backing_format`` buffer cuts it.

One deliberate difference: when the rebuilt header does not fit, QEMU has
already replaced its in-memory copy of the name and format (so its
``query-named-block-nodes`` shows the new name over an unchanged file);
txgraph changes nothing, on disk or in memory, when it fails.

Locking: :func:`change_backing_file` runs under the node's ``lock`` (the one
guarding the header fields, the refcount table offset and the writer state),
so the packed fields are the ones on disk and no concurrent header update
(lazy-refcount dirty bit, corrupt bit, refcount table growth) interleaves
with the cluster write. Guest reads and writes of data clusters go on: QEMU's
header rewrite does not drain the node either.
"""

from __future__ import annotations

import errno as E
import os
import struct
from dataclasses import replace
from typing import TYPE_CHECKING

from txgraph.errors import IOFailure
from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.header import Qcow2Header

if TYPE_CHECKING:
    from txgraph.io.qcow2.driver import Qcow2Node

__all__ = ["FEATURE_TABLE", "build_header_cluster", "c_string", "change_backing_file"]

#: the feature name table QEMU 7.2 writes: (type, bit, name); type 0 incompatible,
#: 1 compatible, 2 autoclear (facts of the qcow2 specification's feature bits)
FEATURE_TABLE: tuple[tuple[int, int, str], ...] = (
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
)

#: QEMU's QCowHeader is 112 bytes in 7.2 (104 + compression type + 7 padding bytes)
_V3_HEADER = 112
_V2_HEADER = 72
_EXT = struct.Struct(">II")


def _fail(err: int) -> IOFailure:
    return IOFailure(os.strerror(err), err)


def c_string(value: str) -> bytes:
    """A QMP/command-line string as QEMU's C code sees it: UTF-8, up to the first NUL.

    A name decoded from file-system bytes (``os.fsdecode``) gets its bytes back.
    """
    try:
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte decoding produced
        raw = value.encode("utf-8", "surrogatepass")
    return raw.split(b"\0", 1)[0]


def _ext(magic: int, data: bytes) -> bytes:
    """QEMU's ``header_ext_add``: type, length, data, zero padding to 8 bytes."""
    return _EXT.pack(magic, len(data)) + data + bytes(-len(data) % 8)


def _feature_table() -> bytes:
    out = bytearray()
    for ftype, bit, name in FEATURE_TABLE:
        raw = name.encode()
        out += bytes([ftype, bit]) + raw + bytes(46 - len(raw))
    return bytes(out)


def _extra_header_fields(h: Qcow2Header) -> bytes:
    """The header bytes past QEMU's 112-byte struct (kept verbatim; ``unknown_header_fields``)."""
    # h.unknown_header_fields holds bytes 104..header_length; QEMU's own struct ends at 112.
    return h.unknown_header_fields[_V3_HEADER - 104 :]


def build_header_cluster(
    h: Qcow2Header, backing_file: bytes | None, backing_format: bytes | None
) -> tuple[bytes, Qcow2Header]:
    """``qcow2_update_header``: the new first cluster and the header it describes.

    ``h`` is the node's current in-memory header (not changed here); the name
    and format are the C strings to store (None: no backing file / no format
    extension). Raises ``ENOSPC`` if the result does not fit in one cluster.
    """
    cs = h.cluster_size
    if h.version >= 3:
        extra = _extra_header_fields(h)
        fixed = _V3_HEADER + len(extra)
        fields = bytes([h.compression_type]) + bytes(_V3_HEADER - 105) + extra
    else:
        fixed, fields, extra = _V2_HEADER, b"", b""
    if fixed > cs:
        raise _fail(E.ENOSPC)
    exts = bytearray()
    if backing_format is not None:
        exts += _ext(C.EXT_BACKING_FORMAT, backing_format)
    if h.has_data_file and h.data_file is not None:
        # QEMU keeps the name as a C string: the stored bytes up to the first NUL
        raw = h.data_file_raw_name if h.data_file_raw_name is not None else h.data_file.encode()
        exts += _ext(C.EXT_DATA_FILE, raw.split(b"\0", 1)[0])
    if h.crypto_ext is not None and struct.unpack(">Q", h.crypto_ext[:8])[0] != 0:
        exts += _ext(C.EXT_CRYPTO, h.crypto_ext)
    if h.version >= 3 and cs > 4096:
        # Eight names take 392 bytes: QEMU leaves the table out of small-cluster images.
        exts += _ext(C.EXT_FEATURE_TABLE, _feature_table())
    if h.bitmaps_ext is not None:
        exts += _ext(C.EXT_BITMAPS, h.bitmaps_ext)
    # QEMU collects them head-first while reading, so it writes them back in reverse file order
    # (the order read at open; a second rewrite in the same session writes the same order).
    for magic, data in reversed(h.unknown_extensions):
        exts += _ext(magic, data)
    exts += _ext(C.EXT_END, b"")
    # QEMU checks each piece against the room left; the total decides the same way.
    name_at = fixed + len(exts)
    if name_at > cs or (backing_file is not None and cs - name_at < len(backing_file)):
        raise _fail(E.ENOSPC)
    new = replace(
        h,
        size=h.size // 512 * 512,
        backing_file_offset=name_at if backing_file is not None else 0,
        backing_file_size=len(backing_file) if backing_file is not None else 0,
        header_length=fixed if h.version >= 3 else h.header_length,
        unknown_header_fields=fields if h.version >= 3 else h.unknown_header_fields,
        backing_file=None if backing_file is None else backing_file.decode("utf-8", "replace"),
        backing_format=None
        if backing_format is None
        else backing_format.decode("utf-8", "replace"),
        feature_table=list(FEATURE_TABLE) if h.version >= 3 and cs > 4096 else h.feature_table,
    )
    head = new.pack()
    assert len(head) == fixed, (len(head), fixed)
    cluster = head + bytes(exts) + (backing_file or b"")
    return cluster + bytes(cs - len(cluster)), new


def change_backing_file(node: Qcow2Node, backing_file: str | None, backing_fmt: str | None) -> None:
    """``qcow2_change_backing_file`` + ``qcow2_update_header`` on a live node.

    Refusals, in QEMU's order: a backing file over a raw external data file
    and a name longer than 1023 bytes (``EINVAL``), a read-only node (its
    file cannot be written: ``EPERM``, as every write to it), a header that
    does not fit (``ENOSPC``), and the write error of the file itself. On
    success the node's header (hence its ``info()``: backing_file,
    backing_format, full-backing-filename) describes the new cluster.
    """
    name = None if backing_file is None else c_string(backing_file)
    fmt = None if backing_fmt is None else c_string(backing_fmt)[: C.MAX_BACKING_FORMAT - 1]
    with node.lock:
        h = node.header
        if name is not None and h.has_data_file and h.data_file_raw:
            raise _fail(E.EINVAL)  # the raw data file alone would no longer be the image
        if name is not None and len(name) > C.MAX_BACKING_FILE_NAME:
            raise _fail(E.EINVAL)
        if node.writer is None:
            raise IOFailure("Operation not permitted", E.EPERM)
        cluster, new = build_header_cluster(h, name, fmt)
        node.file.write(0, cluster)
        # The header object is shared with the map, the writer and the refcounts: update it
        # in place so that every holder sees the new fields.
        for f in (
            "size",
            "backing_file_offset",
            "backing_file_size",
            "header_length",
            "unknown_header_fields",
            "backing_file",
            "backing_format",
            "feature_table",
        ):
            setattr(h, f, getattr(new, f))
