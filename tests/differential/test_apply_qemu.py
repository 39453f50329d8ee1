"""Import-then-apply against a live qemu-storage-daemon 7.2: prediction equals observation.

Every plan starts from the seed's state (a qcow2 disk exported as ``vm0``, a
throttle group) built on a real QSD. The graph is captured from QSD, the plan
is verified on the capture under ``safe``, then :func:`txgraph.plan.live.
apply_to_qemu` sends it to the same QSD as QEMU 7.2 commands (extension steps
compiled) and compares QSD's reply and both state queries after every command
with the dry run's prediction. A plan passes only when all of them agree and
every command was sent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.qsd import QSD, qemu_img
from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.plan.client import capture_graph
from txgraph.plan.format import load_json, load_plan, parse_plan, substitute_dir
from txgraph.plan.live import ApplyError, apply_to_qemu, prepare
from txgraph.plan.seal import seal_report
from txgraph.plan.verify import verify_plan

pytestmark = pytest.mark.qsd


def _x(execute: str, **arguments: Any) -> dict[str, Any]:
    return {"execute": execute, "arguments": arguments}


_SNAP = _x(
    "blockdev-add",
    driver="qcow2",
    **{"node-name": "snap"},
    backing=None,
    file={"driver": "file", "node-name": "snap-file", "filename": "{dir}/snap0.qcow2"},
)
_SNAPSHOT = _x("blockdev-snapshot", node="disk", overlay="snap")


def _throttle(node: str, name: str = "t0") -> dict[str, Any]:
    return _x(
        "x-txgraph-insert-filter",
        node=node,
        filter={"driver": "throttle", "node-name": name, "throttle-group": "tg0"},
    )


#: a read-only qcow2 over the base image, its file node given inline (so it inherits)
_D2 = _x(
    "blockdev-add",
    driver="qcow2",
    **{"node-name": "d2", "read-only": True},
    file={"driver": "file", "node-name": "d2-file", "filename": "{dir}/base0.qcow2"},
)


def _reopen_d2(**extra: Any) -> dict[str, Any]:
    options = {"driver": "qcow2", "node-name": "d2", "file": "d2-file", "backing": None}
    return _x("blockdev-reopen", options=[{**options, "read-only": True, **extra}])


_NULL = _x("blockdev-add", driver="null-co", **{"node-name": "n0"}, size=1048576)

#: plan name -> steps (the seed's section-3 plan is read from examples/)
PLANS: dict[str, list[dict[str, Any]]] = {
    "add-null": [_NULL],
    "add-del-null": [_NULL, _x("blockdev-del", **{"node-name": "n0"})],
    "snapshot": [_SNAP, _SNAPSHOT],
    "snapshot-transaction": [
        _SNAP,
        {"transaction": [{"type": "blockdev-snapshot", "data": _SNAPSHOT["arguments"]}]},
    ],
    "snapshot-cache-direct": [
        _SNAP,
        _SNAPSHOT,
        _x(
            "blockdev-reopen",
            options=[
                {
                    "driver": "qcow2",
                    "node-name": "snap",
                    "file": "snap-file",
                    "backing": "disk",
                    "cache": {"direct": True},
                }
            ],
        ),
    ],
    "cache-direct-inherited": [_D2, _reopen_d2(cache={"direct": True})],
    "detect-zeroes": [_D2, _reopen_d2(**{"detect-zeroes": "on"})],
    "filter-under-export": [_throttle("disk")],
    "filter-over-protocol": [_throttle("disk-file")],
    "filter-insert-remove": [_throttle("disk"), _x("x-txgraph-remove-filter", node="t0")],
    "filter-protocol-insert-remove": [
        _throttle("disk-file"),
        _x("x-txgraph-remove-filter", node="t0"),
    ],
    "cor-filter": [
        _x(
            "x-txgraph-insert-filter",
            node="disk",
            filter={"driver": "copy-on-read", "node-name": "cor0"},
        )
    ],
    "snapshot-then-filter-backing": [_SNAP, _SNAPSHOT, _throttle("disk")],
    "two-filters": [_throttle("disk", "t0"), _throttle("t0", "t1")],
    "new-group-filter": [
        _x(
            "object-add",
            **{"qom-type": "throttle-group", "id": "tg1", "limits": {"bps-total": 1 << 20}},
        ),
        _x(
            "x-txgraph-insert-filter",
            node="disk",
            filter={"driver": "throttle", "node-name": "t9", "throttle-group": "tg1"},
        ),
    ],
    "replace-export-root": [
        _SNAP,
        _x(
            "x-blockdev-replace",
            **{"parent-type": "export", "export-id": "vm0", "new-child": "snap"},
        ),
    ],
    "replace-edges-list": [
        _x("blockdev-add", driver="raw", **{"node-name": "r0"}, file="disk-file"),
        _x(
            "blockdev-add",
            driver="file",
            **{"node-name": "f1"},
            filename="{dir}/disk0.qcow2",
            **{"read-only": True},
        ),
        _x(
            "x-txgraph-replace-edges",
            edges=[{"parent": "r0", "child-name": "file"}],
            **{"new-child": "disk"},
        ),
    ],
    "second-export": [
        _NULL,
        _x("block-export-add", type="nbd", id="e1", **{"node-name": "n0"}),
        _x("block-export-del", id="e1"),
    ],
    "header-chain": [
        _x(
            "blockdev-add",
            driver="qcow2",
            **{"node-name": "other", "read-only": True},
            file={"driver": "file", "filename": "{dir}/other.qcow2"},
        ),
        _x("blockdev-del", **{"node-name": "other"}),
    ],
    "filter-under-inheriting-format": [_D2, _throttle("d2-file")],
    "filter-under-raw-window": [
        _x(
            "blockdev-add",
            driver="file",
            **{"node-name": "of", "read-only": True},
            filename="{dir}/other.qcow2",
        ),
        _x(
            "blockdev-add",
            driver="raw",
            **{"node-name": "r0", "read-only": True},
            offset=512,
            size=65536,
            file="of",
        ),
        _x(
            "x-txgraph-insert-filter",
            node="of",
            edges=[{"parent": "r0", "child-name": "file"}],
            filter={"driver": "throttle", "node-name": "t0", "throttle-group": "tg0"},
        ),
    ],
    "quorum": [
        _NULL,
        _x("blockdev-add", driver="null-co", **{"node-name": "n1"}, size=1048576),
        _x(
            "blockdev-add",
            driver="quorum",
            **{"node-name": "q0", "vote-threshold": 1},
            children=["n0", "n1"],
        ),
        _x("blockdev-del", **{"node-name": "q0"}),
    ],
}


def _plans() -> list[tuple[str, Any]]:
    seed = json.loads((EXAMPLES / "seed-section3.json").read_text())
    return [("seed-section3", seed), *PLANS.items()]


def _seed_state(qsd: QSD, images: Path) -> None:
    make_images(images)
    # an image of its own whose backing (base0) the seed's chain also opens read-only
    qemu_img(
        "create", "-q", "-f", "qcow2", "-b", "base0.qcow2", "-F", "qcow2", images / "other.qcow2"
    )
    for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
        assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg


@pytest.mark.parametrize(("name", "raw"), _plans(), ids=[n for n, _ in _plans()])
def test_prediction_equals_observation(name: str, raw: Any, images: Path) -> None:
    with QSD(workdir=str(images)) as qsd:
        _seed_state(qsd, images)
        plan = parse_plan(substitute_dir(raw, str(images)))
        report = seal_report(verify_plan(plan, capture_graph(qsd)).to_dict())
        assert report["ok"], [s["error"] or s["verdict"] for s in report["steps"] if not s["ok"]]
        outcome = apply_to_qemu(report, qsd)
        assert outcome.problems == []
        assert outcome.ok and outcome.sent == outcome.total >= len(plan.steps)


def test_plan_count() -> None:
    """The issue asks for at least 20 plans, the seed's section-3 plan among them."""
    names = [n for n, _ in _plans()]
    assert len(names) >= 20 and "seed-section3" in names


