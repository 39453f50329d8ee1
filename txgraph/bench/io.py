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

The rows of plain copies (sequential, random, chain) also carry their copy floor
(:mod:`txgraph.bench.io_floor`), measured as two more sides of the same rounds
(A B C D...): ``floor`` is the faster of the same host reads made with bare
``preadv`` or with mapped copies guarded as txgraph's are (``floors`` has both), ``ratio_cap`` = floor /
peer the ratio a driver costing nothing would reach, and ``of_floor`` = txgraph
/ floor the share of it txgraph keeps.
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

from txgraph.bench.io_floor import host_plan, mmap_floor, preadv_floor
from txgraph.io.buffers import aligned_buffer
from txgraph.io.qcow2.inflate import FAST_PATH
from txgraph.io.registry import driver_class

GiB, MiB = 1 << 30, 1 << 20
ROUNDS = 5
#: the full image's virtual size (the chain's layers have it too; the compressed one half)
SIZE = 2 * GiB
#: requests of the random 4 KiB measure
RANDOM_READS = 200_000
CLUSTER = 64 * 1024


def _sh(*args: str | Path, stdin: str | None = None) -> str:
    return subprocess.run(
        [str(a) for a in args], input=stdin, capture_output=True, text=True, check=True
    ).stdout


IMAGES = ("full.qcow2", "mid.qcow2", "top.qcow2", "comp.qcow2", "full.raw")


