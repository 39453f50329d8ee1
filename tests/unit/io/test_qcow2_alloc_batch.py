"""The batched allocation of the qcow2 writer writes the very same image as the
one-cluster-at-a-time path.

``Qcow2Writer._allocate_run`` allocates a planned run of fresh clusters at once
(one refcount update per stretch, one write per host-contiguous stretch, one
L2 update). The per-cluster path it replaces is still there (it serves in-place
reuse, invalid entries, data files and encryption), so the reference is the same
writer with the batched path switched off: the same random workload (unaligned
writes up to 1 MiB over a backing file, so heads and tails are copied on write;
discards and flushes, so freed clusters are reused; zero writes) on two copies of
one image must leave byte-identical image files, and ``qemu-img check`` clean.
Small clusters (512 B: 64-entry L2 tables, 256-cluster refcount blocks) make
runs cross refcount-block boundaries, where a new refcount block lands inside
the run; extended L2 and 1-bit / 64-bit refcounts change the codecs.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from imgkit import open_chain, qemu_img, qemu_io

from txgraph.io.qcow2.writer import Qcow2Writer

MiB = 1 << 20

CASES = [
    ("cluster_size=65536", 64 * MiB),
    ("cluster_size=512", 4 * MiB),
    ("cluster_size=4096,refcount_bits=1", 8 * MiB),
    ("cluster_size=4096,refcount_bits=64", 8 * MiB),
    ("cluster_size=16384,extended_l2=on", 16 * MiB),
    ("cluster_size=4096,compat=0.10", 8 * MiB),
]


def _workload(node: Any, size: int, cs: int, seed: int) -> None:
    rng = random.Random(seed)
    for step in range(60):
        kind = rng.random()
        off = rng.randrange(0, size - 1)
        n = min(size - off, rng.choice([1, cs // 2, cs, 3 * cs + 17, 16 * cs, MiB, MiB + 4321]))
        if kind < 0.7:
            node.write(off, bytes([step + 1]) * n)
        elif kind < 0.8:
            node.discard(off // cs * cs, n // cs * cs or cs)
        elif kind < 0.9:
            node.write_zeroes(off, n, may_unmap=rng.random() < 0.5)
        else:
            node.flush()  # releases what discards and overwrites unreferenced: holes
    # a long write at the end fills holes left by the releases (first-fit of the run)
    node.flush()
    node.write(0, b"\xee" * min(size, 2 * MiB))


@pytest.mark.parametrize("opts,size", CASES, ids=[c[0] for c in CASES])
def test_batched_allocation_writes_the_same_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opts: str, size: int
) -> None:
    cs = int(opts.split("cluster_size=")[1].split(",")[0])
    base = tmp_path / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size={cs}", base, str(size))
    qemu_io(base, f"write -P 0x5a 0 {size}")
    runs: list[int] = []
    real = Qcow2Writer._allocate_run

    def counted(self: Qcow2Writer, c0: int, stop: int, *a: Any) -> int | None:
        done = real(self, c0, stop, *a)
        if done is not None:
            runs.append(stop - c0)
        return done

    for seed in range(3):
        images = []
        for batched in (True, False):
            img = tmp_path / f"s{seed}-{batched}.qcow2"
            qemu_img(
                "create",
                "-q",
                "-f",
                "qcow2",
                "-o",
                opts,
                "-b",
                base.name,
                "-F",
                "qcow2",
                img,
                str(size),
            )
            with monkeypatch.context() as m:
                if not batched:
                    m.setattr(Qcow2Writer, "_allocate_run", lambda self, *a: None)
                else:
                    m.setattr(Qcow2Writer, "_allocate_run", counted)
                node = open_chain(img, False)
                _workload(node, size, cs, seed)
                node.close()
            images.append(img)
        out = qemu_img("check", images[0])
        assert "No errors were found" in out, out
        assert images[0].read_bytes() == images[1].read_bytes(), (opts, seed)
        assert runs, "the workload never took the batched path"
        assert qemu_img("compare", images[0], images[1]).startswith("Images are identical")
