"""Every reconfiguration operation is all-or-nothing, proven by fault injection.

For each operation, a fault is injected before each of its primitive steps in
turn (``session.fail_next_at = k``); after every such failure the graph digest
and the data-plane state must equal those before the operation. This fails if
any step forgets to record its inverse, an inverse restores the wrong thing,
or a runtime change is not undone. The operations run through the same stage
functions and deferred commit steps as their QMP commands.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.atomicity import assert_all_steps_atomic
from txgraph.ops.blockdev import blockdev_add
from txgraph.ops.exports import (
    nbd_server_start,
    stage_block_export_add,
    stage_block_export_del,
)
from txgraph.ops.filters import stage_insert_filter, stage_remove_filter
from txgraph.ops.objects import object_add
from txgraph.ops.qmp_transaction import finish, run_transaction
from txgraph.ops.quorum import stage_x_blockdev_change
from txgraph.ops.reopen import blockdev_reopen
from txgraph.ops.replace import stage_blockdev_replace, stage_replace_edges
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

Stage = Callable[[Session, Transaction, dict[str, Any]], Any]


def _one(stage: Stage, args: dict[str, Any]) -> Callable[[Session], None]:
    """What the QMP command does: the stage function, then the deferred steps, in one transaction."""

    def op(session: Session) -> None:
        with session.transaction() as tx:
            stage(session, tx, args)
            finish(tx)

    return op


def _top_r_ovl(chain: Path) -> Callable[[Session], None]:
    def setup(s: Session) -> None:
        object_add(s, {"qom-type": "throttle-group", "id": "tg"})
        blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "filename": str(chain / "top.qcow2")},
            },
        )
        blockdev_add(s, {"driver": "raw", "node-name": "r", "file": "top"})
        blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "ovl",
                "backing": None,
                "file": {"driver": "file", "filename": str(chain / "ovl.qcow2")},
            },
        )

    return setup


def _snapshot(node: str, overlay: str) -> dict[str, Any]:
    return {"type": "blockdev-snapshot", "data": {"node": node, "overlay": overlay}}


def test_blockdev_snapshot_is_atomic(chain: Path) -> None:
    steps = assert_all_steps_atomic(
        _top_r_ovl(chain), lambda s: run_transaction(s, [_snapshot("top", "ovl")])
    )
    assert steps > 5  # attach, retarget, perms, ro flags, ro edges...


def test_blockdev_snapshot_sync_is_atomic(chain: Path) -> None:
    sync = {
        "type": "blockdev-snapshot-sync",
        "data": {
            "node-name": "top",
            "snapshot-file": str(chain / "s.qcow2"),
            "snapshot-node-name": "s",
        },
    }
    assert_all_steps_atomic(_top_r_ovl(chain), lambda s: run_transaction(s, [sync]))


def test_two_snapshot_transaction_is_atomic(chain: Path) -> None:
    def setup(s: Session) -> None:
        _top_r_ovl(chain)(s)
        blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "ovl2",
                "backing": None,
                "file": {"driver": "file", "filename": str(chain / "ovl2.qcow2")},
            },
        )

    assert_all_steps_atomic(
        setup, lambda s: run_transaction(s, [_snapshot("top", "ovl"), _snapshot("ovl", "ovl2")])
    )


def _quorum(s: Session) -> None:
    for i in range(4):
        blockdev_add(s, {"driver": "null-co", "node-name": f"n{i}", "size": 1 << 20})
    blockdev_add(
        s, {"driver": "quorum", "node-name": "q", "vote-threshold": 1, "children": ["n0", "n1"]}
    )


def test_quorum_add_is_atomic(stand_in_drivers: None) -> None:
    assert_all_steps_atomic(_quorum, _one(stage_x_blockdev_change, {"parent": "q", "node": "n3"}))


def test_quorum_del_is_atomic(stand_in_drivers: None) -> None:
    assert_all_steps_atomic(
        _quorum, _one(stage_x_blockdev_change, {"parent": "q", "child": "children.1"})
    )


def test_quorum_del_of_inline_child_is_atomic(stand_in_drivers: None, chain: Path) -> None:
    def setup(s: Session) -> None:
        blockdev_add(
            s,
            {
                "driver": "quorum",
                "node-name": "q",
                "vote-threshold": 1,
                "children": [
                    {"driver": "null-co", "size": 1 << 20},
                    {
                        "driver": "qcow2",
                        "file": {"driver": "file", "filename": str(chain / "ovl.qcow2")},
                    },
                ],
            },
        )

    assert_all_steps_atomic(
        setup, _one(stage_x_blockdev_change, {"parent": "q", "child": "children.1"})
    )


def _raws(s: Session) -> None:
    for name in ("n", "m"):
        blockdev_add(s, {"driver": "null-co", "node-name": name})
    blockdev_add(s, {"driver": "raw", "node-name": "r1", "file": "n"})
    blockdev_add(s, {"driver": "raw", "node-name": "r2", "file": "n"})


def test_blockdev_replace_is_atomic() -> None:
    assert_all_steps_atomic(
        _raws,
        _one(
            stage_blockdev_replace,
            {"parent-type": "driver", "node-name": "r1", "child": "file", "new-child": "m"},
        ),
    )


def test_replace_edges_auto_is_atomic() -> None:
    assert_all_steps_atomic(
        _raws, _one(stage_replace_edges, {"child": "n", "parents-mode": "auto", "new-child": "m"})
    )


def test_insert_filter_is_atomic(chain: Path) -> None:
    assert_all_steps_atomic(
        _top_r_ovl(chain),
        _one(
            stage_insert_filter,
            {
                "node": "top",
                "filter": {"driver": "throttle", "node-name": "thr", "throttle-group": "tg"},
            },
        ),
    )


def test_remove_filter_is_atomic(chain: Path) -> None:
    def setup(s: Session) -> None:
        _top_r_ovl(chain)(s)
        _one(
            stage_insert_filter,
            {
                "node": "top",
                "filter": {"driver": "throttle", "node-name": "thr", "throttle-group": "tg"},
            },
        )(s)

    assert_all_steps_atomic(setup, _one(stage_remove_filter, {"node": "thr"}))


def test_mixed_extension_transaction_is_atomic(chain: Path) -> None:
    actions = [
        _snapshot("top", "ovl"),
        {
            "type": "x-txgraph-insert-filter",
            "data": {
                "node": "ovl",
                "filter": {"driver": "throttle", "node-name": "thr", "throttle-group": "tg"},
            },
        },
        {"type": "x-txgraph-blockdev-add", "data": {"driver": "null-co", "node-name": "spare"}},
        {"type": "x-txgraph-replace", "data": {"child": "spare", "new-child": "top"}},
        {"type": "x-txgraph-blockdev-del", "data": {"node-name": "spare"}},
    ]
    assert assert_all_steps_atomic(_top_r_ovl(chain), lambda s: run_transaction(s, actions)) >= 20


# -- opens, reopens and exports: every prepare step (driver open, reopen validation,
# -- image locks) and every primitive -------------------------------------------------------
def test_blockdev_add_of_a_chain_is_atomic(chain: Path) -> None:
    """qcow2 over file, its backing opened from the header: opens, probes and locks."""
    assert_all_steps_atomic(
        lambda s: None,
        lambda s: blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "top",
                "file": {"driver": "file", "filename": str(chain / "top.qcow2")},
            },
        ),
    )


def test_blockdev_reopen_is_atomic(chain: Path) -> None:
    def setup(s: Session) -> None:
        _top_r_ovl(chain)(s)
        blockdev_add(
            s,
            {
                "driver": "throttle",
                "node-name": "tf",
                "throttle-group": "tg",
                "file": s.graph.file_child("top"),
            },
        )

    def op(s: Session) -> None:
        file_node = s.graph.file_child("top")
        backing = s.graph.backing_child("top")
        assert file_node is not None and backing is not None
        blockdev_reopen(
            s, [{"driver": "qcow2", "node-name": "top", "file": "tf", "backing": backing}]
        )

    assert_all_steps_atomic(setup, op)


def _exported(chain: Path, sock_dir: Path) -> Callable[[Session], None]:
    def setup(s: Session) -> None:
        _top_r_ovl(chain)(s)
        nbd_server_start(s, {"addr": {"type": "unix", "data": {"path": str(sock_dir / "s")}}})
        _one(
            stage_block_export_add,
            {"type": "nbd", "id": "vm0", "node-name": "ovl", "writable": True},
        )(s)

    return setup


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="txg-faults-"))  # unix socket paths are short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_block_export_add_is_atomic(chain: Path, sock_dir: Path) -> None:
    def setup(s: Session) -> None:
        _top_r_ovl(chain)(s)
        nbd_server_start(s, {"addr": {"type": "unix", "data": {"path": str(sock_dir / "s")}}})

    assert_all_steps_atomic(
        setup,
        _one(
            stage_block_export_add,
            {"type": "nbd", "id": "vm0", "node-name": "ovl", "writable": True},
        ),
    )


def test_block_export_del_is_atomic(chain: Path, sock_dir: Path) -> None:
    assert_all_steps_atomic(_exported(chain, sock_dir), _one(stage_block_export_del, {"id": "vm0"}))


def test_snapshot_under_an_export_is_atomic(chain: Path, sock_dir: Path) -> None:
    def setup(s: Session) -> None:
        _exported(chain, sock_dir)(s)
        blockdev_add(
            s,
            {
                "driver": "qcow2",
                "node-name": "ovl2",
                "backing": None,
                "file": {"driver": "file", "filename": str(chain / "ovl2.qcow2")},
            },
        )

    assert_all_steps_atomic(setup, lambda s: run_transaction(s, [_snapshot("ovl", "ovl2")]))


def test_replace_of_an_export_root_is_atomic(chain: Path, sock_dir: Path) -> None:
    assert_all_steps_atomic(
        _exported(chain, sock_dir),
        _one(
            stage_blockdev_replace,
            {"parent-type": "export", "export-id": "vm0", "new-child": "top"},
        ),
    )
