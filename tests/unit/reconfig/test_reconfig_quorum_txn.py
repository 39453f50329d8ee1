"""x-blockdev-change on quorum, and x-txgraph-transaction mixing every operation.

The quorum expectations are QSD 7.2's observed answers (the differential
scenarios ``quorum_change_*`` compare them live once the txgraph data plane
has a quorum driver; until then a pass-through stands in for it here).
"""

from __future__ import annotations

from pathlib import Path

from txgraph.ops.objects import object_add


def _quorum(qmp, threshold: int = 1, n: int = 4) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        qmp.ok("blockdev-add", {"driver": "null-co", "node-name": f"n{i}"})
    qmp.ok(
        "blockdev-add",
        {
            "driver": "quorum",
            "node-name": "q",
            "vote-threshold": threshold,
            "children": ["n0", "n1"],
        },
    )


def _kids(qmp) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {n: c for p, n, c in qmp.edges() if p == "q"}


def test_quorum_indexes_follow_qemu(qmp, stand_in_drivers) -> None:  # type: ignore[no-untyped-def]
    _quorum(qmp)
    qmp.ok("x-blockdev-change", {"parent": "q", "child": "children.1"})
    assert "n1" in qmp.session.graph.nodes  # monitor-owned: survives its removal
    qmp.ok("x-blockdev-change", {"parent": "q", "node": "n1"})
    # the newest index was given back on delete, so it is used again
    assert _kids(qmp) == {"children.0": "n0", "children.1": "n1"}
    qmp.ok("x-blockdev-change", {"parent": "q", "child": "children.0"})
    qmp.ok("x-blockdev-change", {"parent": "q", "node": "n0"})
    qmp.ok("x-blockdev-change", {"parent": "q", "node": "n2"})
    # children.0 was not the newest: never reused
    assert _kids(qmp) == {"children.1": "n1", "children.2": "n0", "children.3": "n2"}
    assert qmp.session.runtime.node("q").children["children.3"].node_name == "n2"
    assert "children.0" not in qmp.session.runtime.node("q").children
    assert qmp.perms("q", "children.3") == qmp.perms("q", "children.1")


def test_quorum_errors_change_nothing(qmp, stand_in_drivers) -> None:  # type: ignore[no-untyped-def]
    _quorum(qmp, threshold=2, n=3)
    qmp.fails(
        "x-blockdev-change",
        {"parent": "zz", "node": "n2"},
        "Cannot find device='zz' nor node-name='zz'",
    )
    qmp.fails("x-blockdev-change", {"parent": "q"}, "Either child or node must be specified")
    qmp.fails(
        "x-blockdev-change",
        {"parent": "q", "node": "n2", "child": "x"},
        "The parameters child and node are in conflict",
    )
    qmp.fails(
        "x-blockdev-change",
        {"parent": "q", "child": "children.7"},
        "Node 'q' does not have child 'children.7'",
    )
    qmp.fails(
        "x-blockdev-change",
        {"parent": "q", "child": "children.0"},
        "The number of children cannot be lower than the vote threshold 2",
    )
    qmp.fails("x-blockdev-change", {"parent": "q", "node": "zz"}, "Node 'zz' not found")
    qmp.fails(
        "x-blockdev-change", {"parent": "q", "node": "n0"}, "The node n0 already has a parent"
    )
    qmp.fails(
        "x-blockdev-change",
        {"parent": "n2", "node": "n0"},
        "The node n2 does not support adding a child",
    )
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "r", "file": "n2"})
    qmp.fails(
        "x-blockdev-change",
        {"parent": "r", "child": "file"},
        "The node r does not support removing a child",
    )
    qmp.fails(
        "x-blockdev-change",
        {"parent": "q", "node": "q"},
        "Making 'q' a children.2 child of 'q' would create a cycle",
    )
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "above", "file": "q"})
    qmp.fails(
        "x-blockdev-change",
        {"parent": "q", "node": "above"},
        "Making 'above' a children.2 child of 'q' would create a cycle",
    )
    qmp.ok("x-blockdev-change", {"parent": "q", "node": "r"})
    assert _kids(qmp)["children.2"] == "r"


def test_quorum_del_of_an_inline_child_closes_it(qmp, stand_in_drivers, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    qmp.ok(
        "blockdev-add",
        {
            "driver": "quorum",
            "node-name": "q",
            "vote-threshold": 1,
            "children": [
                {"driver": "null-co", "size": 1048576},
                {"driver": "qcow2", "file": fnode(chain / "ovl.qcow2")},
            ],
        },
    )
    inline = _kids(qmp)["children.1"]
    qmp.ok("x-blockdev-change", {"parent": "q", "child": "children.1"})
    assert inline not in qmp.session.graph.nodes and not qmp.session.runtime.has_node(inline)
    assert len(qmp.session.graph.nodes) == 2  # q and its null-co child; the qcow2's file went too


# -- x-txgraph-transaction -----------------------------------------------------------------
def _xt(qmp, *actions: dict) -> dict:  # type: ignore[no-untyped-def]
    return qmp("x-txgraph-transaction", {"actions": list(actions)})


def a(kind: str, **data: object) -> dict:
    return {"type": kind, "data": {k.replace("_", "-"): v for k, v in data.items()}}


def _setup(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    object_add(qmp.session, {"qom-type": "throttle-group", "id": "tg"})
    qmp.ok(
        "blockdev-add", {"driver": "qcow2", "node-name": "top", "file": fnode(chain / "top.qcow2")}
    )
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "r", "file": "top"})
    qmp.ok(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": "ovl",
            "backing": None,
            "file": fnode(chain / "ovl.qcow2"),
        },
    )


