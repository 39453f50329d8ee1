"""`txgraph plan --graph-from-qmp` + `txgraph apply --qmp` against a real qemu-storage-daemon.

QSD gets a second QMP monitor for the CLI (its socket chardev serves one
client at a time); the test's own connection is the first monitor.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.qsd import QSD
from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.plan.format import load_json

pytestmark = pytest.mark.qsd


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgraph.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def live(images: Path, tmp_path: Path) -> Iterator[tuple[QSD, str]]:
    make_images(images)
    sock = str(tmp_path / "cli.sock")
    extra = ["--chardev", f"socket,id=cli,path={sock},server=on,wait=off", "--monitor", "cli"]
    with QSD(extra, workdir=str(images)) as qsd:
        for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
            assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg
        yield qsd, sock


def _plan(sock: str, images: Path, out: Path) -> None:
    res = _cli(
        "plan", str(EXAMPLES / "seed-section3.json"), "--dir", str(images),
        "--graph-from-qmp", sock, "--out", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr


def test_verify_then_apply_to_qsd(live: tuple[QSD, str], images: Path, tmp_path: Path) -> None:
    qsd, sock = live
    verified = tmp_path / "verified.json"
    _plan(sock, images, verified)
    assert "graph-digest" in json.loads(verified.read_text())["source"]
    res = _cli("apply", str(verified), "--qmp", sock)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (
        "applied 4 step(s) as 6 QEMU command(s); every reply and graph as predicted" in res.stdout
    )
    assert "export 'vm0' is re-created on 'throttle0'" in res.stderr
    graph = qsd.cmd("x-debug-query-block-graph")
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    edges = {(names[e["parent"]], e["name"]): names[e["child"]] for e in graph["edges"]}
    assert edges[("", "root")] == "throttle0" and edges[("throttle0", "file")] == "snap"
    nodes = {n["node-name"]: n for n in qsd.cmd("query-named-block-nodes", {"flat": True})}
    assert nodes["snap"]["cache"]["direct"] is True and nodes["disk-file"]["ro"] is True
    # the same file again: QSD's graph moved on, nothing is sent
    res = _cli("apply", str(verified), "--qmp", sock)
    assert res.returncode == 1
    assert "refused: the live graph no longer matches" in res.stderr
    assert qsd.cmd("x-debug-query-block-graph") == graph


def test_tampered_plan_refused_by_qsd_apply(
    live: tuple[QSD, str], images: Path, tmp_path: Path
) -> None:
    qsd, sock = live
    verified = tmp_path / "verified.json"
    _plan(sock, images, verified)
    report = json.loads(verified.read_text())
    report["plan"][3]["arguments"]["options"][0]["backing"] = None
    verified.write_text(json.dumps(report))
    before = qsd.cmd("x-debug-query-block-graph")
    res = _cli("apply", str(verified), "--qmp", sock)
    assert res.returncode == 1
    assert "changed after it was verified" in res.stderr
    assert qsd.cmd("x-debug-query-block-graph") == before


def test_apply_stops_at_the_first_difference(
    live: tuple[QSD, str], images: Path, tmp_path: Path
) -> None:
    """Another process locks the overlay after verification: QSD refuses what the dry run
    accepted; apply says where and what, one line per difference, and exits 1."""
    qsd, sock = live
    verified = tmp_path / "verified.json"
    _plan(sock, images, verified)
    with QSD(workdir=str(images)) as other:
        other.cmd(
            "blockdev-add",
            {"driver": "file", "node-name": "f", "filename": str(images / "snap0.qcow2")},
        )
        other.cmd(
            "blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f", "backing": None}
        )
        res = _cli("apply", str(verified), "--qmp", sock)
    assert res.returncode == 1
    lines = [line for line in res.stderr.splitlines() if not line.startswith("note: ")]
    assert lines[0].startswith(
        "differs: step 1 (blockdev-add snap), command 1 of 1 (blockdev-add): predicted reply: "
    )
    assert 'observed error GenericError: Failed to get "write" lock' in lines[0]
    assert lines[-1] == (
        "stopped after 1 of 6 QEMU command(s): the live graph differs from the prediction"
    )
    assert "snap" not in {n["node-name"] for n in qsd.cmd("query-named-block-nodes")}
