"""Snapshot, quorum-change and transaction scenarios (graph §3.3, §4.2).

A ``raw`` node stacked on a qcow2 (``r --file--> top``) stands in for a device
or export: it is a parent that must move to the overlay. The quorum scenarios
join the catalogue as soon as the txgraph data plane has a quorum driver.
"""

from __future__ import annotations

from tests.differential.harness import Scenario
from tests.differential.scenarios._common import (
    add,
    cmd,
    delete,
    fnode,
    null,
    qcow2_img,
    raw_img,
    sc,
)

T = "reconfig"


def snap(node: str, overlay: str) -> dict:
    return cmd("blockdev-snapshot", {"node": node, "overlay": overlay})


def snap_sync(**args: object) -> dict:
    return cmd("blockdev-snapshot-sync", {k.replace("_", "-"): v for k, v in args.items()})


def txn(*actions: dict, **props: object) -> dict:
    args: dict = {"actions": list(actions)}
    if props:
        args["properties"] = {k.replace("_", "-"): v for k, v in props.items()}
    return cmd("transaction", args)


def act(kind: str, **data: object) -> dict:
    return {"type": kind, "data": {k.replace("_", "-"): v for k, v in data.items()}}


def change(parent: str, **args: str) -> dict:
    return cmd("x-blockdev-change", {"parent": parent, **args})


def _top(name: str = "top", path: str = "top.qcow2") -> dict:
    return add({"driver": "qcow2", "node-name": name, "file": fnode(path)})


def _ovl(name: str, path: str, **extra: object) -> dict:
    return add(
        {"driver": "qcow2", "node-name": name, "backing": None, "file": fnode(path), **extra}
    )


_CHAIN = [
    qcow2_img("base.qcow2"),
    qcow2_img("top.qcow2", backing="base.qcow2"),
    qcow2_img("ovl.qcow2"),
    qcow2_img("ovl2.qcow2"),
    qcow2_img("ovl3.qcow2"),
]

