"""Block-job throughput: mirror and stream on txgraph vs qemu-storage-daemon 7.2.

Not a timed test: run ``txgraph bench jobs [--size-mib N] [--workdir DIR]``.
Each round makes fresh images with ``qemu-img``: for the mirror a fully
allocated qcow2 of ``size`` with incompressible data mirrored (``sync: full``,
``speed: 0``) to an empty qcow2, until BLOCK_JOB_READY; for the stream a
fully allocated base under an empty overlay, streamed until
BLOCK_JOB_COMPLETED. The same QMP script runs on both peers, alternating,
with the peer started beforehand (start-up is not measured). Medians of wall
time from the job command's reply to the event give MB/s; prints one JSON
line per job: ``{name, txgraph, peer, unit: "MB/s", ratio, spread}``, ratio =
txgraph / peer, spread the min-max rate of each side; progress goes to stderr.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from txgraph.oracle.peers import EnginePeer, Peer, QSDPeer

__all__ = ["run_jobs_benchmark"]

MiB = 1 << 20


def _make(work: Path, size: int, job: str) -> None:
    for name in ("src.qcow2", "tgt.qcow2", "ovl.qcow2", "data.raw"):
        (work / name).unlink(missing_ok=True)
    data = work / "data.raw"
    chunk = os.urandom(4 * MiB)
    with open(data, "wb") as f:
        for i in range(size // len(chunk)):
            f.write(i.to_bytes(8, "little") + chunk[8:])
    subprocess.run(
        [
            "qemu-img",
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            str(data),
            str(work / "src.qcow2"),
        ],
        check=True,
    )
    data.unlink()
    if job == "mirror":
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(work / "tgt.qcow2"), str(size)],
            check=True,
        )
    else:
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "src.qcow2",
                "-F",
                "qcow2",
                str(work / "ovl.qcow2"),
            ],
            check=True,
        )


def _qcow2(name: str, file: str, **extra: Any) -> dict[str, Any]:
    return {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "qcow2",
            "node-name": name,
            "file": {"driver": "file", "filename": file},
            **extra,
        },
    }


def _one(factory: type[Peer], work: Path, job: str, timeout: float) -> float:
    peer = factory(work)  # type: ignore[call-arg]
    try:
        if job == "mirror":
            setup = [_qcow2("src", "src.qcow2"), _qcow2("tgt", "tgt.qcow2")]
            start = {
                "execute": "blockdev-mirror",
                "arguments": {"job-id": "j", "device": "src", "target": "tgt", "sync": "full"},
            }
            event = "BLOCK_JOB_READY"
        else:
            setup = [_qcow2("ovl", "ovl.qcow2")]
            start = {"execute": "block-stream", "arguments": {"job-id": "j", "device": "ovl"}}
            event = "BLOCK_JOB_COMPLETED"
        for msg in setup:
            reply = peer.execute(msg)
            if "error" in reply:
                raise RuntimeError(f"{peer.label}: {reply['error']}")
        began = time.perf_counter()
        reply = peer.execute(start)
        if "error" in reply:
            raise RuntimeError(f"{peer.label}: {reply['error']}")
        if peer.wait_event(event, {"device": "j"}, timeout) is None:
            raise RuntimeError(f"{peer.label}: no {event} within {timeout} s")
        elapsed = time.perf_counter() - began
        if job == "mirror":
            peer.execute({"execute": "job-cancel", "arguments": {"id": "j"}})
            peer.wait_event("JOB_STATUS_CHANGE", {"status": "null"}, timeout)
        return elapsed
    finally:
        peer.close()


def run_jobs_benchmark(
    size_mib: int = 1024, rounds: int = 3, workdir: str | None = None
) -> list[dict[str, Any]]:
    """Measure mirror and stream on both peers in one run (interleaved); the JSON rows."""
    base = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="txgraph-bench-jobs-"))
    base.mkdir(parents=True, exist_ok=True)
    size = size_mib * MiB
    timeout = max(120.0, size_mib * 1.0)
    rows = []
    try:
        for job in ("mirror", "stream"):
            times: dict[str, list[float]] = {"txgraph": [], "qsd": []}
            for _round in range(rounds):
                for label, factory in (("txgraph", EnginePeer), ("qsd", QSDPeer)):
                    _make(base, size, job)
                    times[label].append(_one(factory, base, job, timeout))
                    print(
                        f"bench jobs: {job} round {_round + 1}/{rounds} {label}"
                        f" {times[label][-1]:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
            rates = {k: [size / t / 1e6 for t in v] for k, v in times.items()}
            tx = statistics.median(rates["txgraph"])
            peer = statistics.median(rates["qsd"])
            rows.append(
                {
                    "name": f"{job}-{size_mib}MiB",
                    "txgraph": round(tx, 1),
                    "peer": round(peer, 1),
                    "unit": "MB/s",
                    "ratio": round(tx / peer, 2),
                    "spread": {
                        "txgraph": [
                            round(min(rates["txgraph"]), 1),
                            round(max(rates["txgraph"]), 1),
                        ],
                        "peer": [round(min(rates["qsd"]), 1), round(max(rates["qsd"]), 1)],
                    },
                    "peer_desc": "qemu-storage-daemon 7.2, same images, speed 0",
                }
            )
    finally:
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)
    return rows
