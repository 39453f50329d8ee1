"""The internal snapshot table of a qcow2 image (read side).

Reproduces QEMU 7.2's ``qcow2_read_snapshots``: entries are 8-byte aligned,
extra data is capped at 1 KiB per entry and the whole table at 64 MiB, and the
snapshot L1 tables are validated like the active one when they are used
(``qcow2_validate_table`` in ``qcow2_snapshot_load_tmp`` / the refcount walk).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from txgraph.errors import OpenError
from txgraph.io.qcow2 import constants as C

if TYPE_CHECKING:
    # typing only: the header module calls read_snapshots while it parses
    from txgraph.io.qcow2.header import Qcow2Header, Reader

__all__ = ["Snapshot", "read_snapshots", "snapshot_qmp", "validate_snapshot_l1"]

_SN = struct.Struct(">QIHHIIQII")


@dataclass
class Snapshot:
    """One internal snapshot table entry (``QCowSnapshotHeader`` + extra data)."""

    id: str
    name: str
    l1_table_offset: int
    l1_size: int
    date_sec: int
    date_nsec: int
    vm_clock_nsec: int
    vm_state_size: int
    disk_size: int | None
    icount: int | None


def read_snapshots(h: Qcow2Header, read: Reader) -> tuple[list[Snapshot], int]:
    """Parse the snapshot table, bounded by QEMU's per-entry and total limits.

    Returns the entries and the table's size in bytes.
    """
    out: list[Snapshot] = []
    offset = h.snapshots_offset
    for i in range(h.nb_snapshots):
        offset = (offset + 7) & ~7
        (l1_off, l1_size, id_len, name_len, date_sec, date_nsec, vm_clock, vm_state, extra_len) = (
            _SN.unpack(read(offset, _SN.size))
        )
        offset += _SN.size
        if extra_len > C.MAX_SNAPSHOT_EXTRA_DATA:
            raise OpenError(f"Too much extra metadata in snapshot table entry {i}")
        extra = read(offset, extra_len)
        offset += extra_len
        disk_size: int | None = h.size
        icount: int | None = None
        if extra_len >= 8:
            vm_state = struct.unpack_from(">Q", extra, 0)[0]
        if extra_len >= 16:
            disk_size = struct.unpack_from(">Q", extra, 8)[0]
        if extra_len >= 24:
            raw_icount = struct.unpack_from(">Q", extra, 16)[0]
            icount = None if raw_icount == (1 << 64) - 1 else raw_icount
        sid = read(offset, id_len).decode("utf-8", "replace")
        offset += id_len
        name = read(offset, name_len).decode("utf-8", "replace")
        offset += name_len
        if offset - h.snapshots_offset > C.MAX_SNAPSHOTS_TABLE_SIZE:
            raise OpenError("Snapshot table is too big")
        out.append(
            Snapshot(
                sid,
                name,
                l1_off,
                l1_size,
                date_sec,
                date_nsec,
                vm_clock,
                vm_state,
                disk_size,
                icount,
            )
        )
    return out, offset - h.snapshots_offset


def validate_snapshot_l1(h: Qcow2Header, sn: Snapshot) -> None:
    """Snapshot L1 tables get the same table check as the active L1 (CVE-2014-0145)."""
    if sn.l1_size > C.MAX_L1_SIZE // 8:
        raise OpenError("Snapshot L1 table too large")
    if C.INT64_MAX - sn.l1_size * 8 < sn.l1_table_offset or sn.l1_table_offset % h.cluster_size:
        raise OpenError("Snapshot L1 table offset invalid")


def snapshot_qmp(sn: Snapshot) -> dict[str, Any]:
    """One ``SnapshotInfo`` as QEMU's ``query-named-block-nodes`` shows it."""
    d: dict[str, Any] = {
        "id": sn.id,
        "name": sn.name,
        "vm-state-size": sn.vm_state_size,
        "date-sec": sn.date_sec,
        "date-nsec": sn.date_nsec,
        "vm-clock-sec": sn.vm_clock_nsec // 1_000_000_000,
        "vm-clock-nsec": sn.vm_clock_nsec % 1_000_000_000,
    }
    if sn.icount is not None:
        d["icount"] = sn.icount
    return d
