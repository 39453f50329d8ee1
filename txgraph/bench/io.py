"""I/O benchmarks: txgraph's data plane against ``qemu-img bench`` on the same images.

Not a timed test: run ``txgraph bench io [--workdir DIR]``. Each
measure prints one JSON line ``{name, txgraph, peer, unit, ratio, spread,
peer_desc}``; ``ratio`` is txgraph / peer (higher is better for txgraph), both
measured in the same run, interleaved (warm-up, then rounds alternating
txgraph and the peer: A B A B...); ``txgraph`` and ``peer`` are medians and
``spread`` the min-max of each side. Progress goes to stderr. Images follow
the project reference (§B.1), built in WORKDIR and removed at the end (kept
with ``keep=True``, for repeated runs). Buffers are page-aligned on both sides
(qemu-img bench allocates with ``qemu_blockalign``).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from txgraph.io.buffers import aligned_buffer
from txgraph.io.qcow2.inflate import FAST_PATH
from txgraph.io.registry import driver_class

GiB, MiB = 1 << 30, 1 << 20
ROUNDS = 5


def _sh(*args: str | Path, stdin: str | None = None) -> str:
    return subprocess.run(
        [str(a) for a in args], input=stdin, capture_output=True, text=True, check=True
    ).stdout


def build_images(work: Path) -> dict[str, Path]:
    """full.qcow2 (2 GiB, allocated), 3-layer chain top/mid/full, zlib comp.qcow2 (1 GiB)."""
    work.mkdir(parents=True, exist_ok=True)
    full, mid, top, comp = (
        work / n for n in ("full.qcow2", "mid.qcow2", "top.qcow2", "comp.qcow2")
    )
    if not full.exists():
        _sh("qemu-img", "create", "-q", "-f", "qcow2", full, "2G")
        _sh(
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            "write -q -P 0x5a 0 1G",
            "-c",
            "write -q -P 0x5a 1G 1G",
            full,
        )
    for name, below, seed, pat in ((mid, full, 1, "0xa5"), (top, mid, 2, "0x3c")):
        if not name.exists():
            _sh(
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                below.name,
                "-F",
                "qcow2",
                name,
                "2G",
            )
            rnd = random.Random(seed)
            cmds = "".join(
                f"write -q -P {pat} {c * 65536} 65536\n" for c in rnd.sample(range(32768), 8192)
            )
            _sh("qemu-io", "-f", "qcow2", name, stdin=cmds + "quit\n")
    if not comp.exists():
        src = work / "comp_src.qcow2"
        _sh("qemu-img", "create", "-q", "-f", "qcow2", src, "1G")
        _sh("qemu-io", "-f", "qcow2", "-c", "write -q -P 0x5a 0 1G", src)
        _sh("qemu-img", "convert", "-c", "-O", "qcow2", src, comp)
        src.unlink()
    for p in (full, mid, top, comp):  # warm the page cache
        with open(p, "rb") as fh:
            while fh.read(8 * MiB):
                pass
    return {"full": full, "mid": mid, "top": top, "comp": comp}


def open_image(path: Path) -> Any:
    """Open an image and its backing chain read-only (what the Runtime would build)."""
    f = driver_class("file")("f", {"filename": str(path)}, {}, True)  # type: ignore[misc]
    node = driver_class("qcow2")("q", {}, {"file": f}, True)  # type: ignore[misc]
    bf = node.info().backing_file
    if bf:
        node.children["backing"] = open_image(path.parent / bf)
    return node


def qemu_bench(img: Path, *args: str) -> float:
    """Seconds reported by ``qemu-img bench`` ("Run completed in N seconds")."""
    out = _sh("qemu-img", "bench", "-f", "qcow2", "-t", "writeback", "-i", "io_uring", *args, img)
    m = re.search(r"Run completed in ([0-9.]+) seconds", out)
    assert m, out
    return float(m.group(1))


def seq_txgraph(img: Path, total: int) -> float:
    node = open_image(img)
    buf = aligned_buffer(MiB)
    t = time.perf_counter()
    for off in range(0, total, MiB):
        node.readinto(off, buf)
    return time.perf_counter() - t


def plain_mmap_copy(path: Path, total: int) -> float:
    """The physical limit: copy the raw bytes out of an mmap in 1 MiB slices."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as mm:
        src = memoryview(mm)
        view = aligned_buffer(1 << 20)
        t = time.perf_counter()
        for off in range(0, total, 1 << 20):
            view[:] = src[off : off + (1 << 20)]  # one copy per request, nothing else
        elapsed = time.perf_counter() - t
        src.release()
        return elapsed


