"""Findings merge by signature: a crash by the daemon's last words, whatever came before."""

from __future__ import annotations

from txgraph.fuzz.run import _signature

STREAM = {"execute": "block-stream", "arguments": {"device": "a"}}
CANCEL = {"execute": "job-cancel", "arguments": {"id": "j0"}}


def test_crashes_merge_by_their_last_words() -> None:
    a = [
        "qemu-storage-daemon: qemu-storage-daemon closed the connection: Formatting "
        "'/tmp/x/s0.qcow2', fmt=qcow2 size=1048576 (exit status -11)"
    ]
    b = ["qemu-storage-daemon: qemu-storage-daemon closed the connection (exit status -11)"]
    assert _signature("crash", STREAM, a) == _signature("crash", CANCEL, b)
    abort = [
        "qemu-storage-daemon: qemu-storage-daemon closed the connection: Formatting 'x'\n"
        "qemu-storage-daemon: ../../block/io.c:525: bdrv_do_drained_end: Assertion "
        "`bs->quiesce_counter > 0' failed. (exit status -6)"
    ]
    other = [abort[0].replace("bdrv_do_drained_end", "bdrv_drained_begin")]
    assert _signature("crash", STREAM, abort) != _signature("crash", STREAM, a)
    assert _signature("crash", STREAM, abort) != _signature("crash", STREAM, other)


def test_mismatches_keep_their_command_and_shape() -> None:
    lines = ["reply.error.desc: \"Node 'a' is in use\"  !=  \"Node 'a' is busy\""]
    assert _signature("mismatch", STREAM, lines) != _signature("mismatch", CANCEL, lines)
    renamed = [lines[0].replace("'a'", "'b'")]
    assert _signature("mismatch", STREAM, lines) == _signature("mismatch", STREAM, renamed)
