"""The graph diff: nodes and edges added, removed, changed (perms, read-only, options)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from txgraph.plan.diff import diff, snapshot
from txgraph.qmp.engine import Engine


def _ok(engine: Engine, command: str, args: dict[str, Any]) -> None:
    reply = engine.execute({"execute": command, "arguments": args})
    assert "return" in reply, reply


def test_diff_of_a_snapshot_and_a_reopen(images: Path) -> None:
    import subprocess

    for name in ("a", "b"):
        subprocess.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", str(images / f"{name}.qcow2"), "1M"],
            check=True,
        )
    engine = Engine()
    graph = engine.context.session.graph
    _ok(
        engine,
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": "a",
            "file": {"driver": "file", "node-name": "a-file", "filename": str(images / "a.qcow2")},
        },
    )
    s0 = snapshot(graph)
    assert diff(s0, snapshot(graph)).empty
    _ok(
        engine,
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": "b",
            "backing": None,
            "file": {"driver": "file", "node-name": "b-file", "filename": str(images / "b.qcow2")},
        },
    )
    s1 = snapshot(graph)
    d = diff(s0, s1).to_dict()
    assert [n["node-name"] for n in d["nodes-added"]] == ["b", "b-file"]
    assert d["edges-added"] == [
        {
            "parent": "b",
            "name": "file",
            "child": "b-file",
            "perm": ["resize", "write", "consistent-read"],
            "shared-perm": ["write-unchanged", "consistent-read"],
        }
    ]
    assert not d["nodes-removed"] and not d["edges-removed"]

    _ok(engine, "blockdev-snapshot", {"node": "a", "overlay": "b"})
    d = diff(s1, snapshot(graph)).to_dict()
    changed = {c["node"]: c["changes"] for c in d["nodes-changed"]}
    assert changed["a"]["ro"] == [False, True]
    assert changed["a-file"]["ro"] == [False, True]
    edge_changes = {(c["parent"], c["name"]): c["changes"] for c in d["edges-changed"]}
    assert edge_changes[("a", "file")]["perm"] == [
        ["resize", "write", "consistent-read"],
        ["consistent-read"],
    ]
    assert [(e["parent"], e["name"], e["child"]) for e in d["edges-added"]] == [
        ("b", "backing", "a")
    ]

    s2 = snapshot(graph)
    _ok(
        engine,
        "blockdev-reopen",
        {
            "options": [
                {
                    "driver": "qcow2",
                    "node-name": "b",
                    "file": "b-file",
                    "backing": "a",
                    "cache": {"direct": True},
                }
            ]
        },
    )
    changed = {c["node"]: c["changes"] for c in diff(s2, snapshot(graph)).nodes_changed}
    assert changed["b"]["cache.direct"] == [False, True]
    assert changed["b-file"]["cache.direct"] == [False, True]

    engine.context.session.close()


def test_removed_nodes_and_edges(images: Path) -> None:
    engine = Engine()
    graph = engine.context.session.graph
    _ok(engine, "blockdev-add", {"driver": "null-co", "node-name": "n0"})
    _ok(engine, "blockdev-add", {"driver": "raw", "node-name": "r", "file": "n0"})
    s0 = snapshot(graph)
    _ok(engine, "blockdev-del", {"node-name": "r"})
    d = diff(s0, snapshot(graph)).to_dict()
    assert [n["node-name"] for n in d["nodes-removed"]] == ["r"]
    assert [(e["parent"], e["name"], e["child"]) for e in d["edges-removed"]] == [
        ("r", "file", "n0")
    ]
    engine.context.session.close()
