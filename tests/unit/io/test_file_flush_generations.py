"""file: a flush with nothing written since the last one makes no fdatasync (QEMU's write_gen).

``bdrv_co_flush`` skips ``raw_co_flush_to_disk`` when ``flushed_gen ==
write_gen``; every write, zero write, discard and truncate bumps the
generation when it ends. qemu-storage-daemon 7.2 makes no ``fdatasync`` at
all for ``blockdev-snapshot`` of an image nobody wrote (checked with ``strace
-f -e fdatasync``), where txgraph used to sync once per reopened image. The
real ``os.fdatasync`` runs; the test only counts the calls.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from imgkit import open_node


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fdatasync

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counted)
    return calls


def test_flush_syncs_only_after_a_change(tmp_path: Path, syncs: list[int]) -> None:
    path = tmp_path / "f.img"
    path.write_bytes(bytes(1 << 20))
    node = open_node("file", {"filename": str(path), "discard": "unmap"})
    node.flush()
    assert syncs == []  # opened, nothing written: nothing to flush
    steps = [
        lambda: node.write(4096, b"x" * 4096),
        lambda: node.write_zeroes(0, 65536),
        lambda: node.discard(65536, 65536),
        lambda: node.truncate(2 << 20),
        lambda: node.write((2 << 20) + 512, b"y" * 512),  # growing write
    ]
    for i, step in enumerate(steps, 1):
        step()
        node.flush()
        assert len(syncs) == i
        node.flush()  # nothing since: no second sync
        assert len(syncs) == i
    node.close()
    assert path.read_bytes()[4096:8192] == bytes(4096)  # the zero write covered it


def test_concurrent_writes_are_never_left_unflushed(tmp_path: Path, syncs: list[int]) -> None:
    """Writers and flushers race: after the writers end, one more flush syncs unless a
    flush already ran after the last write ended (never a skipped sync with data pending)."""
    path = tmp_path / "f.img"
    path.write_bytes(bytes(1 << 20))
    node = open_node("file", {"filename": str(path)})
    stop = threading.Event()

    def writer(k: int) -> None:
        for i in range(300):
            node.write((k * 300 + i) * 512 % (1 << 20), b"z" * 512)

    def flusher() -> None:
        while not stop.is_set():
            node.flush()

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    f = threading.Thread(target=flusher)
    f.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    f.join(60)
    assert not f.is_alive() and not any(t.is_alive() for t in threads)
    before = len(syncs)
    node.flush()
    node.flush()
    # the generation the last flush covered is the newest one, or the next flush syncs once
    assert len(syncs) - before <= 1
    assert node._flushed_gen == node._write_gen
    node.close()
