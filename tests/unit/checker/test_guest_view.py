"""V1-guest-view's analysis (txgraph.checker.guest_view) and its block-status source.

The pure part is given allocation tables; the data-plane part
(txgraph.io.allocation) is checked against real qcow2 images made by qemu-img
and qemu-io, so both halves are tied to what QEMU writes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.unit.plan.guestkit import MiB, make_chain
from txgraph.checker import RULES
from txgraph.checker.guest_view import (
    Change,
    filtered_child_name,
    human_size,
    served_layers,
    view_changes,
    violation,
)
from txgraph.io.allocation import RuntimeAllocation, allocated_runs
from txgraph.ops.session import Session
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine


class Table:
    """Allocation given as runs per layer (the checker's input, without a data plane)."""

    def __init__(self, sizes: dict[str, int], runs: dict[str, list[tuple[int, int]]]) -> None:
        self.sizes, self.runs = sizes, runs
        self.queried: list[str] = []
        self.unknown: set[str] = set()

    def size(self, layer: str) -> int:
        return self.sizes[layer]

    def known(self, layer: str) -> bool:
        return layer not in self.unknown

    def allocated(self, layer: str, offset: int, length: int) -> list[tuple[int, int]]:
        self.queried.append(layer)
        end = offset + length
        out = []
        for o, n in self.runs.get(layer, []):
            lo, hi = max(o, offset), min(o + n, end)
            if hi > lo:
                out.append((lo, hi - lo))
        return out


def newcomer(mid: list[tuple[int, int]]) -> Table:
    size = 16 * MiB
    return Table(
        {"top": size, "mid": size, "base": size, "snap": size},
        {"top": [(0, MiB)], "mid": mid, "base": [(0, size)]},
    )


def test_skipping_a_layer_with_data_names_ranges_and_layers() -> None:
    alloc = newcomer([(0, MiB // 2), (4 * MiB, 4 * MiB)])
    got = view_changes(["top", "mid", "base"], ["top", "base"], alloc)
    # mid's [0, 512 KiB) is under top's data: the guest never saw it, so it is no change
    assert got == [Change(4 * MiB, 4 * MiB, "mid", "base")]
    assert "snap" not in alloc.queried


def test_skipping_an_empty_layer_keeps_the_view() -> None:
    assert view_changes(["top", "mid", "base"], ["top", "base"], newcomer([])) == []


def test_cutting_the_backing_gives_zeroes_where_lower_layers_held_data() -> None:
    alloc = newcomer([(4 * MiB, 4 * MiB)])
    got = view_changes(["top", "mid", "base"], ["top"], alloc)
    assert got == [
        Change(MiB, 3 * MiB, "base", None),
        Change(4 * MiB, 4 * MiB, "mid", None),
        Change(8 * MiB, 8 * MiB, "base", None),
    ]


def test_an_empty_overlay_or_a_filter_keeps_the_view() -> None:
    alloc = newcomer([(4 * MiB, 4 * MiB)])
    assert view_changes(["top", "mid", "base"], ["snap", "top", "mid", "base"], alloc) == []
    # the overlay's allocation is the only one queried: O(change)
    assert alloc.queried == ["snap"]


def test_a_new_backing_under_a_lone_layer_shows_its_data_instead_of_zeroes() -> None:
    alloc = newcomer([(4 * MiB, 4 * MiB)])
    got = view_changes(["top"], ["top", "mid"], alloc)
    assert got == [Change(4 * MiB, 4 * MiB, None, "mid")]


def test_a_shorter_backing_reads_zeroes_past_its_end() -> None:
    alloc = Table(
        {"top": 8 * MiB, "a": 8 * MiB, "b": 2 * MiB}, {"a": [(0, 8 * MiB)], "b": [(0, 2 * MiB)]}
    )
    got = view_changes(["top", "a"], ["top", "b"], alloc)
    assert got == [Change(0, 2 * MiB, "a", "b"), Change(2 * MiB, 6 * MiB, "a", None)]


def test_past_a_shared_layers_end_both_sides_read_zeroes() -> None:
    """top (8 MiB) over a 2 MiB mid: a new backing under mid only shows within 2 MiB."""
    alloc = Table({"top": 8 * MiB, "mid": 2 * MiB, "big": 8 * MiB}, {"big": [(0, 8 * MiB)]})
    got = view_changes(["top", "mid"], ["top", "mid", "big"], alloc)
    assert got == [Change(0, 2 * MiB, None, "big")]


def test_an_unknown_top_layer_never_hides_a_change_below() -> None:
    alloc = newcomer([(4 * MiB, 4 * MiB)])
    alloc.runs["top"] = [(0, 16 * MiB)]  # what an unknown layer answers: all data
    alloc.unknown.add("top")
    got = view_changes(["top", "mid", "base"], ["top", "base"], alloc)
    assert got == [Change(4 * MiB, 4 * MiB, "mid", "base")]


def test_served_layers_skip_filters_and_follow_backing() -> None:
    drivers = {"t": "throttle", "top": "qcow2", "c": "copy-on-read", "mid": "qcow2", "base": "raw"}
    links = {
        ("t", "file"): "top",
        ("top", "backing"): "c",
        ("c", "file"): "mid",
        ("mid", "backing"): "base",
    }
    layers = served_layers("t", drivers.get, lambda p, n: links.get((p, n)))
    assert layers == ["top", "mid", "base"]
    assert filtered_child_name("blkdebug") == "image"
    assert filtered_child_name("mirror_top") == "backing"
    assert filtered_child_name("qcow2") is None


def test_the_sentence_and_the_rule_table() -> None:
    changes = [Change(4 * MiB, 4 * MiB, "mid", "base"), Change(12 * MiB, MiB, "mid", None)]
    v = violation("bb:export:vm0", "export 'vm0'", "top", changes, ["mid", "base"], "safe")
    assert v.rule == "V1-guest-view" and RULES[v.rule].policies == {"safe"}
    assert v.sentence == (
        "Guest reads through export 'vm0' (on 'top') of 4 MiB at 4 MiB would return base's data "
        "instead of mid's; 1 MiB at 12 MiB would return zeroes instead of mid's data."
    )
    d = v.to_dict()
    assert d["root"] == "bb:export:vm0" and d["nodes"] == ["base", "mid"]
    assert d["ranges"][0] == {
        "offset": 4 * MiB,
        "length": 4 * MiB,
        "before": "mid",
        "after": "base",
    }
    assert human_size(3 * 512) == "1.5 KiB" and human_size(0) == "0 B"


@pytest.fixture
def chain_engine(images: Path) -> Engine:
    make_chain(images)
    engine = Engine(CommandContext(Session(policy="qemu")))
    for name, backing in (("base", None), ("mid", "base"), ("top", "mid")):
        args = {
            "driver": "qcow2",
            "node-name": name,
            "file": {"driver": "file", "filename": str(images / f"{name}.qcow2")},
        }
        if backing:
            args["backing"] = backing
        assert engine.execute({"execute": "blockdev-add", "arguments": args}) == {"return": {}}
    return engine


def test_block_status_of_real_images_is_what_qemu_io_wrote(chain_engine: Engine) -> None:
    runtime = chain_engine.context.session.runtime
    try:
        assert allocated_runs(runtime.node("mid"), 0, 16 * MiB) == [
            (0, MiB // 2),
            (4 * MiB, 4 * MiB),
        ]
        alloc = RuntimeAllocation(runtime, staged=False)
        assert alloc.allocated("top", 0, 16 * MiB) == [(0, MiB)]
        assert alloc.allocated("base", 2 * MiB, MiB) == [(2 * MiB, MiB)]
        assert alloc.size("mid") == 16 * MiB
        got = view_changes(["top", "mid", "base"], ["top", "base"], alloc)
        assert got == [Change(4 * MiB, 4 * MiB, "mid", "base")]
    finally:
        chain_engine.context.session.close()


def test_only_roots_above_the_change_are_judged(tmp_path: Path) -> None:
    from txgraph.ops.guest_view import affected_roots, root_label

    engine = Engine(CommandContext(Session(policy="qemu")))
    sock = str(tmp_path / "nbd.sock")
    msgs: list[dict[str, object]] = [
        {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "a"}},
        {"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "b"}},
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "throttle",
                "node-name": "t",
                "throttle-group": "g",
                "file": "a",
            },
        },
        {
            "execute": "nbd-server-start",
            "arguments": {"addr": {"type": "unix", "data": {"path": sock}}},
        },
        {"execute": "block-export-add", "arguments": {"type": "nbd", "id": "ea", "node-name": "t"}},
        {"execute": "block-export-add", "arguments": {"type": "nbd", "id": "eb", "node-name": "b"}},
    ]
    session = engine.context.session
    try:
        assert engine.execute(
            {"execute": "object-add", "arguments": {"qom-type": "throttle-group", "id": "g"}}
        ) == {"return": {}}
        for msg in msgs:
            assert engine.execute(msg) == {"return": {}}, msg
        graph = session.graph
        assert affected_roots(graph, {"a"}) == ["bb:export:ea"]
        assert affected_roots(graph, {"b"}) == ["bb:export:eb"]
        assert affected_roots(graph, set()) == []
        assert root_label(graph, "bb:export:ea") == "export 'ea'"
    finally:
        session.close()


def test_a_new_user_of_a_shared_base_visits_no_other_root(tmp_path: Path) -> None:
    """O(change): opening a third overlay on a base two exports read changes no chain."""
    from txgraph.ops.guest_view import affected_roots, change_starts
    from txgraph.ops.journal import Journal

    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    for name in ("o1", "o2", "o3"):
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                str(tmp_path / f"{name}.qcow2"),
            ],
            check=True,
        )
    engine = Engine(CommandContext(Session(policy="safe")))
    session = engine.context.session

    def overlay(name: str) -> dict[str, object]:
        return {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "qcow2",
                "node-name": name,
                "backing": "base",
                "file": {"driver": "file", "filename": str(tmp_path / f"{name}.qcow2")},
            },
        }

    try:
        msgs: list[dict[str, object]] = [
            {
                "execute": "blockdev-add",
                "arguments": {
                    "driver": "qcow2",
                    "node-name": "base",
                    "read-only": True,
                    "file": {"driver": "file", "filename": str(base)},
                },
            },
            overlay("o1"),
            overlay("o2"),
            {
                "execute": "nbd-server-start",
                "arguments": {"addr": {"type": "unix", "data": {"path": str(tmp_path / "s")}}},
            },
            {
                "execute": "block-export-add",
                "arguments": {"type": "nbd", "id": "e1", "node-name": "o1"},
            },
            {
                "execute": "block-export-add",
                "arguments": {"type": "nbd", "id": "e2", "node-name": "o2"},
            },
        ]
        for msg in msgs:
            assert engine.execute(msg) == {"return": {}}, msg
        journal = Journal(session.graph)
        session.outer_journal = journal
        assert engine.execute(overlay("o3")) == {"return": {}}
        session.outer_journal = None
        assert "base" in journal.touched  # it gained a parent...
        assert "base" not in change_starts(journal)  # ...but none of its links changed
        assert affected_roots(session.graph, change_starts(journal)) == []
    finally:
        session.close()
