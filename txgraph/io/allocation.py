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
(shared graph lock), like any guest read. A node without a driver object
(never opened in this process) is unknown and counts as fully allocated, the
safe side for a rule that refuses data loss.
"""

from __future__ import annotations

from txgraph.io.driver import DriverNode
from txgraph.io.runtime import Runtime

__all__ = ["RuntimeAllocation", "allocated_runs"]

#: a layer that claims no size is treated as this large (its runs are still exact)
_UNKNOWN_SIZE = 1 << 62


def allocated_runs(node: DriverNode, offset: int, length: int) -> list[tuple[int, int]]:
    """``bdrv_is_allocated`` over ``[offset, offset + length)``: the runs ``node`` defines."""
    out: list[tuple[int, int]] = []
    pos, end = offset, offset + length
    while pos < end:
        st = node.block_status(pos, end - pos)
        n = max(1, min(st.length, end - pos))
        if st.allocated:
            if out and out[-1][0] + out[-1][1] == pos:
                out[-1] = (out[-1][0], out[-1][1] + n)
            else:
                out.append((pos, n))
        pos += n
    return out


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

    def allocated(self, layer: str, offset: int, length: int) -> list[tuple[int, int]]:
        node = self._node(layer)
        if length <= 0:
            return []
        if node is None:
            return [(offset, length)]
        with self.runtime.request():
            return allocated_runs(node, offset, length)
