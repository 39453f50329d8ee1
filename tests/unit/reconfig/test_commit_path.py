"""The commit path: one drain per commit, an abort touches no live driver object,
and every parent — an export's BlockBackend included — follows every graph change.

The drains are counted by the Runtime (``drain_count``: outermost drained
sections), never timed. "Touches no live driver object" is proven with
tripwires: every mutating method of every live driver object raises while a
failing command runs, and the command must still fail with QEMU's own text.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.reconfig.conftest import Qmp

_MUTATORS = (
    "write",
    "write_zeroes",
    "discard",
    "flush",
    "reopen",
    "close",
    "drain_begin",
    "drain_end",
)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="txg-commit-"))  # unix socket paths are short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _exported(qmp: Qmp, chain: Path, sock_dir: Path) -> None:
    qmp.ok("object-add", {"qom-type": "throttle-group", "id": "tg"})
    qmp.ok(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": "top",
            "file": {"driver": "file", "filename": str(chain / "top.qcow2")},
        },
    )
    qmp.ok(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": "ovl",
            "backing": None,
            "file": {"driver": "file", "filename": str(chain / "ovl.qcow2")},
        },
    )
    qmp.ok(
        "nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(sock_dir / "nbd.sock")}}}
    )
    qmp.ok("block-export-add", {"type": "nbd", "id": "vm0", "node-name": "top", "writable": True})


def _served(qmp: Qmp) -> tuple[str, str | None]:
    """(what query-block-exports says, what the export's data path resolves to)."""
    reported = qmp.ok("query-block-exports")[0]["node-name"]
    export = qmp.session.nbd.exports()[0]
    return reported, export.node_name


class _Tripwire:
    """Every mutating method of every live driver object raises while armed."""

    def __init__(self, qmp: Qmp) -> None:
        self.rt = qmp.session.runtime
        self.saved: list[tuple[Any, str]] = []

    def __enter__(self) -> _Tripwire:
        for name in self.rt.node_names():
            node = self.rt.node(name)
            for meth in _MUTATORS:
                if hasattr(node, meth):
                    setattr(node, meth, self._trip(name, meth))
                    self.saved.append((node, meth))
        return self

    @staticmethod
    def _trip(name: str, meth: str) -> Any:
        def trip(*args: Any, **kwargs: Any) -> None:
            raise AssertionError(f"live driver object {name} touched: {meth}")

        return trip

    def __exit__(self, *exc: object) -> None:
        for node, meth in self.saved:
            delattr(node, meth)


def test_snapshot_commit_uses_exactly_one_drain(qmp: Qmp, chain: Path, sock_dir: Path) -> None:
    _exported(qmp, chain, sock_dir)
    rt = qmp.session.runtime
    before, before_all = rt.drain_count, rt.drain_all_count
    qmp.ok("blockdev-snapshot", {"node": "top", "overlay": "ovl"})
    # edges moved (export root, overlay backing), old node made read-only: one drain
    assert rt.drain_count == before + 1
    # and qmp_transaction's bdrv_drain_all before the action, which changes nothing
    assert rt.drain_all_count == before_all + 1
    assert _served(qmp) == ("ovl", "ovl")
    assert rt.node("ovl").children["backing"].node_name == "top"
    assert rt.node("top").read_only


def test_multi_action_transaction_uses_exactly_one_drain(
    qmp: Qmp, chain: Path, sock_dir: Path
) -> None:
    _exported(qmp, chain, sock_dir)
    rt = qmp.session.runtime
    before = rt.drain_count
    qmp.ok(
        "x-txgraph-transaction",
        {
            "actions": [
                {"type": "blockdev-snapshot", "data": {"node": "top", "overlay": "ovl"}},
                {
                    "type": "x-txgraph-insert-filter",
                    "data": {
                        "node": "ovl",
                        "filter": {
                            "driver": "throttle",
                            "node-name": "thr",
                            "throttle-group": "tg",
                        },
                    },
                },
                {
                    "type": "x-txgraph-blockdev-add",
                    "data": {"driver": "null-co", "node-name": "spare"},
                },
                {"type": "x-txgraph-blockdev-del", "data": {"node-name": "spare"}},
            ]
        },
    )
    assert rt.drain_count == before + 1
    assert _served(qmp) == ("thr", "thr")
    assert rt.node("thr").children["file"].node_name == "ovl"
    assert not rt.has_node("spare") and not rt.is_prepared("spare")


def test_failing_commands_touch_no_live_driver_object(
    qmp: Qmp, chain: Path, sock_dir: Path
) -> None:
    _exported(qmp, chain, sock_dir)
    rt = qmp.session.runtime
    drains = rt.drain_count

    def wiring() -> dict[str, Any]:
        return {
            n: (id(rt.node(n)), {e: id(c) for e, c in rt.node(n).children.items()})
            for n in rt.node_names()
        }

    wired = wiring()
    with _Tripwire(qmp):
        # fails at the end (abort action): the snapshot was fully staged first
        qmp.fails(
            "transaction",
            {
                "actions": [
                    {"type": "blockdev-snapshot", "data": {"node": "top", "overlay": "ovl"}},
                    {"type": "abort", "data": {}},
                ]
            },
            "Transaction aborted using Abort action",
        )
        # fails in a prepare step: a new node opened, then its sibling's open fails
        qmp.fails(
            "blockdev-add",
            {
                "driver": "quorum",
                "node-name": "q",
                "vote-threshold": 1,
                "children": [
                    {
                        "driver": "qcow2",
                        "file": {"driver": "file", "filename": str(chain / "ovl2.qcow2")},
                    },
                    {"driver": "file", "filename": str(chain / "nope")},
                ],
            },
            f"Could not open '{chain / 'nope'}': No such file or directory",
        )
        # fails at the image locks: a second writable qcow2 on the exported image
        qmp.fails(
            "blockdev-add",
            {
                "driver": "qcow2",
                "node-name": "second",
                "file": {"driver": "file", "filename": str(chain / "top.qcow2")},
            },
            'Failed to get "write" lock',
        )
        # fails after the reopen of "top" was prepared (its driver validated the options)
        top_file = rt.node("top").children["file"].node_name
        qmp.fails(
            "blockdev-reopen",
            {
                "options": [
                    {"driver": "qcow2", "node-name": "top", "file": top_file, "read-only": True}
                ]
            },
            "backing is missing for 'top'",
        )
    assert rt.drain_count == drains
    assert wiring() == wired
    assert _served(qmp) == ("top", "top")


def test_export_follows_filter_insertion_and_removal(qmp: Qmp, chain: Path, sock_dir: Path) -> None:
    _exported(qmp, chain, sock_dir)
    qmp.ok(
        "x-txgraph-insert-filter",
        {
            "node": "top",
            "filter": {"driver": "throttle", "node-name": "thr", "throttle-group": "tg"},
        },
    )
    assert _served(qmp) == ("thr", "thr")
    qmp.ok("x-txgraph-remove-filter", {"node": "thr"})
    assert _served(qmp) == ("top", "top")
    assert not qmp.session.runtime.has_node("thr")


def test_export_follows_replace_edges_and_replace(qmp: Qmp, chain: Path, sock_dir: Path) -> None:
    _exported(qmp, chain, sock_dir)
    qmp.ok(
        "x-txgraph-replace-edges",
        {"edges": [{"parent": "vm0", "child-name": "root"}], "new-child": "ovl"},
    )
    assert _served(qmp) == ("ovl", "ovl")
    qmp.ok("x-blockdev-replace", {"parent-type": "export", "export-id": "vm0", "new-child": "top"})
    assert _served(qmp) == ("top", "top")
    qmp.fails(
        "x-blockdev-replace",
        {"parent-type": "export", "export-id": "vm1", "new-child": "top"},
        "Export 'vm1' not found",
    )


def test_reopen_below_an_export_and_quorum_changes_reach_the_data_plane(
    qmp: Qmp, chain: Path, sock_dir: Path
) -> None:
    _exported(qmp, chain, sock_dir)
    rt = qmp.session.runtime
    # reopen-based insertion under the exported node: its file edge moves to a throttle
    top_file = rt.node("top").children["file"].node_name
    qmp.ok(
        "blockdev-add",
        {"driver": "throttle", "node-name": "tf", "throttle-group": "tg", "file": top_file},
    )
    qmp.ok(
        "blockdev-reopen",
        {
            "options": [
                {
                    "driver": "qcow2",
                    "node-name": "top",
                    "file": "tf",
                    "backing": rt.node("top").children["backing"].node_name,
                }
            ]
        },
    )
    assert rt.node("top").children["file"].node_name == "tf"
    assert _served(qmp) == ("top", "top")
    for i in range(3):
        qmp.ok("blockdev-add", {"driver": "null-co", "node-name": f"n{i}", "size": 1 << 20})
    qmp.ok(
        "blockdev-add",
        {"driver": "quorum", "node-name": "q", "vote-threshold": 1, "children": ["n0", "n1"]},
    )
    before = rt.drain_count
    qmp.ok("x-blockdev-change", {"parent": "q", "node": "n2"})
    assert rt.drain_count == before + 1
    assert rt.node("q").children["children.2"].node_name == "n2"
    qmp.ok("x-blockdev-change", {"parent": "q", "child": "children.0"})
    assert "children.0" not in rt.node("q").children
