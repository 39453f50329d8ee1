"""A guest flush reaches ``fdatasync`` of the image, unless ``cache.no-flush=on``.

``txgraph serve`` runs as a user starts it; ``strace -f -y`` attached to it
counts the ``fdatasync``/``fsync`` calls on the image's file descriptor while
the real ``qemu-io`` writes through an NBD export and flushes. With the
default options (blockdev-add stores ``cache.no-flush`` as the string
``"off"``) the count must be positive: the bug this pins read that string with
``bool()`` and never flushed. With ``cache.no-flush=on`` it must be zero
(``bdrv_co_flush`` skips the flush to disk, as QEMU's cache=unsafe does).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from txgraph.peers import TxgraphDaemon


def _sync_calls(
    tmp_path: Path,
    node_options: dict[str, Any],
    qemu_io: list[str],
    reopen: dict[str, Any] | None = None,
) -> int:
    if shutil.which("strace") is None:  # a missing tool is a failure, not a skip
        pytest.fail("strace is not installed; run `make qemu`, which installs it")
    image = tmp_path / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(image), "1M"], check=True)
    log = tmp_path / "strace.log"
    with TxgraphDaemon(workdir=str(tmp_path)) as daemon:
        daemon.cmd(
            "blockdev-add",
            {"driver": "file", "node-name": "disk", "filename": str(image), **node_options},
        )
        if reopen is not None:
            daemon.cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "file", "node-name": "disk", "filename": str(image), **reopen}
                    ]
                },
            )
        sock = tmp_path / "nbd.sock"
        daemon.cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": str(sock)}}})
        daemon.cmd(
            "block-export-add", {"type": "nbd", "id": "e", "node-name": "disk", "writable": True}
        )
        tracer = subprocess.Popen(
            [
                "strace",
                "-f",
                "-y",
                "-e",
                "trace=fdatasync,fsync",
                "-o",
                str(log),
                "-p",
                str(daemon.proc.pid),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert tracer.stderr is not None
            deadline = time.monotonic() + 30
            line = tracer.stderr.readline()  # "strace: Process N attached ..."
            assert "attached" in line, line
            assert time.monotonic() < deadline
            argv = ["qemu-io", "-f", "raw", f"nbd+unix:///disk?socket={sock}"]
            for command in qemu_io:
                argv += ["-c", command]
            res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            assert res.returncode == 0 and "wrote 4096/4096" in res.stdout, res.stdout + res.stderr
            # The export answered the flush, so the server's calls are in the log.
            daemon.cmd("query-version")
        finally:
            tracer.send_signal(signal.SIGINT)  # detaches; the server keeps running
            try:
                tracer.wait(30)
            except subprocess.TimeoutExpired:
                tracer.kill()
                tracer.wait()
            if tracer.stderr is not None:
                tracer.stderr.close()
    text = log.read_text()
    return sum(
        1
        for ln in text.splitlines()
        if ("fdatasync(" in ln or "fsync(" in ln) and f"<{os.path.realpath(image)}>" in ln
    )


def test_guest_flush_reaches_fdatasync_with_default_options(tmp_path: Path) -> None:
    assert _sync_calls(tmp_path, {}, ["write 0 4k", "flush"]) > 0


def test_no_flush_keeps_the_flush_from_the_disk(tmp_path: Path) -> None:
    assert _sync_calls(tmp_path, {"cache": {"no-flush": True}}, ["write 0 4k", "flush"]) == 0


def test_no_flush_off_given_explicitly_flushes(tmp_path: Path) -> None:
    assert _sync_calls(tmp_path, {"cache": {"no-flush": False}}, ["write 0 4k", "flush"]) > 0


def test_no_flush_set_by_reopen_is_honoured(tmp_path: Path) -> None:
    assert (
        _sync_calls(tmp_path, {}, ["write 0 4k", "flush"], reopen={"cache": {"no-flush": True}})
        == 0
    )


def test_no_flush_cleared_by_reopen_flushes_again(tmp_path: Path) -> None:
    assert (
        _sync_calls(tmp_path, {"cache": {"no-flush": True}}, ["write 0 4k", "flush"], reopen={}) > 0
    )
