"""qemu-storage-daemon 7.2 bugs around block jobs that ``txgraph fuzz`` finds, pinned apart.

(The SIGSEGV of ``query-named-block-nodes`` after a concluded, undismissed stream, behind
most ``exit status -11`` findings at a block-stream, is pinned in
tests/differential/test_qemu_bugs_jobs.py.) A fuzz campaign files both under their
entries in txgraph/fuzz/known.py, so they do not count as txgraph divergences.

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


def _leak_steps() -> list[dict[str, Any]]:
    return [
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
    ]


def test_a_campaign_files_the_leak_as_a_known_qsd_bug() -> None:
    """The fuzzer (QSD against txgraph) meets the leak as a state mismatch right after the
    refused block-stream (the backend, its root edge, the consistent-read it passes down);
    txgraph/fuzz/known.py classifies it as QSD's ``stream-leaks-blockbackend``."""
    from txgraph.fuzz.run import run_sequence

    steps = _leak_steps()
    res = run_sequence(
        lambda i, _res: steps[i] if i < len(steps) else None, "qsd", max_steps=len(steps)
    )
    d = res.divergence
    assert d is not None and d.step == 4 and d.command == "block-stream", d
    assert (d.kind, d.known, d.signature) == (
        "qsd-bug",
        "stream-leaks-blockbackend",
        "qemu-stream-leaks-blockbackend",
    ), d
    assert d.lines[0].startswith('graph.nodes: only in left:  ["<block-backend:root->n0>"')


def test_qsd_leaks_the_stream_blockbackend_of_a_refused_block_stream() -> None:
    """Fuzz 353873179b/cca3e65b60/06dc573ee4/797b2b55d0: ``stream_start`` creates the job's
    BlockBackend on the copy-on-read filter, then a job child (``intermediate node``) is
    refused. Its error path drops the filter (whose parents, that BlockBackend among
    them, move to the top) and fails the job early, but nothing unrefs the BlockBackend:
    QSD keeps an anonymous BlockBackend with consistent-read on the top, so the top
    can no longer be deleted (``Node n0 is in use``). txgraph's refusal changes nothing."""
    images = [["qemu-img", "create", "-q", "-f", "qcow2", "i1.qcow2", "2M"]]
    steps: list[dict[str, Any]] = [
        *_leak_steps(),
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
