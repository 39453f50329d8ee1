"""Layer allocation for the guest-view rule, from the data plane's own block status.

:class:`RuntimeAllocation` answers :class:`txgraph.checker.guest_view.Allocation`
by asking each layer's driver object for ``block_status`` (qcow2's L2 map, the
other formats' maps, file's SEEK_DATA), the same answers ``qemu-img map`` and
the NBD ``base:allocation`` context are built from here: a layer allocates a
run when its own ``BDRV_BLOCK_ALLOCATED`` bit is set (``bdrv_is_allocated``),
its backing not consulted. Nothing is read or written.

Owner and lock discipline: built and used by the thread holding the session's
command lock while a transaction validates, before ``Runtime.apply``: the live
driver objects are then still the graph *before* the change and prepared ones
the nodes the change opens. Each query runs as one request of the Runtime
(shared graph lock), like any guest read. A node without a driver object, or
one that cannot tell (``allocation_unknown``: a plan's imported node whose image
could not be opened), is *unknown*: it counts as all data where it is a layer
that changes, and as hiding nothing where it stays above the change, so an
unknown layer can only make the rule report more, never less.
"""

from __future__ import annotations

import numpy as np

from txgraph.io.driver import DriverNode
from txgraph.io.qcow2.driver import Qcow2Node
from txgraph.io.qcow2.l2map import COMPRESSED, UNALLOC
from txgraph.io.runtime import Runtime

__all__ = ["RuntimeAllocation", "allocated_runs"]

#: a layer that claims no size is treated as this large (its runs are still exact)
_UNKNOWN_SIZE = 1 << 62


def _add(out: list[tuple[int, int]], off: int, n: int) -> None:
    if n <= 0:
        return
    if out and out[-1][0] + out[-1][1] == off:
        out[-1] = (out[-1][0], out[-1][1] + n)
    else:
        out.append((off, n))


def _walk(node: DriverNode, offset: int, end: int, out: list[tuple[int, int]]) -> None:
    """The generic walk: one ``block_status`` call per run."""
    pos = offset
    while pos < end:
        st = node.block_status(pos, end - pos)
        n = max(1, min(st.length, end - pos))
        if st.allocated:
            _add(out, pos, n)
        pos += n


def allocated_runs(node: DriverNode, offset: int, length: int) -> list[tuple[int, int]]:
    """``bdrv_is_allocated`` over ``[offset, offset + length)``: the runs ``node`` defines."""
    out: list[tuple[int, int]] = []
    if isinstance(node, Qcow2Node):
        _qcow2_runs(node, offset, min(offset + length, node.size()), out)
    else:
        _walk(node, offset, offset + length, out)
    return out


def _qcow2_runs(node: Qcow2Node, offset: int, end: int, out: list[tuple[int, int]]) -> None:
    """The same answer as :func:`_walk` on qcow2, one numpy scan per L2 table.

    A fragmented layer has one block-status run per extent; here an L2 table's
    codes are classified at once (data and zero clusters are allocated, UNALLOC
    is not, as ``qcow2_co_block_status`` says). L2 tables holding compressed,
    mixed-subcluster or corrupt entries take the generic walk, so its answers
    (and errors) stay the only definition.
    """
    if end <= offset:
        return
    node._alive()
    m, cb = node.map, node.cluster_bits
    c, c_end = offset >> cb, ((end - 1) >> cb) + 1
    with node.lock:  # slot compilation touches the slot cache, as in block_status
        while c < c_end:
            i = c >> m.l2b
            if i >= m.nslots:
                break
            lo = c & (m.n - 1)
            step = min(m.n - lo, c_end - c)
            if m.codes[i] is None and m.l2_offset(i) == 0:  # no L2 table: nothing allocated
                c = max(c + step, min(c_end, m.next_allocated_slot(i + 1) << m.l2b))
                continue
            seg = m.slot(i)[lo : lo + step]
            if bool((seg <= COMPRESSED).any()):
                _walk(node, max(offset, c << cb), min(end, (c + step) << cb), out)
                c += step
                continue
            flags = np.concatenate(([0], (seg != UNALLOC).astype(np.int8), [0]))
            edges = np.diff(flags)
            for s, e in zip(
                np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()
            ):
                a, b = max(offset, (c + s) << cb), min(end, (c + e) << cb)
                _add(out, a, b - a)
            c += step


class RuntimeAllocation:
    """:class:`~txgraph.checker.guest_view.Allocation` over a Runtime's driver objects.

    ``staged``: prefer the objects a transaction prepared (the nodes the change
    opens) over the live ones; both sides agree on every node they share, since
    a reopen changes options, never the image's allocation.
    """

    def __init__(self, runtime: Runtime, *, staged: bool) -> None:
        self.runtime = runtime
        self.staged = staged
        self._sizes: dict[str, int] = {}

    def _node(self, layer: str) -> DriverNode | None:
        return self.runtime.driver_object(layer, staged=self.staged)

    def size(self, layer: str) -> int:
        if layer not in self._sizes:
            node = self._node(layer)
            with self.runtime.request():
                self._sizes[layer] = node.size() if node is not None else _UNKNOWN_SIZE
        return self._sizes[layer]

    def known(self, layer: str) -> bool:
        node = self._node(layer)
        return node is not None and not getattr(node, "allocation_unknown", False)

    def allocated(self, layer: str, offset: int, length: int) -> list[tuple[int, int]]:
        node = self._node(layer)
        if length <= 0:
            return []
        if node is None:
            return [(offset, length)]
        with self.runtime.request():
            return allocated_runs(node, offset, length)
