"""The compress filter's padded writes under concurrent writers.

A write smaller than a cluster is padded: the cluster is read, the write laid
over it, and the whole cluster written compressed. Padded writes are serialised
(``CompressNode._serial``), so two writers into one cluster never both read it
empty. Into qcow2 the first one's cluster is compressed, the others find it
written and get EIO (a compressed cluster is never overwritten): the cluster
holds exactly the first one's data. A sparse vmdk takes compressed writes as
plain ones: every writer succeeds and keeps its data, which two unserialised
read-modify-writes of one cluster would lose. Writers into different clusters
all succeed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from imgkit import open_node, qemu_img

from txgraph.errors import IOFailure

pytestmark = pytest.mark.timeout(120)

CLUSTER = 65536
WRITERS = 8


def _run(threads: list[threading.Thread]) -> None:
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)


def test_concurrent_padded_writes_into_qcow2(tmp_path: Path) -> None:
    image = tmp_path / "a.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", image, "4M")
    file = open_node("file", {"filename": str(image)})
    qcow2 = open_node("qcow2", {}, {"file": file})
    comp = open_node("compress", {}, {"file": qcow2})
    start = threading.Barrier(WRITERS)
    outcome: dict[int, str] = {}

    def into_one_cluster(i: int) -> None:
        start.wait(30)
        try:
            comp.write(4096 * i, bytes([i + 1]) * 4096)
            outcome[i] = "ok"
        except IOFailure as err:
            outcome[i] = err.desc

    _run([threading.Thread(target=into_one_cluster, args=(i,)) for i in range(WRITERS)])
    winners = [i for i, o in outcome.items() if o == "ok"]
    assert len(winners) == 1, outcome
    assert set(outcome.values()) == {"ok", "Input/output error"}
    (w,) = winners
    expect = bytearray(CLUSTER)
    expect[4096 * w : 4096 * (w + 1)] = bytes([w + 1]) * 4096
    assert comp.read(0, CLUSTER) == bytes(expect)

    errors: list[str] = []

    def into_own_cluster(i: int) -> None:
        try:
            comp.write(CLUSTER * (i + 1) + 512, bytes([0x80 + i]) * 1024)
        except IOFailure as err:
            errors.append(err.desc)

    _run([threading.Thread(target=into_own_cluster, args=(i,)) for i in range(WRITERS)])
    assert errors == []
    for i in range(WRITERS):
        got = comp.read(CLUSTER * (i + 1), CLUSTER)
        assert got == bytes(512) + bytes([0x80 + i]) * 1024 + bytes(CLUSTER - 1536)
    comp.close()
    qcow2.close()
    file.close()
    check = json.loads(qemu_img("check", "--output=json", image))
    assert check["compressed-clusters"] == 1 + WRITERS
    assert (check["check-errors"], check.get("corruptions", 0), check.get("leaks", 0)) == (0, 0, 0)


def test_concurrent_padded_writes_into_a_sparse_vmdk(tmp_path: Path) -> None:
    image = tmp_path / "a.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", image, "4M")
    file = open_node("file", {"filename": str(image)})
    vmdk = open_node("vmdk", {}, {"file": file})
    comp = open_node("compress", {}, {"file": vmdk})
    errors: list[str] = []

    def writer(i: int, base: int, start: threading.Barrier) -> None:
        start.wait(30)
        try:
            comp.write(base + 4096 * i, bytes([i + 1]) * 4096)
        except IOFailure as err:
            errors.append(err.desc)

    for rounds in range(4):  # each round fills a fresh grain from all writers at once
        base, start = CLUSTER * rounds, threading.Barrier(WRITERS)
        _run([threading.Thread(target=writer, args=(i, base, start)) for i in range(WRITERS)])
        assert errors == []
        expect = b"".join(bytes([i + 1]) * 4096 for i in range(WRITERS))
        assert comp.read(base, 4096 * WRITERS) == expect, f"round {rounds}: a write was lost"
    comp.close()
    vmdk.close()
    file.close()
    qemu_img("check", "-q", image)
