"""A read map merged across a read-only qcow2 backing chain.

QEMU's ``qcow2_co_preadv_part`` looks up one layer at a time and recurses into
the backing node for every unallocated part (``bdrv_co_preadv_part`` on
``bs->backing``); txgraph's plain path does the same (:meth:`Qcow2Node._readinto`
splits each layer's range into runs with numpy, then recurses). For a chain of
qcow2 images that nothing writes, the answer of that recursion is a function
of the L2 tables alone, so it is computed once per L1 slot: for every guest
cluster, the first layer (top down) that allocates it and the host offset
there. Consecutive clusters stored contiguously in the same layer form one
*run*; a request then costs one bisect plus one copy per run, whatever the
depth of the chain. The guest-visible result is the recursion's, byte for byte:

- data comes from the first layer whose entry is data (``code >= 0``);
- a zero entry (``ZERO``) in a layer hides everything below it;
- clusters no qcow2 layer allocates are read through the deepest qcow2
  layer's ``_read_backing`` (its non-qcow2 backing, or zeroes);
- compressed, extended-L2 mixed and corrupt entries are never merged: a request
  touching one takes the plain path, so errors and corruption reports are the
  plain path's.

When it applies: every layer is a :class:`Qcow2Node` with no writer (opened
read-only), no external data file and no encryption, all with the same cluster
and L2 geometry, and the request lies below the smallest virtual size in the
chain (beyond it a layer's own end-of-image zeroes would apply). Anything else
falls back to the plain path.

Staleness: each merged slot records, per layer, the node, its ``L2Map`` object
and that map's ``gen`` (bumped by every mapping change) plus the ``file`` and
``backing`` children it saw. Each request re-checks the chain against them
without any lock (a few attribute reads per layer): a swapped child (the
Runtime's edge swap under drain), a reopen that made a layer writable, a dead
layer or a changed map makes the view rebuild (or the request fall back). The
race window is the one the plain path's lock-free reads already accept: a
request that validated just before a change reads what was valid when it looked.

Owner and lock: the top :class:`Qcow2Node` owns its ``ChainMap``; ``_lock``
guards ``_slots`` and ``_chain`` (lookups, builds and evictions) and is held
across a build, so two readers never build the same slot. A build takes each
layer's node ``lock`` in turn, top down, one at a time. Lock order: a caller
may already hold the lock of a node *above* this chain (a writer's
copy-on-write read of its backing), then ``_lock``, then one node lock of the
chain; nothing takes ``_lock`` while holding a lock of a node in its own chain,
so there is no cycle.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from typing import Any

import numpy as np

from txgraph.io.buffers import child_readinto
from txgraph.io.driver import reacts_to_events
from txgraph.io.qcow2.l2map import UNALLOC, ZERO, L2Map

#: a :class:`~txgraph.io.qcow2.driver.Qcow2Node` (not imported: the driver imports this)
Qcow2Node = Any

__all__ = ["ChainMap", "MAX_SLOTS"]

#: merged slots kept per chain (each is O(runs) small ints; 16 slots of 64 KiB
#: clusters cover 8 GiB)
MAX_SLOTS = 16
#: the deepest chain merged (deeper chains read through the plain recursion)
MAX_DEPTH = 64
_ZEROS = memoryview(bytes(1 << 20))


class _Slot:
    """The runs of one L1 slot: parallel lists, sorted by ``starts`` (slot-relative)."""

    __slots__ = ("starts", "ends", "layers", "codes", "fast", "stamp", "limit")

    def __init__(self, stamp: tuple[Any, ...], limit: int) -> None:
        #: the smallest virtual size in the chain: requests must end below it
        self.limit = limit
        self.starts: list[int] = []
        self.ends: list[int] = []
        #: index into the chain for data runs; -1 for ZERO, -2 for "below the chain"
        self.layers: list[int] = []
        #: host offset of the run's first cluster (data runs)
        self.codes: list[int] = []
        #: False when some cluster of the slot needs the plain path
        self.fast: list[bool] = []
        self.stamp = stamp


def _layers(top: Qcow2Node) -> list[Qcow2Node] | None:
    """The qcow2 layers from ``top`` down, or None when the chain cannot be merged."""
    out: list[Qcow2Node] = []
    node: Any = top
    cb, l2b = top.cluster_bits, top.map.l2b
    while _is_qcow2(node) and len(out) < MAX_DEPTH:
        if (
            node.writer is not None
            or node.dead
            or node.header.has_data_file
            or node.crypto.volume is not None
            or node.crypto.aes is not None
            or node.cluster_bits != cb
            or node.map.l2b != l2b
            or not _ignores_debug_events(node.children.get("file"))
        ):
            return None
        out.append(node)
        node = node.children.get("backing")
    if _is_qcow2(node):
        return None  # deeper than MAX_DEPTH
    return out


def _ignores_debug_events(child: Any) -> bool:
    """Whether a layer's ``file`` child ignores BLKDBG events; blkdebug does not (every
    data read of its layer must raise ``read_aio`` on it), so its chain is not merged."""
    return child is None or not reacts_to_events(child)


def _is_qcow2(node: Any) -> bool:
    """A qcow2 node: every one has its ChainMap (subclasses of it included)."""
    return isinstance(getattr(node, "chain_map", None), ChainMap)


def _stamp(layers: list[Qcow2Node]) -> tuple[Any, ...]:
    """What a merged view depends on; compared by identity and value on every request."""
    parts: list[Any] = []
    for n in layers:
        m = n.map
        parts += (n, m, m.gen, n.children.get("file"), n.children.get("backing"))
    return tuple(parts)


def _valid(top: Qcow2Node, stamp: tuple[Any, ...]) -> bool:
    node: Any = top
    for k in range(0, len(stamp), 5):
        if (
            node is not stamp[k]
            or node.writer is not None
            or node.dead
            or node.map is not stamp[k + 1]
            or node.map.gen != stamp[k + 2]
        ):
            return False
        ch = node.children
        if ch.get("file") is not stamp[k + 3]:
            return False
        node = ch.get("backing")
        if node is not stamp[k + 4]:
            return False
    return True


def _slot_codes(node: Qcow2Node, i: int) -> np.ndarray:
    """A copy of slot ``i``'s host codes in ``node`` (compiled under its lock)."""
    m: L2Map = node.map
    with node.lock:
        if m._unallocated(i):
            return np.full(m.n, UNALLOC, dtype=np.int64)
        return m.slot(i).copy()


