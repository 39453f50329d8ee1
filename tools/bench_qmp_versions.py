"""``txgraph bench qmp``'s scripts on QSD, on txgraph at an older commit and on this tree,
round by round in one run (QSD, old, new, QSD, old, new, ...).

Run as ``.venv/bin/python tools/bench_qmp_versions.py COMMIT [--rounds N]`` from the
repository. The old tree is ``git archive COMMIT txgraph`` in a temporary directory,
put first on the daemon's ``PYTHONPATH``; both run on this venv. Per measure, one JSON
line: the medians and spreads of the script's wall time (client side, as bench qmp
measures it) and of the server process's CPU time over the same script (utime+stime
from ``/proc``, start-up excluded, 10 ms ticks), and the ratios QSD/old and QSD/new
(> 1: txgraph is faster). On a loaded machine the CPU ratio is the steadier one; the
wall ratio is what a client sees.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from txgraph.bench.qmp import make_chain
from txgraph.peers import QSD, QMPProcess, TxgraphDaemon

Script = list[tuple[str, dict[str, Any]]]


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _once(factory: Callable[[], QMPProcess], script: Script) -> tuple[float, float]:
    """(wall, server CPU) seconds of ``script`` on a fresh peer; every step must succeed."""
    with factory() as peer:
        pid = peer.proc.pid  # setpriv execs the daemon: the same process
        cpu0, start = _cpu(pid), time.perf_counter()
        for command, arguments in script:
            reply = peer.execute(command, arguments)
            if "error" in reply:
                raise RuntimeError(f"{peer.label}: {command} failed: {reply['error']['desc']}")
        wall = time.perf_counter() - start
        return wall, _cpu(pid) - cpu0


def _old_daemon(tree: str) -> Callable[[], QMPProcess]:
    def make() -> QMPProcess:
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = tree
        try:
            return TxgraphDaemon()
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved

    return make


def _summary(name: str, times: dict[str, list[tuple[float, float]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "rounds": len(times["qsd"]), "unit": "ms"}
    for i, what in ((0, "wall"), (1, "server_cpu")):
        med = {k: statistics.median(t[i] for t in v) for k, v in times.items()}
        out[what] = {
            "median": {k: round(v * 1e3, 1) for k, v in med.items()},
            "spread": {
                k: [round(min(t[i] for t in v) * 1e3, 1), round(max(t[i] for t in v) * 1e3, 1)]
                for k, v in times.items()
            },
            "ratio_old": round(med["qsd"] / med["old"], 3) if med["old"] else None,
            "ratio_new": round(med["qsd"] / med["new"], 3) if med["new"] else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--adds", type=int, default=1000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="txgraph-versions-"))
    try:
        tree = work / "old"
        tree.mkdir()
        archive = subprocess.run(
            ["git", "archive", args.commit, "txgraph"], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        top = make_chain(work, args.depth)
        scripts: dict[str, Script] = {
            f"blockdev-add-chain-{args.depth}": [
                (
                    "blockdev-add",
                    {
                        "driver": "qcow2",
                        "node-name": "top",
                        "file": {"driver": "file", "filename": str(top)},
                    },
                )
            ],
            f"blockdev-add-x{args.adds}": [
                ("blockdev-add", {"driver": "null-co", "node-name": f"n{i}"})
                for i in range(args.adds)
            ],
        }
        peers = {"qsd": QSD, "old": _old_daemon(str(tree)), "new": TxgraphDaemon}
        for name, script in scripts.items():
            times: dict[str, list[tuple[float, float]]] = {k: [] for k in peers}
            for r in range(args.rounds):
                for key, factory in peers.items():
                    times[key].append(_once(factory, script))
                print(f"{name}: round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            print(json.dumps(_summary(name, times)), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
