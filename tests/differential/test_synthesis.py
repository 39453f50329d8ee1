"""Plan synthesis (txgraph.symbolic.synth), each found sequence run on qemu-storage-daemon 7.2.

For every scenario: the search finds the shortest sequence of QEMU 7.2 commands from the
start graph to the target (dry runs on the real engine), the sequence is then run on a
fresh QSD after the start commands, every reply must be a success, and the graph QSD
reports (:func:`~txgraph.symbolic.graphstate.graph_state`: nodes, edges with perm and
shared-perm, exports) must equal the one QSD reports when it builds the target directly,
and the one txgraph predicted. The impossible case — a throttle filter between an NBD
export and its node — is reported with the constraint that blocks it.

z3's bounded model check (txgraph.symbolic.bmc) answers first where its encoding
reaches: its sequences must be as short as the BFS's and reach the target on QSD, and
its impossibility core must name the export.

With ``--transaction`` (txgraph.symbolic.txsynth) the answer is one atomic
``x-txgraph-transaction``, which QSD does not have: the engine runs it from the start
state, and the graph it ends in (nodes, edges with perm and shared-perm, exports) must
equal the one QSD reports when it builds the target directly — for every scenario,
including the one QEMU 7.2 commands cannot reach.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.qsd import qemu_img
from txgraph.oracle.peers import QSDPeer
from txgraph.plan.verify import scratch_engine
from txgraph.symbolic.bmc import NotEncodable, bmc_synthesize
from txgraph.symbolic.graphstate import graph_state
from txgraph.symbolic.synth import reaches, synthesize
from txgraph.symbolic.txsynth import synthesize_transaction

pytestmark = pytest.mark.qsd

Cmds = list[dict[str, Any]]


def _add(driver: str, name: str, **kw: Any) -> dict[str, Any]:
    return {"execute": "blockdev-add", "arguments": {"driver": driver, "node-name": name, **kw}}


def _img(d: Path, name: str) -> dict[str, Any]:
    return {"driver": "file", "node-name": f"{name}-file", "filename": str(d / f"{name}.qcow2")}


def _export(sock: str, node: str = "disk") -> Cmds:
    return [
        {
            "execute": "nbd-server-start",
            "arguments": {"addr": {"type": "unix", "data": {"path": sock}}},
        },
        {
            "execute": "block-export-add",
            "arguments": {"type": "nbd", "id": "vm0", "node-name": node, "writable": True},
        },
    ]


_TG = {
    "execute": "object-add",
    "arguments": {"qom-type": "throttle-group", "id": "tg0", "limits": {"iops-total": 1000}},
}


def snapshot(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """A live snapshot of the exported disk: the export moves to the overlay, and the old
    top ends read-only (QEMU 7.2 reopens the new backing read-only)."""
    start = [_add("qcow2", "disk", file=_img(d, "disk")), *_export(sock)]
    target = [
        _add("qcow2", "disk", file=_img(d, "disk"), **{"read-only": True}),
        _add("qcow2", "snap", file=_img(d, "snap"), backing="disk"),
        *_export(sock, "snap"),
    ]
    return start, target


def throttle_below(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """A throttle filter between an exported qcow2 node and its file."""
    start = [_TG, _add("qcow2", "disk", file=_img(d, "disk")), *_export(sock)]
    target = [
        _TG,
        _add("file", "disk-file", filename=str(d / "disk.qcow2")),
        _add("throttle", "thr", **{"throttle-group": "tg0", "file": "disk-file"}),
        _add("qcow2", "disk", file="thr"),
        *_export(sock),
    ]
    return start, target


def throttle_removed(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """The reverse: the filter goes, which needs the reopen before the delete."""
    target, start = throttle_below(d, sock)
    return start, target


def swap_backing(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """An overlay's backing node is replaced by another one, the old one deleted."""
    start = [
        _add("qcow2", "base1", file=_img(d, "base1")),
        _add("qcow2", "top", file=_img(d, "top"), backing="base1"),
    ]
    target = [
        _add("qcow2", "base2", file=_img(d, "base2")),
        _add("qcow2", "top", file=_img(d, "top"), backing="base2"),
    ]
    return start, target


