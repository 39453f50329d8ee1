"""qcow2 header parsing and validation for untrusted images.

Reproduces the checks of QEMU 7.2's ``qcow2_do_open`` (and the helpers it
calls: ``qcow2_read_extensions``, ``qcow2_validate_table``,
``validate_compression_type``, ``report_unsupported_feature``) in the same
order, so a hostile image is refused with QEMU's own error text (see the
"validation checklist" V1-V18 of the project's qcow2 reference). Every count is
bounded before anything is allocated or read, and ``read`` is always called
with an offset/length pair that was validated against QEMU's table limits.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from txgraph.errors import IOFailure, OpenError
from txgraph.io.qcow2 import constants as C
from txgraph.io.qcow2.snapshots import Snapshot, read_snapshots

if TYPE_CHECKING:
    from txgraph.io.qcow2.crypto import Qcow2Crypto

__all__ = ["Qcow2Header", "Snapshot", "read_qcow2_header", "Reader"]

#: ``read(offset, length)`` returns exactly ``length`` bytes (zeros past EOF).
Reader = Callable[[int, int], bytes]

_V2 = struct.Struct(">4sIQIIQIIQQIIQ")  # 72 bytes
_V3 = struct.Struct(">QQQII")  # bytes 72..103
_EXT = struct.Struct(">II")


@dataclass
class Qcow2Header:
    """A validated qcow2 header with its extensions and derived geometry."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = 72
    compression_type: int = C.COMPRESSION_ZLIB
    #: header bytes past the fields txgraph knows, preserved on rewrite
    unknown_header_fields: bytes = b""
    backing_file: str | None = None
    backing_format: str | None = None
    data_file: str | None = None
    #: the data file extension's bytes as stored (``data_file`` is their text for queries)
    data_file_raw_name: bytes | None = None
    feature_table: list[tuple[int, int, str]] = field(default_factory=list)
    bitmaps_ext: bytes | None = None
    crypto_ext: bytes | None = None
    #: (type, data) of extensions txgraph does not interpret, in file order at open
    unknown_extensions: list[tuple[int, bytes]] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    #: bytes used by the snapshot table
    snapshots_size: int = 0

    # -- derived geometry ----------------------------------------------------
    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def extended_l2(self) -> bool:
        return bool(self.incompatible_features & C.INCOMPAT_EXTL2)

    @property
    def l2_entry_size(self) -> int:
        return 16 if self.extended_l2 else 8

    @property
    def l2_bits(self) -> int:
        return self.cluster_bits - (4 if self.extended_l2 else 3)

    @property
    def l2_entries(self) -> int:
        return 1 << self.l2_bits

    @property
    def refcount_bits(self) -> int:
        return 1 << self.refcount_order

    @property
    def has_data_file(self) -> bool:
        return bool(self.incompatible_features & C.INCOMPAT_DATA_FILE)

    @property
    def dirty(self) -> bool:
        return bool(self.incompatible_features & C.INCOMPAT_DIRTY)

    @property
    def corrupt(self) -> bool:
        return bool(self.incompatible_features & C.INCOMPAT_CORRUPT)

    @property
    def lazy_refcounts(self) -> bool:
        return bool(self.compatible_features & C.COMPAT_LAZY_REFCOUNTS)

    @property
    def data_file_raw(self) -> bool:
        return bool(self.autoclear_features & C.AUTOCLEAR_DATA_FILE_RAW)

    def pack(self) -> bytes:
        """The header fields as stored on disk (v2: 72 bytes; v3: ``header_length``)."""
        raw = _V2.pack(
            C.MAGIC,
            self.version,
            self.backing_file_offset,
            self.backing_file_size,
            self.cluster_bits,
            self.size,
            self.crypt_method,
            self.l1_size,
            self.l1_table_offset,
            self.refcount_table_offset,
            self.refcount_table_clusters,
            self.nb_snapshots,
            self.snapshots_offset,
        )
        if self.version < 3:
            return raw
        raw += _V3.pack(
            self.incompatible_features,
            self.compatible_features,
            self.autoclear_features,
            self.refcount_order,
            self.header_length,
        )
        return raw + self.unknown_header_fields


def _fail(desc: str) -> OpenError:
    return OpenError(desc)


def _validate_table(
    offset: int, entries: int, entry_len: int, max_bytes: int, cluster_size: int, name: str
) -> None:
    """QEMU's ``qcow2_validate_table``: bounded size, no overflow, cluster-aligned."""
    if entries > max_bytes // entry_len:
        raise _fail(f"{name} too large")
    if C.INT64_MAX - entries * entry_len < offset or offset % cluster_size:
        raise _fail(f"{name} offset invalid")


def _unsupported_features(h: Qcow2Header, mask: int) -> str:
    """QEMU's ``report_unsupported_feature``: names from the feature table, then hex."""
    parts: list[str] = []
    for ftype, bit, name in h.feature_table:
        if ftype == 0 and bit < 64 and mask & (1 << bit):
            parts.append(name)
            mask &= ~(1 << bit)
    if mask:
        parts.append(f"Unknown incompatible feature: {mask:x}")
    return ", ".join(parts)


