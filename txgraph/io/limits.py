"""Block limits that decide permissions: the request alignment of a node.

QEMU keeps a node's I/O limits in ``bs->bl`` (``bdrv_refresh_limits``). One of
them changes what the permission system accepts: ``bdrv_node_refresh_perm``
refuses WRITE or WRITE_UNCHANGED without RESIZE on a node whose length (whole
sectors) is not a multiple of its ``request_alignment`` (rule P5 in
reference/qemu-graph.md §2.2), because the block layer could not write the
image's last, partial block without growing it.

Which nodes have an alignment above one byte, as in QEMU 7.2:

* file-posix (``file``, ``host_device``) opened with ``cache.direct=on``
  (``BDRV_O_NOCACHE``): ``raw_probe_alignment`` asks the device for its logical
  block size (``BLKSSZGET``), and where that does not answer (a regular file),
  tries reads of 1, 512, 1024, 2048 and 4096 bytes at offset 0; the first that
  is not refused with EINVAL wins, except that a 1-byte success counts as the
  safe value max(4096, page size). At open the probe reads through the new
  O_DIRECT descriptor (so an allocated start of a file on a 512-byte-sector
  disk gives 512, a hole gives the safe value). Observed on QSD 7.2 (strace): a
  reopen that switches ``cache.direct`` on probes through the node's previous,
  buffered descriptor, where a 1-byte read always succeeds, so the node ends up
  with the safe value whatever the disk;
* every other driver txgraph has: one byte (byte-granular interfaces).

The alignment is taken when the node opens and again when a reopen commits
(``bdrv_reopen_commit`` refreshes the limits), never while a reopen is being
prepared: the permission refresh of the reopen itself still sees the old value.

Ownership: the value lives on the driver object, which the Runtime owns; it is
read under the session lock that serialises permission refreshes.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import struct

from txgraph.errors import BlockError
from txgraph.io.driver import DriverNode
from txgraph.model.perm_bits import Perm

__all__ = ["check_write_alignment", "file_request_alignment", "probe_request_alignment"]

_BLKSSZGET = 0x1268  # linux/fs.h: logical sector size of a block device
_MAX_BLOCKSIZE = 4096
_GUESSES = (1, 512, 1024, 2048, 4096)

P5_TEXT = (
    "Cannot get 'write' permission without 'resize': "
    "Image size is not a multiple of request alignment"
)


def probe_request_alignment(path: str | bytes, *, block_device: bool = False) -> int:
    """``raw_probe_alignment`` for a node opened with O_DIRECT: the request alignment.

    Returns 1 when the file cannot be opened with O_DIRECT at all (QEMU would
    have failed the open; txgraph's mapping does not need O_DIRECT, and an
    alignment of one byte never refuses a permission).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return 1
    try:
        if block_device:
            try:
                raw = fcntl.ioctl(fd, _BLKSSZGET, b"\0" * 4)
                size = int(struct.unpack("i", raw)[0])
                if size > 0:
                    return size
            except OSError:
                pass
        max_align = max(_MAX_BLOCKSIZE, mmap.PAGESIZE)
        buf = mmap.mmap(-1, max_align)  # page-aligned, as qemu_memalign gives it
        view = memoryview(buf)
        try:
            for align in _GUESSES:
                try:
                    os.preadv(fd, [view[:align]], 0)
                except OSError as e:
                    if e.errno == errno.EINVAL:
                        continue  # misaligned for O_DIRECT: try the next size
                # a success, or any other error (a failing disk): this size will do
                return align if align != 1 else max_align
        finally:
            view.release()
            buf.close()
        return 1
    finally:
        os.close(fd)


def file_request_alignment(
    path: str | bytes, *, direct: bool, probe_direct: bool, block_device: bool = False
) -> int:
    """A file-posix node's alignment after an open or a reopen commit.

    ``probe_direct`` says whether the descriptor QEMU probes through is an
    O_DIRECT one: true at open, and at a reopen only if the node already was
    ``cache.direct=on`` (see the module docstring).
    """
    if not direct:
        return 1  # buffered I/O: raw_probe_alignment does not probe
    if probe_direct or block_device:
        return probe_request_alignment(path, block_device=block_device)
    return max(_MAX_BLOCKSIZE, mmap.PAGESIZE)  # a buffered 1-byte read: the safe value


def check_write_alignment(node: DriverNode, perm: int) -> None:
    """Rule P5 of ``bdrv_node_refresh_perm``: a writer that may not resize needs the
    node's length to be a multiple of its request alignment."""
    if not perm & (Perm.WRITE | Perm.WRITE_UNCHANGED) or perm & Perm.RESIZE:
        return
    align = node.request_alignment
    if align > 1 and node.size() % align:
        raise BlockError(P5_TEXT, rule="P5-alignment", subjects=(node.node_name,))