def throttle_two_parents(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """A throttle above a backing node two overlays share: each overlay is reopened."""
    common = [_TG, _add("qcow2", "base", file=_img(d, "base"), **{"read-only": True})]
    start = [
        *common,
        _add("qcow2", "top1", file=_img(d, "top1"), backing="base"),
        _add("qcow2", "top2", file=_img(d, "top2"), backing="base"),
    ]
    target = [
        *common,
        _add("throttle", "thr", **{"throttle-group": "tg0", "file": "base"}),
        _add("qcow2", "top1", file=_img(d, "top1"), backing="thr"),
        _add("qcow2", "top2", file=_img(d, "top2"), backing="thr"),
    ]
    return start, target


def throttle_above_export(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """Impossible in QEMU 7.2: a filter between the export and its node."""
    start = [_TG, _add("qcow2", "disk", file=_img(d, "disk")), *_export(sock)]
    target = [
        _TG,
        _add("qcow2", "disk", file=_img(d, "disk")),
        _add("throttle", "thr", **{"throttle-group": "tg0", "file": "disk"}),
        *_export(sock, "thr"),
    ]
    return start, target


def _exported(d: Path, sock: str, *, ro: bool, writable: bool) -> Cmds:
    return [
        _add("qcow2", "disk", file=_img(d, "disk"), **{"read-only": ro}),
        {
            "execute": "nbd-server-start",
            "arguments": {"addr": {"type": "unix", "data": {"path": sock}}},
        },
        {
            "execute": "block-export-add",
            "arguments": {"type": "nbd", "id": "vm0", "node-name": "disk", "writable": writable},
        },
    ]


def read_only_flip(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """A node exported read-only is reopened read-only (its file inherits the flag)."""
    return _exported(d, sock, ro=False, writable=False), _exported(d, sock, ro=True, writable=False)


def read_write_flip(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """The reverse: a read-only node (and its file) reopened read-write."""
    return _exported(d, sock, ro=True, writable=False), _exported(d, sock, ro=False, writable=False)


def snapshot_of_a_filtered_disk(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """A snapshot above a throttle's child: the throttle moves to the overlay, the old
    top ends read-only."""
    start = [
        _TG,
        _add("qcow2", "disk", file=_img(d, "disk")),
        _add("throttle", "thr", **{"throttle-group": "tg0", "file": "disk"}),
        *_export(sock, "thr"),
    ]
    target = [
        _TG,
        _add("qcow2", "disk", file=_img(d, "disk"), **{"read-only": True}),
        _add("qcow2", "snap", file=_img(d, "snap"), backing="disk"),
        _add("throttle", "thr", **{"throttle-group": "tg0", "file": "snap"}),
        *_export(sock, "thr"),
    ]
    return start, target


def read_only_under_a_writable_export(d: Path, sock: str) -> tuple[Cmds, Cmds]:
    """Impossible: the node must end read-only, but the writable export that writes it is
    kept (QEMU 7.2 cannot make an export read-only; deleting it ends the guest's
    connection), and a read-only node cannot have a writer (P4)."""
    start = _exported(d, sock, ro=False, writable=True)
    return start, _exported(d, sock, ro=True, writable=False)


Scenario = Callable[[Path, str], tuple[Cmds, Cmds]]
FOUND: list[tuple[Scenario, int]] = [
    (snapshot, 2),
    (throttle_below, 2),
    (throttle_removed, 2),
    (swap_backing, 3),
    (throttle_two_parents, 3),
    (read_only_flip, 1),
    (read_write_flip, 1),
    (snapshot_of_a_filtered_disk, 2),
]

_IMAGES = ("disk", "snap", "base", "base1", "base2", "top", "top1", "top2")


@pytest.fixture
def images(tmp_path: Path) -> Path:
    for name in _IMAGES:
        qemu_img("create", "-q", "-f", "qcow2", tmp_path / f"{name}.qcow2", "1M")
    return tmp_path


@pytest.fixture
def sockdir() -> Any:
    d = Path(tempfile.mkdtemp(prefix="txg-synth-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _on_qsd(workdir: Path, commands: Cmds) -> Any:
    peer = QSDPeer(workdir)
    try:
        for cmd in commands:
            reply = peer.execute(cmd)
            assert "return" in reply, (cmd, reply)
        return graph_state(peer.execute)
    finally:
        peer.close()


@pytest.mark.parametrize(("scenario", "length"), FOUND, ids=[s.__name__ for s, _n in FOUND])
def test_found_sequence_reaches_the_target_on_qsd(
    scenario: Scenario, length: int, images: Path, sockdir: Path
) -> None:
    start, target = scenario(images, str(sockdir / "a.sock"))
    result = synthesize(start, target, max_steps=4)
    assert result.found, result.blocked
    assert len(result.steps) == length, result.steps
    got = _on_qsd(images, start + result.steps)
    _start_t, target_t = scenario(images, str(sockdir / "b.sock"))
    want = _on_qsd(images, target_t)
    assert got == want


def test_filter_above_an_export_is_impossible(images: Path, sockdir: Path) -> None:
    start, target = throttle_above_export(images, str(sockdir / "a.sock"))
    result = synthesize(start, target, max_steps=4)
    assert not result.found
    assert any(
        "export vm0 must use node 'thr' instead of 'disk'" in b and "no command" in b
        for b in result.blocked
    ), result.blocked


TRANSACTIONS: list[tuple[Scenario, list[str]]] = [
    (snapshot, ["blockdev-add", "blockdev-add", "replace", "blockdev-reopen"]),
    (throttle_below, ["blockdev-add", "blockdev-reopen"]),
    (throttle_removed, ["blockdev-reopen", "blockdev-del"]),
    (swap_backing, ["blockdev-add", "blockdev-add", "blockdev-reopen", "blockdev-del"]),
    (throttle_two_parents, ["blockdev-add", "blockdev-reopen", "blockdev-reopen"]),
    (throttle_above_export, ["blockdev-add", "replace"]),
]


@pytest.mark.parametrize(
    ("scenario", "actions"), TRANSACTIONS, ids=[s.__name__ for s, _a in TRANSACTIONS]
)
def test_one_transaction_reaches_the_target_qsd_builds(
    scenario: Scenario, actions: list[str], images: Path, sockdir: Path
) -> None:
    start, target = scenario(images, str(sockdir / "a.sock"))
    result = synthesize_transaction(start, target, max_actions=6)
    assert result.found, result.blocked
    [tx] = result.steps
    assert tx["execute"] == "x-txgraph-transaction"
    got = [a["type"].removeprefix("x-txgraph-") for a in tx["arguments"]["actions"]]
    assert got == actions
    engine, _ = scratch_engine(start + result.steps)
    _start_t, target_t = scenario(images, str(sockdir / "b.sock"))
    assert graph_state(engine.execute) == _on_qsd(images, target_t)


def test_a_transaction_that_cannot_reach_the_target_says_what_refused_it(
    images: Path, sockdir: Path
) -> None:
    """The exported node's driver cannot change: reopen refuses it, and a delete of the
    node the export uses is refused, so no transaction of the candidates reaches it."""
    start = [_add("qcow2", "disk", file=_img(images, "disk")), *_export(str(sockdir / "a.sock"))]
    target = [
        _add("raw", "disk", file=_img(images, "disk")),
        *_export(str(sockdir / "a.sock")),
    ]
    result = synthesize_transaction(start, target, max_actions=6)
    assert not result.found and result.exhausted
    assert any("blockdev-reopen" in b and "driver" in b for b in result.blocked), result.blocked


BMC: list[tuple[Scenario, int]] = FOUND


@pytest.mark.parametrize(("scenario", "length"), BMC, ids=[s.__name__ for s, _n in BMC])
def test_z3_bmc_finds_the_bfs_length_and_qsd_reaches_the_target(
    scenario: Scenario, length: int, images: Path, sockdir: Path
) -> None:
    """z3's bounded model check (txgraph.symbolic.bmc) finds a sequence as short as the
    BFS's, the engine accepts it step by step, and QSD ends in the target graph."""
    start, target = scenario(images, str(sockdir / "a.sock"))
    z = bmc_synthesize(start, target, max_steps=4)
    assert z.found and len(z.steps) == length == z.bound, (z.steps, z.blocked)
    assert len(synthesize(start, target, max_steps=4).steps) == length
    assert reaches(start, z.steps, target, "safe")
    got = _on_qsd(images, start + z.steps)
    _start_t, target_t = scenario(images, str(sockdir / "b.sock"))
    assert got == _on_qsd(images, target_t)


def test_z3_bmc_names_the_export_as_what_blocks_a_filter_above_it(
    images: Path, sockdir: Path
) -> None:
    start, target = throttle_above_export(images, str(sockdir / "a.sock"))
    z = bmc_synthesize(start, target, max_steps=4)
    assert not z.found
    assert any(
        b.startswith("export 'vm0' must") and "no command that moves a block export" in b
        for b in z.blocked
    ), z.blocked


def test_z3_bmc_models_snapshots_and_flag_changes(images: Path, sockdir: Path) -> None:
    """The snapshot and the flag flips are z3's own answers: a blockdev-snapshot moving the
    export, a blockdev-reopen changing read-only."""
    for scenario, verb in (
        (snapshot, "blockdev-snapshot"),
        (snapshot_of_a_filtered_disk, "blockdev-snapshot"),
        (read_only_flip, "blockdev-reopen"),
        (read_write_flip, "blockdev-reopen"),
    ):
        start, target = scenario(images, str(sockdir / "a.sock"))
        z = bmc_synthesize(start, target, max_steps=4)
        assert z.found and z.steps[-1]["execute"] == verb, (scenario.__name__, z.steps)


def test_a_read_only_flip_under_a_kept_writer_is_impossible(images: Path, sockdir: Path) -> None:
    """z3's core names the permission rules and the flag; the BFS, which tries the reopen
    on the engine, agrees; and QSD 7.2 refuses the one command that could flip it."""
    start, target = read_only_under_a_writable_export(images, str(sockdir / "a.sock"))
    z = bmc_synthesize(start, target, max_steps=4)
    assert not z.found
    assert z.blocked == [
        "the permission rules (P1, P3, P4) at every step",
        "the target has node 'disk' read-only",
    ], z.blocked
    bfs = synthesize(start, target, max_steps=4)
    assert not bfs.found and bfs.exhausted
    reopen = {
        "execute": "blockdev-reopen",
        "arguments": {
            "options": [
                {"driver": "qcow2", "node-name": "disk", "file": "disk-file", "read-only": True}
            ]
        },
    }
    peer = QSDPeer(images)
    try:
        for cmd in start:
            assert "return" in peer.execute(cmd), cmd
        reply = peer.execute(reopen)
    finally:
        peer.close()
    assert reply["error"]["desc"] == "Read-only block node 'disk' cannot support read-write users"


def test_z3_bmc_refuses_a_driver_change(images: Path, sockdir: Path) -> None:
    start = [_add("qcow2", "disk", file=_img(images, "disk"))]
    target = [_add("raw", "disk", file=_img(images, "disk"))]
    with pytest.raises(NotEncodable, match="node 'disk' changes its driver"):
        bmc_synthesize(start, target, max_steps=4)


def test_a_filter_on_top_of_copy_before_write_is_accepted_as_on_qsd(
    images: Path, sockdir: Path
) -> None:
    """Found by synthesis: a throttle on top of copy-before-write, which the engine refused
    with P1 until the permission refresh revisited a cbw node gaining its first parent."""
    cmds = [
        _TG,
        _add("qcow2", "disk", file=_img(images, "disk")),
        _add("null-co", "tgt", size=1048576),
        _add("copy-before-write", "cbw0", file="disk", target="tgt"),
        _add("throttle", "thr", **{"throttle-group": "tg0", "file": "cbw0"}),
    ]
    want = _on_qsd(images, cmds)  # QSD accepts every command
    engine, _ = scratch_engine(cmds)
    assert graph_state(engine.execute) == want
