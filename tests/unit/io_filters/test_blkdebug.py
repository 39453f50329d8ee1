"""blkdebug: rules, state machine, config file (QEMU's block/blkdebug.c)."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from txgraph.errors import IOFailure, OpenError
from txgraph.io.drivers.blkdebug import _make_rule
from txgraph.io.runtime import Runtime

from .memnode import MemNode  # noqa: F401


def _dbg(**opts: Any) -> Runtime:
    """``fmt`` (raw) over ``dbg`` (blkdebug) over ``img``: raw raises the data events."""
    rt = Runtime()
    rt.open_node("img", "x-test-mem", {"size": 65536}, {}, False)
    rt.open_node("dbg", "blkdebug", opts, {"image": "img"}, False)
    rt.open_node("fmt", "raw", {}, {"file": "dbg"}, False)
    return rt


def _errno(fn: Any, *args: Any) -> int:
    try:
        fn(*args)
    except IOFailure as e:
        return e.errno
    return 0


def test_inject_error_once_on_one_sector() -> None:
    rt = _dbg(**{"inject-error": [{"event": "read_aio", "errno": 28, "sector": 8, "once": True}]})
    dbg = rt.node("fmt")
    assert _errno(dbg.read, 0, 4096) == 0  # sector 8 is not inside [0, 8)
    assert _errno(dbg.read, 4096, 512) == 28
    assert _errno(dbg.read, 4096, 512) == 0  # once: the rule is gone


def test_flattened_options_and_iotype() -> None:
    rt = _dbg(**{"inject-error.0.event": "write_aio", "inject-error.0.iotype.0": "write-zeroes"})
    dbg = rt.node("fmt")
    assert _errno(dbg.write, 0, b"x") == 0  # arms the rule, which only covers zero writes
    assert _errno(dbg.write_zeroes, 0, 512) == 5


def test_state_machine_arms_a_rule_after_a_transition() -> None:
    rt = _dbg(
        **{
            "inject-error": [{"event": "read_aio", "state": 2}],
            "set-state": [{"event": "flush_to_disk", "state": 1, "new_state": 2}],
        }
    )
    fmt, dbg = rt.node("fmt"), rt.node("dbg")
    assert _errno(fmt.read, 0, 512) == 0
    fmt.flush()  # nothing written yet: bdrv_co_flush raises no flush_to_disk
    assert _errno(fmt.read, 0, 512) == 0
    assert _errno(fmt.write, 0, b"a" * 512) == 0
    fmt.flush()  # flush_to_disk on the primary child: state 1 -> 2
    assert _errno(fmt.read, 0, 512) == 5
    # The armed rule stays active (no new injection event) and covers flushes too,
    # but only a flush that goes to the disk (after a write) checks the rules.
    assert _errno(dbg.flush) == 0
    assert _errno(fmt.write, 0, b"b" * 512) == 5
    assert _errno(dbg.flush) == 5


def test_flush_events_go_to_the_primary_child_only() -> None:
    rt = _dbg(**{"inject-error": [{"event": "flush_to_os", "errno": 1}]})
    dbg = rt.node("dbg")
    dbg.write(0, b"x" * 512)
    assert _errno(dbg.flush) == 0  # flushing blkdebug itself raises nothing on it
    assert _errno(rt.node("fmt").flush) == 0  # flush_to_os armed the rule, after its check
    # The rule was activated by flush_to_os but matches reads and writes by default.
    assert _errno(dbg.read, 0, 512) == 1
    assert _errno(rt.node("fmt").read, 0, 512) == 1


def test_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "blkdebug.conf"
    cfg.write_text('[inject-error]\nevent = "write_aio"\nerrno = "22"\nonce = "on"\n')
    rt = _dbg(config=str(cfg))
    assert _errno(rt.node("fmt").write, 0, b"a") == 22
    assert _errno(rt.node("fmt").write, 0, b"a") == 0


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(OpenError, match="Could not read blkdebug config file: No such file"):
        _dbg(config=str(tmp_path / "missing"))
    with pytest.raises(OpenError, match='Invalid event name "nope"'):
        _dbg(**{"inject-error": [{"event": "nope"}]})


def test_requests_sent_to_blkdebug_itself_raise_no_event() -> None:
    """Only a parent's BLKDBG_EVENT arms rules; an export on blkdebug never does."""
    rt = _dbg(**{"inject-error": [{"event": "read_aio"}, {"event": "write_aio"}]})
    dbg = rt.node("dbg")
    assert _errno(dbg.read, 0, 512) == 0
    assert _errno(dbg.write, 0, b"x") == 0
    assert _errno(rt.node("fmt").read, 0, 512) == 5
    assert _errno(dbg.read, 0, 512) == 5  # armed now: every request is checked


