"""EncryptedView's lock: concurrent read-modify-writes of shared sectors lose no byte.

Several threads write disjoint, unaligned byte ranges that share 512-byte sectors
(each write is widened to whole sectors, decrypted, patched, encrypted and written
back). Without the view's write lock two RMWs of one sector would drop each other's
bytes; with it every byte must read back as its last writer left it, both through the
view and after decrypting the raw file independently.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from txgraph.io.crypto.cipher import SectorCipher
from txgraph.io.crypto.view import EncryptedView
from txgraph.io.registry import driver_class

THREADS = 8
ROUNDS = 40
SIZE = 64 * 1024


def test_concurrent_unaligned_writes_keep_every_byte(tmp_path: Path) -> None:
    path = tmp_path / "img"
    path.write_bytes(bytes(SIZE))
    cls = driver_class("file")
    assert cls is not None
    file = cls("f", {"filename": str(path)}, {}, False)
    key = os.urandom(64)
    view = EncryptedView(file, SectorCipher("aes-256", "xts", "plain64", None, key), 0)
    view.write(0, bytes(SIZE))
    # Thread t owns bytes i with i % THREADS == t inside runs of 3 (stride 3*THREADS):
    # every sector is shared by all threads, no byte by two.
    stride = 3 * THREADS

    def owned(t: int) -> list[int]:
        return [base + t * 3 for base in range(0, SIZE - stride, stride)]

    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for r in range(ROUNDS):
                value = bytes([(t * 31 + r) & 0xFF]) * 3
                for off in owned(t)[r::ROUNDS]:
                    view.write(off, value)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
        assert not th.is_alive()
    assert not errors
    want = bytearray(SIZE)
    for t in range(THREADS):
        for r in range(ROUNDS):
            for off in owned(t)[r::ROUNDS]:
                want[off : off + 3] = bytes([(t * 31 + r) & 0xFF]) * 3
    assert view.read(0, SIZE) == bytes(want)
    file.flush()
    file.close()
    raw = path.read_bytes()
    assert SectorCipher("aes-256", "xts", "plain64", None, key).decrypt(0, raw) == bytes(want)
