"""x-blockdev-replace (the v9 blockdev-replace proposal) and x-txgraph-replace-edges.

Each failure is checked to leave the graph digest and the data plane untouched
(``Qmp.fails``); each success is checked edge by edge, in the graph *and* in
the live driver objects.
"""

from __future__ import annotations

from pathlib import Path

from txgraph.model.perm_bits import Perm

R, W, U, S = Perm.CONSISTENT_READ, Perm.WRITE, Perm.WRITE_UNCHANGED, Perm.RESIZE


def _two_raw_on_null(qmp) -> None:  # type: ignore[no-untyped-def]
    qmp.ok("blockdev-add", {"driver": "null-co", "node-name": "n"})
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "r1", "file": "n"})
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "r2", "file": "n"})


def test_parents_mode_auto_skips_the_loop_creating_edge(qmp) -> None:  # type: ignore[no-untyped-def]
    _two_raw_on_null(qmp)
    ret = qmp.ok(
        "x-txgraph-replace-edges", {"child": "n", "parents-mode": "auto", "new-child": "r2"}
    )
    assert ret == {"moved": [{"parent": "r1", "child-name": "file"}]}
    assert qmp.edges() == {("r1", "file", "r2"), ("r2", "file", "n")}
    assert qmp.session.runtime.node("r1").children["file"].node_name == "r2"


def test_parents_mode_all_and_exactly_one_refuse(qmp) -> None:  # type: ignore[no-untyped-def]
    _two_raw_on_null(qmp)
    qmp.fails(
        "x-txgraph-replace-edges",
        {"child": "n", "parents-mode": "all", "new-child": "r2"},
        "Should not change 'file' link to 'n'",
    )
    qmp.fails(
        "x-txgraph-replace-edges",
        {"child": "n", "parents-mode": "exactly-one", "new-child": "r2"},
        "Node 'n' has 2 parents, expected exactly one",
    )
    qmp.fails("x-txgraph-replace-edges", {"child": "zz", "new-child": "r2"}, "Node 'zz' not found")
    qmp.fails("x-txgraph-replace-edges", {"child": "n", "new-child": "zz"}, "Node 'zz' not found")


def test_parents_mode_all_moves_every_parent(qmp) -> None:  # type: ignore[no-untyped-def]
    _two_raw_on_null(qmp)
    qmp.ok("blockdev-add", {"driver": "null-co", "node-name": "m"})
    qmp.ok("x-txgraph-replace-edges", {"child": "n", "parents-mode": "all", "new-child": "m"})
    assert qmp.edges() == {("r1", "file", "m"), ("r2", "file", "m")}
    assert {
        c.node_name
        for c in (
            qmp.session.runtime.node("r1").children["file"],
            qmp.session.runtime.node("r2").children["file"],
        )
    } == {"m"}


def test_explicit_edge_list(qmp) -> None:  # type: ignore[no-untyped-def]
    _two_raw_on_null(qmp)
    qmp.ok("blockdev-add", {"driver": "null-co", "node-name": "m"})
    qmp.ok(
        "x-txgraph-replace-edges",
        {"edges": [{"parent": "r2", "child-name": "file"}], "new-child": "m"},
    )
    assert qmp.edges() == {("r1", "file", "n"), ("r2", "file", "m")}
    qmp.fails(
        "x-txgraph-replace-edges",
        {"edges": [{"parent": "r1", "child-name": "file"}], "new-child": "r1"},
        "Making 'r1' a file child of 'r1' would create a cycle",
    )
    qmp.fails(
        "x-txgraph-replace-edges",
        {"edges": [{"parent": "r1", "child-name": "backing"}], "new-child": "m"},
        "Block driver node 'r1' doesn't have child named 'backing'",
    )
    qmp.fails(
        "x-txgraph-replace-edges",
        {
            "edges": [
                {"parent": "r1", "child-name": "file"},
                {"parent": "r1", "child-name": "file"},
            ],
            "new-child": "m",
        },
        "Edge 'file' of 'r1' is listed twice",
    )


def test_argument_validation(qmp) -> None:  # type: ignore[no-untyped-def]
    _two_raw_on_null(qmp)
    qmp.fails(
        "x-txgraph-replace-edges", {"new-child": "m"}, "Either child or edges must be specified"
    )
    qmp.fails(
        "x-txgraph-replace-edges",
        {"child": "n", "edges": [], "new-child": "m"},
        "The parameters child and edges are in conflict",
    )
    qmp.fails("x-txgraph-replace-edges", {"child": "n"}, "Parameter 'new-child' is missing")
    qmp.fails(
        "x-txgraph-replace-edges",
        {"child": "n", "parents-mode": "some", "new-child": "m"},
        "Parameter 'parents-mode' does not accept value 'some'",
    )
    qmp.fails(
        "x-txgraph-replace-edges",
        {"edges": [{"parent": "r1"}], "new-child": "m"},
        "Parameter 'edges[0].child-name' is missing",
    )
    qmp.fails(
        "x-txgraph-replace-edges",
        {"child": 3, "new-child": "m"},
        "Invalid parameter type for 'child', expected: string",
    )
    qmp.fails(
        "x-txgraph-replace-edges",
        {"child": "n", "new-child": "m", "x": 1},
        "Parameter 'x' is unexpected",
    )


