"""QEMU 7.2 bugs ``txgraph fuzz`` keeps finding, pinned on qemu-storage-daemon alone.

Each test runs the shrunk sequence on QSD and requires QEMU's wrong answer (an
abort with its assertion text, or a wrong state), then on txgraph and requires
the answer QEMU's own rules give. The fuzzer classifies these findings by
:data:`txgraph.fuzz.known.KNOWN_BUGS` (each entry names its test here), so a
campaign reports them as QEMU's and not as txgraph divergences; when a QEMU
release fixes one, its test here fails and the entry goes.
"""

from __future__ import annotations

from typing import Any

import pytest

from txgraph.fuzz.known import KNOWN_BUGS, classify
from txgraph.fuzz.run import run_sequence

pytestmark = pytest.mark.qsd


def _run(steps: list[dict[str, Any]], against: str) -> Any:
    return run_sequence(
        lambda i, _res: steps[i] if i < len(steps) else None, against, max_steps=len(steps)
    )


def _add(args: dict[str, Any]) -> dict[str, Any]:
    return {"execute": "blockdev-add", "arguments": args}


def _sync(node: str, file: str, new: str) -> dict[str, Any]:
    return {
        "type": "blockdev-snapshot-sync",
        "data": {
            "node-name": node,
            "snapshot-file": "{dir}/" + file,
            "snapshot-node-name": new,
            "format": "qcow2",
        },
    }


def test_qsd_aborts_snapshotting_the_overlay_of_the_same_transaction() -> None:
    """Fuzz 5043c4daec/708332c4b0: the second action snapshots the overlay the first one
    just created, into the same file. QEMU aborts (``block/io.c:525: bdrv_do_drained_end:
    Assertion `bs->quiesce_counter > 0' failed``) while it cleans up the refused action;
    txgraph refuses the second action as QEMU's bdrv_img_create does and rolls back."""
    steps = [
        _add({"driver": "null-co", "node-name": "n3"}),
        {
            "execute": "transaction",
            "arguments": {
                "actions": [_sync("n3", "s1.qcow2", "n4"), _sync("n4", "s1.qcow2", "n6")]
            },
        },
    ]
    qsd = _run(steps, "qsd-only")
    assert qsd.divergence is not None and qsd.divergence.kind == "qsd-crash"
    assert "bdrv_do_drained_end: Assertion `bs->quiesce_counter > 0' failed" in "\n".join(
        qsd.divergence.lines
    )
    assert qsd.divergence.known == "do-drained-end"
    engine = _run(steps, "model")
    assert engine.divergence is None
    assert (
        engine.replies[1]["txgraph"]["error"]["desc"]
        == "Error: Trying to create an image with the same filename as the backing file"
    )


def test_qsd_failed_reopen_leaves_a_stale_qcow2_data_file() -> None:
    """Fuzz 302d66c22f/64c20c853b: a blockdev-reopen of a qcow2 that names another file and
    fails (here ``Cannot change the option 'driver'``) leaves QEMU's qcow2 with a data
    file that is no longer its file child: ``query-named-block-nodes`` shows
    ``data-file-raw: false`` for an image without a data file. A refused reopen changes
    nothing in txgraph (QEMU's transaction rules), so its format-specific info has no
    ``data-file-raw``."""
    steps = [
        _add(
            {
                "driver": "raw",
                "node-name": "n4",
                "file": {"driver": "file", "filename": "{dir}/b1.qcow2", "node-name": "n3f"},
            }
        ),
        _add(
            {
                "driver": "qcow2",
                "node-name": "n5",
                "file": {"driver": "file", "filename": "{dir}/i0.qcow2", "node-name": "n0f"},
            }
        ),
        {
            "execute": "blockdev-reopen",
            "arguments": {"options": [{"driver": "raw", "node-name": "n5", "file": "n4"}]},
        },
        {"execute": "query-named-block-nodes", "arguments": {"flat": True}},
    ]
    both = _run(steps, "qsd")
    d = both.divergence
    assert d is not None and d.step == 2 and d.kind == "qsd-bug"
    assert d.known == "data-file-after-failed-reopen"
    for peer in ("qsd", "txgraph"):
        assert both.replies[2][peer]["error"]["desc"] == "Cannot change the option 'driver'"
    # what QSD's own query says, and what txgraph's says, after the refusal
    qsd_only = _run(steps, "qsd-only")
    engine = _run(steps, "model")
    qsd_n5 = {n["node-name"]: n for n in qsd_only.replies[3]["qsd"]["return"]}["n5"]
    txg_n5 = {n["node-name"]: n for n in engine.replies[3]["txgraph"]["return"]}["n5"]
    assert qsd_n5["image"]["format-specific"]["data"]["data-file-raw"] is False
    assert "data-file-raw" not in txg_n5["image"]["format-specific"]["data"]


def test_known_bugs_name_their_tests_and_only_match_their_findings() -> None:
    names = {n for n in globals() if n.startswith("test_")}
    for bug in KNOWN_BUGS:
        path, test = bug.test.split("::")
        assert path != "tests/differential/test_qemu_bugs.py" or test in names, bug.id
    line = "nodes[n5].image.format-specific.data.data-file-raw: only in left: false"
    assert classify("mismatch", [line]) is not None
    # one more difference makes it a txgraph divergence again
    assert classify("mismatch", [line, "nodes[n5].ro: true  !=  false"]) is None
    assert classify("crash", ["qemu-storage-daemon: ... Assertion `x' failed."]) is None
