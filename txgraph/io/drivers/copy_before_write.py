"""The ``copy-before-write`` filter: a guest write first saves the old data to the target.

Reproduces QEMU 7.2's block/copy-before-write.c with its block-copy state
(block/block-copy.c) as far as the data goes: every cluster starts out "to be
copied" (``copy_bitmap``); a write, zero write or discard through the filter
first copies the clusters it touches that are still to be copied from the
source (``file``) to the ``target``, then goes to the source. A backup job
copies the remaining clusters in the background through :meth:`copy_range`.
The cluster size is the target's, at least 64 KiB
(``block_copy_calculate_cluster_size``). A stretch the source reads as zeroes
is written to the target as zeroes (``block_copy_do_copy``'s zero path). With
``compress`` (backup's ``compress: true``) each block-copy cluster of data is a
compressed write (``BDRV_REQ_WRITE_COMPRESSED``: the target's ``write_compressed``,
which passes the generic layer of every node on its way down, as in QEMU).

Lock discipline: ``_lock`` serialises everything that reads or clears the copy
bitmap together with the copy it decides on, and a guest write's own write to
the source, so a cluster is always saved before any write changes it (QEMU
serialises the same requests with ``block_copy_task`` and request waits).
Guest reads are not serialised.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.chain import reads_as_zero
from txgraph.io.driver import DriverNode, FilterNode
from txgraph.io.mirror import DirtyBitmap
from txgraph.io.registry import register

__all__ = ["CopyBeforeWriteNode"]

_DEFAULT_CLUSTER = 64 * 1024


@register("copy-before-write")
class CopyBeforeWriteNode(FilterNode):
    driver_name = "copy-before-write"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        if "target" not in self.children:
            raise OpenError('A block device must be specified for "target"')
        cluster = getattr(self.children["target"], "cluster_size", 0) or 0
        self.cluster_size = max(_DEFAULT_CLUSTER, int(cluster))
        self.to_copy = DirtyBitmap(self.cluster_size, self.filtered.size())
        self.to_copy.mark(0, self.to_copy.length)
        self._lock = threading.Lock()
        #: ``block_copy_set_copy_opts(compress)``: data goes to the target as compressed
        #: clusters, one block-copy cluster per write (set by the backup job, under _lock)
        self.compress = False

    # -- block-copy -----------------------------------------------------------------------
    def _save(self, offset: int, length: int) -> int:
        """Copy the still-to-be-copied clusters of a range (lock held); bytes copied."""
        copied = 0
        for start, n in self.to_copy.take_range(offset, length):
            src, target = self.filtered, self.children["target"]
            pos, end = start, start + n
            while pos < end:
                zero, m = reads_as_zero(src, pos, end - pos)
                m = max(1, min(m, end - pos))
                if self.compress:
                    # COPY_READ_WRITE_CLUSTER: one block-copy cluster at a time; a cluster
                    # is zeroes only when all of it reads as zeroes
                    whole = min(self.cluster_size - pos % self.cluster_size, end - pos)
                    zero, m = zero and m >= whole, whole
                if zero:
                    _on_target(target.write_zeroes, pos, m, may_unmap=False)
                elif self.compress:
                    _on_target(target.write_compressed, pos, src.read(pos, m))
                else:
                    data = src.read(pos, m)
                    _on_target(target.write, pos, data)
                pos += m
            copied += n
        return copied

    def copy_range(self, offset: int, length: int) -> int:
        """The backup job's copy of ``[offset, offset+length)``; bytes actually copied."""
        with self._lock:
            try:
                return self._save(offset, length)
            except Exception:
                self.to_copy.mark(offset, length)
                raise

    def skip(self, offset: int, length: int) -> None:
        """``block_copy_reset``: nothing to copy there (sync=top, unallocated)."""
        with self._lock:
            for _s, _n in self.to_copy.take_range(offset, length):
                pass

    # -- guest requests -------------------------------------------------------------------
    def write(self, offset: int, data: bytes) -> None:
        with self._lock:
            self._save(offset, len(data))
            self.filtered.write(offset, data)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        with self._lock:
            self._save(offset, length)
            self.filtered.write_zeroes(offset, length, may_unmap=may_unmap)

    def discard(self, offset: int, length: int) -> None:
        with self._lock:
            self._save(offset, length)
            self.filtered.discard(offset, length)


def _on_target(op: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    """A failed target write is the job's *write* error (BLOCK_JOB_ERROR operation)."""
    try:
        op(*args, **kwargs)
    except IOFailure as exc:
        exc.job_read = False  # type: ignore[attr-defined]
        raise
