"""Importing a live graph from a real qemu-storage-daemon 7.2.

The graph is built on QSD, both queries are captured, and the imported
BlockGraph must hold exactly the nodes, edges and permissions QSD reported;
the scratch engine built on it must answer both queries as QSD did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.qsd import QSD
from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.model.node import ParentKind
from txgraph.model.perm_bits import Role, perm_list
from txgraph.ops.exports import export_node
from txgraph.ops.session import Session
from txgraph.plan.dryrun import DryRunRuntime
from txgraph.plan.format import load_json
from txgraph.plan.importer import GraphImport, import_into
from txgraph.plan.verify import scratch_engine


def _build_on_qsd(qsd: QSD, images: Path) -> GraphImport:
    make_images(images)
    for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
        assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg
    # a second, read-only chain and a quorum to cover more roles
    qsd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    qsd.cmd("blockdev-add", {"driver": "null-co", "node-name": "n1"})
    qsd.cmd(
        "blockdev-add",
        {"driver": "quorum", "node-name": "q", "vote-threshold": 1, "children": ["n0", "n1"]},
    )
    qsd.cmd(
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "r",
            "file": "q",
            "cache": {"direct": False, "no-flush": True},
            "detect-zeroes": "on",
            "read-only": True,
        },
    )
    return GraphImport(
        qsd.cmd("x-debug-query-block-graph"),
        qsd.cmd("query-named-block-nodes", {"flat": True}),
        qsd.cmd("query-block-exports"),
    )


def test_imported_graph_equals_what_qsd_reported(qsd: QSD, images: Path) -> None:
    imp = _build_on_qsd(qsd, images)
    session = Session(runtime=DryRunRuntime())
    import_into(session, imp)
    graph = session.graph
    ids = {n["id"]: n for n in imp.block_graph["nodes"]}
    reported_nodes = {n["name"] for n in imp.block_graph["nodes"] if n["type"] == "block-driver"}
    assert set(graph.nodes) == reported_nodes
    info = {n["node-name"]: n for n in imp.named_nodes}
    for name, node in graph.nodes.items():
        assert node.driver == info[name]["drv"]
        assert node.read_only == info[name]["ro"]
        assert node.cache_direct == info[name]["cache"]["direct"]
        assert node.cache_no_flush == info[name]["cache"]["no-flush"]
        assert node.detect_zeroes == info[name]["detect_zeroes"]

    def label(gid: int) -> str:
        n = ids[gid]
        return n["name"] if n["type"] == "block-driver" else f"<{n['type']}>"

    reported_edges = sorted(
        (
            label(e["parent"]),
            e["name"],
            label(e["child"]),
            tuple(e["perm"]),
            tuple(e["shared-perm"]),
        )
        for e in imp.block_graph["edges"]
    )
    imported_edges = sorted(
        (
            p if p in graph.nodes else "<block-backend>",
            e.name,
            c,
            tuple(perm_list(e.perm)),
            tuple(perm_list(e.shared)),
        )
        for p, c, e in graph.edges()
    )
    assert imported_edges == reported_edges
    roles = {(p, e.name): (e.role, e.parent_kind) for p, _c, e in graph.edges()}
    assert roles[("disk", "file")][0] == Role.IMAGE
    assert roles[("disk", "backing")][0] == Role.COW
    assert roles[("q", "children.0")][0] == Role.DATA
    assert roles[("r", "file")][0] == Role.FILTERED | Role.PRIMARY
    assert roles[("bb:export:vm0", "root")] == (Role.FILTERED | Role.PRIMARY, ParentKind.ROOT)
    assert export_node(session, "vm0") == "disk"
    session.close()


def test_scratch_engine_answers_both_queries_as_qsd(qsd: QSD, images: Path) -> None:
    imp = _build_on_qsd(qsd, images)
    engine, source = scratch_engine(imp)
    assert source["kind"] == "import"
    answer: dict[str, Any] = engine.execute({"execute": "x-debug-query-block-graph"})
    assert answer["return"] == imp.block_graph
    answer = engine.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
    assert answer["return"] == imp.named_nodes
    answer = engine.execute({"execute": "query-block-exports"})
    assert answer["return"] == imp.exports
    engine.context.session.close()


def test_plan_graph_from_qmp_of_a_real_qsd(images: Path, tmp_path: Path) -> None:
    """`txgraph plan --graph-from-qmp` against QSD itself: graph, exports and throttle groups."""
    import json
    import os
    import subprocess
    import sys
    import time

    from txgraph.peers import QSD_BINARY

    make_images(images)
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        [
            QSD_BINARY,
            "--object",
            "throttle-group,id=tg0,x-iops-total=1000",
            "--blockdev",
            f"driver=file,node-name=disk-file,filename={images}/disk0.qcow2",
            "--blockdev",
            "driver=qcow2,node-name=disk,file=disk-file",
            "--nbd-server",
            f"addr.type=unix,addr.path={tmp_path}/nbd.sock",
            "--export",
            "type=nbd,id=vm0,node-name=disk,writable=on",
            "--chardev",
            f"socket,id=m,path={sock},server=on,wait=off",
            "--monitor",
            "chardev=m",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        res = subprocess.run(
            [
                sys.executable,
                "-m",
                "txgraph.cli",
                "plan",
                str(EXAMPLES / "seed-section3.json"),
                "--dir",
                str(images),
                "--graph-from-qmp",
                str(sock),
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        report = json.loads(res.stdout)
        assert res.returncode == 0, res.stdout + res.stderr
        assert report["source"]["kind"] == "import" and "generation" not in report["source"]
        # the throttle filter step needs tg0: the QOM object was captured via qom-list/qom-get
        assert report["steps"][2]["accepted"]
        assert proc.poll() is None  # QSD still serving, untouched
    finally:
        proc.terminate()
        proc.wait(10)
