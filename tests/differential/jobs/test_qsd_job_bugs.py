"""qemu-storage-daemon 7.2 bugs around block jobs that ``txgraph fuzz`` finds, pinned apart.

Each test runs the sequence on QSD alone and requires QEMU's wrong answer, then on
txgraph and requires the answer QEMU's own rules give; these sequences stay out of
the differential scenarios' path (tests/differential/jobs/test_fuzz_findings.py and
the others). When a QEMU release fixes one, its QSD half fails and the pin goes.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.differential.jobs.harness import substitute_dir
from txgraph.oracle.peers import EnginePeer, Peer, QSDPeer

pytestmark = pytest.mark.qsd


def _run(
    factory: Callable[[Path], Peer], images: list[list[str]], steps: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The replies to ``steps`` on a fresh peer in a fresh directory (then cleaned up)."""
    workdir = Path(tempfile.mkdtemp(prefix="txj-qsdbug-"))
    try:
        for argv in images:
            subprocess.run(argv, cwd=workdir, check=True, capture_output=True, timeout=60)
        peer = factory(workdir)
        try:
            return [peer.execute(substitute_dir(step, str(workdir))) for step in steps]
        finally:
            peer.close()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _graph_backends(reply: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in reply["return"]["nodes"] if n["type"] == "block-backend"]


def test_qsd_leaks_the_stream_blockbackend_of_a_refused_block_stream() -> None:
    """Fuzz 353873179b/cca3e65b60/06dc573ee4/797b2b55d0: ``stream_start`` creates the job's
    BlockBackend on the copy-on-read filter, then a job child (``intermediate node``) is
    refused. Its error path drops the filter (whose parents, that BlockBackend among
    them, move to the top) and fails the job early, but nothing unrefs the BlockBackend:
    QSD keeps an anonymous BlockBackend with consistent-read on the top, so the top
    can no longer be deleted (``Node n0 is in use``). txgraph's refusal changes nothing."""
    images = [["qemu-img", "create", "-q", "-f", "qcow2", "i1.qcow2", "2M"]]
    steps: list[dict[str, Any]] = [
        {
            "execute": "blockdev-add",
            "arguments": {"driver": "null-aio", "node-name": "n4", "read-zeroes": True},
        },
        {
            "execute": "blockdev-add",
            "arguments": {"driver": "file", "filename": "{dir}/i1.qcow2", "node-name": "n1"},
        },
        {
            "execute": "blockdev-add",
            "arguments": {"driver": "qcow2", "node-name": "n0", "file": "n1", "backing": "n4"},
        },
        # n4 becomes n0's file as well as its backing: n0 writes it
        {
            "execute": "blockdev-reopen",
            "arguments": {
                "options": [{"driver": "qcow2", "node-name": "n0", "backing": "n4", "file": "n4"}]
            },
        },
        {"execute": "block-stream", "arguments": {"device": "n0", "job-id": "j1", "speed": 1}},
        {"execute": "x-debug-query-block-graph"},
        {"execute": "blockdev-del", "arguments": {"node-name": "n0"}},
    ]
    refusal = (
        "Permission conflict on node 'n4': permissions 'write, resize' are both required by "
        "node 'n0' (uses node 'n4' as 'file' child) and unshared by stream job 'j1' (uses "
        "node 'n4' as 'intermediate node' child)."
    )
    qsd = _run(QSDPeer, images, steps)
    assert qsd[4]["error"]["desc"] == refusal
    leaked = _graph_backends(qsd[5])
    assert [n["name"] for n in leaked] == [""], qsd[5]
    root = [e for e in qsd[5]["return"]["edges"] if e["parent"] == leaked[0]["id"]]
    assert [(e["name"], e["perm"]) for e in root] == [("root", ["consistent-read"])]
    assert qsd[6]["error"]["desc"] == "Node n0 is in use"

    txg = _run(EnginePeer, images, steps)
    assert txg[4]["error"]["desc"] == refusal
    assert _graph_backends(txg[5]) == []
    assert txg[6] == {"return": {}}


def test_qsd_segfaults_listing_nodes_while_a_concluded_stream_holds_its_filter() -> None:
    """Fuzz d136a3307a/012f9f80d2/4fb347076f/e1db4ec72f/c7f9b804ea and most other
    ``exit status -11`` findings at a block-stream: with ``auto-dismiss: false`` the
    concluded job still holds the copy-on-read filter it dropped from the graph, a node
    without a child. ``query-named-block-nodes`` asks that node for its length and QSD
    7.2 dies of SIGSEGV (GitLab #3149, fixed in 10.2 by 9dbfd4e28d; the job graph itself
    can still be queried). txgraph answers the length error QEMU's block layer gives for
    a node without medium, keeps serving, and lists the nodes once the job is dismissed."""
    images = [["qemu-img", "create", "-q", "-f", "qcow2", "a.qcow2", "1M"]]
    add = {
        "driver": "qcow2",
        "node-name": "a",
        "file": {"driver": "file", "filename": "{dir}/a.qcow2", "node-name": "a-f"},
    }
    steps: list[dict[str, Any]] = [
        {"execute": "blockdev-add", "arguments": add},
        {
            "execute": "block-stream",
            "arguments": {"device": "a", "job-id": "j", "auto-dismiss": False},
        },
        {"execute": "query-jobs"},
        {"execute": "x-debug-query-block-graph"},
        {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
        {"execute": "job-dismiss", "arguments": {"id": "j"}},
        {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
    ]
    concluded = [
        {
            "id": "j",
            "type": "stream",
            "status": "concluded",
            "current-progress": 0,
            "total-progress": 0,
        }
    ]
    qsd = _run(QSDPeer, images, steps)
    assert qsd[2]["return"] == concluded
    edges = {e["name"] for e in qsd[3]["return"]["edges"]}
    assert {"main node", "active node"} <= edges
    assert qsd[4]["error"]["class"] == "PeerDied"
    assert "exit status -11" in qsd[4]["error"]["desc"]

    txg = _run(EnginePeer, images, steps)
    assert txg[2]["return"] == concluded
    assert {e["name"] for e in txg[3]["return"]["edges"]} == edges
    assert txg[4] == {
        "error": {"class": "GenericError", "desc": "Can't get image size '': No medium found"}
    }
    assert txg[5] == {"return": {}}
    assert sorted(n["node-name"] for n in txg[6]["return"]) == ["a", "a-f"]
