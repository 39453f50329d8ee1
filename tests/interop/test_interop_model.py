"""Random read/write/zero/discard workloads against an in-memory model (hypothesis).

The image (over a backing file, small clusters so requests straddle many
clusters and L2 tables) must read like a bytearray that received the same
operations, and ``qemu-img check`` must be clean afterwards.
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from interop_kit import open_chain, qemu_img, qemu_io

SIZE = 1 << 20
BASE_SIZE = 600 * 1024  # shorter than the overlay: the tail reads as zeros

op = st.tuples(
    st.sampled_from(["write", "zero", "zero_unmap", "discard", "read"]),
    st.integers(0, SIZE - 1),
    st.integers(1, 70000),
    st.integers(1, 255),
)


@given(
    ops=st.lists(op, min_size=1, max_size=25),
    cluster=st.sampled_from([512, 4096, 65536]),
    extl2=st.booleans(),
)
def test_random_workload_matches_model(
    ops: list[tuple[str, int, int, int]], cluster: int, extl2: bool
) -> None:
    if extl2 and cluster < 16384:
        extl2 = False
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        base = d / "base.qcow2"
        qemu_img(
            "create", "-q", "-f", "qcow2", "-o", f"cluster_size={cluster}", base, str(BASE_SIZE)
        )
        qemu_io(base, f"write -q -P 0x7e 0 {BASE_SIZE}")
        img = d / "top.qcow2"
        opts = f"cluster_size={cluster}" + (",extended_l2=on" if extl2 else "")
        qemu_img(
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            opts,
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            img,
            str(SIZE),
        )
        model = bytearray(b"\x7e" * BASE_SIZE + bytes(SIZE - BASE_SIZE))
        node = open_chain(img, read_only=False)
        node.reopen({**node.options, "discard": "unmap"}, node.read_only)  # BDRV_O_UNMAP
        cs = cluster
        for kind, off, ln, pat in ops:
            ln = min(ln, SIZE - off)
            if kind == "write":
                node.write(off, bytes([pat]) * ln)
                model[off : off + ln] = bytes([pat]) * ln
            elif kind.startswith("zero"):
                node.write_zeroes(off, ln, may_unmap=kind == "zero_unmap")
                model[off : off + ln] = bytes(ln)
            elif kind == "discard":
                node.discard(off, ln)
                # Whole clusters inside the range read as zeros afterwards (v3).
                a, b = -(-off // cs) * cs, (off + ln) // cs * cs
                if off + ln == SIZE:
                    b = SIZE
                if b > a:
                    model[a:b] = bytes(b - a)
            else:
                assert node.read(off, ln) == model[off : off + ln]
        assert node.read(0, SIZE) == model
        node.close()
        res = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout
        assert open_chain(img).read(0, SIZE) == model
