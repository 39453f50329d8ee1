"""Control-plane benchmarks: the same QMP script on txgraph and on qemu-storage-daemon.

Both peers run as separate processes and are driven by the same small QMP
client over a unix socket, so the ratio compares like with like (socket
round trips included on both sides). txgraph runs with its invariant checker
on: every step is checked.

Measures (one JSON line each: name, txgraph, peer, unit, ratio = peer/txgraph
time, so > 1 means txgraph is faster):

- ``blockdev-add-chain-<N>``: one blockdev-add whose qcow2 image has an
  N-deep backing chain in its headers, all auto-opened;
- ``blockdev-add-x<N>``: N separate blockdev-adds of null-co nodes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from txgraph.peers import QSD, QMPProcess, TxgraphDaemon

__all__ = ["run_qmp_benchmarks", "make_chain"]


def make_chain(workdir: Path, depth: int) -> Path:
    """``depth`` qcow2 images, each backed by the previous one (relative names)."""
    prev: Path | None = None
    for i in range(depth):
        img = workdir / f"layer{i:03d}.qcow2"
        args = ["qemu-img", "create", "-q", "-f", "qcow2"]
        if prev is not None:
            args += ["-b", prev.name, "-F", "qcow2"]
        subprocess.run([*args, str(img), "16M"], check=True, capture_output=True)
        prev = img
    assert prev is not None
    return prev


def _timed(peer_factory: Callable[[], QMPProcess], script: list[tuple[str, dict[str, Any]]],
           repeats: int) -> float:
    """Best wall time over ``repeats`` fresh peers for running ``script``; every step must succeed."""
    best = float("inf")
    for _ in range(repeats):
        with peer_factory() as peer:
            start = time.perf_counter()
            for command, arguments in script:
                reply = peer.execute(command, arguments)
                if "error" in reply:
                    raise RuntimeError(f"{peer.label}: {command} failed: {reply['error']['desc']}")
            best = min(best, time.perf_counter() - start)
    return best


def _row(name: str, ours: float, peer: float) -> dict[str, Any]:
    return {"name": name, "txgraph": round(ours * 1000, 2), "peer": round(peer * 1000, 2),
            "unit": "ms", "ratio": round(peer / ours, 3), "peer_name": "qemu-storage-daemon 7.2"}


def run_qmp_benchmarks(depth: int = 100, adds: int = 1000, repeats: int = 3) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="txgraph-bench-"))
    try:
        top = make_chain(workdir, depth)
        chain = [("blockdev-add", {"driver": "qcow2", "node-name": "top",
                                   "file": {"driver": "file", "filename": str(top)}})]
        many = [("blockdev-add", {"driver": "null-co", "node-name": f"n{i}"}) for i in range(adds)]
        rows = []
        for name, script in ((f"blockdev-add-chain-{depth}", chain), (f"blockdev-add-x{adds}", many)):
            peer = _timed(QSD, script, repeats)
            ours = _timed(TxgraphDaemon, script, repeats)
            rows.append(_row(name, ours, peer))
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
