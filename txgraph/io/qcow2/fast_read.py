"""A qcow2 node's one-cluster read compiled into a closure (issue 15's random 4 KiB read).

A random small read of a plain qcow2 image (data in ``file``, no encryption, the
file child a plain :class:`~txgraph.io.drivers.file.FileNode`) is one L2 code
lookup and one guarded copy out of the file's mapping, as in
``qcow2_co_preadv_part`` for one data cluster. Written as a method, its Python
cost is mostly attribute lookups (``self.map``, ``self.header.size``,
``self.children``...): about a quarter of the read on a 2 GiB image. The closure
made here binds what cannot change without the node noticing, and checks what
can, on every call:

- bound: the L2 map object and its geometry, the cluster size, the virtual size,
  the node's ``children`` dict and its file child, :data:`PREADV_MIN`. The map is
  made again whenever the size or the L1 table changes (``truncate._remap``), so
  one identity check covers all of its fields and the size;
- checked per call: ``node.map`` is still that map, ``node.dead`` is false, the
  file child is still the same node; then, as ``FileNode.readinto``'s small-read
  branch does, the file's current mapping snapshot, its live length
  (``lseek(SEEK_END)``, so a file truncated underneath reads through ``preadv``
  and never faults) and the descriptor as it is now.

Anything else (several clusters, an uncompiled slot, a non-data code, a failed
check) goes to :meth:`Qcow2Node.readinto`, the general path, which behaves
exactly as without the closure. The closure is stored in the node's instance
dict under ``readinto``, so every caller that looks the method up by name
(``child_readinto``, the NBD export, the benchmarks) calls it directly; a
caller that kept a bound method reaches the same data through the general
path.

Concurrency: the closure reads the compiled L2 slots without the node's lock,
as the method does (see :mod:`txgraph.io.qcow2.driver`); installing and removing
it is a single dict store, atomic under the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from txgraph.io.drivers.file import PREADV_MIN, FileNode

if TYPE_CHECKING:
    from txgraph.io.qcow2.driver import Qcow2Node

__all__ = ["install_one_cluster_read", "remove_one_cluster_read", "OneClusterRead"]

#: ``readinto(offset, out)``, as :meth:`DriverNode.readinto`
OneClusterRead = Callable[[int, memoryview], None]


def install_one_cluster_read(node: Qcow2Node, f: FileNode) -> None:
    """Bind ``node``'s one-cluster read of its plain file child ``f`` (its
    ``children["file"]`` now, see ``inlinable_file``) as the node's ``readinto``;
    replaces an older one."""
    m = node.map
    codes_of, l2b, mask, nb = m.codes, m.l2b, m.n - 1, m.nb_clusters
    cb, in_cluster = node.cluster_bits, node.cluster_size - 1
    vsize = node.header.size
    children = node.children
    general = type(node).readinto
    lseek, seek_end, small = os.lseek, os.SEEK_END, PREADV_MIN

    def readinto(offset: int, out: memoryview) -> None:
        n = len(out)
        c = offset >> cb
        if (
            0 < n < small
            and c == (offset + n - 1) >> cb
            and offset + n <= vsize
            and c < nb
            and node.map is m
            and not node.dead
            and children.get("file") is f
        ):
            codes = codes_of[c >> l2b]
            if codes is not None:
                code = codes.item(c & mask)  # a Python int, half the cost of int()
                if code >= 0:
                    host = code + (offset & in_cluster)
                    w = f._map
                    if w is not None and host + n <= w[1]:
                        try:
                            live = lseek(f.fd, 0, seek_end)
                        except OSError:
                            live = 0
                        if host + n <= live:
                            out[:] = w[2][host : host + n]
                            return
        general(node, offset, out)

    readinto.__qualname__ = "Qcow2Node.readinto (one-cluster fast path)"
    node.__dict__["readinto"] = readinto
    node._one_cluster_for = (f, m)


def remove_one_cluster_read(node: Qcow2Node) -> None:
    """Drop the closure (at close: it refers to the node, a cycle otherwise left to
    the cyclic collector); the general path installs a new one when it applies."""
    node.__dict__.pop("readinto", None)
    node._one_cluster_for = None