def _read_extensions(
    h: Qcow2Header, read: Reader, start: int, end: int, only_features: bool
) -> None:
    """QEMU's ``qcow2_read_extensions`` over ``[start, end)`` of cluster 0."""
    offset = start
    while offset < end:
        magic, length = _EXT.unpack(read(offset, 8))
        offset += 8
        if offset > end or length > end - offset:
            raise _fail("Header extension too large")
        if magic == C.EXT_END:
            return
        data = read(offset, length)
        if only_features:
            if magic == C.EXT_FEATURE_TABLE:
                _parse_feature_table(h, data)
        elif magic == C.EXT_BACKING_FORMAT:
            if length >= C.MAX_BACKING_FORMAT:
                raise _fail(
                    f"ERROR: ext_backing_format: len={length} too large (>={C.MAX_BACKING_FORMAT})"
                )
            h.backing_format = data.decode("utf-8", "replace")
        elif magic == C.EXT_FEATURE_TABLE:
            _parse_feature_table(h, data)
        elif magic == C.EXT_CRYPTO:
            if h.crypt_method != 2:
                raise _fail("CRYPTO header extension only expected with LUKS encryption method")
            if length != 16:
                raise _fail(f"CRYPTO header extension size {length}, but expected size 16")
            h.crypto_ext = data
        elif magic == C.EXT_BITMAPS:
            _check_bitmaps_ext(h, data)
        elif magic == C.EXT_DATA_FILE:
            h.data_file = data.decode("utf-8", "replace")
            h.data_file_raw_name = data
        else:
            h.unknown_extensions.append((magic, data))
        offset += (length + 7) & ~7


