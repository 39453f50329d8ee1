"""x-txgraph-insert-filter / x-txgraph-remove-filter.

The central test, :func:`test_insert_succeeds_where_qemus_two_steps_conflict`,
shows why insertion must be one transaction (reference/qemu-graph.md §2.2 P8,
§3.4). Take ``top(qcow2) --file--> tf(file)``: the qcow2 writes its file and
shares only read and write-unchanged. A ``blkdebug`` filter with
``take-child-perms: [write]`` wants write on its ``image`` child *even with no
parent of its own*. In QEMU 7.2 the only way in is two monitor steps: first
``blockdev-add`` of the filter on ``tf`` — at that moment the filter is a
second writer beside ``top``, so QSD refuses with a permission conflict and
the second step (re-pointing ``top``'s ``file``) never happens. In the final
graph ``top --file--> dbg --image--> tf`` the filter is the *only* user of
``tf`` and nothing conflicts: QSD accepts that graph when it is built bottom
up. txgraph's insertion edits the graph first and checks permissions once on
the final graph, so it succeeds, and its edge permissions equal those QSD
computes for the same final graph.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from txgraph.ops.objects import object_add


def _graph_edges(
    graph: dict[str, Any],
) -> set[tuple[str, str, str, tuple[str, ...], tuple[str, ...]]]:
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    return {
        (
            names[e["parent"]],
            e["name"],
            names[e["child"]],
            tuple(sorted(e["perm"])),
            tuple(sorted(e["shared-perm"])),
        )
        for e in graph["edges"]
    }


DBG = {"driver": "blkdebug", "node-name": "dbg", "take-child-perms": ["write"]}


@pytest.mark.qsd
def test_insert_succeeds_where_qemus_two_steps_conflict(
    qmp,
    qsd,
    chain: Path,
    fnode,  # type: ignore[no-untyped-def]
    stand_in_drivers,
) -> None:
    # Two processes: each gets its own image (image locks would conflict otherwise).
    top = {"driver": "qcow2", "node-name": "top", "file": "tf"}
    for args in (fnode(chain / "ovl2.qcow2", "tf"), top):
        assert qsd.execute("blockdev-add", args) == {"return": {}}
    for args in (fnode(chain / "ovl.qcow2", "tf"), top):
        qmp.ok("blockdev-add", args)
    # QEMU's first step already fails: the parentless filter conflicts with top.
    step1 = qsd.execute("blockdev-add", {**DBG, "image": "tf"})
    expected = (
        "Permission conflict on node 'tf': permissions 'write' are both required by "
        "node 'dbg' (uses node 'tf' as 'image' child) and unshared by node 'top' "
        "(uses node 'tf' as 'file' child)."
    )
    assert step1["error"]["desc"] == expected
    qmp.fails("blockdev-add", {**DBG, "image": "tf"}, expected)

    # txgraph: one transaction, checked once on the final graph.
    qmp.ok("x-txgraph-insert-filter", {"node": "tf", "filter": DBG})
    mine = _graph_edges(qmp.ok("x-debug-query-block-graph"))
    assert {(p, n, c) for p, n, c, _perm, _sh in mine} == {
        ("top", "file", "dbg"),
        ("dbg", "image", "tf"),
    }
    assert qmp.session.runtime.node("top").children["file"].node_name == "dbg"

    # The same final graph, built bottom-up on QSD, has the same edge permissions.
    assert qsd.execute("blockdev-del", {"node-name": "top"}) == {"return": {}}
    assert qsd.execute("blockdev-add", {**DBG, "image": "tf"}) == {"return": {}}
    assert qsd.execute("blockdev-add", {"driver": "qcow2", "node-name": "top", "file": "dbg"}) == {
        "return": {}
    }
    theirs = _graph_edges(qsd.execute("x-debug-query-block-graph")["return"])
    assert mine == theirs


def _throttled(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    object_add(
        qmp.session, {"qom-type": "throttle-group", "id": "tg", "limits": {"iops-total": 1000}}
    )
    qmp.ok(
        "blockdev-add", {"driver": "qcow2", "node-name": "top", "file": fnode(chain / "top.qcow2")}
    )
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "r1", "file": "top"})
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "r2", "file": "top", "read-only": True})


THR = {"driver": "throttle", "node-name": "thr", "throttle-group": "tg"}


def test_insert_above_all_parents_then_remove(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    _throttled(qmp, chain, fnode)
    before_edges = qmp.edges()
    before_perms = {(p, n): qmp.perms(p, n) for p, n, _c in before_edges}
    qmp.ok("x-txgraph-insert-filter", {"node": "top", "filter": THR})
    assert ("r1", "file", "thr") in qmp.edges() and ("r2", "file", "thr") in qmp.edges()
    assert ("thr", "file", "top") in qmp.edges()
    assert qmp.perms("r1", "file") == before_perms[("r1", "file")]
    # the filter passes its parents' needs through
    r1p, r1s = before_perms[("r1", "file")]
    r2p, r2s = before_perms[("r2", "file")]
    assert qmp.perms("thr", "file") == (r1p | r2p, r1s & r2s)
    for parent in ("r1", "r2"):
        assert qmp.session.runtime.node(parent).children["file"].node_name == "thr"
    # the filter is a monitor-owned node now: blockdev-del's rules apply to it
    qmp.fails("blockdev-del", {"node-name": "thr"}, "Block device thr is in use")

    moved = qmp.ok("x-txgraph-remove-filter", {"node": "thr"})
    assert moved == {}
    assert qmp.edges() == before_edges
    assert {(p, n): qmp.perms(p, n) for p, n, _c in before_edges} == before_perms
    assert "thr" not in qmp.session.graph.nodes and not qmp.session.runtime.has_node("thr")
    assert qmp.session.runtime.node("r1").children["file"].node_name == "top"


def test_insert_for_chosen_edges_only(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    _throttled(qmp, chain, fnode)
    qmp.ok(
        "x-txgraph-insert-filter",
        {"node": "top", "filter": THR, "edges": [{"parent": "r2", "child-name": "file"}]},
    )
    assert {("r1", "file", "top"), ("r2", "file", "thr"), ("thr", "file", "top")} <= qmp.edges()


def test_insert_and_remove_errors(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    _throttled(qmp, chain, fnode)
    qmp.fails(
        "x-txgraph-insert-filter",
        {"node": "top", "filter": {"driver": "raw", "node-name": "x"}},
        "Driver 'raw' is not a filter",
    )
    qmp.fails(
        "x-txgraph-insert-filter",
        {"node": "top", "filter": {**THR, "file": "r1"}},
        "The filter's 'file' child must be 'top'",
    )
    qmp.fails(
        "x-txgraph-insert-filter",
        {"node": "nosuch", "filter": THR},
        "Cannot find device='' nor node-name='nosuch'",
    )
    qmp.fails(
        "x-txgraph-insert-filter",
        {"node": "top", "filter": {**THR, "throttle-group": "zz"}},
        "Throttle group 'zz' does not exist",
    )
    qmp.fails(
        "x-txgraph-insert-filter",
        {"node": "top", "filter": {**THR, "node-name": "r1"}},
        "Duplicate nodes with node-name='r1'",
    )
    tf = qmp.session.graph.file_child("top")
    qmp.fails(
        "x-txgraph-insert-filter",
        {"node": "top", "filter": THR, "edges": [{"parent": "top", "child-name": "file"}]},
        f"Edge 'file' of 'top' points to '{tf}', not to 'top'",
    )
    qmp.fails("x-txgraph-insert-filter", {"node": "top"}, "Parameter 'filter' is missing")
    qmp.fails(
        "x-txgraph-insert-filter",
        {"node": "top", "filter": {"node-name": "t"}},
        "Parameter 'filter.driver' is missing",
    )
    qmp.fails("x-txgraph-remove-filter", {"node": "top"}, "Node 'top' is not a filter")
    qmp.fails("x-txgraph-remove-filter", {"node": "zz"}, "Failed to find node with node-name='zz'")
