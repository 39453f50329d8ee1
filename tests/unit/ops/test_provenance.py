"""Provenance: every resolved option says why it has its value."""

from __future__ import annotations

import subprocess
from pathlib import Path

from txgraph.model.options import Source
from txgraph.ops.blockdev import blockdev_add
from txgraph.ops.session import Session


def test_backing_read_only_is_forced_by_role_and_cache_is_inherited(tmp_path: Path) -> None:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "b.qcow2"), "8M"], check=True
    )
    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "b.qcow2",
            "-F",
            "qcow2",
            str(tmp_path / "t.qcow2"),
        ],
        check=True,
    )
    session = Session(check=False)
    blockdev_add(
        session,
        {
            "driver": "qcow2",
            "node-name": "top",
            "cache": {"direct": True},
            "file": {
                "driver": "file",
                "node-name": "top-file",
                "filename": str(tmp_path / "t.qcow2"),
            },
        },
    )
    graph = session.graph
    backing = graph.backing_child("top")
    assert backing is not None
    ro = graph.nodes[backing].provenance["read-only"]
    assert (ro.source, ro.parent, ro.edge) == (Source.ROLE, "top", "backing")
    assert graph.nodes[backing].read_only
    direct = graph.nodes["top-file"].provenance["cache.direct"]
    assert (direct.source, direct.parent, direct.edge) == (Source.INHERITED, "top", "file")
    assert graph.nodes["top"].provenance["cache.direct"].source is Source.EXPLICIT
    assert graph.nodes["top"].provenance["read-only"].source is Source.ENTRY_DEFAULT
    # the backing's own file inherits read-only from the backing node, not from top
    bfile = graph.file_child(backing)
    assert bfile is not None
    assert graph.nodes[bfile].provenance["read-only"].parent == backing


def test_referenced_children_inherit_nothing() -> None:
    session = Session(check=False)
    blockdev_add(session, {"driver": "null-co", "node-name": "n"})
    before = dict(session.graph.nodes["n"].provenance)
    blockdev_add(
        session,
        {
            "driver": "raw",
            "node-name": "r",
            "read-only": True,
            "cache": {"direct": True},
            "file": "n",
        },
    )
    assert session.graph.nodes["n"].provenance == before
    assert not session.graph.nodes["n"].read_only
