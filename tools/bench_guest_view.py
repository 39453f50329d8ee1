"""Cost of V1-guest-view per command on a fragmented chain (not a test: prints medians).

Run as ``.venv/bin/python tools/bench_guest_view.py [EXTENTS]`` (default 8192). It
makes ``base <- mid <- top`` (1 GiB; ``mid`` allocates EXTENTS separate 64 KiB
clusters, written by qemu-io), exports ``top`` over NBD from an in-process
Engine, and times ``blockdev-reopen`` of ``top`` under ``qemu`` and ``safe``:

- onto ``base`` (skipping mid: V1 walks mid's block status and refuses);
- onto ``mid`` again (no change of the chain: V1 queries nothing).

The numbers are wall-clock medians of 15 runs on whatever the machine is doing;
compare the ``qemu`` and ``safe`` lines of the same run.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from txgraph.ops.session import Session
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine

CLUSTER = 64 << 10


def make(d: Path, extents: int) -> None:
    def sh(*argv: str, stdin: str | None = None) -> None:
        subprocess.run(argv, check=True, capture_output=True, input=stdin, text=True)

    sh("qemu-img", "create", "-q", "-f", "qcow2", str(d / "base.qcow2"), "1G")
    sh(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        str(d / "mid.qcow2"),
    )
    cmds = "".join(f"write -q -P 0xcc {2 * i * CLUSTER} 64k\n" for i in range(extents))
    sh("qemu-io", "-f", "qcow2", str(d / "mid.qcow2"), stdin=cmds + "quit\n")
    sh(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        str(d / "top.qcow2"),
    )


def _reopen(backing: str) -> dict[str, Any]:
    opts = {"driver": "qcow2", "node-name": "top", "file": "top-file", "backing": backing}
    return {"execute": "blockdev-reopen", "arguments": {"options": [opts]}}


def run(d: Path, policy: str) -> None:
    session = Session(policy=policy)
    engine = Engine(CommandContext(session))
    try:
        for name, backing in (("base", None), ("mid", "base"), ("top", "mid")):
            args: dict[str, Any] = {
                "driver": "qcow2",
                "node-name": name,
                "file": {
                    "driver": "file",
                    "node-name": f"{name}-file",
                    "filename": str(d / f"{name}.qcow2"),
                },
            }
            if backing:
                args["backing"] = backing
            assert "return" in engine.execute({"execute": "blockdev-add", "arguments": args})
        addr = {"type": "unix", "data": {"path": str(d / f"nbd-{policy}.sock")}}
        engine.execute({"execute": "nbd-server-start", "arguments": {"addr": addr}})
        engine.execute(
            {
                "execute": "block-export-add",
                "arguments": {"type": "nbd", "id": "e0", "node-name": "top"},
            }
        )
        for label, msg, undo in (
            ("skip mid", _reopen("base"), _reopen("mid")),
            ("unchanged", _reopen("mid"), None),
        ):
            times = []
            for _ in range(15):
                t = time.perf_counter()
                reply = engine.execute(msg)
                times.append(time.perf_counter() - t)
                if undo is not None and "return" in reply:
                    engine.execute(undo)
            verdict = "accepted" if "return" in reply else "refused"
            print(
                f"{policy:5} {label:10} {verdict:8} median {statistics.median(times) * 1e3:7.1f} ms"
            )
    finally:
        session.close()


def main() -> None:
    extents = int(sys.argv[1]) if len(sys.argv) > 1 else 8192
    with tempfile.TemporaryDirectory(prefix="gv-bench-") as tmp:
        d = Path(tmp)
        make(d, extents)
        print(f"mid allocates {extents} extents of 64 KiB")
        for policy in ("qemu", "safe"):
            run(d, policy)


if __name__ == "__main__":
    main()
