"""`txgraph serve` + `txgraph plan --graph-from-qmp` + `txgraph apply`, as users run them.

Real processes and sockets throughout: the server is a child process, the
plan and apply commands are separate CLI invocations connecting to its socket.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.peers import TxgraphDaemon
from txgraph.plan.format import load_json


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgraph.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def served(images: Path, tmp_path: Path) -> Any:
    make_images(images)
    with TxgraphDaemon(workdir=str(tmp_path)) as daemon:
        for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
            assert "return" in daemon.execute(msg["execute"], msg.get("arguments")), msg
        yield daemon


def _graph_state(daemon: TxgraphDaemon) -> dict[str, Any]:
    return daemon.cmd("x-txgraph-query-generation")


def test_plan_then_apply_then_stale(served: TxgraphDaemon, images: Path, tmp_path: Path) -> None:
    sock = served.socket_path
    verified = tmp_path / "verified.json"
    res = _cli(
        "plan",
        str(EXAMPLES / "seed-section3.json"),
        "--graph-from-qmp",
        sock,
        "--dir",
        str(images),
        "--out",
        str(verified),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(verified.read_text())
    live = _graph_state(served)
    assert report["source"]["generation"] == live["generation"]
    assert report["source"]["digest"] == live["digest"]
    # verification changed nothing on the server
    assert _graph_state(served) == live

    res = _cli("apply", str(verified), "--qmp", sock)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "applied 4 step(s)" in res.stdout
    graph = served.cmd("x-debug-query-block-graph")
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    edges = {(names[e["parent"]], e["name"]): names[e["child"]] for e in graph["edges"]}
    assert edges[("", "root")] == "throttle0"
    assert edges[("throttle0", "file")] == "snap"
    assert edges[("snap", "backing")] == "disk"
    nodes = {n["node-name"]: n for n in served.cmd("query-named-block-nodes", {"flat": True})}
    assert nodes["snap"]["cache"]["direct"] is True and nodes["disk"]["ro"] is True
    after = _graph_state(served)
    assert after["generation"] > live["generation"]

    # the same verified file again: the graph moved on, so it is stale
    res = _cli("apply", str(verified), "--qmp", sock)
    assert res.returncode == 1
    assert "Stale plan" in res.stderr
    assert _graph_state(served) == after


def test_apply_refused_after_another_client_changed_the_graph(
    served: TxgraphDaemon, images: Path, tmp_path: Path
) -> None:
    sock = served.socket_path
    verified = tmp_path / "verified.json"
    res = _cli(
        "plan",
        str(EXAMPLES / "seed-section3.json"),
        "--graph-from-qmp",
        sock,
        "--dir",
        str(images),
        "--out",
        str(verified),
        "--json",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    served.cmd("blockdev-add", {"driver": "null-co", "node-name": "intruder"})
    before = _graph_state(served)
    res = _cli("apply", str(verified), "--qmp", sock)
    assert res.returncode == 1
    assert f"live graph is at generation {before['generation']}" in res.stderr
    assert _graph_state(served) == before  # nothing of the plan was applied
    assert "snap" not in {n["node-name"] for n in served.cmd("query-named-block-nodes")}


def test_apply_plan_stops_at_the_first_failing_step(served: TxgraphDaemon) -> None:
    live = _graph_state(served)
    reply = served.execute(
        "x-txgraph-apply-plan",
        {
            "expect-generation": live["generation"],
            "expect-digest": live["digest"],
            "steps": [
                {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "a"}},
                {"execute": "blockdev-del", "arguments": {"node-name": "disk"}},
                {
                    "execute": "blockdev-add",
                    "arguments": {"driver": "null-co", "node-name": "never"},
                },
            ],
        },
    )
    err = reply["error"]
    assert err["class"] == "GenericError"
    assert err["desc"] == (
        "Plan step 2 of 3 (blockdev-del disk) failed: Node disk is in use; "
        "1 step(s) were applied before it"
    )
    assert err["__io.txgraph_plan"]["completed"] == 1
    names = {n["node-name"] for n in served.cmd("query-named-block-nodes")}
    assert "a" in names and "never" not in names


def test_apply_plan_argument_errors(served: TxgraphDaemon) -> None:
    assert (
        served.execute("x-txgraph-apply-plan", {"steps": []})["error"]["desc"]
        == "Parameter 'expect-generation' is missing"
    )
    live = _graph_state(served)
    bad = served.execute(
        "x-txgraph-apply-plan",
        {
            "expect-generation": live["generation"],
            "expect-digest": live["digest"],
            "steps": [{"nope": 1}],
        },
    )
    assert bad["error"]["desc"].startswith("Invalid plan: step 0")
    nested = served.execute(
        "x-txgraph-apply-plan",
        {
            "expect-generation": live["generation"],
            "expect-digest": live["digest"],
            "steps": [{"execute": "x-txgraph-apply-plan", "arguments": {}}],
        },
    )
    assert "cannot be a step of a plan" in nested["error"]["desc"]
    assert _graph_state(served) == live


def _tamper_into_harmful_reopen(report: dict[str, Any]) -> dict[str, Any]:
    """The issue's attack: the steps become a reopen cutting disk's backing; digest untouched."""
    harmful = [
        {
            "execute": "blockdev-reopen",
            "arguments": {
                "options": [
                    {"driver": "qcow2", "node-name": "disk", "file": "disk-file", "backing": None}
                ]
            },
        }
    ]
    return {**report, "plan": harmful}


def test_tampered_verified_plan_is_refused(
    served: TxgraphDaemon, images: Path, tmp_path: Path
) -> None:
    sock = served.socket_path
    verified = tmp_path / "verified.json"
    res = _cli(
        "plan",
        str(EXAMPLES / "seed-section3.json"),
        "--graph-from-qmp",
        sock,
        "--dir",
        str(images),
        "--out",
        str(verified),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    before = _graph_state(served)
    report = json.loads(verified.read_text())
    for edited in (
        _tamper_into_harmful_reopen(report),
        {**report, "policy": "qemu"},
        {**report, "source": {**report["source"], "generation": 999}},
    ):
        verified.write_text(json.dumps(edited))
        res = _cli("apply", str(verified), "--qmp", sock)
        assert res.returncode == 1
        assert res.stderr.strip() == (
            "Error: the verified plan was changed after it was verified "
            "(its seal does not match its contents); refusing to apply "
            "it: verify the plan again"
        )
        assert _graph_state(served) == before  # nothing was sent


def test_keyed_seal_needs_the_key(served: TxgraphDaemon, images: Path, tmp_path: Path) -> None:
    sock = served.socket_path
    key, other = tmp_path / "key", tmp_path / "other-key"
    key.write_text("s3cret\n")
    other.write_text("guess\n")
    verified = tmp_path / "verified.json"
    res = _cli(
        "plan",
        str(EXAMPLES / "seed-section3.json"),
        "--graph-from-qmp",
        sock,
        "--dir",
        str(images),
        "--out",
        str(verified),
        "--key-file",
        str(key),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(verified.read_text())["seal"]["algorithm"] == "hmac-sha256"
    before = _graph_state(served)
    res = _cli("apply", str(verified), "--qmp", sock)
    assert res.returncode == 1 and "sealed with a key" in res.stderr
    res = _cli("apply", str(verified), "--qmp", sock, "--key-file", str(other))
    assert res.returncode == 1 and "seal does not match" in res.stderr
    assert _graph_state(served) == before
    res = _cli("apply", str(verified), "--qmp", sock, "--key-file", str(key))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "applied 4 step(s)" in res.stdout
