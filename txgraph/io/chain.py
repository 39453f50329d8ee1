"""Backing-chain walks of the data plane: allocation and zero status *above* a base.

Reproduces ``bdrv_co_common_block_status_above`` (block/io.c) as the callers
in txgraph need it: a node, then through filters (``bdrv_filter_bs``) and
backing children (``bdrv_cow_bs``) down the chain, the first layer that
allocates a stretch decides it; a stretch no layer allocates reads as zeroes
exactly when the last layer says so (no backing, or past the backing's end).

* :func:`allocated_above` is ``bdrv_is_allocated_above(top, base, include_base)``
  (copy-on-read's ``bottom`` rule);
* :func:`status_above` is ``bdrv_block_status_above(bs, NULL)``, what the NBD
  server answers ``NBD_CMD_BLOCK_STATUS`` with (``blockstatus_to_extents``);
* :func:`reads_as_zero` is its ZERO bit, which
  the NBD server consults before a structured read (``nbd_co_send_sparse_read``):
  a stretch that reads as zeroes is answered as a hole without reading it, so
  a copy-on-read filter, blkdebug or quorum below never sees that read.
"""

from __future__ import annotations

import dataclasses

from txgraph.errors import IOFailure
from txgraph.io.driver import BlockStatus, DriverNode
from txgraph.model.drivers import DRIVER_SPECS
from txgraph.model.perm_bits import Role

__all__ = [
    "FILTER_DRIVERS",
    "skip_filters",
    "chain",
    "allocated_above",
    "reads_as_zero",
    "status_above",
    "sparse_read",
    "HoleCheckFailure",
]


def _filter_children() -> dict[str, str]:
    """``is_filter`` drivers and the child ``bdrv_filter_child`` returns: ``backing`` for the
    job filters, else the child whose role is FILTERED (from the driver specs)."""
    out: dict[str, str] = {}
    for spec in DRIVER_SPECS.values():
        if not spec.is_filter:
            continue
        if spec.filtered_child_is_backing:
            out[spec.name] = "backing"
            continue
        for child in spec.children:
            if child.role & Role.FILTERED:
                out[spec.name] = child.name
                break
    return out


#: Drivers that pass I/O through one child unchanged (``is_filter``), and that child
FILTER_DRIVERS: dict[str, str] = _filter_children()


def skip_filters(node: DriverNode | None) -> DriverNode | None:
    """``bdrv_skip_filters``."""
    while node is not None and node.driver_name in FILTER_DRIVERS:
        nxt = node.children.get(FILTER_DRIVERS[node.driver_name])
        if nxt is None:
            break
        node = nxt
    return node


def chain(top: DriverNode) -> list[DriverNode]:
    """Top, its backing, its backing's backing... (filters skipped, ``bdrv_cow_bs``)."""
    out: list[DriverNode] = []
    node = skip_filters(top)
    while node is not None and node not in out:
        out.append(node)
        node = skip_filters(node.children.get("backing"))
    return out


def allocated_above(
    layers: list[DriverNode], bottom: str | None, offset: int, length: int
) -> tuple[bool, int]:
    """``bdrv_is_allocated_above(layers[0], bottom, include_base=true)``.

    Returns whether some layer down to ``bottom`` defines the first stretch,
    and that stretch's length.
    """
    n = length
    for layer in layers:
        st = layer.block_status(offset, n)
        n = max(1, min(n, st.length))
        if st.allocated:
            return True, n
        if layer.node_name == bottom:
            break
    return False, n


def status_above(node: DriverNode, offset: int, length: int) -> BlockStatus:
    """``bdrv_block_status_above(node, NULL)`` for the first stretch from ``offset``.

    The first layer of the chain that allocates the stretch decides it; where none
    does, the last layer's answer stands (zeroes without a backing or past its end),
    with ``allocated`` false. The stretch is as long as every layer asked agrees on.
    Layers that report no status of their own (``DriverNode.block_status``'s
    default) count as data.
    """
    n = length
    st = BlockStatus(offset, length, False, False)
    for depth, layer in enumerate(chain(node) or [node]):
        if depth and offset >= layer.size():
            # past a backing file's end the chain reads zeros (the layer above said so
            # already; the backing is not asked about a range it does not have)
            return BlockStatus(offset, n, False, True)
        st = layer.block_status(offset, n)
        n = max(1, min(n, st.length))
        if st.allocated:
            break
    return dataclasses.replace(st, length=n)


def reads_as_zero(node: DriverNode, offset: int, length: int) -> tuple[bool, int]:
    """``bdrv_block_status_above(node, NULL)``: does the first stretch read as zeroes?

    Returns (zero, stretch length), from :func:`status_above`.
    """
    st = status_above(node, offset, length)
    return st.zero, st.length


class HoleCheckFailure(IOFailure):
    """The block status a sparse read asks first failed (``nbd_co_send_sparse_read``'s
    "unable to check for holes"), as opposed to the read of a data stretch."""


def sparse_read(node: DriverNode, offset: int, length: int) -> bytes:
    """``nbd_co_send_sparse_read``'s reads: stretches that read as zeroes are not read.

    The guest data is the same as ``node.read(offset, length)``; what differs is
    which requests the graph below sees (one per data stretch, none for holes).
    A failed block status raises :class:`HoleCheckFailure` (QEMU answers it with an
    error reply), a failed read the plain :class:`~txgraph.errors.IOFailure` (QEMU 7.2
    drops the connection).
    """
    parts: list[bytes] = []
    pos, end = offset, offset + length
    while pos < end:
        try:
            zero, n = reads_as_zero(node, pos, end - pos)
        except IOFailure as err:
            raise HoleCheckFailure(f"unable to check for holes: {err.desc}", err.errno) from err
        n = min(n, end - pos)
        parts.append(bytes(n) if zero else node.read(pos, n))
        pos += n
    return b"".join(parts)