def test_changed_live_graph_is_refused_before_anything_is_sent(images: Path) -> None:
    with QSD(workdir=str(images)) as qsd:
        _seed_state(qsd, images)
        plan = load_plan(EXAMPLES / "seed-section3.json", str(images))
        report = seal_report(verify_plan(plan, capture_graph(qsd)).to_dict())
        qsd.cmd("blockdev-add", {"driver": "null-co", "node-name": "intruder"})
        before = qsd.cmd("x-debug-query-block-graph")
        with pytest.raises(ApplyError, match="no longer matches"):
            apply_to_qemu(report, qsd)
        assert qsd.cmd("x-debug-query-block-graph") == before


def test_drift_stops_at_the_first_difference(images: Path) -> None:
    """QSD answers otherwise than predicted: another process locks the overlay meanwhile.

    The capture shows one process's graph; a second process's image locks are
    invisible to it, so the dry run predicts success and QSD refuses the open.
    """
    with QSD(workdir=str(images)) as qsd:
        _seed_state(qsd, images)
        plan = load_plan(EXAMPLES / "seed-section3.json", str(images))
        report = seal_report(verify_plan(plan, capture_graph(qsd)).to_dict())
        with QSD(workdir=str(images)) as other:
            other.cmd(
                "blockdev-add",
                {"driver": "file", "node-name": "f", "filename": str(images / "snap0.qcow2")},
            )
            other.cmd(
                "blockdev-add",
                {"driver": "qcow2", "node-name": "q", "file": "f", "backing": None},
            )
            outcome = apply_to_qemu(report, qsd)
        assert not outcome.ok and outcome.sent == 1
        assert outcome.problems[0].startswith("step 1 (blockdev-add snap), command 1 of 1")
        assert 'Failed to get "write" lock' in " ".join(outcome.problems)
        assert "snap" not in {n["node-name"] for n in qsd.cmd("query-named-block-nodes")}