def build_images(work: Path, size: int = SIZE) -> dict[str, Path]:
    """full.qcow2 (``size``, allocated), 3-layer chain top/mid/full (each upper layer
    writes a random quarter of the clusters), zlib comp.qcow2 (``size / 2``).

    Images kept from an earlier run are reused when the full image has ``size``."""
    work.mkdir(parents=True, exist_ok=True)
    full, mid, top, comp = (work / n for n in IMAGES[:4])
    if full.exists() and open_image(full).size() != size:
        for stale in IMAGES:
            (work / stale).unlink(missing_ok=True)
    clusters = size // CLUSTER
    if not full.exists():
        _sh("qemu-img", "create", "-q", "-f", "qcow2", full, str(size))
        # qemu-io takes at most 2 GiB - 512 bytes per request: write 1 GiB at a time
        writes = "".join(
            f"write -q -P 0x5a {off} {min(GiB, size - off)}\n" for off in range(0, size, GiB)
        )
        _sh("qemu-io", "-f", "qcow2", full, stdin=writes + "quit\n")
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
                str(size),
            )
            rnd = random.Random(seed)
            cmds = "".join(
                f"write -q -P {pat} {c * CLUSTER} {CLUSTER}\n"
                for c in rnd.sample(range(clusters), clusters // 4)
            )
            _sh("qemu-io", "-f", "qcow2", name, stdin=cmds + "quit\n")
    if not comp.exists():
        src = work / "comp_src.qcow2"
        _sh("qemu-img", "create", "-q", "-f", "qcow2", src, str(size // 2))
        writes = "".join(
            f"write -q -P 0x5a {off} {min(GiB, size // 2 - off)}\n"
            for off in range(0, size // 2, GiB)
        )
        _sh("qemu-io", "-f", "qcow2", src, stdin=writes + "quit\n")
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


def random_offsets(size: int, count: int) -> list[int]:
    """``count`` 4 KiB-aligned offsets below ``size``, the same on every run."""
    rng = np.random.default_rng(3)
    return (rng.integers(0, size // 4096, count) * 4096).tolist()  # type: ignore[no-any-return]


def rand_txgraph(img: Path, offsets: list[int]) -> float:
    node = open_image(img)
    buf = aligned_buffer(4096)
    t = time.perf_counter()
    for off in offsets:
        node.readinto(off, buf)
    return time.perf_counter() - t


def _progress(msg: str) -> None:
    print(f"bench io: {msg}", file=sys.stderr, flush=True)


def _interleave(sides: list[Callable[[], float]], name: str, rounds: int) -> list[list[float]]:
    """Seconds per round of each side: one warm-up each, then A B C... A B C..."""
    for side in sides:
        side()  # warm-up
    times: list[list[float]] = [[] for _ in sides]
    for r in range(rounds):
        for side, out in zip(sides, times, strict=True):
            out.append(side())
        _progress(f"{name} round {r + 1}/{rounds}")
    return times


def _rates(work: float, seconds: list[float]) -> tuple[float, list[float]]:
    """The median rate of ``work`` units per round and the spread (min, max)."""
    rates = [work / t for t in seconds]
    return statistics.median(rates), [round(min(rates), 1), round(max(rates), 1)]


def _line(
    name: str,
    work: float,
    times: list[list[float]],
    unit: str,
    desc: str,
) -> dict[str, Any]:
    """The row of a throughput measure: ``work`` units per round, rates from seconds.

    ``times`` holds txgraph's and the peer's rounds, then, for a row with a copy floor,
    the bare-``preadv`` and the guarded-mapping rounds of the same host reads."""
    ours, ours_spread = _rates(work, times[0])
    peer, peer_spread = _rates(work, times[1])
    row: dict[str, Any] = {
        "name": name,
        "txgraph": round(ours, 1),
        "peer": round(peer, 1),
        "unit": unit,
        "ratio": round(ours / peer, 2),
        "spread": {"txgraph": ours_spread, "peer": peer_spread},
        "peer_desc": desc,
    }
    if len(times) == 4:
        by_preadv, preadv_spread = _rates(work, times[2])
        by_mmap, mmap_spread = _rates(work, times[3])
        floor = max(by_preadv, by_mmap)
        row["floor"] = round(floor, 1)
        row["floors"] = {"preadv": round(by_preadv, 1), "mmap": round(by_mmap, 1)}
        row["spread"] |= {"preadv": preadv_spread, "mmap": mmap_spread}
        row["ratio_cap"] = round(floor / peer, 2)
        row["of_floor"] = round(ours / floor, 2)
    return row


def _floor_sides(img: Path, offsets: list[int], length: int) -> list[Callable[[], float]]:
    """The two floor sides of a row (:mod:`txgraph.bench.io_floor`), or none when the
    image's reads are not plain copies."""
    plan = host_plan(open_image(img), offsets, length)
    if plan is None:
        return []
    return [lambda: preadv_floor(plan, length), lambda: mmap_floor(plan, length)]


def run_io_benchmarks(
    workdir: Path | str,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    *,
    keep: bool = False,
    size: int = SIZE,
    rounds: int = ROUNDS,
    random_reads: int = RANDOM_READS,
) -> list[dict[str, Any]]:
    """Run every measure; returns one dict per measure, each also passed to ``on_row`` as
    soon as it is measured (the CLI prints it then: once, and while the run goes on).
    ``size`` is the full image's (a multiple of 2 MiB; the row names give it).
    The images are removed at the end unless ``keep``."""
    if size <= 0 or size % (2 * MiB):
        raise ValueError("the image size must be a positive multiple of 2 MiB")
    work = Path(workdir)
    made = not work.exists()
    _progress(f"building images in {work}")
    try:
        return _run(work, on_row, size, rounds, random_reads)
    finally:
        if not keep:
            for name in IMAGES:
                (work / name).unlink(missing_ok=True)
            if made:
                shutil.rmtree(work, ignore_errors=True)


def _size_name(size: int) -> str:
    return f"{size // GiB}GiB" if size % GiB == 0 else f"{size // MiB}MiB"


def _run(
    work: Path,
    on_row: Callable[[dict[str, Any]], None] | None,
    size: int,
    rounds: int,
    random_reads: int,
) -> list[dict[str, Any]]:
    imgs = build_images(work, size)
    results: list[dict[str, Any]] = []

    def emit(d: dict[str, Any]) -> None:
        results.append(d)
        if on_row is not None:
            on_row(d)

    mb = size / 1e6
    requests = str(size // MiB)
    sequential = list(range(0, size, MiB))
    name = f"seq_1MiB_full_{_size_name(size)}"
    times = _interleave(
        [
            lambda: seq_txgraph(imgs["full"], size),
            lambda: qemu_bench(imgs["full"], "-c", requests, "-s", "1M", "-d", "1"),
            *_floor_sides(imgs["full"], sequential, MiB),
        ],
        name,
        rounds,
    )
    emit(_line(name, mb, times, "MB/s", "qemu-img bench -d1 io_uring"))
    raw = work / "full.raw"
    if not raw.exists():
        _sh("qemu-img", "convert", "-O", "raw", imgs["full"], raw)
    name = "seq_1MiB_full_vs_plain_mmap"
    times = _interleave(
        [
            lambda: seq_txgraph(imgs["full"], size),
            lambda: plain_mmap_copy(raw, size),
            *_floor_sides(imgs["full"], sequential, MiB),
        ],
        name,
        rounds,
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
    offsets = random_offsets(size, random_reads)
    # qemu-img bench has no random pattern: a stride of 4099 clusters and one 4 KiB
    # block touches a new cluster and page on every request, as random offsets do
    stride = str(4099 * CLUSTER + 4096)
    name = "rand_4KiB_d1_full"
    times = _interleave(
        [
            lambda: rand_txgraph(imgs["full"], offsets),
            lambda: qemu_bench(
                imgs["full"], "-c", str(random_reads), "-s", "4k", "-S", stride, "-d", "1"
            ),
            *_floor_sides(imgs["full"], offsets, 4096),
        ],
        name,
        rounds,
    )
    emit(
        _line(name, random_reads, times, "IOPS", "qemu-img bench -d1 io_uring, 4099-cluster stride")
    )
    name = "seq_1MiB_chain3"
    times = _interleave(
        [
            lambda: seq_txgraph(imgs["top"], size),
            lambda: qemu_bench(imgs["top"], "-c", requests, "-s", "1M", "-d", "1"),
            *_floor_sides(imgs["top"], sequential, MiB),
        ],
        name,
        rounds,
    )
    emit(_line(name, mb, times, "MB/s", "qemu-img bench -d1 io_uring"))
    half = size // 2
    name = f"seq_1MiB_zlib_{_size_name(half)}"
    times = _interleave(
        [
            lambda: seq_txgraph(imgs["comp"], half),
            lambda: qemu_bench(imgs["comp"], "-c", str(half // MiB), "-s", "1M", "-d", "1"),
        ],
        name,
        rounds,
    )
    inflater = "zlib-ng, libz's one call when it refuses" if FAST_PATH else "libz only"
    emit(
        _line(name, half / 1e6, times, "MB/s", f"qemu-img bench -d1 io_uring; txgraph: {inflater}")
    )
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
    times = _interleave([batch, one_by_one], name, rounds)
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