def rand_txgraph(img: Path, count: int) -> float:
    node = open_image(img)
    offs = (np.random.default_rng(3).integers(0, node.size() // 4096, count) * 4096).tolist()
    buf = aligned_buffer(4096)
    t = time.perf_counter()
    for off in offs:
        node.readinto(off, buf)
    return time.perf_counter() - t


def _progress(msg: str) -> None:
    print(f"bench io: {msg}", file=sys.stderr, flush=True)


def _interleave(
    ours: Callable[[], float], peer: Callable[[], float], name: str = ""
) -> tuple[list[float], list[float]]:
    """Seconds per round of each side: one warm-up each, then A B A B..."""
    ours(), peer()  # warm-up
    a, b = [], []
    for r in range(ROUNDS):
        a.append(ours())
        b.append(peer())
        _progress(f"{name} round {r + 1}/{ROUNDS}")
    return a, b


def _line(
    name: str,
    work: float,
    times: tuple[list[float], list[float]],
    unit: str,
    desc: str,
) -> dict[str, Any]:
    """The row of a throughput measure: ``work`` units per round, rates from seconds."""
    a = [work / t for t in times[0]]
    b = [work / t for t in times[1]]
    ours, peer = statistics.median(a), statistics.median(b)
    return {
        "name": name,
        "txgraph": round(ours, 1),
        "peer": round(peer, 1),
        "unit": unit,
        "ratio": round(ours / peer, 2),
        "spread": {
            "txgraph": [round(min(a), 1), round(max(a), 1)],
            "peer": [round(min(b), 1), round(max(b), 1)],
        },
        "peer_desc": desc,
    }


def run_io_benchmarks(
    workdir: Path | str,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    *,
    keep: bool = False,
) -> list[dict[str, Any]]:
    """Run every measure; returns one dict per measure, each also passed to ``on_row`` as
    soon as it is measured (the CLI prints it then: once, and while the run goes on).
    The images are removed at the end unless ``keep``."""
    work = Path(workdir)
    made = not work.exists()
    _progress(f"building images in {work}")
    try:
        return _run(work, on_row)
    finally:
        if not keep:
            for name in ("full.qcow2", "mid.qcow2", "top.qcow2", "comp.qcow2", "full.raw"):
                (work / name).unlink(missing_ok=True)
            if made:
                shutil.rmtree(work, ignore_errors=True)


def _run(work: Path, on_row: Callable[[dict[str, Any]], None] | None) -> list[dict[str, Any]]:
    imgs = build_images(work)
    results: list[dict[str, Any]] = []

    def emit(d: dict[str, Any]) -> None:
        results.append(d)
        if on_row is not None:
            on_row(d)

    mb = 2 * GiB / 1e6
    name = "seq_1MiB_full_2GiB"
    times = _interleave(
        lambda: seq_txgraph(imgs["full"], 2 * GiB),
        lambda: qemu_bench(imgs["full"], "-c", "2048", "-s", "1M", "-d", "1"),
        name,
    )
    emit(_line(name, mb, times, "MB/s", "qemu-img bench -d1 io_uring"))
    raw = work / "full.raw"
    if not raw.exists():
        _sh("qemu-img", "convert", "-O", "raw", imgs["full"], raw)
    name = "seq_1MiB_full_vs_plain_mmap"
    times = _interleave(
        lambda: seq_txgraph(imgs["full"], 2 * GiB), lambda: plain_mmap_copy(raw, 2 * GiB), name
    )
    emit(
        _line(
            name,
            mb,
            times,
            "MB/s",
            "plain mmap copy of the same bytes as a raw file (goal >= 0.9)",
        )
    )
    n = 200_000
    name = "rand_4KiB_d1_full"
    times = _interleave(
        lambda: rand_txgraph(imgs["full"], n),
        lambda: qemu_bench(imgs["full"], "-c", str(n), "-s", "4k", "-S", "268636160", "-d", "1"),
        name,
    )
    emit(_line(name, n, times, "IOPS", "qemu-img bench -d1 io_uring, 4099-cluster stride"))
    name = "seq_1MiB_chain3"
    times = _interleave(
        lambda: seq_txgraph(imgs["top"], 2 * GiB),
        lambda: qemu_bench(imgs["top"], "-c", "2048", "-s", "1M", "-d", "1"),
        name,
    )
    emit(_line(name, mb, times, "MB/s", "qemu-img bench -d1 io_uring"))
    mb1 = GiB / 1e6
    name = "seq_1MiB_zlib_1GiB"
    times = _interleave(
        lambda: seq_txgraph(imgs["comp"], GiB),
        lambda: qemu_bench(imgs["comp"], "-c", "1024", "-s", "1M", "-d", "1"),
        name,
    )
    inflater = "zlib-ng, libz's one call when it refuses" if FAST_PATH else "libz only"
    emit(_line(name, mb1, times, "MB/s", f"qemu-img bench -d1 io_uring; txgraph: {inflater}"))
    node = open_image(imgs["full"])
    offs = np.random.default_rng(42).integers(0, node.size(), 10**6, dtype=np.uint64)
    node.translate(offs[:10])

    def batch() -> float:
        t = time.perf_counter()
        node.translate(offs)
        return time.perf_counter() - t

    scalar = offs[:100_000].tolist()

    def one_by_one() -> float:
        code, cb = node.map.code, node.cluster_bits
        t = time.perf_counter()
        for g in scalar:
            code(g >> cb)
        return (time.perf_counter() - t) * 10

    name = "translate_1M_batch"
    times = _interleave(batch, one_by_one, name)
    emit(
        _line(
            name,
            1e6,
            times,
            "lookups/s",
            "txgraph scalar per-request lookup (no QEMU equivalent)",
        )
    )
    return results


if __name__ == "__main__":
    run_io_benchmarks(
        sys.argv[1] if len(sys.argv) > 1 else "/tmp/txgraph-bench",
        lambda row: print(json.dumps(row), flush=True),
        keep=True,
    )
