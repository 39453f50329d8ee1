"""Open-time limits against qemu-storage-daemon 7.2: null-co sizes and NUL bytes in filenames.

* null-co / null-aio ``size``: accepted up to ``BDRV_MAX_LENGTH`` (2^63 - 2^30), then
  ``Could not refresh total sector count: File too large``; 2^63 is a QAPI type error.
  A negative size aborts QSD 7.2 (pinned below); txgraph answers with the message QEMU
  prints before aborting.
* A filename with U+0000: QEMU keeps it as modified UTF-8 (C0 80), so it opens a file of
  that name if there is one and says ``Could not open '…': No such file or directory``
  otherwise, never a Python text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, QSDPeer
from txgraph.peers import QSD

pytestmark = pytest.mark.qsd


MAX = (1 << 63) - (1 << 30)


def _adds(workdir: Path) -> list[dict[str, Any]]:
    sizes = [MAX, MAX + 1, MAX - 1, (1 << 63) - 1, (1 << 63) - 512, 1 << 62, 1 << 63, 1000, 0, 511]
    out: list[dict[str, Any]] = []
    for i, size in enumerate(sizes):
        for drv in ("null-co", "null-aio"):
            out.append({"driver": drv, "node-name": f"{drv[5]}{i}", "size": size})
    out.append({"driver": "null-co", "node-name": "rz", "size": MAX + 1, "read-zeroes": True})
    out.append({"driver": "file", "node-name": "nul1", "filename": f"{workdir}/a\u0000b"})
    out.append({"driver": "file", "node-name": "nul2", "filename": f"{workdir}/x\u0000y"})
    out.append(
        {
            "driver": "raw",
            "node-name": "nul3",
            "file": {"driver": "file", "filename": f"{workdir}/\u0000"},
        }
    )
    out.append(
        {
            "driver": "blkdebug",
            "node-name": "nul4",
            "config": f"{workdir}/c\u0000f",
            "image": {"driver": "null-co"},
        }
    )
    out.append(
        {
            "driver": "nbd",
            "node-name": "nul5",
            "server": {"type": "inet", "host": "127.0.0.1", "port": "1\u00002"},
        }
    )
    out.append(
        {
            "driver": "nbd",
            "node-name": "nul6",
            "server": {"type": "unix", "path": f"{workdir}/x\u0000y"},
        }
    )
    out.append({"driver": "host_device", "node-name": "nul7", "filename": "/dev/nu\u0000ll"})
    return out


def _run(peer: Any, workdir: Path) -> list[Any]:
    out: list[Any] = []
    for args in _adds(workdir):
        reply = peer.execute({"execute": "blockdev-add", "arguments": args})
        if "error" in reply:
            out.append(reply["error"]["desc"].replace(str(workdir), "{dir}"))
            continue
        nodes = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        mine = [n for n in nodes["return"] if n["node-name"] == args["node-name"]]
        out.append(
            [
                (n["drv"], n["image"]["virtual-size"], n["file"].replace(str(workdir), "{dir}"))
                for n in mine
            ]
        )
    return out


def test_sizes_and_nul_filenames_match_qsd(tmp_path: Path) -> None:
    results = {}
    for label, cls in (("qsd", QSDPeer), ("txgraph", EnginePeer)):
        workdir = tmp_path / label
        workdir.mkdir()
        # The modified-UTF-8 name QEMU really opens for "a\u0000b".
        (workdir / "a\udcc0\udc80b").write_bytes(b"\0" * 4096)
        peer = cls(workdir)
        try:
            results[label] = _run(peer, workdir)
        finally:
            peer.close()
    names = [a["node-name"] for a in _adds(tmp_path)]
    diffs = [(n, q, t) for n, q, t in zip(names, results["qsd"], results["txgraph"]) if q != t]
    assert not diffs, diffs
    texts = [r for r in results["txgraph"] if isinstance(r, str)]
    assert "Could not refresh total sector count: File too large" in texts
    assert not any("null byte" in t or "internal error" in t for t in texts), texts
    assert isinstance(results["qsd"][names.index("nul1")], list)  # the C0 80 file opened


@pytest.mark.parametrize("drv", ["null-co", "null-aio"])
def test_negative_null_size_aborts_qsd_but_not_txgraph(drv: str, tmp_path: Path) -> None:
    args = {"driver": drv, "node-name": "n", "size": -1}
    with QSD(workdir=str(tmp_path)) as qsd:
        with pytest.raises(RuntimeError, match="closed the connection"):
            qsd.execute("blockdev-add", args)
        assert qsd.proc.wait(10) < 0
    peer = EnginePeer(tmp_path)
    try:
        reply = peer.execute({"execute": "blockdev-add", "arguments": args})
        assert reply["error"]["desc"] == "Parameter 'size' expects a non-negative number below 2^64"
        nodes = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        assert nodes["return"] == []
    finally:
        peer.close()