def test_mixed_transaction_commits_as_one(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    _setup(qmp, chain, fnode)
    reply = _xt(
        qmp,
        a("blockdev-snapshot", node="top", overlay="ovl"),
        a(
            "x-txgraph-insert-filter",
            node="ovl",
            filter={"driver": "throttle", "node-name": "thr", "throttle-group": "tg"},
        ),
        a("x-txgraph-blockdev-add", driver="null-co", node_name="spare"),
        a("x-txgraph-replace", child="spare", parents_mode="auto", new_child="top"),
    )
    assert reply == {"return": {}}, reply
    assert {("r", "file", "thr"), ("thr", "file", "ovl"), ("ovl", "backing", "top")} <= qmp.edges()
    assert qmp.session.graph.nodes["top"].read_only
    assert qmp.session.runtime.node("r").children["file"].node_name == "thr"


def test_mixed_transaction_failure_rolls_back_everything(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    _setup(qmp, chain, fnode)
    ro_before = {n: node.read_only for n, node in qmp.session.graph.nodes.items()}
    thr = {"driver": "throttle", "node-name": "thr", "throttle-group": "tg"}
    snap = a("blockdev-snapshot", node="top", overlay="ovl")
    qmp.fails(
        "x-txgraph-transaction",
        {
            "actions": [
                snap,
                a("x-txgraph-insert-filter", node="ovl", filter=thr),
                a("x-txgraph-blockdev-del", node_name="nosuch"),
            ]
        },
        "Failed to find node with node-name='nosuch'",
    )
    qmp.fails(
        "x-txgraph-transaction",
        {
            "actions": [
                a("x-txgraph-blockdev-add", driver="null-co", node_name="n"),
                a(
                    "x-txgraph-replace",
                    parent_type="driver",
                    node_name="r",
                    child="file",
                    new_child="n",
                ),
                a("abort"),
            ]
        },
        "Transaction aborted using Abort action",
    )
    qmp.fails(
        "x-txgraph-transaction",
        {
            "actions": [
                snap,
                a("x-txgraph-insert-filter", node="ovl", filter=thr),
                a("x-txgraph-remove-filter", node="thr"),
                a("x-txgraph-blockdev-del", node_name="ovl"),
            ]
        },
        "Block device ovl is in use",
    )
    # an edge moved onto a new filter gets back its place in both lists
    qmp.fails(
        "x-txgraph-transaction",
        {"actions": [a("x-txgraph-insert-filter", node="top", filter=thr), a("abort")]},
        "Transaction aborted using Abort action",
    )
    assert {n: node.read_only for n, node in qmp.session.graph.nodes.items()} == ro_before


def test_transaction_with_reopen_and_quorum_actions(
    qmp,
    chain: Path,
    fnode,  # type: ignore[no-untyped-def]
    stand_in_drivers,
) -> None:
    _setup(qmp, chain, fnode)
    _quorum(qmp, n=3)
    reply = _xt(
        qmp,
        a("x-blockdev-change", parent="q", node="n2"),
        a(
            "x-txgraph-blockdev-reopen",
            options=[
                {
                    "driver": "qcow2",
                    "node-name": "ovl",
                    "read-only": True,
                    "backing": None,
                    "file": qmp.session.graph.file_child("ovl"),
                }
            ],
        ),
    )
    assert reply == {"return": {}}, reply
    assert _kids(qmp)["children.2"] == "n2"
    assert qmp.session.graph.nodes["ovl"].read_only


def test_transaction_argument_errors(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    _setup(qmp, chain, fnode)
    qmp.fails(
        "x-txgraph-transaction",
        {"actions": [{"type": "x-txgraph-blockdev-add"}]},
        "Parameter 'actions[0].data' is missing",
    )
    qmp.fails(
        "x-txgraph-transaction",
        {"actions": [a("abort"), {"type": "x-nope", "data": {}}]},
        "Parameter 'type' does not accept value 'x-nope'",
    )
    qmp.fails(
        "x-txgraph-transaction",
        {"actions": [a("x-txgraph-blockdev-add", node_name="n")]},
        "Parameter 'actions[0].data.driver' is missing",
    )
    qmp.fails(
        "x-txgraph-transaction",
        {"actions": [a("x-txgraph-replace", child="top", new_child="r", bogus=1)]},
        "Parameter 'actions[0].data.bogus' is unexpected",
    )
    qmp.fails(
        "x-txgraph-transaction",
        {"actions": [a("blockdev-snapshot", node="top")]},
        "Parameter 'actions[0].data.overlay' is missing",
    )
    qmp.fails("x-txgraph-transaction", {}, "Parameter 'actions' is missing")
    # QEMU's own command keeps QEMU's schema: extension types are unknown there
    qmp.fails(
        "transaction",
        {"actions": [a("x-txgraph-blockdev-add", driver="null-co", node_name="n")]},
        "Parameter 'type' does not accept value 'x-txgraph-blockdev-add'",
    )
