"""qcow2 metadata-overlap checks and corruption signalling, against qemu-storage-daemon 7.2.

The hostile image has L1[0] pointing at the refcount table: a guest write then
makes the L2 write-back land on the refcount table. Both daemons get the same
blockdev-add (with each overlap-check form), an NBD export and the same qemu-io
session; the qemu-io output and the corrupt bit afterwards must be equal.
BLOCK_IMAGE_CORRUPTED is compared at the Runtime's event channel (the QMP
forwarding of driver events belongs to the event layer).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from interop_kit import open_qcow2, poke, qemu_img, qemu_io

from txgraph.errors import IOFailure, OpenError
from txgraph.io.qcow2.overlap import TEMPLATES, parse_overlap_check
from txgraph.io.runtime import Runtime
from txgraph.peers import QSD, QMPProcess, TxgraphDaemon

# (blockdev-add options, whether the refcount-table check is on and refuses the write)
OPTION_FORMS: list[tuple[dict[str, Any], bool]] = [
    ({}, True),
    ({"overlap-check": "none"}, False),
    ({"overlap-check": "constant"}, True),
    ({"overlap-check": {"template": "none", "refcount-table": True}}, True),
    ({"overlap-check": {"template": "all", "refcount-table": False}}, False),
    ({"overlap-check": {"active-l2": False}}, True),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("ovl")
    p = d / "base.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", p, "64M")
    qemu_io(p, "write -q -P 1 0 192k")
    return p


def _hostile(base: Path, dest: Path) -> Path:
    """L1[0] -> the refcount table (COPIED set, as qemu-img wrote it)."""
    shutil.copy(base, dest)
    raw = dest.read_bytes()
    l1 = int.from_bytes(raw[40:48], "big")
    reftable = int.from_bytes(raw[48:56], "big")
    poke(dest, l1, ">Q", reftable | (1 << 63))
    return dest


def _corrupt_bit(img: Path) -> bool:
    info = json.loads(qemu_img("info", "-U", "--output=json", img))
    return bool(info["format-specific"]["data"].get("corrupt"))


@pytest.fixture(scope="module")
def daemons() -> Iterator[tuple[QSD, TxgraphDaemon]]:
    with QSD() as q, TxgraphDaemon() as t:
        yield q, t


def _session(d: QMPProcess, img: Path, name: str, opts: dict[str, Any]) -> str:
    reply = d.execute(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": name,
            "file": {"driver": "file", "filename": str(img)},
            **opts,
        },
    )
    assert "error" not in reply, reply
    sock = img.parent / f"{name}.sock"
    assert "error" not in d.execute(
        "nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(sock)}}}
    )
    assert "error" not in d.execute(
        "block-export-add", {"type": "nbd", "id": name, "node-name": name, "writable": True}
    )
    try:
        res = subprocess.run(
            [
                "qemu-io",
                "-f",
                "raw",
                "-c",
                "write -q -P 2 0 4k",
                "-c",
                "read -q -P 2 0 4k",
                "-c",
                "read -q 64k 4k",
                f"nbd+unix:///{name}?socket={sock}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        d.execute("block-export-del", {"id": name})
        d.execute("nbd-server-stop")
        d.execute("blockdev-del", {"node-name": name})
    return res.stdout + res.stderr


@pytest.mark.parametrize("opts,refused", OPTION_FORMS, ids=[json.dumps(o) for o, _ in OPTION_FORMS])
def test_overlap_check_matches_qsd_over_nbd(
    opts: dict[str, Any],
    refused: bool,
    base: Path,
    tmp_path: Path,
    daemons: tuple[QSD, TxgraphDaemon],
) -> None:
    results = []
    for k, d in enumerate(daemons):
        img = _hostile(base, tmp_path / f"h{k}.qcow2")
        out = _session(d, img, f"n{k}", opts)
        results.append((out, _corrupt_bit(img)))
    assert results[0] == results[1]
    assert results[1][1] == refused
    assert ("write failed: Input/output error" in results[1][0]) == refused


def test_event_and_unusable_node_match_qsd(base: Path, tmp_path: Path, qsd: QSD) -> None:
    """BLOCK_IMAGE_CORRUPTED fields, EIO then ENOMEDIUM, flush still fine, nothing written after."""
    theirs = _hostile(base, tmp_path / "qsd.qcow2")
    out = _session(qsd, theirs, "c0", {})
    assert "write failed: Input/output error" in out
    qsd.execute("query-version")
    qsd_events = [e["data"] for e in qsd.events if e["event"] == "BLOCK_IMAGE_CORRUPTED"]

    ours = _hostile(base, tmp_path / "ours.qcow2")
    rt = Runtime()
    seen: list[tuple[str, dict[str, Any]]] = []
    rt.event_listeners.append(lambda ev, data: seen.append((ev, data)))
    rt.open_node("f", "file", {"filename": str(ours)}, {}, False)
    rt.open_node("c0", "qcow2", {}, {"file": "f"}, False)
    node = rt.node("c0")
    node.write(0, b"\2" * 4096)  # writeback: the refusal comes with the flush
    with pytest.raises(IOFailure) as err:
        node.flush()
    assert err.value.errno == 5
    with pytest.raises(IOFailure) as err:
        node.read(65536, 4096)
    assert err.value.errno == 123  # ENOMEDIUM; NBD carries it as EINVAL like QSD's
    node.flush()
    before = ours.read_bytes()
    rt.close_node("c0")
    rt.close_node("f")
    assert ours.read_bytes() == before  # a dead node writes nothing on close
    assert [d for ev, d in seen if ev == "BLOCK_IMAGE_CORRUPTED"] == qsd_events
    assert _corrupt_bit(ours) and _corrupt_bit(theirs)
    check = subprocess.run(["qemu-img", "check", str(ours)], capture_output=True, text=True)
    check_q = subprocess.run(["qemu-img", "check", str(theirs)], capture_output=True, text=True)
    assert check.returncode == check_q.returncode


def test_read_only_corruption_is_not_fatal(base: Path, tmp_path: Path) -> None:
    img = tmp_path / "ro.qcow2"
    shutil.copy(base, img)
    raw = img.read_bytes()
    l2 = int.from_bytes(raw[int.from_bytes(raw[40:48], "big") :][:8], "big") & ((1 << 56) - 512)
    poke(img, l2, ">Q", (1 << 63) | 0x50201)  # preallocated zero cluster, unaligned
    events: list[dict[str, Any]] = []
    node = open_qcow2(img, read_only=True)
    node.event_sink = lambda ev, data: events.append(data)  # type: ignore[attr-defined]
    for _ in range(2):
        with pytest.raises(IOFailure):
            node.read(0, 512)
    assert node.read(65536, 512) == b"\1" * 512
    assert events == [
        {
            "device": "",
            "node-name": node.node_name,
            "fatal": False,
            "msg": "Cluster allocation offset 0x50200 unaligned (L2 offset: 0x40000, L2 index: 0)",
        }
    ]
    node.close()
    assert not _corrupt_bit(img)


def test_overlap_option_parsing() -> None:
    assert parse_overlap_check({}) == TEMPLATES["cached"]
    assert parse_overlap_check({"overlap-check": "all"}) == TEMPLATES["all"]
    assert (
        parse_overlap_check({"overlap-check.template": "none", "overlap-check.main-header": "on"})
        == 1
    )
    assert (
        parse_overlap_check({"overlap-check": {"template": "constant", "main-header": False}})
        == TEMPLATES["constant"] - 1
    )
    with pytest.raises(OpenError) as e:
        parse_overlap_check({"overlap-check": "all", "overlap-check.template": "none"})
    assert e.value.desc == (
        "Conflicting values for qcow2 options 'overlap-check' ('all') and "
        "'overlap-check.template' ('none')"
    )
    with pytest.raises(OpenError) as e:
        parse_overlap_check({"overlap-check": "some"})
    assert e.value.desc == (
        "Unsupported value 'some' for qcow2 option 'overlap-check'. "
        "Allowed are any of the following: none, constant, cached, all"
    )
