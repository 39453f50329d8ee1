"""qcow2 metadata-overlap checks: the ``overlap-check`` option and the pre-write check.

Reproduces QEMU 7.2's ``qcow2_update_options_prepare`` (overlap part: the
template ``none``/``constant``/``cached``/``all``, default ``cached``, each
structure switchable with its own boolean ``overlap-check.<name>``) and
``qcow2_check_metadata_overlap`` / ``qcow2_pre_write_overlap_check``: before a
write to the image file, the target range (widened to whole clusters, except
for the header test) is compared with every enabled metadata structure, in
QEMU's order; the first hit fails the write with EIO after
``qcow2_signal_corruption`` (corrupt bit, BLOCK_IMAGE_CORRUPTED with
``Preventing invalid write on metadata (overlaps with <structure>)``, node
unusable). Each write kind ignores its own structure as QEMU does: L2 table
write-back ignores ``active-l2``, refcount-block write-back ``refcount-block``,
L1 updates ``active-l1``; guest data ignores nothing, and is not checked at all
when it goes to an external data file.

Lock discipline: an OverlapChecker belongs to one Qcow2Node and has no state
of its own besides the mask (fixed at open). What it reads is state guarded by
the node's ``lock``: the header, the L1 table and the map's cached sorted L2
offsets (``L2Map.l2_table_offsets``, rebuilt lazily, dropped by ``set_l1``),
and the writer's refcount table. So :meth:`OverlapChecker.find`/``check``/
``check_data`` are called only with the node's ``lock`` held (the writer's
lookup, allocation and flush sections hold it), and the write they guard is
issued in the same locked section, or, for an in-place overwrite, after the
cluster was registered as in flight so that no flush can free and reuse it
before the write lands (see :mod:`.writer`). A hit calls
``signal_corruption``, which re-enters the same lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from txgraph.errors import IOFailure, OpenError
from txgraph.io.qcow2 import constants as C
from txgraph.model.options import parse_bool

if TYPE_CHECKING:
    from txgraph.io.qcow2.driver import Qcow2Node

__all__ = [
    "OL_MAIN_HEADER",
    "OL_ACTIVE_L1",
    "OL_ACTIVE_L2",
    "OL_REFCOUNT_TABLE",
    "OL_REFCOUNT_BLOCK",
    "OL_SNAPSHOT_TABLE",
    "OL_INACTIVE_L1",
    "OL_INACTIVE_L2",
    "OL_BITMAP_DIRECTORY",
    "TEMPLATES",
    "parse_overlap_check",
    "OverlapChecker",
]

# Bit numbers as QEMU's QCow2MetadataOverlap; option names as its
# overlap_bool_option_names, event names as its metadata_ol_names.
_STRUCTS = (
    ("main-header", "qcow2_header"),
    ("active-l1", "active L1 table"),
    ("active-l2", "active L2 table"),
    ("refcount-table", "refcount table"),
    ("refcount-block", "refcount block"),
    ("snapshot-table", "snapshot table"),
    ("inactive-l1", "inactive L1 table"),
    ("inactive-l2", "inactive L2 table"),
    ("bitmap-directory", "bitmap directory"),
)
(
    OL_MAIN_HEADER,
    OL_ACTIVE_L1,
    OL_ACTIVE_L2,
    OL_REFCOUNT_TABLE,
    OL_REFCOUNT_BLOCK,
    OL_SNAPSHOT_TABLE,
    OL_INACTIVE_L1,
    OL_INACTIVE_L2,
    OL_BITMAP_DIRECTORY,
) = (1 << i for i in range(len(_STRUCTS)))

_CONSTANT = (
    OL_MAIN_HEADER | OL_ACTIVE_L1 | OL_REFCOUNT_TABLE | OL_SNAPSHOT_TABLE | OL_BITMAP_DIRECTORY
)
_CACHED = _CONSTANT | OL_ACTIVE_L2 | OL_REFCOUNT_BLOCK | OL_INACTIVE_L1
TEMPLATES: dict[str, int] = {
    "none": 0,
    "constant": _CONSTANT,
    "cached": _CACHED,
    "all": _CACHED | OL_INACTIVE_L2,
}


def parse_overlap_check(options: Mapping[str, Any]) -> int:
    """The enabled-structure mask from the node options (``qcow2_update_options_prepare``).

    Accepts the flattened keys QEMU sees (``overlap-check`` as a template name,
    ``overlap-check.template``, ``overlap-check.<structure>``) and the nested
    QAPI alternate (``{"overlap-check": {"template": ..., "<structure>": ...}}``).
    """
    flat: dict[str, Any] = {k: v for k, v in options.items() if k.startswith("overlap-check")}
    nested = flat.get("overlap-check")
    if isinstance(nested, Mapping):
        del flat["overlap-check"]
        for k, v in nested.items():
            flat[f"overlap-check.{k}"] = v
    opt = flat.get("overlap-check")
    tmpl = flat.get("overlap-check.template")
    if opt is not None and tmpl is not None and opt != tmpl:
        raise OpenError(
            f"Conflicting values for qcow2 options 'overlap-check' ('{opt}') and "
            f"'overlap-check.template' ('{tmpl}')"
        )
    name = opt if opt is not None else (tmpl if tmpl is not None else "cached")
    if name not in TEMPLATES:
        raise OpenError(
            f"Unsupported value '{name}' for qcow2 option 'overlap-check'. "
            "Allowed are any of the following: none, constant, cached, all"
        )
    mask = TEMPLATES[str(name)]
    for bit, (key, _) in enumerate(_STRUCTS):
        value = flat.get(f"overlap-check.{key}")
        if value is None:
            continue
        on = parse_bool(value)
        if on is None:
            raise OpenError(f"Parameter 'overlap-check.{key}' expects 'on' or 'off'")
        mask = mask | (1 << bit) if on else mask & ~(1 << bit)
    return mask


def _overlaps(a: int, an: int, b: int, bn: int) -> bool:
    """QEMU's ``ranges_overlap`` on uint64: a zero-length second range wraps its end.

    That makes an empty structure at offset 0 overlap everything, which QEMU 7.2
    shows for the bitmap directory when the bitmaps autoclear bit is set without
    a bitmaps extension (every write is refused); txgraph keeps the same answer.
    """
    wrap = (1 << 64) - 1
    last1 = (a + an - 1) & wrap
    last2 = (b + bn - 1) & wrap
    return not (last2 < a or last1 < b)


class OverlapChecker:
    """``qcow2_pre_write_overlap_check`` for one node."""

    def __init__(self, node: Qcow2Node, mask: int) -> None:
        self.node = node
        self.mask = mask

    def find(self, offset: int, size: int, ign: int = 0) -> int:
        """``qcow2_check_metadata_overlap``: the first overlapping structure bit, or 0."""
        chk = self.mask & ~ign
        if size <= 0 or not chk:
            return 0
        h = self.node.header
        cs = h.cluster_size
        if chk & OL_MAIN_HEADER and offset < cs:
            return OL_MAIN_HEADER
        start = offset - offset % cs
        size = -(-(offset - start + size) // cs) * cs
        if (
            chk & OL_ACTIVE_L1
            and h.l1_size
            and _overlaps(start, size, h.l1_table_offset, h.l1_size * 8)
        ):
            return OL_ACTIVE_L1
        if chk & OL_REFCOUNT_TABLE and _overlaps(
            start, size, h.refcount_table_offset, h.refcount_table_clusters * cs
        ):
            return OL_REFCOUNT_TABLE
        if (
            chk & OL_SNAPSHOT_TABLE
            and h.snapshots_size
            and _overlaps(start, size, h.snapshots_offset, h.snapshots_size)
        ):
            return OL_SNAPSHOT_TABLE
        if chk & OL_INACTIVE_L1 and any(
            sn.l1_size and _overlaps(start, size, sn.l1_table_offset, sn.l1_size * 8)
            for sn in h.snapshots
        ):
            return OL_INACTIVE_L1
        if chk & OL_ACTIVE_L2 and self._sorted_hit(self.node.map.l2_table_offsets(), start, size):
            return OL_ACTIVE_L2
        refs = getattr(self.node.writer, "refs", None)
        if (
            chk & OL_REFCOUNT_BLOCK
            and refs is not None
            and self._hits(refs.table, C.REFT_OFFSET_MASK, start, size)
        ):
            return OL_REFCOUNT_BLOCK
        if chk & OL_INACTIVE_L2 and self._inactive_l2(start, size):
            return OL_INACTIVE_L2
        if chk & OL_BITMAP_DIRECTORY and h.autoclear_features & C.AUTOCLEAR_BITMAPS:
            ext = h.bitmaps_ext or bytes(24)  # no extension: directory at 0, size 0
            dir_size = int.from_bytes(ext[8:16], "big")
            dir_off = int.from_bytes(ext[16:24], "big")
            if _overlaps(start, size, dir_off, dir_size):
                return OL_BITMAP_DIRECTORY
        return 0

    def _hits(self, table: np.ndarray, mask: int, start: int, size: int) -> bool:
        """Does any cluster-sized table named by ``table`` overlap ``[start, start+size)``?"""
        offs = table & np.uint64(mask)
        cs = self.node.header.cluster_size
        lo = np.uint64(max(0, start - cs + 1))
        hit = (offs != 0) & (offs >= lo) & (offs < np.uint64(start + size))
        return bool(hit.any())

    def _sorted_hit(self, offs: np.ndarray, start: int, size: int) -> bool:
        """Like :meth:`_hits` on a sorted array of non-zero offsets, in O(log n)."""
        cs = self.node.header.cluster_size
        k = int(np.searchsorted(offs, np.uint64(max(0, start - cs + 1))))
        return k < len(offs) and int(offs[k]) < start + size

    def _inactive_l2(self, start: int, size: int) -> bool:
        """Snapshot L2 tables: QEMU reads each snapshot's L1 for this (``all`` only)."""
        from txgraph.io.qcow2.snapshots import validate_snapshot_l1

        h = self.node.header
        for sn in h.snapshots:
            try:
                validate_snapshot_l1(h, sn)
            except OpenError:
                raise IOFailure("Invalid argument", 22) from None
            raw = self.node._fread(sn.l1_table_offset, sn.l1_size * 8)
            l1 = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
            if self._hits(l1, C.L1E_OFFSET_MASK, start, size):
                return True
        return False

    def check(self, offset: int, size: int, ign: int = 0) -> None:
        """Refuse a write that would hit metadata: corrupt the image, fail with EIO."""
        bit = self.find(offset, size, ign)
        if bit:
            name = _STRUCTS[bit.bit_length() - 1][1]
            raise self.node.signal_corruption(
                f"Preventing invalid write on metadata (overlaps with {name})",
                offset=offset,
                size=size,
            )

    def check_data(self, offset: int, size: int) -> None:
        """Guest data (and COW) writes; nothing to check when they go to a data file."""
        if not self.node.header.has_data_file:
            self.check(offset, size, 0)
