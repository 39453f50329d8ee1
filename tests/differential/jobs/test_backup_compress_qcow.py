"""``blockdev-backup`` with ``compress: true`` into a qcow (version 1) target, on QSD 7.2 and txgraph.

qemu-img makes qcow images of 4 KiB clusters, and ``qcow_co_pwritev_compressed``
takes whole clusters only, while the backup copies 64 KiB chunks: QSD's job ends
with ``Invalid argument``. txgraph once wrote the chunks plain and reported
success. How far the job got (``offset``) and what it left in the target depend
on QSD's parallel copy workers, so the completion is compared without them.
(Into a qcow of 64 KiB clusters, QSD 7.2's parallel workers can give two
compressed streams the same file end - its data then differs from the source -
so that case is compared against ``qemu-io write -c`` instead, in
``tests/unit/io/test_io_qcow_compressed_write.py``.)
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from txgraph.oracle.peers import EnginePeer, Peer, QSDPeer

pytestmark = pytest.mark.qsd


def _completion(peer: Peer, d: Path) -> dict[str, Any]:
    for step in [
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "raw",
                "node-name": "src",
                "file": {"driver": "file", "filename": str(d / "src.raw")},
            },
        },
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "qcow",
                "node-name": "tgt",
                "file": {"driver": "file", "filename": str(d / "tgt.qcow")},
            },
        },
        {
            "execute": "blockdev-backup",
            "arguments": {
                "job-id": "j",
                "device": "src",
                "target": "tgt",
                "sync": "full",
                "compress": True,
            },
        },
    ]:
        assert peer.execute(step) == {"return": {}}, step
    event = peer.wait_event("BLOCK_JOB_COMPLETED", timeout=60)
    assert event is not None, "the backup did not complete"
    return {k: v for k, v in event["data"].items() if k != "offset"}


def test_compressed_backup_into_a_4k_cluster_qcow_fails_as_on_qsd(tmp_path: Path) -> None:
    seen = {}
    for label, factory in (("qsd", QSDPeer), ("txgraph", EnginePeer)):
        d = tmp_path / label
        d.mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", d / "src.raw", "1M"], check=True)
        subprocess.run(
            ["qemu-io", "-f", "raw", "-c", "write -P 0x11 0 256k", d / "src.raw"],
            check=True,
            capture_output=True,
        )
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow", d / "tgt.qcow", "1M"], check=True)
        peer = factory(d)
        try:
            seen[label] = _completion(peer, d)
        finally:
            peer.close()
    assert seen["txgraph"] == seen["qsd"]
    assert seen["qsd"]["error"] == "Invalid argument"
