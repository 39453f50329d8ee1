"""Block status of metadata-preallocated qcow2 images (``BDRV_BLOCK_RECURSE``).

``qcow2_detect_metadata_preallocation`` decides, once per open, whether the image
references many more clusters than its file has allocated; if so, a data run's
status asks the file, and the file's holes read DATA|ZERO. Checked against
``qemu-img map``, which asks the same questions of the same file, and for the
"once per open" and end-of-file rules, which ``qemu-img map`` cannot show.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from imgkit import open_node, open_qcow2, qemu_img, qemu_io

from txgraph.io.driver import recurse_status

KiB = 1024
MiB = 1024 * KiB


def _extents(node: Any) -> list[dict[str, Any]]:
    """The node's block status as ``qemu-img map`` prints it (depth 0, no offsets)."""
    out: list[dict[str, Any]] = []
    pos, size = 0, node.size()
    while pos < size:
        st = node.block_status(pos, size - pos)
        data = (not st.zero) if st.data is None else st.data
        ext = {"start": pos, "length": st.length, "zero": st.zero, "data": data}
        prev = out[-1] if out else None
        if prev is not None and (prev["zero"], prev["data"]) == (ext["zero"], ext["data"]):
            prev["length"] += st.length
        else:
            out.append(ext)
        pos += st.length
    return out


def _qemu_img_map(img: Path) -> list[dict[str, Any]]:
    entries = json.loads(qemu_img("map", "--output=json", img))
    out: list[dict[str, Any]] = []
    for e in entries:
        ext = {k: e[k] for k in ("start", "length", "zero", "data")}
        prev = out[-1] if out else None
        if prev is not None and (prev["zero"], prev["data"]) == (ext["zero"], ext["data"]):
            prev["length"] += ext["length"]
        else:
            out.append(ext)
    return out


def test_holes_under_data_clusters_read_as_data_and_zero(tmp_path: Path) -> None:
    img = tmp_path / "pm.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", img, "4M")
    qemu_io(img, "write -q -P 1 1M 64k", "write -q -P 2 2052k 4k")
    expected = _qemu_img_map(img)
    assert {"start": 0, "length": MiB, "zero": True, "data": True} in expected
    node = open_qcow2(img, read_only=True)
    assert _extents(node) == expected
    assert node.metadata_preallocated()


def test_decided_once_per_open(tmp_path: Path) -> None:
    img = tmp_path / "pm.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", img, "1M")
    node = open_qcow2(img)
    assert node.block_status(0, MiB).zero  # decided here: 21 referenced, 5 allocated
    node.write(0, b"\x07" * MiB)  # every data cluster now has its bytes in the file
    node.flush()
    assert node.metadata_preallocated()  # still this open's answer
    assert not node.block_status(0, MiB).zero
    node.close()
    again = open_qcow2(img, read_only=True)
    assert not again.metadata_preallocated()  # 21 referenced, 21 allocated


def test_recursion_stops_where_the_file_says_and_not_at_its_end(tmp_path: Path) -> None:
    path = tmp_path / "f.raw"
    with open(path, "wb") as f:
        f.write(b"\x01" * (64 * KiB))
        f.truncate(256 * KiB)
    file = open_node("file", {"filename": str(path)}, read_only=True)
    data = recurse_status(file, 0, 128 * KiB, 0)
    assert (data.length, data.zero, data.data) == (64 * KiB, False, True)
    # a hole that runs to the end of the file reads zeros for the whole run
    tail = recurse_status(file, 8 * MiB, 512 * KiB, 64 * KiB)
    assert (tail.offset, tail.length, tail.zero, tail.data) == (8 * MiB, 512 * KiB, True, True)
    past = recurse_status(file, 0, 64 * KiB, 300 * KiB)
    assert (past.length, past.zero, past.host_offset) == (64 * KiB, True, 300 * KiB)
    assert os.path.getsize(path) == 256 * KiB