SNAPSHOT = [
    sc(
        "snap_basic_moves_parents",
        [
            _top(),
            add({"driver": "raw", "node-name": "r", "file": "top"}),
            _ovl("ovl", "ovl.qcow2"),
            snap("top", "ovl"),
            delete("ovl"),
            delete("top"),
        ],
        setup=_CHAIN,
        theme=T,
        doc="the raw parent moves to the overlay; top and its inline file become ro (R/RU edge); "
        "the overlay's filename becomes json: (backing differs from its header)",
    ),
    sc(
        "snap_parentless_and_chain",
        [
            _top(),
            _ovl("ovl", "ovl.qcow2"),
            _ovl("ovl2", "ovl2.qcow2"),
            snap("top", "ovl"),
            snap("ovl", "ovl2"),
            snap("#nosuch", "ovl2"),
        ],
        setup=_CHAIN,
        theme=T,
    ),
    sc(
        "snap_referenced_file_stays_rw",
        [
            add(fnode("top.qcow2", "tf")),
            add({"driver": "qcow2", "node-name": "top", "file": "tf"}),
            _ovl("ovl", "ovl.qcow2"),
            snap("top", "ovl"),
        ],
        setup=_CHAIN,
        theme=T,
        doc="only implicitly created children follow the old node to read-only",
    ),
    sc(
        "snap_errors",
        [
            _top(),
            _ovl("ovl", "ovl.qcow2"),
            snap("nosuch", "ovl"),
            snap("top", "nosuch"),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "b",
                    "file": fnode("base.qcow2"),
                    "read-only": True,
                }
            ),
            snap("top", "top"),
            add({"driver": "raw", "node-name": "reader", "file": "ovl"}),
            snap("top", "ovl"),
            delete("reader"),
            add(null("n")),
            snap("top", "n"),
            add({"driver": "raw", "node-name": "rw", "file": fnode("r.raw")}),
            snap("top", "rw"),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "withb",
                    "file": fnode("ovl2.qcow2"),
                    "backing": "b",
                }
            ),
            snap("top", "withb"),
            snap("b", "ovl"),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "lone",
                    "backing": None,
                    "file": fnode("ovl3.qcow2"),
                }
            ),
            snap("lone", "lone"),
        ],
        setup=[*_CHAIN, raw_img("r.raw")],
        theme=T,
        doc="lookup, 'already in use' (a reader above the overlay), no-backing drivers, "
        "'already has a backing image', busy backing node, snapshot onto itself",
    ),
    sc(
        "snap_onto_overlay_writer_only_parent",
        [
            _top(),
            _ovl("ovl", "ovl.qcow2"),
            add({"driver": "qcow2", "node-name": "q2", "backing": None, "file": "ovl"}),
            snap("top", "ovl"),
        ],
        setup=_CHAIN,
        theme=T,
        doc="a qcow2 stacked on the overlay reads it: in use",
    ),
    sc(
        "snap_sync_with_parent",
        [
            _top(),
            add({"driver": "raw", "node-name": "r", "file": "top"}),
            snap_sync(node_name="top", snapshot_file="{dir}/s1.qcow2", snapshot_node_name="s1"),
            delete("s1"),
            snap_sync(node_name="top", snapshot_file="{dir}/s2.qcow2", snapshot_node_name="s2"),
            snap_sync(node_name="s1", snapshot_file="{dir}/s2.qcow2", snapshot_node_name="s2"),
        ],
        setup=_CHAIN,
        theme=T,
        doc="the created overlay is not monitor-owned; the old node is then op-blocked",
    ),
    sc(
        "snap_sync_parentless_overlay_is_dropped",
        [
            _top(),
            snap_sync(node_name="top", snapshot_file="{dir}/s1.qcow2", snapshot_node_name="s1"),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "s1b",
                    "read-only": True,
                    "file": fnode("s1.qcow2"),
                }
            ),
        ],
        setup=_CHAIN,
        theme=T,
        doc="nobody uses the new overlay: QEMU closes it at once, the image stays, top becomes ro",
    ),
    sc(
        "snap_sync_existing",
        [
            _top(),
            add({"driver": "raw", "node-name": "r", "file": "top"}),
            snap_sync(
                node_name="top",
                snapshot_file="{dir}/ovl.qcow2",
                snapshot_node_name="s1",
                mode="existing",
            ),
            snap_sync(
                node_name="s1",
                snapshot_file="{dir}/nodir/x.qcow2",
                snapshot_node_name="s2",
                mode="existing",
            ),
        ],
        setup=_CHAIN,
        theme=T,
        doc="mode=existing opens the given image without touching it (its header has no backing)",
    ),
    sc(
        "snap_sync_errors",
        [
            _top(),
            add({"driver": "raw", "node-name": "r", "file": "top"}),
            snap_sync(node_name="nosuch", snapshot_file="{dir}/x.qcow2", snapshot_node_name="x"),
            snap_sync(device="top", snapshot_file="{dir}/x.qcow2", snapshot_node_name="x"),
            snap_sync(node_name="top", snapshot_file="{dir}/x.qcow2"),
            snap_sync(node_name="top", snapshot_file="{dir}/x.qcow2", snapshot_node_name="r"),
            snap_sync(
                node_name="top", snapshot_file="{dir}/x.qcow2", snapshot_node_name="x", format="raw"
            ),
            snap_sync(
                node_name="top",
                snapshot_file="{dir}/x.qcow2",
                snapshot_node_name="x",
                format="bogus",
            ),
            snap_sync(node_name="top", snapshot_file="{dir}/nodir/x.qcow2", snapshot_node_name="x"),
            snap_sync(
                node_name="top", snapshot_file="{dir}/y.qcow2", snapshot_node_name="bad name"
            ),
            snap_sync(node_name="top", snapshot_file="{dir}/z.qcow2", snapshot_node_name="z"),
        ],
        setup=_CHAIN,
        theme=T,
        doc="checks in QEMU's order; image-creation errors as bdrv_img_create words them; "
        "an invalid node-name fails after the image was created",
    ),
]

TRANSACTIONS = [
    sc(
        "txn_snapshot_then_abort",
        [
            _top(),
            add({"driver": "raw", "node-name": "r", "file": "top"}),
            _ovl("ovl", "ovl.qcow2"),
            txn(act("blockdev-snapshot", node="top", overlay="ovl"), act("abort")),
            txn(act("abort"), act("blockdev-snapshot", node="top", overlay="ovl")),
            txn(),
        ],
        setup=_CHAIN,
        theme=T,
        doc="graph and read-only flags exactly as before (§4.2)",
    ),
    sc(
        "txn_second_action_fails",
        [
            _top(),
            add({"driver": "raw", "node-name": "r", "file": "top"}),
            _ovl("ovl", "ovl.qcow2"),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "withb",
                    "file": fnode("ovl2.qcow2"),
                    "backing": {"driver": "qcow2", "file": fnode("base.qcow2"), "read-only": True},
                }
            ),
            txn(
                act("blockdev-snapshot", node="top", overlay="ovl"),
                act("blockdev-snapshot", node="ovl", overlay="withb"),
            ),
            txn(
                act("blockdev-snapshot", node="top", overlay="ovl"),
                act("blockdev-snapshot-sync", node_name="ovl", snapshot_file="{dir}/s.qcow2"),
            ),
            txn(
                act("blockdev-snapshot", node="top", overlay="ovl"),
                act("blockdev-snapshot", node="top", overlay="ovl"),
            ),
        ],
        setup=_CHAIN,
        theme=T,
        doc="rollback of the first snapshot when the second fails, whatever the failure",
    ),
    sc(
        "txn_two_snapshots_chain",
        [
            _top(),
            add({"driver": "raw", "node-name": "r", "file": "top"}),
            _ovl("ovl", "ovl.qcow2"),
            _ovl("ovl3", "ovl3.qcow2"),
            txn(
                act("blockdev-snapshot", node="top", overlay="ovl"),
                act("blockdev-snapshot", node="ovl", overlay="ovl3"),
            ),
        ],
        setup=_CHAIN,
        theme=T,
        doc="ovl3 -> ovl -> top; r on ovl3; top and ovl ro at commit",
    ),
    sc(
        "txn_sync_and_plain",
        [
            _top(),
            add({"driver": "raw", "node-name": "r", "file": "top"}),
            _ovl("ovl", "ovl.qcow2"),
            txn(
                act(
                    "blockdev-snapshot-sync",
                    node_name="top",
                    snapshot_file="{dir}/s1.qcow2",
                    snapshot_node_name="s1",
                ),
                act("blockdev-snapshot", node="s1", overlay="ovl"),
            ),
        ],
        setup=_CHAIN,
        theme=T,
    ),
    sc(
        "txn_grouped_and_bad_actions",
        [
            _top(),
            _ovl("ovl", "ovl.qcow2"),
            txn(act("blockdev-snapshot", node="top", overlay="ovl"), completion_mode="grouped"),
            txn(act("abort"), completion_mode="grouped"),
            txn(act("x-txgraph-blockdev-add", driver="null-co", node_name="n")),
            txn(act("blockdev-snapshot", node="top")),
        ],
        setup=_CHAIN,
        theme=T,
        doc="grouped completion is for backups only; unknown action types are QAPI errors",
    ),
]