def test_qcow2_metadata_reads_do_not_arm_read_aio(tmp_path: Path) -> None:
    """qcow2's header and L1/L2 reads at open raise no read_aio; its data reads do.

    A backing read raises read_backing_aio instead (qcow2_co_preadv_task).
    """
    img = tmp_path / "t.qcow2"
    base = tmp_path / "b.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1M"], check=True)
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(img)],
        check=True,
    )
    subprocess.run(
        ["qemu-io", "-c", "write -P 7 0 64k", "-f", "qcow2", str(img)],
        check=True,
        capture_output=True,
    )
    rt = Runtime()
    rt.open_node("bf", "file", {"filename": str(base)}, {}, True)
    rt.open_node("b", "qcow2", {}, {"file": "bf"}, True)
    rt.open_node("f", "file", {"filename": str(img)}, {}, True)
    rt.open_node(
        "dbg",
        "blkdebug",
        {"inject-error": [{"event": "read_aio", "once": True}]},
        {"image": "f"},
        True,
    )
    rt.open_node("top", "qcow2", {}, {"file": "dbg", "backing": "b"}, True)
    top = rt.node("top")
    assert top.read(65536, 4096) == bytes(4096)  # backing data: no read_aio
    assert _errno(top.read, 0, 4096) == 5  # data cluster: read_aio arms, the read fails
    assert top.read(0, 4096) == b"\x07" * 4096  # once: the rule is gone
    rt.close_all()


def test_a_data_read_deep_in_a_read_only_chain_raises_read_aio(tmp_path: Path) -> None:
    """The merged read map of a read-only chain must not skip a layer's BLKDBG_EVENT:
    mid's data read through top still arms (and fails on) the blkdebug under mid."""
    mid, top = tmp_path / "mid.qcow2", tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(mid), "1M"], check=True)
    subprocess.run(
        ["qemu-io", "-c", "write -P 9 0 128k", "-f", "qcow2", str(mid)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(mid), "-F", "qcow2", str(top)],
        check=True,
    )
    rt = Runtime()
    rt.open_node("mf", "file", {"filename": str(mid)}, {}, True)
    rt.open_node(
        "dbg",
        "blkdebug",
        {"inject-error": [{"event": "read_aio", "once": True}]},
        {"image": "mf"},
        True,
    )
    rt.open_node("mid", "qcow2", {}, {"file": "dbg"}, True)
    rt.open_node("tf", "file", {"filename": str(top)}, {}, True)
    rt.open_node("top", "qcow2", {}, {"file": "tf", "backing": "mid"}, True)
    top_node = rt.node("top")
    for _ in range(3):  # a warm map too
        assert top_node.read(512 * 1024, 65536) == bytes(65536)
    assert _errno(top_node.read, 0, 65536) == 5
    assert top_node.read(0, 65536) == b"\x09" * 65536
    rt.close_all()


def test_flush_generations_under_concurrent_writes_and_flushes() -> None:
    """Stress of the layer's per-node write/flush generations (plain stores, no lock):
    after concurrent writes and flushes, a final flush still sees the last write as
    unflushed exactly when one came after the last completed flush."""
    rt = _dbg(**{"set-state": [{"event": "flush_to_disk", "state": 1, "new_state": 2}]})
    fmt, dbg = rt.node("fmt"), rt.node("dbg")

    def work(seed: int) -> None:
        for i in range(200):
            fmt.write((seed * 8 + i % 8) * 512, bytes([i & 0xFF]) * 512)
            if i % 3 == seed % 3:
                fmt.flush()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert dbg.state == 2  # some flush went to the disk
    dbg.rules = [r for r in dbg.rules if r.new_state is None]
    dbg.state = 1
    fmt.flush()  # settles whatever the last flush did not cover
    dbg.rules.append(
        _make_rule("set-state", {"event": "flush_to_disk", "state": 1, "new_state": 3})
    )
    fmt.flush()  # nothing written since: no flush_to_disk
    assert dbg.state == 1
    fmt.write(0, b"z" * 512)
    fmt.flush()
    assert dbg.state == 3
