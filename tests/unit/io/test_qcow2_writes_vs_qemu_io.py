"""qcow2 write paths against QEMU's own, one image each: what is allocated where.

Each case runs the same requests through ``qemu-io`` (QEMU 7.2's block layer) on one
copy of an image and through txgraph's qcow2 driver on another, then compares
``qemu-img map`` with host offsets and the host file's blocks: the clusters each
request leaves allocated, unmapped or zeroed, and where. The cases are the
reductions of random guest sessions (``test_random_guest_io_matches_qsd``) that
differed:

* a zero write with MAY_UNMAP drops the host cluster of a zero cluster that kept
  its allocation, and with extended L2 of a cluster of mixed subclusters;
* with extended L2 a cluster whose subclusters are all zero keeps its host
  cluster for a later partial write (written in place, the rest stays zero);
* a partial write into a zero cluster that kept its allocation zeroes the cluster
  first (``handle_alloc_space``), so the untouched part stays unwritten on the host;
* clusters a write allocates right after clusters it overwrites in place go right
  after them on the host when that is free (``qcow2_alloc_clusters_at``), as many as
  fit there, the rest in a first fit of their own; a free cluster earlier in the file
  does not take them, and the next first fit still starts from it;
* a guest discard without a backing file leaves a cluster of zero and unallocated
  subclusters that has no host cluster as it is (its type is unallocated), and
  turns an allocated one into all-zero subclusters;
* the discard of a freed cluster reaches past the end of the file, so a last block
  the file only partly covers is deallocated with the rest.

And the COW reads themselves (``perform_cow``): one read of both regions when at
most 16 KiB of guest data lies between them, else one read each.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from imgkit import open_node, open_qcow2, qemu_img, qemu_io

from tests.support.image_checks import file_blocks
from txgraph.io.driver import DriverNode

KiB = 1024

#: (create options, setup qemu-io commands, the requests compared)
CASES: dict[str, tuple[str, list[str], list[str]]] = {
    "unmap_drops_zero_alloc": (
        "extended_l2=off",
        ["write -P 1 0 64k", "write -z 0 64k"],
        ["write -z -u 0 64k"],
    ),
    "unmap_drops_mixed_subclusters": (
        "extended_l2=on",
        ["write -P 1 64k 32k"],
        ["write -z -u 64k 64k"],
    ),
    "all_zero_subclusters_written_in_place": (
        "extended_l2=on,cluster_size=16k",
        ["write -P 1 0 32k", "write -z 16k 16k"],
        ["write -P 2 16k 14848", "write -P 3 40k 2k"],
    ),
    "zero_alloc_cluster_zeroed_before_a_partial_write": (
        "extended_l2=off,cluster_size=16k,preallocation=metadata",
        ["write -z 16k 16k"],
        ["write -P 4 16k 10752"],
    ),
    "allocation_continues_after_overwritten_clusters_as_far_as_free": (
        "extended_l2=off,cluster_size=16k",
        ["write -P 1 0 32k", "write -P 1 64k 16k", "discard 16k 16k"],
        ["write -P 2 0 48k"],
    ),
    "allocation_after_overwritten_clusters_passes_an_earlier_hole": (
        "extended_l2=off,cluster_size=16k",
        ["write -P 1 0 48k", "discard 0 16k", "discard 32k 16k"],
        # (the next first fit still finds the earlier hole: the index did not move)
        ["write -P 2 16k 32k", "write -P 3 96k 16k"],
    ),
    "discard_keeps_a_hostless_cluster_of_mixed_subclusters": (
        "extended_l2=on,cluster_size=16k",
        ["write -z 17920 14848", "write -P 1 32k 16k"],
        ["discard 16k 32k"],
    ),
    "a_freed_cluster_s_discard_takes_the_partial_last_block": (
        "extended_l2=on,cluster_size=16k",
        ["write -P 1 0 5k"],
        ["write -z -u 0 16k"],
    ),
}


def _apply(node: DriverNode, command: str) -> None:
    words = command.split()
    unmap = "-u" in words
    off, length = (int(w[:-1]) * KiB if w.endswith("k") else int(w) for w in words[-2:])
    if words[0] == "discard":
        node.discard(off, length)
    elif words[1] == "-z":
        node.write_zeroes(off, length, may_unmap=unmap)
    else:
        node.write(off, bytes([int(words[2])]) * length)


def _layout(img: Path) -> tuple[list[dict[str, Any]], Any]:
    return json.loads(qemu_img("map", "--output=json", img)), file_blocks(str(img))


@pytest.mark.parametrize("name", sorted(CASES))
def test_write_leaves_the_clusters_qemu_leaves(tmp_path: Path, name: str) -> None:
    options, setup, requests = CASES[name]
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    for img in (ours, theirs):  # made alike (a copy would not keep the file's holes)
        qemu_img("create", "-q", "-f", "qcow2", "-o", options, img, "1M")
        qemu_io(img, *setup)
    before = _layout(theirs)
    qemu_io(theirs, *requests)
    # qemu-io opens with BDRV_O_UNMAP, which the file child inherits
    file = open_node("file", {"filename": str(ours), "discard": "unmap"})
    node = open_node("qcow2", {"discard": "unmap"}, {"file": file})
    for command in requests:
        _apply(node, command)
    node.close()
    assert _layout(ours) == _layout(theirs)
    assert _layout(theirs) != before  # the requests changed something to compare


class _Reads:
    """The reads a node sees (offset, length), passed on to it."""

    def __init__(self, node: DriverNode) -> None:
        self.node, self.seen = node, []  # type: list[tuple[int, int]]
        real = node.readinto

        def readinto(offset: int, out: memoryview) -> None:
            self.seen.append((offset, len(out)))
            real(offset, out)

        node.readinto = readinto  # type: ignore[method-assign]


@pytest.mark.parametrize(
    ("write", "reads"),
    [
        ((20 * KiB, 4 * KiB), [(0, 20 * KiB), (24 * KiB, 40 * KiB)]),  # 4 KiB between: one
        ((20 * KiB, 16 * KiB), [(0, 20 * KiB), (36 * KiB, 28 * KiB)]),  # 16 KiB: still one
        ((20 * KiB, 17 * KiB), [(0, 20 * KiB), (37 * KiB, 27 * KiB)]),  # 17 KiB: two
    ],
)
def test_cow_reads_both_regions_at_once_only_across_16k(
    tmp_path: Path, write: tuple[int, int], reads: list[tuple[int, int]]
) -> None:
    base, top = tmp_path / "base.raw", tmp_path / "top.qcow2"
    base.write_bytes(b"\x09" * (1 << 20))
    qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", base.name, top)
    backing = open_node("raw", {}, {"file": open_node("file", {"filename": str(base)})})
    node = open_qcow2(top)
    node.children["backing"] = backing
    seen = _Reads(backing).seen
    off, length = write
    node.write(off, b"\x05" * length)
    merged = length <= 16 * KiB
    assert seen == ([(0, 64 * KiB)] if merged else reads)
    node.close()
