"""Where a random 4 KiB read's time goes, layer by layer (issue 15's data-plane floor).

Run as ``.venv/bin/python tools/data_plane_layers.py [--size-mib N] [--reads N] [--rounds N]``
(``qemu-img`` and ``qemu-io`` on ``PATH``). It builds the fully allocated qcow2 image
that ``txgraph bench io`` builds (default 64 MiB, so every page stays cached), takes the
same random 4 KiB offsets and times the same reads through more and more of the stack:

- ``loop``: the Python loop over the host offsets alone;
- ``lseek``: plus the truncation guard, one ``lseek(SEEK_END)`` per read (a file shrunk
  underneath must read zeros, never SIGBUS the server);
- ``guarded copy``: plus the slice copy out of the mapping (the copy floor ``bench io``
  reports as ``floors.mmap``);
- ``preadv``: the same reads as one ``preadv`` each instead (``floors.preadv``);
- ``file driver``: ``FileNode.readinto`` at the host offsets (guard and copy included);
- ``L2 lookup``: the guarded copy after the compiled L2 lookup of each guest offset, all
  inline in the loop: the least a qcow2 read written in Python can cost here;
- ``qcow2 driver``: ``readinto`` on the qcow2 node at the guest offsets (the whole path),
  whose step over ``L2 lookup`` is the method call and its checks.

Each side runs ``--rounds`` times, interleaved; it prints, per side, the minimum and the
median in ns per read, and the step from the side it builds on (in parentheses, named
after ``+``; ``preadv`` is an alternative, not a step). On a loaded machine the minimum
is the better estimate of a layer's cost.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from txgraph.bench.io import build_images, open_image, random_offsets
from txgraph.bench.io_floor import host_plan
from txgraph.io.buffers import aligned_buffer

MiB = 1 << 20
LENGTH = 4096


def _sides(img: Path, offsets: list[int]) -> list[tuple[str, Callable[[], float]]]:
    node = open_image(img)
    plan = host_plan(node, offsets, LENGTH)
    if plan is None:
        raise SystemExit("data_plane_layers: the image is not a plain copy per read")
    files, copies = plan
    if len(files) != 1 or any(idx != 0 or n != LENGTH for idx, _h, n, _a in copies):
        raise SystemExit("data_plane_layers: expected one 4 KiB host copy per read")
    hosts = [host for _i, host, _n, _a in copies]
    fd = os.open(files[0], os.O_RDONLY)
    mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
    src = memoryview(mm)
    out = aligned_buffer(LENGTH)
    file_node = node.children["file"]
    lseek, end = os.lseek, os.SEEK_END

    def loop() -> float:
        t = time.perf_counter()
        for h in hosts:
            if h + LENGTH <= 0:
                break
        return time.perf_counter() - t

    def guard() -> float:
        t = time.perf_counter()
        for h in hosts:
            if h + LENGTH > lseek(fd, 0, end):
                break
        return time.perf_counter() - t

    def guarded_copy() -> float:
        t = time.perf_counter()
        for h in hosts:
            if h + LENGTH <= lseek(fd, 0, end):
                out[:] = src[h : h + LENGTH]
        return time.perf_counter() - t

    def preadv() -> float:
        bufs = [out]
        t = time.perf_counter()
        for h in hosts:
            os.preadv(fd, bufs, h)
        return time.perf_counter() - t

    def file_driver() -> float:
        read = file_node.readinto
        t = time.perf_counter()
        for h in hosts:
            read(h, out)
        return time.perf_counter() - t

    def l2_lookup() -> float:
        m = node.map
        codes, l2b, mask = m.codes, m.l2b, m.n - 1
        cb, in_cluster = node.cluster_bits, node.cluster_size - 1
        t = time.perf_counter()
        for off in offsets:
            c = off >> cb
            h = codes[c >> l2b].item(c & mask) + (off & in_cluster)
            if h + LENGTH <= lseek(fd, 0, end):
                out[:] = src[h : h + LENGTH]
        return time.perf_counter() - t

    def qcow2_driver() -> float:
        read = node.readinto
        t = time.perf_counter()
        for off in offsets:
            read(off, out)
        return time.perf_counter() - t

    # warm every path (the mappings' page tables, the drivers' first-read set-up; the
    # qcow2 reads compile the L2 slots the inline lookup reads)
    for fn in (guarded_copy, file_driver, qcow2_driver, l2_lookup):
        fn()
    return [
        ("loop", loop),
        ("lseek", guard),
        ("guarded copy", guarded_copy),
        ("preadv", preadv),
        ("file driver", file_driver),
        ("L2 lookup", l2_lookup),
        ("qcow2 driver", qcow2_driver),
    ]


#: the side each side's step is measured from (``preadv`` replaces the guarded copy)
BASE = {
    "lseek": "loop",
    "guarded copy": "lseek",
    "file driver": "guarded copy",
    "L2 lookup": "guarded copy",
    "qcow2 driver": "L2 lookup",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--reads", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    if args.size_mib < 2 or args.size_mib % 2 or args.reads < 1 or args.rounds < 1:
        raise SystemExit("data_plane_layers: --size-mib must be even and >= 2, counts >= 1")
    size = args.size_mib * MiB
    with tempfile.TemporaryDirectory(prefix="txgraph-dp-layers-") as tmp:
        imgs = build_images(Path(tmp), size)
        offsets = random_offsets(size, args.reads)
        sides = _sides(imgs["full"], offsets)
        times: dict[str, list[float]] = {name: [] for name, _ in sides}
        for _ in range(args.rounds):
            for name, fn in sides:
                times[name].append(fn() / len(offsets) * 1e9)
    print(f"one random 4 KiB read, {args.size_mib} MiB image (min / median of {args.rounds}, ns)")
    for name, _ in sides:
        lo, med = min(times[name]), statistics.median(times[name])
        base = BASE.get(name)
        step = f"  ({base} +{lo - min(times[base]):.0f})" if base else ""
        print(f"  {name:14s} {lo:8.0f} {med:8.0f}{step}")


if __name__ == "__main__":
    main()