def test_no_qemu_form_is_said_before_anything_is_sent(images: Path) -> None:
    with QSD(workdir=str(images)) as qsd:
        _seed_state(qsd, images)
        steps = [
            _NULL,
            {
                "transaction": [
                    {"type": "x-txgraph-insert-filter", "data": _throttle("disk")["arguments"]}
                ]
            },
        ]
        report = seal_report(verify_plan(parse_plan(steps), capture_graph(qsd)).to_dict())
        assert report["ok"]
        with pytest.raises(ApplyError, match=r"step 2 .*no QEMU 7.2 form"):
            apply_to_qemu(report, qsd)
        assert "n0" not in {n["node-name"] for n in qsd.cmd("query-named-block-nodes")}


def test_imported_inheritance_shows_in_the_diffs(images: Path) -> None:
    """The issue's symptoms: on a QSD capture, the snapshot step's diff shows ``disk-file``
    going read-only and the cache.direct reopen reaches ``snap-file`` (both inline-named
    children, not monitor-owned, found so by the ownership probe)."""
    with QSD(workdir=str(images)) as qsd:
        _seed_state(qsd, images)
        imp = capture_graph(qsd)
        assert imp.owned == {"disk-file": False}
        plan = load_plan(EXAMPLES / "seed-section3.json", str(images))
        report = verify_plan(plan, imp).to_dict()
    changed = {
        (i, c["node"]): c["changes"]
        for i, s in enumerate(report["steps"])
        for c in s["diff"]["nodes-changed"]
    }
    assert changed[(1, "disk-file")]["ro"] == [False, True]
    assert changed[(3, "snap-file")]["cache.direct"] == [False, True]