def test_blockdev_replace_v9_driver_form(qmp) -> None:  # type: ignore[no-untyped-def]
    for name in ("n1", "n2"):
        qmp.ok("blockdev-add", {"driver": "null-co", "node-name": name})
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "r", "file": "n1"})
    qmp.ok(
        "x-blockdev-replace",
        {"parent-type": "driver", "node-name": "r", "child": "file", "new-child": "n2"},
    )
    assert qmp.edges() == {("r", "file", "n2")}
    assert qmp.session.runtime.node("r").children["file"].node_name == "n2"
    # n1 lost its only parent but is monitor-owned: it stays
    assert "n1" in qmp.session.graph.nodes


def test_blockdev_replace_v9_errors(qmp) -> None:  # type: ignore[no-untyped-def]
    for name in ("n1", "n2"):
        qmp.ok("blockdev-add", {"driver": "null-co", "node-name": name})
    qmp.ok("blockdev-add", {"driver": "raw", "node-name": "r", "file": "n1"})
    base = {"parent-type": "driver", "node-name": "r", "child": "file"}
    qmp.fails(
        "x-blockdev-replace",
        {**base, "node-name": "zz", "new-child": "n2"},
        "Block driver node with node-name 'zz' not found",
    )
    qmp.fails(
        "x-blockdev-replace",
        {**base, "child": "backing", "new-child": "n2"},
        "Block driver node 'r' doesn't have child named 'backing'",
    )
    qmp.fails("x-blockdev-replace", {**base, "new-child": "zz"}, "Node 'zz' not found")
    qmp.fails(
        "x-blockdev-replace",
        {**base, "new-child": "r"},
        "Making 'r' a file child of 'r' would create a cycle",
    )
    qmp.fails(
        "x-blockdev-replace",
        {"parent-type": "export", "export-id": "e", "new-child": "n2"},
        "Export 'e' not found",
    )
    qmp.fails(
        "x-blockdev-replace",
        {"parent-type": "qdev", "qdev-id": "d", "new-child": "n2"},
        "Parameter 'parent-type' does not accept value 'qdev'",
    )
    qmp.fails(
        "x-blockdev-replace",
        {"parent-type": "driver", "node-name": "r", "new-child": "n2"},
        "Parameter 'child' is missing",
    )
    qmp.fails(
        "x-blockdev-replace",
        {**base, "new-child": "n2", "export-id": "e"},
        "Parameter 'export-id' is unexpected",
    )


def test_blockdev_replace_is_not_a_qemu_7_2_command(qmp) -> None:  # type: ignore[no-untyped-def]
    reply = qmp(
        "blockdev-replace",
        {"parent-type": "driver", "node-name": "r", "child": "file", "new-child": "n"},
    )
    assert reply["error"] == {
        "class": "CommandNotFound",
        "desc": "The command blockdev-replace has not been found",
    }


def test_replacing_a_format_file_refreshes_perms(qmp, chain: Path, fnode) -> None:  # type: ignore[no-untyped-def]
    qmp.ok("blockdev-add", fnode(chain / "ovl.qcow2", "f1"))
    qmp.ok("blockdev-add", fnode(chain / "ovl2.qcow2", "f1b"))
    qmp.ok("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f1"})
    assert qmp.perms("q", "file") == (R | W | S, R | U)
    qmp.ok(
        "x-blockdev-replace",
        {"parent-type": "driver", "node-name": "q", "child": "file", "new-child": "f1b"},
    )
    assert qmp.perms("q", "file") == (R | W | S, R | U)
    # f1 has no users left: a second writer on it is fine now, and on f1b it is not
    qmp.ok("blockdev-add", {"driver": "qcow2", "node-name": "q2", "file": "f1"})
    digest = qmp.session.graph.digest()
    reply = qmp(
        "x-blockdev-replace",
        {"parent-type": "driver", "node-name": "q2", "child": "file", "new-child": "f1b"},
    )
    assert reply["error"]["desc"].startswith(
        "Permission conflict on node 'f1b': permissions 'write, resize' are both required by node"
    ), reply
    assert qmp.session.graph.digest() == digest
    assert qmp.edges() >= {("q", "file", "f1b"), ("q2", "file", "f1")}
