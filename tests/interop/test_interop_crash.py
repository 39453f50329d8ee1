"""Crash consistency: a writer killed with SIGKILL leaves at worst leaked clusters.

A forked child writes (allocating writes, overwrites, zeroes, discards) and
flushes in a loop, acknowledging each flushed write over a pipe; the parent
kills it at a random moment. ``qemu-img check`` must then report no
corruption (rc 0 or 3 = leaks only) and every acknowledged write must read
back. 100 rounds on the same image, alternating lazy refcounts (where the
image is left dirty and must be repaired by the next writable open).
"""

from __future__ import annotations

import os
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
from interop_kit import open_chain, qemu_img

ROUNDS = 100
SIZE = 64 << 20
SLOT = 96 * 1024  # not cluster aligned: partial clusters need COW


def _child(img: Path, rnd_seed: int, round_no: int, wfd: int) -> None:
    rnd = random.Random(rnd_seed)
    node = open_chain(img, read_only=False)
    node.reopen({**node.options, "discard": "unmap"}, node.read_only)  # BDRV_O_UNMAP
    # Acknowledged writes live in the first half; the second half gets unacknowledged
    # writes and zeroes, so in-flight zeroing never legitimately hides an acked write.
    nslots = SIZE // 2 // SLOT
    half = SIZE // 2
    for step in range(10_000):
        slot = (round_no * 37 + step) % nslots
        off = slot * SLOT + rnd.randrange(0, 4096)
        pat = (round_no * 7 + step) % 255 + 1
        node.write(off, bytes([pat]) * 40000)
        if rnd.random() < 0.5:
            node.write(half + rnd.randrange(half - 40000), bytes([pat]) * 40000)
            z = half + rnd.randrange(half - 200000)
            node.write_zeroes(z, rnd.randrange(1, 200000), may_unmap=rnd.random() < 0.5)
        node.flush()
        os.write(wfd, struct.pack(">QQ", off, pat))


@pytest.mark.parametrize("lazy", [False, True], ids=["eager", "lazy_refcounts"])
def test_sigkill_never_corrupts(lazy: bool, tmp_path: Path) -> None:
    img = tmp_path / "crash.qcow2"
    qemu_img(
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        f"lazy_refcounts={'on' if lazy else 'off'}",
        img,
        str(SIZE),
    )
    rnd = random.Random(99)
    leaks = 0
    for r in range(ROUNDS // 2):
        rfd, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(rfd)
            try:
                _child(img, rnd.randrange(1 << 30), r, wfd)
            finally:
                os._exit(0)
        os.close(wfd)
        time.sleep(rnd.uniform(0.0, 0.04))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        acked = b""
        while chunk := os.read(rfd, 1 << 16):
            acked += chunk
        os.close(rfd)
        res = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
        assert res.returncode in (0, 3), f"round {r}: {res.stdout}{res.stderr}"
        leaks += res.returncode == 3
        node = open_chain(img, read_only=not lazy)  # writable: repairs a dirty image
        usable = len(acked) // 16 * 16
        for i in range(0, usable, 16):
            off, pat = struct.unpack(">QQ", acked[i : i + 16])
            assert node.read(off, 40000) == bytes([pat]) * 40000, f"round {r}: lost {off}"
        node.close()
        if lazy:
            res = subprocess.run(["qemu-img", "check", str(img)], capture_output=True, text=True)
            assert res.returncode == 0, f"repair left: {res.stdout}"
