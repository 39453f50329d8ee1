"""Concurrent guest writes and reads on every writable image format (the node lock).

Each driver's metadata (block maps, tables, the allocation end) is guarded by
its node's ``lock`` (:mod:`txgraph.io.formats.base`). Eight threads write
disjoint, cluster-crossing ranges with their own patterns at once while two
readers read; afterwards the image must hold exactly the data a sequential
writer would leave (``qemu-img compare`` against a raw reference) and pass
``qemu-img check`` where the format has one. Threads are joined with a deadline.
"""

from __future__ import annotations

import random
import subprocess
import threading
from pathlib import Path

import pytest

from txgraph.errors import TxgraphError
from txgraph.io.runtime import Runtime

_FORMATS = [
    ("vdi", ""),
    ("vpc", ""),
    ("qcow", ""),
    ("qed", "cluster_size=4096"),
    ("parallels", "cluster_size=64k"),
    ("vmdk", ""),
    ("vmdk", "subformat=twoGbMaxExtentSparse"),
    ("vhdx", "block_size=1M"),
]
_SIZE = 8 << 20


def _writes(seed: int) -> list[list[tuple[int, bytes]]]:
    """Per thread: writes inside its own 1 MiB stripe, unaligned and crossing clusters."""
    rng = random.Random(seed)
    plan = []
    for t in range(8):
        base = t * (1 << 20)
        ops = []
        for _ in range(12):
            off = base + rng.randrange(0, (1 << 20) - 70000) // 512 * 512
            ops.append((off, bytes([t * 16 + rng.randrange(16)]) * (rng.randrange(1, 130) * 512)))
        plan.append(ops)
    return plan


@pytest.mark.parametrize("fmt,opts", _FORMATS, ids=[f"{f}-{o or 'default'}" for f, o in _FORMATS])
def test_concurrent_writes_equal_sequential_result(fmt: str, opts: str, tmp_path: Path) -> None:
    img = tmp_path / f"a.{fmt}"
    argv = ["qemu-img", "create", "-q", "-f", fmt] + (["-o", opts] if opts else [])
    subprocess.run([*argv, str(img), str(_SIZE)], check=True, capture_output=True)
    plan = _writes(7)
    ref = bytearray(_SIZE)
    for ops in plan:
        for off, data in ops:
            ref[off : off + len(data)] = data
    rt = Runtime()
    rt.open_node("f", "file", {"filename": str(img)}, {}, False)
    children = {"file": "f"}
    if "twoGb" in opts:
        rt.open_node("e0", "file", {"filename": str(tmp_path / "a-s001.vmdk")}, {}, False)
        children["extents.0"] = "e0"
    rt.open_node("x", fmt, {}, children, False)
    node = rt._nodes["x"]
    size = node.size()
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(ops: list[tuple[int, bytes]]) -> None:
        try:
            for off, data in ops:
                node.write(off, data)
        except BaseException as e:
            errors.append(e)

    def reader() -> None:
        r = random.Random(1)
        try:
            while not stop.is_set():
                off = r.randrange(0, size - 65536) // 512 * 512
                node.read(off, 65536)
        except TxgraphError as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(ops,)) for ops in plan]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for th in threads + readers:
        th.start()
    for th in threads:
        th.join(timeout=120)
    stop.set()
    for th in readers:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads + readers), "a thread did not finish"
    assert not errors, errors
    assert node.read(0, _SIZE) == bytes(ref)
    node.flush()
    for name in ("x", "f", "e0"):
        rt.close_node(name)  # releases the image locks before qemu-img looks
    raw = tmp_path / "ref.raw"
    raw.write_bytes(bytes(ref))
    res = subprocess.run(
        ["qemu-img", "compare", "-f", fmt, "-F", "raw", str(img), str(raw)],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    if fmt in ("vdi", "qed", "parallels", "vmdk"):
        res = subprocess.run(
            ["qemu-img", "check", "-f", fmt, str(img)], capture_output=True, text=True
        )
        assert res.returncode == 0, res.stdout + res.stderr
