"""The copy floor of a read benchmark: the same host reads with no driver at all.

A guest read of a qcow2 image ends as one or more copies of host file bytes into
the caller's buffer. What those copies cost is the floor of any driver written
in Python on this host: a ratio against ``qemu-img bench`` above
``floor / peer`` is out of reach whatever the driver does, and ``txgraph /
floor`` is the share the driver's own dispatch (Python) leaves of it.

:func:`host_plan` asks the driver's merged read map (``ChainMap.plan``) once,
outside any timing, which copies each request makes; the floors then replay
them with nothing but the primitive:

- :func:`preadv_floor`: one ``preadv`` per copy (what txgraph's file driver does
  for copies of 64 KiB and more, and what ``qemu-img bench`` does in the kernel);
- :func:`mmap_floor`: one slice copy per copy out of a fresh read-only mapping of
  each file, after the ``lseek(SEEK_END)`` that guards each of txgraph's mapped
  reads (a file truncated underneath must read zeroes, never raise SIGBUS; see
  :mod:`txgraph.io.drivers.file`), so this is the floor of a driver that keeps
  that rule.

Both open their files afresh each round, as the benchmark opens the image afresh
for each txgraph round, so both pay the first touch of the page tables too.
"""

from __future__ import annotations

import mmap
import os
import time
from typing import Any

from txgraph.io.buffers import aligned_buffer

__all__ = ["HostPlan", "host_plan", "mmap_floor", "preadv_floor"]

#: per request, its copies as (file index, host offset, length, offset in the buffer);
#: file index -1 means zeroes (a ZERO cluster of the merged map)
HostPlan = tuple[list[str], list[tuple[int, int, int, int]]]


def host_plan(node: Any, offsets: list[int], length: int) -> HostPlan | None:
    """The copies reads of ``length`` bytes at each of ``offsets`` make on ``node`` (a
    read-only qcow2 chain), flattened in request order; None when some request is not
    a plain copy (compressed or extended-L2 clusters, reads below the chain)."""
    files: list[str] = []
    index: dict[str, int] = {}
    copies: list[tuple[int, int, int, int]] = []
    for offset in offsets:
        got = node.chain_map.plan(offset, length)
        if got is None:
            return None
        chain, runs = got
        for pos, run_end, layer, host in runs:
            if layer == -1:
                copies.append((-1, 0, run_end - pos, pos - offset))
                continue
            if layer < 0:
                return None
            path = chain[layer].children["file"].filename
            if path not in index:
                index[path] = len(files)
                files.append(path)
            copies.append((index[path], host, run_end - pos, pos - offset))
    return files, copies


def preadv_floor(plan: HostPlan, length: int) -> float:
    """Seconds to make every copy of ``plan`` with one ``preadv`` each."""
    files, copies = plan
    out = aligned_buffer(length)
    zeros = memoryview(bytes(length))
    fds: list[int] = []
    try:
        fds += (os.open(p, os.O_RDONLY) for p in files)
        preadv = os.preadv
        start = time.perf_counter()
        for f, host, n, at in copies:
            if f < 0:
                out[at : at + n] = zeros[:n]
            else:
                preadv(fds[f], [out[at : at + n]], host)
        return time.perf_counter() - start
    finally:
        for fd in fds:
            os.close(fd)


def mmap_floor(plan: HostPlan, length: int) -> float:
    """Seconds to make every copy of ``plan`` as a guarded slice copy out of fresh
    mappings (the file's length read before each copy, as txgraph's mapped reads do)."""
    files, copies = plan
    out = aligned_buffer(length)
    zeros = memoryview(bytes(length))
    fds: list[int] = []
    maps: list[mmap.mmap] = []
    views: list[memoryview] = []
    try:
        for p in files:
            fds.append(os.open(p, os.O_RDONLY))
            maps.append(mmap.mmap(fds[-1], 0, prot=mmap.PROT_READ))
            views.append(memoryview(maps[-1]))
        lseek = os.lseek
        start = time.perf_counter()
        for f, host, n, at in copies:
            if f < 0:
                out[at : at + n] = zeros[:n]
            elif host + n <= lseek(fds[f], 0, os.SEEK_END):
                out[at : at + n] = views[f][host : host + n]
            else:
                raise RuntimeError(f"{files[f]} shrank under the benchmark")
        return time.perf_counter() - start
    finally:
        for v in views:
            v.release()
        for m in maps:
            m.close()
        for fd in fds:
            os.close(fd)