def _parse_feature_table(h: Qcow2Header, data: bytes) -> None:
    h.feature_table = []
    for i in range(len(data) // 48):
        ftype, bit = data[i * 48], data[i * 48 + 1]
        name = data[i * 48 + 2 : i * 48 + 48].split(b"\0", 1)[0].decode("utf-8", "replace")
        h.feature_table.append((ftype, bit, name))


def _check_bitmaps_ext(h: Qcow2Header, data: bytes) -> None:
    """The bitmaps-extension checks of ``qcow2_read_extensions`` (QEMU 7.2)."""
    if len(data) != 24:
        raise _fail("bitmaps_ext: Invalid extension length")
    if not h.autoclear_features & C.AUTOCLEAR_BITMAPS:
        # Written by a program that did not maintain bitmaps: QEMU ignores it.
        return
    nb, reserved, dir_size, dir_off = struct.unpack(">IIQQ", data)
    if reserved != 0:
        raise _fail("bitmaps_ext: Reserved field is not zero")
    if nb > 65535:
        raise _fail(
            f"bitmaps_ext: Image has {nb} bitmaps, exceeding the QEMU supported maximum of 65535"
        )
    if nb == 0:
        raise _fail("found bitmaps extension with zero bitmaps")
    if dir_off % h.cluster_size:
        raise _fail("bitmaps_ext: invalid bitmap directory offset")
    if dir_size > (64 << 20):
        raise _fail(
            f"bitmaps_ext: bitmap directory size ({dir_size}) exceeds the maximum "
            f"supported size ({64 << 20})"
        )
    h.bitmaps_ext = data


def read_qcow2_header(
    read: Reader, size: int, *, read_only: bool = True, crypto: Qcow2Crypto | None = None
) -> Qcow2Header:
    """Parse and validate a qcow2 header like QEMU 7.2's ``qcow2_do_open``.

    ``read`` reads the image file (zero-filled past EOF, as QEMU's block
    layer does); ``size`` is the file size. Raises :class:`OpenError` with
    QEMU's text. ``read_only`` matters for the corrupt bit (writable opens of
    a corrupt image are refused). ``crypto`` checks the ``encrypt.*`` options
    and opens the LUKS volume at QEMU's points of the open.
    """
    try:
        raw = read(0, 104)
    except IOFailure as err:  # qcow2_do_open's first bdrv_pread (e.g. a quorum that cannot vote)
        raise OpenError(f"Could not read qcow2 header: {err.desc}") from None
    fields = _V2.unpack(raw[:72])
    if fields[0] != C.MAGIC:
        raise _fail("Image is not in qcow2 format")
    h = Qcow2Header(*fields[1:])
    if h.version < 2 or h.version > 3:
        raise _fail(f"Unsupported qcow2 version {h.version}")
    if not C.MIN_CLUSTER_BITS <= h.cluster_bits <= C.MAX_CLUSTER_BITS:
        raise _fail(f"Unsupported cluster size: 2^{h.cluster_bits}")
    cs = h.cluster_size
    if h.version == 3:
        (
            h.incompatible_features,
            h.compatible_features,
            h.autoclear_features,
            h.refcount_order,
            h.header_length,
        ) = _V3.unpack(raw[72:104])
        if h.header_length < 104:
            raise _fail("qcow2 header too short")
    if h.header_length > cs:
        raise _fail("qcow2 header exceeds cluster size")
    if h.header_length > 104:
        h.unknown_header_fields = read(104, h.header_length - 104)
        h.compression_type = h.unknown_header_fields[0]
    if h.backing_file_offset > cs:
        raise _fail("Invalid backing file offset")
    ext_end = h.backing_file_offset or cs
    _check_compression_type(h)
    if h.incompatible_features & ~C.INCOMPAT_MASK:
        # Only the feature names are needed for the message; errors in other
        # extensions must not mask this one.
        _read_extensions(h, read, h.header_length, ext_end, only_features=True)
        raise _fail(
            "Unsupported qcow2 feature(s): "
            + _unsupported_features(h, h.incompatible_features & ~C.INCOMPAT_MASK)
        )
    if h.corrupt and not read_only:
        raise _fail("qcow2: Image is corrupt; cannot be opened read/write")
    if h.extended_l2 and cs // C.EXTL2_SUBCLUSTERS < 512:
        raise _fail(f"Unsupported subcluster size: {cs // C.EXTL2_SUBCLUSTERS}")
    if h.refcount_order > 6:
        raise _fail("Reference count entry width too large; may not exceed 64 bits")
    _check_crypt(h)
    if h.refcount_table_clusters == 0:
        raise _fail("Image does not contain a reference count table")
    _validate_table(
        h.refcount_table_offset,
        h.refcount_table_clusters,
        cs,
        C.MAX_REFTABLE_SIZE,
        cs,
        "Reference count table",
    )
    _validate_table(
        h.snapshots_offset,
        h.nb_snapshots,
        C.SNAPSHOT_HEADER_SIZE,
        C.MAX_SNAPSHOTS * C.SNAPSHOT_HEADER_SIZE,
        cs,
        "Snapshot table",
    )
    if h.l1_size > C.MAX_L1_SIZE // 8:
        raise _fail("Active L1 table too large")
    shift = h.cluster_bits + h.l2_bits
    l1_needed = (h.size + (1 << shift) - 1) >> shift
    if l1_needed > C.INT_MAX:
        raise _fail("Image is too big")
    if h.l1_size < l1_needed:
        raise _fail("L1 table is too small")
    _validate_table(h.l1_table_offset, h.l1_size, 8, C.MAX_L1_SIZE, cs, "Active L1 table")
    if crypto is not None:  # qcow2_update_options, after the L1 table was read
        crypto.check_options(h.crypt_method)
    _read_extensions(h, read, h.header_length, ext_end, only_features=False)
    _check_crypt_open(h, crypto)
    if h.data_file_raw and not h.has_data_file:
        raise _fail("data-file-raw requires a data file")
    if h.backing_file_offset:
        n = h.backing_file_size
        if n > C.MAX_BACKING_FILE_NAME or n > cs - h.backing_file_offset:
            raise _fail("Backing file name too long")
        h.backing_file = read(h.backing_file_offset, n).decode("utf-8", "replace")
    h.snapshots, h.snapshots_size = read_snapshots(h, read)
    return h


def _check_compression_type(h: Qcow2Header) -> None:
    """QEMU's ``validate_compression_type``."""
    if h.compression_type not in (C.COMPRESSION_ZLIB, C.COMPRESSION_ZSTD):
        raise _fail(f"qcow2: unknown compression type: {h.compression_type}")
    has_bit = bool(h.incompatible_features & C.INCOMPAT_COMPRESSION)
    if h.compression_type == C.COMPRESSION_ZLIB and has_bit:
        raise _fail("qcow2: Compression type incompatible feature bit must not be set")
    if h.compression_type != C.COMPRESSION_ZLIB and not has_bit:
        raise _fail("qcow2: Compression type incompatible feature bit must be set")


def _check_crypt(h: Qcow2Header) -> None:
    """The crypt method: unknown ones are refused (legacy AES opens, as in QSD 7.2)."""
    if h.crypt_method > 2:
        raise _fail(f"Unsupported encryption method {h.crypt_method}")


def _check_crypt_open(h: Qcow2Header, crypto: Qcow2Crypto | None) -> None:
    """After the extensions: LUKS needs its header, then the volume is opened."""
    if h.crypt_method == 2 and h.crypto_ext is None:
        raise _fail("Missing CRYPTO header for crypt method 2")
    if h.crypt_method and crypto is None:
        raise _fail("Parameter 'encrypt.key-secret' is required for cipher")
    if h.crypt_method == 2:
        assert crypto is not None and h.crypto_ext is not None
        crypto.open(h.crypto_ext, h.cluster_size)
    elif h.crypt_method == 1:
        assert crypto is not None
        crypto.open_aes()
