"""The guest-view rule's allocation source: a layer's own allocation, as qemu-img map says.

Images are written by qemu-io (data, zero writes, compressed clusters,
discards; extended L2 with subclusters), each over a backing file so that
``qemu-img map``'s ``depth`` tells which ranges the layer itself allocates.
:func:`allocated_runs` (one numpy scan per L2 table) must give exactly those
ranges (with extended L2: cover them, see below), and the same as the generic
one-call-per-run block-status walk, over the whole image and unaligned windows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from imgkit import open_qcow2, qemu_img, qemu_io

from txgraph.io.allocation import _walk, allocated_runs

MiB = 1 << 20


def _qemu_own_runs(path: Path) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for e in json.loads(qemu_img("map", "--output=json", str(path))):
        if e["depth"] == 0:
            if out and out[-1][0] + out[-1][1] == e["start"]:
                out[-1] = (out[-1][0], out[-1][1] + e["length"])
            else:
                out.append((e["start"], e["length"]))
    return out


def _covers(outer: list[tuple[int, int]], inner: list[tuple[int, int]]) -> bool:
    return all(any(o <= i and i + n <= o + m for o, m in outer) for i, n in inner)


def _generic(node: object, offset: int, length: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    _walk(node, offset, offset + length, out)  # type: ignore[arg-type]
    return out


CASES = {
    "fragmented": [
        "write -P 1 0 64k",
        "write -P 2 192k 64k",
        "write -P 3 1M 3M",
        "write -z 5M 64k",
        "write -P 4 7M 512k",
    ],
    "compressed": [
        "write -P 1 0 64k",
        "write -c -P 5 256k 128k",
        "write -c -P 6 768k 128k",
        "write -P 7 320k 64k",
    ],
    "discarded": ["write -P 1 0 2M", "discard 512k 512k", "write -z -u 3M 1M"],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("extended", [False, True], ids=["l2", "extended-l2"])
def test_own_allocation_equals_qemu_img_map(tmp_path: Path, case: str, extended: bool) -> None:
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(base), "16M")
    qemu_io(base, "write -P 9 0 16M")
    opts = ["-o", "extended_l2=on,cluster_size=128k"] if extended else []
    qemu_img("create", "-q", "-f", "qcow2", *opts, "-b", "base.qcow2", "-F", "qcow2", str(top))
    qemu_io(top, *CASES[case])
    if extended:
        qemu_io(top, "write -P 8 9M 4k", f"write -P 8 {9 * MiB + 65536} 32k")  # partial subclusters
    node = open_qcow2(top, read_only=True)
    size = node.size()
    want = _qemu_own_runs(top)
    assert want, "the case allocates something"
    got = allocated_runs(node, 0, size)
    assert got == _generic(node, 0, size)
    if extended:
        # txgraph's qcow2 block status answers a cluster whose subclusters differ (MIXED) as
        # a whole cluster, where qemu-img map goes by subcluster: ours covers QEMU's runs.
        assert _covers(got, want)
    else:
        assert got == want
    for off, n in ((1, 700_000), (100_000, 5 * MiB + 3), (9 * MiB, 100_000), (15 * MiB, 4 * MiB)):
        assert allocated_runs(node, off, n) == _generic(node, off, min(n, size - off)), (off, n)
