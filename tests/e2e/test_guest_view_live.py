"""V1-guest-view on the live path: `txgraph serve --policy safe` refuses the newcomer's reopen.

A real server process, a real NBD export of a chain with data, real qemu-io as
the guest: under ``safe`` the reopen is refused with the rule, the range and
both layers, the graph is unchanged and the guest still reads mid's data;
under ``qemu`` the same reopen is accepted and the guest then reads base's
data in exactly the range the refusal named.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.plan.guestkit import (
    BASE,
    MID,
    REOPEN_SKIP_MID,
    SNAPSHOT_AND_THROTTLE,
    TOP,
    MiB,
    make_chain,
    reads,
    state,
)
from txgraph.peers import TxgraphDaemon
from txgraph.plan.format import substitute_dir


def _build(daemon: TxgraphDaemon, images: Path) -> str:
    for msg in substitute_dir(state(), str(images)):
        assert "return" in daemon.execute(msg["execute"], msg.get("arguments")), msg
    return str(images / "nbd.sock")


def test_safe_server_refuses_the_reopen_and_the_guest_keeps_mids_data(
    images: Path, tmp_path: Path
) -> None:
    make_chain(images)
    with TxgraphDaemon(["--policy", "safe"], workdir=str(tmp_path)) as daemon:
        sock = _build(daemon, images)
        graph_before = daemon.cmd("x-debug-query-block-graph")
        reply = daemon.execute(REOPEN_SKIP_MID["execute"], REOPEN_SKIP_MID["arguments"])
        err = reply["error"]
        assert err["class"] == "GenericError"
        assert err["desc"] == (
            "Guest reads through export 'vm0' (on 'top') of 4 MiB at 4 MiB would return base's "
            "data instead of mid's."
        )
        exp = err["__io.txgraph_explanation"]
        assert exp["rule"] == "V1-guest-view"
        (v,) = exp["explanation"]["violations"]
        assert v["ranges"] == [
            {"offset": 4 * MiB, "length": 4 * MiB, "before": "mid", "after": "base"}
        ]
        assert daemon.cmd("x-debug-query-block-graph") == graph_before
        assert reads(sock, "vm0", [(0, MiB, TOP), (4 * MiB, 4 * MiB, MID), (MiB, MiB, BASE)]) == []
        # a snapshot and a throttle filter keep the view: accepted under safe
        for msg in substitute_dir(SNAPSHOT_AND_THROTTLE, str(images)):
            assert daemon.execute(msg["execute"], msg.get("arguments")) == {"return": {}}, msg
        assert reads(sock, "vm0", [(4 * MiB, 4 * MiB, MID)]) == []


def test_qemu_policy_server_accepts_it_and_the_guest_reads_base(
    images: Path, tmp_path: Path
) -> None:
    make_chain(images)
    with TxgraphDaemon(["--policy", "qemu"], workdir=str(tmp_path)) as daemon:
        sock = _build(daemon, images)
        assert reads(sock, "vm0", [(4 * MiB, 4 * MiB, MID)]) == []
        reply = daemon.execute(REOPEN_SKIP_MID["execute"], REOPEN_SKIP_MID["arguments"])
        assert reply == {"return": {}}
        assert reads(sock, "vm0", [(0, MiB, TOP), (4 * MiB, 4 * MiB, BASE)]) == []


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgraph.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_a_declared_change_verifies_and_applies_on_a_safe_server(
    images: Path, tmp_path: Path
) -> None:
    make_chain(images)
    with TxgraphDaemon(["--policy", "safe"], workdir=str(tmp_path)) as daemon:
        sock = _build(daemon, images)
        plain, declared = tmp_path / "plain.json", tmp_path / "declared.json"
        plain.write_text(json.dumps([REOPEN_SKIP_MID]))
        declared.write_text(json.dumps([{**REOPEN_SKIP_MID, "intent": "changes-guest-data"}]))
        verified = tmp_path / "verified.json"
        # verified against the served graph (imported; allocation from the images on disk)
        res = _cli("plan", str(plain), "--graph-from-qmp", daemon.socket_path)
        assert res.returncode == 1 and "[V1-guest-view]" in res.stdout, res.stdout + res.stderr
        res = _cli(
            "plan", str(declared), "--graph-from-qmp", daemon.socket_path, "--out", str(verified)
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert "declared [V1-guest-view]" in res.stdout
        res = _cli("apply", str(verified), "--qmp", daemon.socket_path)
        assert res.returncode == 0, res.stdout + res.stderr
        assert reads(sock, "vm0", [(0, MiB, TOP), (4 * MiB, 4 * MiB, BASE)]) == []
