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

Each measure runs ``repeats`` rounds (``txgraph bench qmp --rounds``), QSD then
txgraph on fresh peers each round (interleaved), and reports the medians with
their spread (min, max). On a loaded machine single rounds vary by 3x or more:
interleaving keeps the ratio comparable, more rounds make its median steadier.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
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


def _once(
    peer_factory: Callable[[], QMPProcess], script: list[tuple[str, dict[str, Any]]]
) -> float:
    """Wall time of ``script`` on a fresh peer (start-up untimed); every step must succeed."""
    with peer_factory() as peer:
        start = time.perf_counter()
        for command, arguments in script:
            reply = peer.execute(command, arguments)
            if "error" in reply:
                raise RuntimeError(f"{peer.label}: {command} failed: {reply['error']['desc']}")
        return time.perf_counter() - start


def _interleaved(
    script: list[tuple[str, dict[str, Any]]], repeats: int
) -> tuple[list[float], list[float]]:
    """Round by round, QSD then txgraph (A B A B ...), so load drifts hit both alike."""
    ours: list[float] = []
    peer: list[float] = []
    for r in range(repeats):
        peer.append(_once(QSD, script))
        ours.append(_once(TxgraphDaemon, script))
        print(f"bench qmp: round {r + 1}/{repeats}", file=sys.stderr, flush=True)
    return ours, peer


def _row(name: str, ours: list[float], peer: list[float]) -> dict[str, Any]:
    a, b = statistics.median(ours), statistics.median(peer)
    return {
        "name": name,
        "txgraph": round(a * 1000, 2),
        "peer": round(b * 1000, 2),
        "spread": {
            "txgraph": [round(min(ours) * 1000, 2), round(max(ours) * 1000, 2)],
            "peer": [round(min(peer) * 1000, 2), round(max(peer) * 1000, 2)],
        },
        "unit": "ms",
        "ratio": round(b / a, 3),
        "peer_name": "qemu-storage-daemon 7.2",
    }


def run_qmp_benchmarks(
    depth: int = 100, adds: int = 1000, repeats: int = 5
) -> list[dict[str, Any]]:
    workdir = Path(tempfile.mkdtemp(prefix="txgraph-bench-"))
    try:
        top = make_chain(workdir, depth)
        chain = [
            (
                "blockdev-add",
                {
                    "driver": "qcow2",
                    "node-name": "top",
                    "file": {"driver": "file", "filename": str(top)},
                },
            )
        ]
        many = [("blockdev-add", {"driver": "null-co", "node-name": f"n{i}"}) for i in range(adds)]
        rows = []
        for name, script in (
            (f"blockdev-add-chain-{depth}", chain),
            (f"blockdev-add-x{adds}", many),
        ):
            ours, peer = _interleaved(script, repeats)
            rows.append(_row(name, ours, peer))
        return rows
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