def _build(layers: list[Qcow2Node], i: int, stamp: tuple[Any, ...]) -> _Slot:
    top = layers[0]
    n, cs = top.map.n, top.cluster_size
    codes = _slot_codes(top, i)
    which = np.zeros(n, dtype=np.int64)
    for k in range(1, len(layers)):
        hole = codes == UNALLOC
        if not hole.any():
            break
        lower = _slot_codes(layers[k], i)
        codes[hole] = lower[hole]
        which[hole] = k
    which[codes == UNALLOC] = -2
    which[codes == ZERO] = -1
    slow = codes < UNALLOC  # COMPRESSED, INVALID, MIXED: the plain path decides
    # A run continues while the layer is the same and the host offset moves on by one
    # cluster (data) or stays the same class (ZERO / below the chain); slow clusters
    # are runs of their own.
    step = np.where(codes[:-1] >= 0, cs, 0)
    cont = (which[1:] == which[:-1]) & (codes[1:] == codes[:-1] + step)
    cont &= ~slow[1:] & ~slow[:-1]
    starts = np.concatenate([[0], np.flatnonzero(~cont) + 1])
    ends = np.concatenate([starts[1:], [n]])
    s = _Slot(stamp, min(x.header.size for x in layers))
    s.starts = starts.tolist()
    s.ends = ends.tolist()
    s.layers = which[starts].tolist()
    s.codes = codes[starts].tolist()
    s.fast = (~slow[starts]).tolist()
    return s


