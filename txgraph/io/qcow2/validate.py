"""Per-entry validation before use, with QEMU 7.2's corruption messages.

The compiled map (:mod:`.l2map`) classifies every L2 entry once; an entry QEMU
would refuse becomes INVALID there. This module says *why*, in the words QEMU
passes to ``qcow2_signal_corruption``, depending on which path met the entry:

* reads, COW reads and block status (``qcow2_get_host_offset``):
  ``L2 table offset %#x unaligned (L1 index: %#x)``,
  ``Zero cluster entry found in pre-v3 image (L2 offset: %#x, L2 index: %#x)``,
  ``Compressed cluster entry found in image with external data file (...)``,
  ``Cluster allocation offset %#x unaligned (L2 offset: %#x, L2 index: %#x)``,
  ``External data file host cluster offset %#x does not match guest cluster
  offset: %#x, L2 index: %#x)`` and ``Invalid cluster entry found  (...)``;
* writes to a cluster the image claims to own (``handle_copied``):
  ``Data cluster offset %#x unaligned (guest offset: %#x)`` /
  ``Preallocated zero cluster offset %#x unaligned (guest offset: %#x)``;
* freeing an entry (``qcow2_free_any_cluster``): ``Cannot free unaligned
  cluster %#x`` — a non-fatal report, the cluster is simply not freed;
* refcount blocks (``qcow2_get_refcount``/``alloc_refcount_block``):
  ``Refblock offset %#x unaligned (reftable index: %#x)``.

QEMU's hex format is C's ``%#x``: ``0`` for zero, ``0x...`` otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from txgraph.io.qcow2 import constants as C

if TYPE_CHECKING:
    from txgraph.io.qcow2.driver import Qcow2Node

__all__ = ["hx", "read_message", "owned_write_message", "unaligned_free", "refblock_message"]


def hx(value: int) -> str:
    """C's ``%#x``/``%#" PRIx64``: no prefix for zero."""
    return f"{value:#x}" if value else "0"


def read_message(node: Qcow2Node, cluster: int) -> str:
    """Why ``qcow2_get_host_offset`` refuses the entry of guest ``cluster``."""
    m = node.map
    slot = cluster >> m.l2b
    bad = m.bad_slots.get(slot)
    if bad is not None:
        return bad
    raw, _bm = m.raw_entry(cluster)
    l2off = m.l2_offset(slot)
    idx = cluster & (m.n - 1)
    where = f"(L2 offset: {hx(l2off)}, L2 index: {hx(idx)})"
    h = node.header
    compressed = bool(raw & C.OFLAG_COMPRESSED)
    if compressed and h.has_data_file:
        return f"Compressed cluster entry found in image with external data file {where}"
    if not compressed and not h.extended_l2 and raw & C.OFLAG_ZERO and h.version < 3:
        return f"Zero cluster entry found in pre-v3 image {where}"
    host = raw & C.L2E_OFFSET_MASK
    if not compressed and host % h.cluster_size:
        return f"Cluster allocation offset {hx(host)} unaligned {where}"
    guest = cluster << h.cluster_bits
    if not compressed and h.has_data_file and (host or raw & C.OFLAG_COPIED) and host != guest:
        return (
            f"External data file host cluster offset {hx(host)} does not match guest "
            f"cluster offset: {hx(guest)}, L2 index: {hx(idx)})"
        )
    return f"Invalid cluster entry found  {where}"


def owned_write_message(node: Qcow2Node, cluster: int) -> str | None:
    """``handle_copied``: a COPIED cluster with an unaligned offset cannot be written in place."""
    raw, _ = node.map.raw_entry(cluster)
    if not raw & C.OFLAG_COPIED or raw & C.OFLAG_COMPRESSED:
        return None
    host = raw & C.L2E_OFFSET_MASK
    if not host % node.header.cluster_size:
        return None
    kind = "Preallocated zero" if (raw & C.OFLAG_ZERO and not node.header.extended_l2) else "Data"
    return (
        f"{kind} cluster offset {hx(host)} unaligned "
        f"(guest offset: {hx(cluster << node.header.cluster_bits)})"
    )


def unaligned_free(node: Qcow2Node, raw: int) -> bool:
    """``qcow2_free_any_cluster`` on an unaligned entry: report (non-fatal), do not free."""
    if raw & C.OFLAG_COMPRESSED:
        return False
    host = raw & C.L2E_OFFSET_MASK
    if not host % node.header.cluster_size:
        return False
    node.signal_corruption(f"Cannot free unaligned cluster {hx(host)}", fatal=False)
    return True


def refblock_message(offset: int, index: int) -> str:
    return f"Refblock offset {hx(offset)} unaligned (reftable index: {hx(index)})"