QUORUM = [
    sc(
        "quorum_change_add_del_indexes",
        [
            add(null("n0")),
            add(null("n1")),
            add(null("n2")),
            add(null("n3")),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 1,
                    "children": ["n0", "n1"],
                }
            ),
            change("q", child="children.1"),
            change("q", node="n1"),
            change("q", child="children.0"),
            change("q", node="n0"),
            change("q", node="n2"),
            change("q", child="children.2"),
            change("q", node="n3"),
        ],
        theme=T,
        doc="deleting the newest index gives it back; any other index is never reused",
    ),
    sc(
        "quorum_change_errors",
        [
            add(null("n0")),
            add(null("n1")),
            add(null("n2")),
            add(
                {
                    "driver": "quorum",
                    "node-name": "q",
                    "vote-threshold": 2,
                    "children": ["n0", "n1"],
                }
            ),
            change("nosuch", node="n2"),
            change("q"),
            change("q", node="n2", child="children.0"),
            change("q", child="children.7"),
            change("q", child="children.0"),
            change("q", node="nosuch"),
            change("q", node="n0"),
            change("n2", node="n0"),
            change("n2", child="file"),
            add({"driver": "raw", "node-name": "r", "file": "n2"}),
            change("r", child="file"),
            change("q", node="q"),
            add({"driver": "raw", "node-name": "above", "file": "q"}),
            add(null("n4")),
            change("q", node="n4"),
            change("q", child="children.2"),
            change("q", child="children.2"),
        ],
        theme=T,
        doc="every x-blockdev-change error in QEMU's order; the vote threshold rule",
    ),
]


def _quorum_in_data_plane() -> bool:
    try:
        from txgraph.io.registry import driver_class

        return driver_class("quorum") is not None
    except Exception:
        return False


SCENARIOS: list[Scenario] = [*SNAPSHOT, *TRANSACTIONS, *(QUORUM if _quorum_in_data_plane() else [])]


def _nbd_start() -> dict:
    return {
        "execute": "nbd-server-start",
        "arguments": {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}},
    }


def _exp(eid: str, node: str, **extra: object) -> dict:
    return {
        "execute": "block-export-add",
        "arguments": {"type": "nbd", "id": eid, "node-name": node, **extra},
    }


SCENARIOS += [
    Scenario(
        name="export_rules",
        theme="exports",
        doc="export ids, names, server state, deletion",
        steps=(
            _exp("e0", "nothere"),
            {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n"}},
            _exp("e0", "n"),
            _nbd_start(),
            _nbd_start(),
            _exp("1bad", "n"),
            _exp("e0", "n"),
            _exp("e0", "n"),
            _exp("e1", "n"),
            _exp("e1", "n", name="other", writable=True),
            {"execute": "query-block-exports"},
            {"execute": "x-debug-query-block-graph"},
            {"execute": "block-export-del", "arguments": {"id": "nothere"}},
            {"execute": "block-export-del", "arguments": {"id": "e0"}},
            {"execute": "block-export-del", "arguments": {"id": "e1", "mode": "hard"}},
            {"execute": "query-block-exports"},
            {"execute": "blockdev-del", "arguments": {"node-name": "n"}},
            {"execute": "nbd-server-stop"},
            {"execute": "nbd-server-stop"},
        ),
    ),
]