class ChainMap:
    """The merged read view of one read-only qcow2 chain (see the module docstring)."""

    def __init__(self, top: Qcow2Node) -> None:
        self.top = top
        self._lock = threading.Lock()
        self._slots: OrderedDict[int, _Slot] = OrderedDict()
        #: the chain as last built (``None``: not mergeable when last looked)
        self._chain: list[Qcow2Node] | None = None
        #: counters for tests and diagnostics
        self.builds = 0
        self.served = 0

    def _get(self, i: int) -> tuple[_Slot, list[Qcow2Node]] | None:
        with self._lock:
            s = self._slots.get(i)
            chain = self._chain
            if s is not None and chain is not None and _valid(self.top, s.stamp):
                self._slots.move_to_end(i)
                return s, chain
            chain = _layers(self.top)
            if chain is None:
                return None
            stamp = _stamp(chain)
            if self._chain is None or _stamp(self._chain) != stamp:
                self._slots.clear()
            self._chain = chain
            s = _build(chain, i, stamp)
            if not _valid(self.top, stamp):  # changed while we built: not this time
                return None
            self.builds += 1
            self._slots[i] = s
            if len(self._slots) > MAX_SLOTS:
                self._slots.popitem(last=False)
            return s, chain

    def readinto(self, offset: int, out: memoryview) -> bool:
        """Serve the whole request from the merged view; False if the plain path must."""
        got = self.plan(offset, len(out))
        if got is None:
            return False
        chain, plan = got
        self.served += 1
        self._copy(chain, offset, out, plan)
        return True

    def plan(
        self, offset: int, n: int
    ) -> tuple[list[Qcow2Node], list[tuple[int, int, int, int]]] | None:
        """The copies a read of ``[offset, offset+n)`` (``n > 0``) makes from the merged
        view: the chain and, per run, ``(pos, run_end, layer, host)``, where ``layer``
        indexes the chain (its ``file`` child holds the bytes at ``host``), -1 means
        zeroes and -2 the deepest layer's ``_read_backing``. None: the plain path must
        serve it. (``txgraph bench io`` replays the plan without the driver as its floor.)
        """
        top = self.top
        cb = top.cluster_bits
        l2b = top.map.l2b
        end = offset + n
        pos = offset
        plan: list[tuple[int, int, int, int]] = []
        chain: list[Qcow2Node] | None = None
        while pos < end:
            c = pos >> cb
            i = c >> l2b
            got = self._get(i)
            if got is None:
                return None
            s, chain = got
            if end > s.limit:
                return None
            base = i << l2b
            k = bisect_right(s.starts, c - base) - 1
            last = (end - 1) >> cb
            nruns = len(s.starts)
            while pos < end:
                if not s.fast[k]:
                    return None
                run_end = min(end, (base + s.ends[k]) << cb)
                host = s.codes[k] + pos - ((base + s.starts[k]) << cb)
                plan.append((pos, run_end, s.layers[k], host))
                pos = run_end
                if base + s.ends[k] > last:
                    break
                k += 1
                if k >= nruns:
                    break
        assert chain is not None
        return chain, plan

    @staticmethod
    def _copy(
        chain: list[Qcow2Node], offset: int, out: memoryview, plan: list[tuple[int, int, int, int]]
    ) -> None:
        for pos, run_end, layer, host in plan:
            a, b = pos - offset, run_end - offset
            if layer >= 0:
                child_readinto(chain[layer].children["file"], host, out[a:b])
            elif layer == -1:
                while a < b:
                    k = min(b - a, len(_ZEROS))
                    out[a : a + k] = _ZEROS[:k]
                    a += k
            else:
                chain[-1]._read_backing(pos, out[a:b], False)
