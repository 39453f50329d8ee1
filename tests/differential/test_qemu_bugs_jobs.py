"""A QEMU 7.2 crash the fuzzer's job steps found, pinned on qemu-storage-daemon alone.

Fuzz 79fc92eb85 (``txgraph fuzz --against qsd --seed 1``, the jobs family): once a
``block-stream`` with ``auto-dismiss: false`` has concluded, ``query-named-block-nodes``
kills the daemon with SIGSEGV (no assertion text: exit status -11). When a QEMU release
fixes it, the first assertion fails and this test goes. A campaign files the crash under
its known-bug entry (``stream-concluded-query-segv`` in txgraph/fuzz/known.py). txgraph does not crash, but it
refuses the query (``Can't get image size '': No medium found``, the concluded job's
backend without a node counted as a node): a strict xfail until the jobs code lists the
nodes that are left.
"""

from __future__ import annotations

from typing import Any

import pytest

from txgraph.fuzz.jobs import WAIT_EVENT, wait_step
from txgraph.fuzz.run import run_sequence

pytestmark = pytest.mark.qsd

STEPS: list[dict[str, Any]] = [
    {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "qcow2",
            "node-name": "top",
            "file": {"driver": "file", "filename": "{dir}/b1.qcow2"},
        },
    },
    wait_step(
        {
            "execute": "block-stream",
            "arguments": {"device": "top", "job-id": "j0", "auto-dismiss": False},
        },
        "j0",
        "concluded",
    ),
    {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
]


def _run(against: str) -> Any:
    return run_sequence(
        lambda i, _res: STEPS[i] if i < len(STEPS) else None, against, max_steps=len(STEPS)
    )


def test_qsd_segfaults_querying_nodes_after_a_concluded_stream() -> None:
    qsd = _run("qsd-only")
    d = qsd.divergence
    # the wait step's own state queries are the first query-named-block-nodes after it;
    # the finding is classified as this known QSD bug (txgraph.fuzz.known), not a divergence
    assert d is not None and d.kind == "qsd-crash" and d.step == 1, d
    assert d.known == "stream-concluded-query-segv"
    assert d.signature == "qemu-stream-concluded-query-segv"
    assert d.command == f"{WAIT_EVENT}:block-stream:concluded"
    assert "exit status -11" in d.lines[0]
    assert qsd.replies[1]["qsd"]["return"]["reached"] == "concluded"


@pytest.mark.xfail(
    strict=True,
    reason="txgraph refuses query-named-block-nodes after a concluded, undismissed stream "
    "(Can't get image size '': No medium found)",
)
def test_txgraph_lists_the_nodes_after_a_concluded_stream() -> None:
    txg = _run("model")
    assert txg.divergence is None, txg.divergence
    reply = txg.replies[2]["txgraph"]
    assert "return" in reply, reply
    # the stream copied b0's data into top and dropped the backing node
    names = [n["node-name"] for n in reply["return"] if not n["node-name"].startswith("#")]
    assert names == ["top"]
