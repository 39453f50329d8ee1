"""Extension steps as QEMU 7.2 command sequences (txgraph.plan.compile), on the seed's state.

The state is built on a scratch engine (real images, opened read-only); the
compiled sequences themselves are run against qemu-storage-daemon by
tests/differential/test_apply_qemu.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.plan.compile import MAX_ORDERS, CompileError, compile_step
from txgraph.plan.format import Step, load_json, parse_steps
from txgraph.plan.verify import scratch_engine
from txgraph.qmp.engine import Engine


@pytest.fixture
def engine(images: Path) -> Any:
    make_images(images)
    eng, _source = scratch_engine(load_json(EXAMPLES / "seed-section3-state.json", str(images)))
    yield eng
    eng.context.session.close()


def _step(raw: dict[str, Any]) -> Step:
    return parse_steps([raw])[0]


def _throttle(node: str) -> Step:
    return _step(
        {
            "execute": "x-txgraph-insert-filter",
            "arguments": {
                "node": node,
                "filter": {"driver": "throttle", "node-name": "t0", "throttle-group": "tg0"},
            },
        }
    )


def test_filter_over_a_protocol_node_reopens_its_parent(engine: Engine) -> None:
    compiled = compile_step(engine.context.session, _throttle("disk-file"))
    assert compiled is not None and compiled.notes == []
    add, reopen = compiled.orders[0]
    assert add == {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "throttle",
            "node-name": "t0",
            "throttle-group": "tg0",
            "file": "disk-file",
        },
    }
    options = reopen["arguments"]["options"][0]
    assert reopen["execute"] == "blockdev-reopen"
    # everything the node holds is spelled out: a reopen resets what it omits
    assert options["file"] == "t0" and options["backing"].startswith("#block")
    assert options["read-only"] is False and options["cache"] == {
        "direct": False,
        "no-flush": False,
    }


def test_filter_under_an_export_recreates_the_export(engine: Engine) -> None:
    compiled = compile_step(engine.context.session, _throttle("disk"))
    assert compiled is not None
    assert [m["execute"] for m in compiled.orders[0]] == [
        "blockdev-add",
        "block-export-del",
        "block-export-add",
    ]
    assert compiled.orders[0][2]["arguments"] == {
        "type": "nbd",
        "id": "vm0",
        "node-name": "t0",
        "writable": True,
    }
    assert "export 'vm0' is re-created on 't0'" in compiled.notes[0]


def test_qemu_commands_and_qemu_groups(engine: Engine) -> None:
    session = engine.context.session
    assert compile_step(session, _step({"execute": "query-block"})) is None
    action = {"type": "blockdev-snapshot", "data": {"node": "disk", "overlay": "x"}}
    compiled = compile_step(session, _step({"transaction": [action]}))
    assert compiled is not None
    assert compiled.orders == [[{"execute": "transaction", "arguments": {"actions": [action]}}]]


def test_no_qemu_form(engine: Engine) -> None:
    session = engine.context.session
    group = {"transaction": [{"type": "x-txgraph-insert-filter", "data": {}}]}
    with pytest.raises(CompileError, match="no QEMU 7.2 form that keeps the group atomic"):
        compile_step(session, _step(group))
    with pytest.raises(CompileError, match="not applied to QEMU yet"):
        compile_step(session, _step({"wait": "ready", "job": "j"}))


def test_orders_are_bounded(engine: Engine) -> None:
    session = engine.context.session
    for i in range(5):
        engine.execute(
            {
                "execute": "blockdev-add",
                "arguments": {"driver": "raw", "node-name": f"r{i}", "file": "disk-file"},
            }
        )
    step = _step(
        {
            "execute": "x-txgraph-replace-edges",
            "arguments": {
                "edges": [{"parent": f"r{i}", "child-name": "file"} for i in range(5)],
                "new-child": "disk",
            },
        }
    )
    compiled = compile_step(session, step)
    assert compiled is not None and len(compiled.orders) == MAX_ORDERS
    assert len({str(o) for o in compiled.orders}) == MAX_ORDERS  # distinct orders