def test_imported_raw_window_keeps_its_window(images: Path) -> None:
    """A raw window built before the capture: its offset and size come back from its json:
    filename, so the compiled reopen of it (a filter under it) keeps them, as QSD shows."""
    with QSD(workdir=str(images)) as qsd:
        _seed_state(qsd, images)
        raw = substitute_dir(PLANS["filter-under-raw-window"], str(images))
        for msg in raw[:2]:
            qsd.cmd(msg["execute"], msg["arguments"])
        report = seal_report(verify_plan(parse_plan(raw[2:]), capture_graph(qsd)).to_dict())
        assert report["ok"]
        outcome = apply_to_qemu(report, qsd)
        assert outcome.problems == [] and outcome.ok
        r0 = next(n for n in qsd.cmd("query-named-block-nodes") if n["node-name"] == "r0")
        assert '"offset": 512' in r0["file"] and '"size": 65536' in r0["file"]


def _greedy(node: str, perm: str) -> dict[str, Any]:
    """A filter that takes ``perm`` on its child even without parents (blkdebug's
    take-child-perms): QEMU 7.2 checks it beside the node's parents when it is added."""
    return _x(
        "x-txgraph-insert-filter",
        node=node,
        filter={"driver": "blkdebug", "node-name": "g0", "take-child-perms": [perm]},
    )


def test_an_order_without_conflict_is_chosen(images: Path) -> None:
    """Under the export (which does not share resize), adding the greedy filter first
    conflicts; taking the export down first, adding the filter, then putting the export
    back on it does not: that order is sent, and QSD does exactly what was predicted."""
    with QSD(workdir=str(images)) as qsd:
        _seed_state(qsd, images)
        report = seal_report(
            verify_plan(parse_plan([_greedy("disk", "resize")]), capture_graph(qsd)).to_dict()
        )
        assert report["ok"]
        conflict = qsd.execute(
            "blockdev-add",
            {
                "driver": "blkdebug",
                "node-name": "probe",
                "image": "disk",
                "take-child-perms": ["resize"],
            },
        )
        assert conflict["error"]["desc"].startswith("Permission conflict on node 'disk'")
        chosen = prepare(capture_graph(qsd), parse_plan([_greedy("disk", "resize")]).steps)
        assert [p.message["execute"] for p in chosen.commands] == [
            "block-export-del",
            "blockdev-add",
            "block-export-add",
        ]
        outcome = apply_to_qemu(report, qsd)
        assert outcome.problems == [] and outcome.ok
        graph = qsd.cmd("x-debug-query-block-graph")
        names = {n["id"]: n["name"] for n in graph["nodes"]}
        edges = {(names[e["parent"]], e["name"]): names[e["child"]] for e in graph["edges"]}
        assert edges[("", "root")] == "g0" and edges[("g0", "image")] == "disk"


def test_no_conflict_free_order_is_said_before_anything_is_sent(images: Path) -> None:
    """Under a format node that does not share write with it, no order of QEMU 7.2
    commands avoids the conflict (the filter must exist before the reopen can point at it),
    although txgraph's one-transaction insertion is fine: apply says so, sends nothing."""
    with QSD(workdir=str(images)) as qsd:
        _seed_state(qsd, images)
        report = seal_report(
            verify_plan(parse_plan([_greedy("disk-file", "write")]), capture_graph(qsd)).to_dict()
        )
        assert report["ok"]
        before = qsd.cmd("x-debug-query-block-graph")
        with pytest.raises(ApplyError) as refused:
            apply_to_qemu(report, qsd)
        assert str(refused.value).startswith(
            "step 1 (x-txgraph-insert-filter disk-file): no order of its QEMU 7.2 commands "
            "is accepted throughout (1 tried; first: blockdev-add: "
        )
        assert qsd.cmd("x-debug-query-block-graph") == before
