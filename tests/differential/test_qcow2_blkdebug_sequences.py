"""qcow2's metadata events on its blkdebug ``file`` child, for guest sequences that
reach them: a new L2 table, a table shared with a snapshot, new refcount blocks,
L2 tables loaded again after the L2 cache evicted them, an image opened at all.

The default sequence of :mod:`tests.differential.test_format_blkdebug_events`
writes into one existing L2 table; here each case makes an image (real
``qemu-img``), puts one blkdebug rule set per event on a copy of it, runs the
same ``qemu-io`` commands through an NBD export on QSD 7.2 and on txgraph, and
compares every command's result. The rules are ``errno`` 5 without ``once``
(every request after the event fails), or a small state machine where the
count of events matters (the eviction case: only the third ``l2_load`` arms).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, Peer, QSDPeer
from tests.differential.test_format_blkdebug_events import GUEST, guest_run

pytestmark = pytest.mark.qsd


def _qemu(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def _image(
    opts: str, size: str, *writes: str, snapshot: bool = False, backing: bool = False
) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        base: list[str] = []
        if backing:  # a raw backing file with data at 64k..192k
            raw = path.with_name("base")
            _qemu("qemu-img", "create", "-q", "-f", "raw", str(raw), size)
            _qemu("qemu-io", "-f", "raw", "-c", "write -P 0x44 64k 128k", str(raw))
            base = ["-b", str(raw), "-F", "raw"]
        _qemu("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, *base, str(path), size)
        for w in writes:
            _qemu("qemu-io", "-f", "qcow2", "-c", w, str(path))
        if snapshot:
            _qemu("qemu-img", "snapshot", "-c", "s1", str(path))

    return make


def _inject(event: str) -> dict[str, Any]:
    return {"inject-error": [{"event": event, "errno": 5}]}


def _nth(event: str, n: int) -> dict[str, Any]:
    """Fail every request after the ``n``-th ``event`` (states 1 .. n count them)."""
    steps = [{"event": event, "state": k, "new_state": k + 1} for k in range(1, n)]
    return {"set-state": steps, "inject-error": [{"event": event, "state": n, "errno": 5}]}


_META = [
    "l1_update",
    "l2_load",
    "l2_update",
    "l2_alloc_write",
    "l2_alloc_cow_read",
    "cluster_alloc",
    "cluster_free",
    "cow_read",
    "cow_write",
    "write_aio",
    "refblock_load",
    "refblock_alloc",
    "refblock_update_part",
    "refblock_alloc_write",
    "refblock_alloc_hookup",
    "reftable_load",
    "cluster_alloc_space",
    "pwritev",
    "pwritev_zero",
    "pwritev_done",
]

#: case -> (image maker, qcow2 options, guest commands, {label: blkdebug rules},
#: the labels whose rule the guest must meet on QSD)
Case = tuple[
    Callable[[Path], None], dict[str, Any], list[str], dict[str, dict[str, Any]], list[str]
]
CASES: dict[str, Case] = {
    # 4 KiB clusters: one L2 table maps 2 MiB, so 3M needs a second table (l2_allocate)
    "new-l2-table": (
        _image("cluster_size=4096", "4M", "write -P 0x11 0 64k"),
        {},
        ["read -P 0x11 0 4k", "write -P 0x22 3M 4k", "read -P 0x22 3M 4k", "read 0 4k"],
        {e: _inject(e) for e in _META},
        ["l2_alloc_write", "l1_update", "l2_update", "cluster_alloc"],
    ),
    # after an internal snapshot the L2 table is shared: the first write copies it
    "shared-l2-table": (
        _image("cluster_size=65536", "4M", "write -P 0x11 0 64k", snapshot=True),
        {},
        ["read -P 0x11 0 4k", "write -P 0x22 0 4k", "read -P 0x22 0 4k", "read 1M 4k"],
        {e: _inject(e) for e in _META},
        ["l2_alloc_cow_read", "l2_alloc_write", "l1_update", "cluster_free", "cow_read"],
    ),
    # 512-byte clusters, 16-bit refcounts: one refcount block covers 128 KiB of file,
    # so writing 256 KiB more needs new refcount blocks (alloc_refcount_block)
    "new-refcount-blocks": (
        _image("cluster_size=512", "4M", "write -P 0x11 0 4k"),
        {},
        ["write -P 0x22 1M 256k", "read -P 0x22 1M 4k", "read -P 0x11 0 4k"],
        {e: _inject(e) for e in _META},
        ["refblock_alloc_write", "refblock_alloc_hookup", "refblock_load"],
    ),
    # extended L2 entries: a write copies only the partial subclusters around it
    "subclusters": (
        _image("extended_l2=on,cluster_size=65536", "4M", "write -P 0x11 0 64k"),
        {},
        ["write -P 0x22 101k 1k", "read -P 0x22 101k 1k", "write -P 0x33 2M 64k", "read 0 4k"],
        {e: _inject(e) for e in _META},
        ["cluster_alloc", "l2_update"],
    ),
    # a write of whole subclusters into a fresh cluster copies nothing, zeroes nothing;
    # in the cluster it owns then, an allocated subcluster is written in place and a
    # partial unallocated one is zeroed first (handle_alloc_space, as for a new cluster)
    "subclusters-aligned": (
        _image("extended_l2=on,cluster_size=65536", "4M", "write -P 0x11 0 64k"),
        {},
        [
            "write -P 0x22 100k 2k",
            "read -P 0x22 100k 2k",
            "write -P 0x23 101k 3k",
            "write -P 0x24 105k 1k",
            "read -P 0x24 105k 1k",
            "read 0 4k",
        ],
        {e: _inject(e) for e in _META},
        ["cluster_alloc", "write_aio", "cluster_alloc_space", "pwritev_zero"],
    ),
    "subclusters-backing": (
        _image("extended_l2=on", "4M", "write -P 0x11 0 64k", backing=True),
        {},
        ["write -P 0x22 101k 1k", "read -P 0x44 100k 1k", "write -P 0x33 3M 3k", "read 0 4k"],
        {e: _inject(e) for e in [*_META, "read_backing_aio"]},
        ["cluster_alloc", "cow_read", "cow_write", "read_backing_aio"],
    ),
    # one write over three fresh clusters, partial at both ends: one allocation, the
    # head and tail zeroed (nothing below them) or copied from the backing file
    "run-partial-ends": (
        _image("cluster_size=65536", "4M", "write -P 0x11 0 64k"),
        {},
        ["write -P 0x22 1025k 130k", "read -P 0x22 1025k 4k", "read -P 0 1M 1k", "read 0 4k"],
        {e: _inject(e) for e in _META},
        ["cluster_alloc_space", "pwritev_zero", "write_aio"],
    ),
    "run-partial-ends-backing": (
        _image("cluster_size=65536", "4M", "write -P 0x11 0 64k", backing=True),
        {},
        ["write -P 0x22 65k 130k", "read -P 0x44 64k 1k", "read -P 0x22 65k 4k", "read 0 4k"],
        {e: _inject(e) for e in [*_META, "read_backing_aio"]},
        ["cow_read", "cow_write", "read_backing_aio"],
    ),
    # zero writes (a zero cluster, a partial one written as data) and a discard, whose
    # freed clusters are announced where they are unreferenced (compressed writes do
    # not reach the image over NBD: the export refuses them)
    "zeroes-discard": (
        _image("cluster_size=65536", "4M", "write -P 0x11 0 192k"),
        {"discard": "unmap"},
        [
            "write -z 64k 64k",
            "read -P 0 64k 4k",
            "write -z 130k 4k",
            "discard 0 64k",
            "read -P 0 0 4k",
            "flush",
            "read -P 0x11 128k 1k",
        ],
        {e: _inject(e) for e in [*_META, "flush_to_disk"]},
        ["cluster_free", "l2_update", "write_aio"],
    ),
    # an L2 cache of two tables and four tables in use: the third load evicts the
    # first table, which is loaded (and announced) again when it is read next
    "l2-cache-eviction": (
        _image(
            "cluster_size=4096",
            "8M",
            "write -P 0x11 0 4k",
            "write -P 0x12 2M 4k",
            "write -P 0x13 4M 4k",
            "write -P 0x14 6M 4k",
        ),
        {"l2-cache-size": 8192},
        [
            "read -P 0x11 0 4k",
            "read -P 0x12 2M 4k",
            "read -P 0x13 4M 4k",
            "read -P 0x11 0 4k",
            "read -P 0x14 6M 4k",
            "read -P 0x12 2M 4k",
        ],
        {f"l2_load#{n}": _nth("l2_load", n) for n in (2, 3, 4, 5, 6)},
        ["l2_load#4", "l2_load#5"],
    ),
    # the L2 cache's LRU order: the first table, read again, is kept; the second goes
    "l2-cache-lru": (
        _image(
            "cluster_size=4096",
            "8M",
            "write -P 0x11 0 4k",
            "write -P 0x12 2M 4k",
            "write -P 0x13 4M 4k",
        ),
        {"l2-cache-size": 8192},
        [
            "read -P 0x11 0 4k",
            "read -P 0x12 2M 4k",
            "read -P 0x11 0 4k",
            "read -P 0x13 4M 4k",
            "read -P 0x12 2M 4k",
            "read -P 0x11 0 4k",
        ],
        {f"l2_load#{n}": _nth("l2_load", n) for n in (3, 4, 5)},
        ["l2_load#3", "l2_load#4"],
    ),
}


#: cases whose guest writes back (no FUA: the metadata reaches the disk at its flush)
WRITEBACK = {"compressed-cow-writeback"}
CASES["compressed-cow-writeback"] = (
    # a write into a compressed cluster copies it and frees the old stream inside the
    # request: the refcounts the L2 table depends on are written then, not at the flush
    _image("cluster_size=65536", "4M", "write -c -P 0x11 0 64k"),
    {},
    GUEST,
    {e: _inject(e) for e in [*_META, "read_compressed", "flush_to_os", "flush_to_disk"]},
    ["refblock_update_part", "cluster_free", "cow_read", "read_compressed"],
)


def _outcomes(factory: Any, case: str, tmp: Path) -> dict[str, list[str]]:
    make, opts, guest, rules, _ = CASES[case]
    image = tmp / "image"
    if not image.exists():
        make(image)
    work = tmp / factory.label
    work.mkdir()
    sockdir = Path(tempfile.mkdtemp(prefix="txq2-"))
    sock = sockdir / "s"
    peer: Peer = factory(work)
    out: dict[str, list[str]] = {}
    try:
        reply = peer.execute(
            {
                "execute": "nbd-server-start",
                "arguments": {"addr": {"type": "unix", "data": {"path": str(sock)}}},
            }
        )
        assert "error" not in reply, reply
        for k, (label, rule) in enumerate(rules.items()):
            copy = work / f"i{k}"
            shutil.copyfile(image, copy)
            file = {
                "driver": "blkdebug",
                **rule,
                "image": {"driver": "file", "filename": str(copy)},
            }
            node = {"driver": "qcow2", **opts, "file": file}
            cache = "writeback" if case in WRITEBACK else "writethrough"
            out[label] = guest_run(peer, sock, f"n{k}", node, guest, False, cache)
    finally:
        peer.close()
        shutil.rmtree(sockdir)
    return out


@pytest.mark.parametrize("case", sorted(CASES))
def test_qcow2_sequences_match_qsd(case: str, tmp_path: Path) -> None:
    qsd = _outcomes(QSDPeer, case, tmp_path)
    txg = _outcomes(EnginePeer, case, tmp_path)
    assert txg == qsd
    # the sequence reaches what it was made for: on QSD those rules fail a command
    for label in CASES[case][4]:
        assert any("failed" in ln for ln in qsd[label]), (label, qsd[label])


SUBCLUSTER_GUEST = [
    "write -P 0x22 100k 2k",
    "write -P 0x23 101k 1k",
    "write -P 0x24 103k 4k",
    "write -P 0x25 3077k 3k",
    "write -P 0x26 200k 64k",
    "write -P 0x27 400k 1k",
    "write -P 0x28 400k 64k",
    "read -P 0x22 100k 1k",
    "read -P 0x23 101k 1k",
    "read -P 0x24 103k 4k",
    "read -P 0x28 400k 4k",
]


@pytest.mark.parametrize("backing", [False, True], ids=["plain", "backing"])
def test_subcluster_writes_map_as_qsd(backing: bool, tmp_path: Path) -> None:
    """Extended L2 writes allocate what QEMU's do: only the subclusters written (widened
    to whole subclusters), in place in a cluster the image owns; ``qemu-img map`` of
    the images QSD and txgraph wrote is the same, and both check clean."""
    image = tmp_path / "image"
    _image("extended_l2=on", "4M", "write -P 0x11 0 64k", backing=backing)(image)
    results = []
    for factory in (QSDPeer, EnginePeer):
        work = tmp_path / factory.label
        work.mkdir()
        shutil.copyfile(image, work / "i")
        sockdir = Path(tempfile.mkdtemp(prefix="txq2-"))
        peer: Peer = factory(work)
        try:
            addr = {"type": "unix", "data": {"path": str(sockdir / "s")}}
            assert "error" not in peer.execute(
                {"execute": "nbd-server-start", "arguments": {"addr": addr}}
            )
            node = {"driver": "qcow2", "file": {"driver": "file", "filename": str(work / "i")}}
            lines = guest_run(peer, sockdir / "s", "n", node, SUBCLUSTER_GUEST, False)
        finally:
            peer.close()
            shutil.rmtree(sockdir)
        argv = ["qemu-img", "map", "--output=json", str(work / "i")]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
        extents = [(e["start"], e["length"], e["data"], e["zero"]) for e in json.loads(done.stdout)]
        check = subprocess.run(
            ["qemu-img", "check", str(work / "i")], capture_output=True, timeout=60
        )
        results.append((lines, extents, check.returncode))
    assert results[1] == results[0]
    assert results[0][2] == 0
    assert not any("fail" in ln for ln in results[0][0])


def test_blkdebug_own_write_events_match_qsd(tmp_path: Path) -> None:
    """``pwritev``, ``pwritev_zero`` and ``pwritev_done`` come from the generic write
    path of the blkdebug node itself, for an export on it directly too."""
    guest = ["read 0 4k", "write 0 4k", "read 0 4k", "write -z 8k 4k", "read 0 4k"]
    results = []
    for factory in (QSDPeer, EnginePeer):
        work = tmp_path / factory.label
        work.mkdir()
        _qemu("qemu-img", "create", "-q", "-f", "raw", str(work / "i"), "1M")
        sockdir = Path(tempfile.mkdtemp(prefix="txq2-"))
        peer: Peer = factory(work)
        out = {}
        try:
            addr = {"type": "unix", "data": {"path": str(sockdir / "s")}}
            assert "error" not in peer.execute(
                {"execute": "nbd-server-start", "arguments": {"addr": addr}}
            )
            for k, event in enumerate(["pwritev", "pwritev_done", "pwritev_zero"]):
                node = {
                    "driver": "blkdebug",
                    **_inject(event),
                    "image": {"driver": "file", "filename": str(work / "i")},
                }
                out[event] = guest_run(peer, sockdir / "s", f"n{k}", node, guest, False)
        finally:
            peer.close()
            shutil.rmtree(sockdir)
        results.append(out)
    qsd, txg = results
    assert txg == qsd
    assert all(any("failed" in ln for ln in lines) for lines in qsd.values())


def test_reopen_writable_after_rule_armed_matches_qsd(tmp_path: Path) -> None:
    """A read-only qcow2 node reopened writable reads nothing more: QEMU keeps the
    refcount table read at open, so a blkdebug rule already armed (every request
    fails) does not fail the reopen."""
    image = tmp_path / "image"
    _image("cluster_size=65536", "4M", "write -P 0x11 0 64k")(image)
    results = []
    for factory in (QSDPeer, EnginePeer):
        work = tmp_path / factory.label
        work.mkdir()
        shutil.copyfile(image, work / "i")
        sockdir = Path(tempfile.mkdtemp(prefix="txq2-"))
        peer: Peer = factory(work)
        try:
            addr = {"type": "unix", "data": {"path": str(sockdir / "s")}}
            assert "error" not in peer.execute(
                {"execute": "nbd-server-start", "arguments": {"addr": addr}}
            )
            file = {
                "driver": "blkdebug",
                "node-name": "bd",
                **_inject("l2_load"),
                "image": {"driver": "file", "filename": str(work / "i")},
            }
            lines = guest_run(
                peer, sockdir / "s", "n", {"driver": "qcow2", "file": file}, ["read 0 4k"], True
            )
            peer.execute({"execute": "block-export-del", "arguments": {"id": "n"}})
            opts = {"driver": "qcow2", "node-name": "n", "file": "bd", "read-only": False}
            reply = peer.execute({"execute": "blockdev-reopen", "arguments": {"options": [opts]}})
        finally:
            peer.close()
            shutil.rmtree(sockdir)
        results.append((lines, reply))
    assert results[1] == results[0]
    assert results[0] == (["read failed: Input/output error"], {"return": {}})


if __name__ == "__main__":  # QSD 7.2's table: python -m tests.differential.test_qcow2_...
    import sys

    for case in sys.argv[1:] or sorted(CASES):
        with tempfile.TemporaryDirectory() as t:
            for label, lines in _outcomes(QSDPeer, case, Path(t)).items():
                bad = [f"{i}:{ln}" for i, ln in enumerate(lines) if "fail" in ln or "open" in ln]
                print(f"{case:20} {label:24} {'; '.join(bad) if bad else '-'}")
