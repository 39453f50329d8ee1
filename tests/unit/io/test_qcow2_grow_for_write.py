"""A qcow2 stored inside another one: the inner node grows while it serves reads.

The outer image's allocations write past the inner one's virtual size, which grows
in memory (``qcow2_extend_for_write``: flush, L1 table, a new map), under the inner
node's lock. A reader of data written earlier must never see the map being
replaced; the result must stay a valid pair of images for qemu-img.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from imgkit import open_node, qemu_img

pytestmark = pytest.mark.timeout(120)

CHUNK = 65536


def test_reads_while_the_inner_image_grows(tmp_path: Path) -> None:
    outer, inner = tmp_path / "outer.qcow2", tmp_path / "inner.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", outer, "8M")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=512", outer, inner)
    file = open_node("file", {"filename": str(inner)})
    inner_node = open_node("qcow2", {}, {"file": file})
    outer_node = open_node("qcow2", {}, {"file": inner_node})
    start = inner_node.size()
    outer_node.write(0, b"\x5a" * CHUNK)
    failures: list[str] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            if outer_node.read(0, CHUNK) != b"\x5a" * CHUNK:
                failures.append("read of the first chunk changed while the inner image grew")
                return

    th = threading.Thread(target=reader)
    th.start()
    try:
        for i in range(1, 64):
            outer_node.write(i * CHUNK, bytes([i]) * CHUNK)
    finally:
        done.set()
        th.join(30)
    assert not th.is_alive() and failures == []
    assert inner_node.size() > start  # it grew, in memory
    for i in range(1, 64):
        assert outer_node.read(i * CHUNK, CHUNK) == bytes([i]) * CHUNK
    outer_node.close()
    inner_node.close()
    file.close()
    qemu_img("check", "-q", inner)
    # the header keeps the old size (nothing writes it), as QEMU leaves it
    assert f'"virtual-size": {start}' in qemu_img("info", "--output=json", inner)
