"""What the QMP loop's adaptive polling buys: round trips and adds, polling off and on.

Run as ``.venv/bin/python tools/qmp_polling.py [--rounds N] [--windows 0,32768,100000]``.
Each round starts a fresh qemu-storage-daemon 7.2 and one fresh ``txgraph serve`` per
``--poll-max-ns`` window, one after the other (interleaved, so load drifts hit all
alike), and times on each: 1,000 ``query-version`` round trips and 1,000 null-co
``blockdev-add`` commands sent one at a time (``txgraph bench qmp``'s script). It
prints the median per peer and measure in microseconds per command, with the
spread, and each txgraph window's ratio to QSD (> 1: txgraph faster).

The effect depends on the machine: polling saves the wake-up from ``epoll_wait``,
which is slow while the CPUs are idle and cheap while they are busy, so measure on
a quiet machine to see what a client of an idle server sees.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from txgraph.peers import QSD, QMPProcess, TxgraphDaemon

COMMANDS = 1000


def _round_trips(peer: QMPProcess) -> float:
    start = time.perf_counter()
    for _ in range(COMMANDS):
        peer.execute("query-version")
    return (time.perf_counter() - start) / COMMANDS * 1e6


def _adds(peer: QMPProcess) -> float:
    start = time.perf_counter()
    for i in range(COMMANDS):
        reply = peer.execute("blockdev-add", {"driver": "null-co", "node-name": f"n{i}"})
        if "return" not in reply:
            raise RuntimeError(f"{peer.label}: blockdev-add failed: {reply}")
    return (time.perf_counter() - start) / COMMANDS * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--windows", default="0,100000", help="comma-separated --poll-max-ns")
    args = parser.parse_args()
    windows = [int(w) for w in args.windows.split(",")]
    peers: dict[str, Callable[[], QMPProcess]] = {"qsd": QSD}
    for w in windows:
        peers[f"txgraph poll-max-ns={w}"] = lambda w=w: TxgraphDaemon(["--poll-max-ns", str(w)])
    results: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for name, factory in peers.items():
            for measure, run in (("query-version", _round_trips), ("blockdev-add", _adds)):
                with factory() as peer:
                    results.setdefault((name, measure), []).append(run(peer))
        print(f"round {r + 1}/{args.rounds}", flush=True)
    for measure in ("query-version", "blockdev-add"):
        qsd = statistics.median(results[("qsd", measure)])
        print(f"{measure} (us per command: median, min-max; ratio = QSD / txgraph)")
        for name in peers:
            values = results[(name, measure)]
            med = statistics.median(values)
            ratio = "" if name == "qsd" else f"  ratio {qsd / med:.2f}"
            print(f"  {name:28s} {med:8.1f}  {min(values):7.1f}-{max(values):7.1f}{ratio}")


if __name__ == "__main__":
    main()
