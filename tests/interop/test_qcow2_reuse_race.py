"""Freed clusters are reused only when no overwrite is still in flight to them.

qcow2 writes to clusters a node already owns run without the node lock
(``Qcow2Writer.inplace`` records them), while a discard plus flush frees clusters
and the allocator reuses freed ones first. If a stale overwrite could land in a
cluster that was freed and handed to a new allocation meanwhile, it would
overwrite someone else's data. Here writer threads overwrite a discarded-and-
rewritten region while another thread allocates a second region cluster by
cluster; every block of the second region must read back exactly as written,
and ``qemu-img check`` must find the image clean.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from txgraph.io.runtime import Runtime

CLUSTER = 64 << 10
HOT = 8  # clusters the writers and the discarder fight over
FRESH_BASE = 64 * CLUSTER  # where the allocator writes, one new cluster at a time
FRESH = 48
ROUNDS = int(os.environ.get("TXGRAPH_REUSE_ROUNDS", "150"))


def _block(tag: int, seq: int) -> bytes:
    return (tag.to_bytes(4, "big") + seq.to_bytes(4, "big")) * (CLUSTER // 8)


def test_reused_clusters_never_receive_stale_overwrites(tmp_path: Path) -> None:
    img = tmp_path / "race.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M"], check=True)
    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(img)}, {}, False)
    rt.open_node("q", "qcow2", {"discard": "unmap"}, {"file": "f"}, False)
    q = rt.node("q")
    for c in range(HOT):
        q.write(c * CLUSTER, _block(c, 0))
    q.flush()
    stop = threading.Event()
    errors: list[str] = []

    def overwrite(k: int) -> None:
        seq = 1
        try:
            while not stop.is_set():
                c = (k + seq) % HOT
                with rt.request():
                    q.write(c * CLUSTER, _block(c, seq))
                seq += 1
        except Exception as e:
            errors.append(f"writer {k}: {e!r}")

    def discard() -> None:
        try:
            while not stop.is_set():
                for c in range(HOT):
                    with rt.request():
                        q.discard(c * CLUSTER, CLUSTER)
                        q.flush()
        except Exception as e:
            errors.append(f"discard: {e!r}")

    threads = [threading.Thread(target=overwrite, args=(k,)) for k in range(3)]
    threads.append(threading.Thread(target=discard))
    for t in threads:
        t.start()
    written: dict[int, bytes] = {}
    try:
        for r in range(ROUNDS):
            c = r % FRESH
            data = _block(1000 + c, r)
            with rt.request():
                q.write(FRESH_BASE + c * CLUSTER, data)
                if r % 4 == 0:
                    q.flush()
            written[c] = data
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert not errors, errors[:3]
    q.flush()
    for c, data in written.items():
        assert q.read(FRESH_BASE + c * CLUSTER, CLUSTER) == data, f"fresh cluster {c} overwritten"
    rt.close_all()
    res = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    # and QEMU reads from the image file what txgraph's node read
    raw = tmp_path / "race.raw"
    subprocess.run(
        ["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(img), str(raw)], check=True
    )
    with open(raw, "rb") as f:
        for c, data in written.items():
            f.seek(FRESH_BASE + c * CLUSTER)
            assert f.read(CLUSTER) == data, f"fresh cluster {c} differs in the image file"


def test_a_freed_cluster_waits_for_its_in_flight_overwrite(tmp_path: Path) -> None:
    """The race made deterministic: an overwrite is held inside the file write while its
    guest cluster is discarded, flushed and a new cluster is allocated; the new cluster
    must not get the held write's host cluster."""
    img = tmp_path / "held.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), "16M"], check=True)
    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(img)}, {}, False)
    rt.open_node("q", "qcow2", {"discard": "unmap"}, {"file": "f"}, False)
    q, f = rt.node("q"), rt.node("f")
    q.write(0, _block(1, 0))
    q.flush()
    host = q.block_status(0, CLUSTER).host_offset
    assert host is not None
    entered, release = threading.Event(), threading.Event()
    real_write = f.write

    def held_write(offset: int, data: bytes) -> None:
        if offset == host and not entered.is_set():
            entered.set()
            assert release.wait(30), "the held write was never released"
        real_write(offset, data)

    f.write = held_write  # type: ignore[method-assign]
    writer = threading.Thread(target=q.write, args=(0, _block(1, 1)))
    writer.start()
    assert entered.wait(30), "the overwrite did not reach the file"
    q.discard(0, CLUSTER)
    q.flush()  # would free the held cluster without the in-flight guard
    fresh = _block(2, 0)
    q.write(FRESH_BASE, fresh)  # ...and this allocation would reuse it
    q.flush()
    assert q.block_status(FRESH_BASE, CLUSTER).host_offset != host
    release.set()
    writer.join(30)
    assert not writer.is_alive()
    f.write = real_write  # type: ignore[method-assign]
    q.flush()  # now the held cluster is freed
    assert q.read(FRESH_BASE, CLUSTER) == fresh
    rt.close_all()
    res = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
