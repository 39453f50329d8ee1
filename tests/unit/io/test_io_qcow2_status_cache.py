"""Block status in O(allocated extents) and the bounded compiled-slot cache.

A sparse 64 GiB image with 512 B clusters has 2 Mi L1 entries, four of which
point at L2 tables. A block-status walk over all of it must read only those L2
tables (counted by the map, no timing), hold at most that many slots, and give
the same extents as ``qemu-img map``. The cache cap follows ``l2-cache-size``
and evicts least recently used, never pinned (dirty) slots; ``cache-clean-interval``
drops slots unused for the interval (driven by a fake clock, not wall time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from imgkit import open_qcow2, qemu_img, qemu_io

from txgraph.io.qcow2.slotcache import SlotCache


def _walk(node: Any) -> tuple[list[dict[str, Any]], int]:
    size = node.size()
    out: list[dict[str, Any]] = []
    calls = 0
    pos = 0
    while pos < size:
        st = node.block_status(pos, size - pos)
        calls += 1
        ext = {
            "start": pos,
            "length": st.length,
            "present": st.allocated,
            "zero": st.zero,
            "data": st.allocated and not st.zero,
        }
        if st.host_offset is not None and ext["data"]:
            ext["offset"] = st.host_offset
        prev = out[-1] if out else None
        if (
            prev is not None
            and all(prev[k] == ext[k] for k in ("present", "zero", "data"))
            and ("offset" not in ext or prev.get("offset", -1) + prev["length"] == ext["offset"])
        ):
            prev["length"] += st.length  # qemu-img map merges alike neighbours the same way
        else:
            out.append(ext)
        pos += st.length
    return out, calls


def test_sparse_64g_block_status_reads_only_present_l2_tables(tmp_path: Path) -> None:
    img = tmp_path / "big.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "64G")
    qemu_io(
        img,
        "write -q -P 1 0 4k",
        "write -q -P 2 10G 64k",
        "write -q -z 20G 1M",
        "write -q -P 3 63G 512",
    )
    node = open_qcow2(img, read_only=True)
    try:
        extents, calls = _walk(node)
        m = node.map  # type: ignore[attr-defined]
        present = int((m.l1 != 0).sum())
        assert present == 1 + 2 + 32 + 1  # L2 tables of 32 KiB guest each
        assert m.l2_reads == present and len(m.cache) <= present
        assert calls <= 3 * len(extents)
        ref = json.loads(qemu_img("map", "--output=json", img))
        for e in ref:
            e.pop("depth")
        assert extents == ref
    finally:
        node.close()


def test_l2_cache_size_bounds_compiled_slots(tmp_path: Path) -> None:
    img = tmp_path / "dense.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", img, "1M")
    qemu_io(img, "write -q -P 9 0 1M")  # 32 L2 tables
    node = open_qcow2(img, read_only=False, **{"l2-cache-size": 4 * 512})
    try:
        m = node.map  # type: ignore[attr-defined]
        assert m.cache.cap == 4
        for _k in range(2):
            assert node.read(0, 1 << 20) == b"\x09" * (1 << 20)
            assert len(m.cache) <= 4
        assert m.cache.evictions >= 28 and m.l2_reads >= 60
        # Unwritten changes pin their slots: zeroing every cluster changes all 32 tables
        node.write_zeroes(0, 1 << 20)
        assert len(m.cache) == 32 and m.cache.pinned
        node.flush()
        assert not m.cache.pinned
        node.read(0, 4096)  # the next lookup trims what the flush unpinned
        assert len(m.cache) <= 4
        assert node.read(0, 1 << 20) == bytes(1 << 20)
    finally:
        node.close()
    check = qemu_io(img, "read -q -P 0 0 1M")
    assert "fail" not in check


def test_default_cap_is_qemus_32_mib_and_clean_interval_drops_idle_slots() -> None:
    from txgraph.io.qcow2.slotcache import cache_limits

    assert cache_limits({}, 65536, 65536) == (512, 600.0)
    assert cache_limits({"l2-cache-size": 1}, 65536, 65536)[0] == 2  # QEMU's minimum
    assert cache_limits({"cache-size": 1 << 20}, 65536, 65536)[0] == 12
    now = [0.0]
    dropped: list[int] = []
    c = SlotCache(100, dropped.append, interval=10.0, clock=lambda: now[0])
    for i in range(5):
        c.add(i)
    c.pinned.add(1)
    now[0] = 11.0
    c.add(7)  # the first clean only starts the period (QEMU's first timer run)
    assert dropped == []
    now[0] = 15.0
    c.touch(3)
    now[0] = 22.0
    c.add(8)  # slots unused during the last period go, unless pinned
    assert sorted(dropped) == [0, 2, 4] and sorted(c.held()) == [1, 3, 7, 8]
