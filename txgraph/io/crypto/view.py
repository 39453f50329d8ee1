"""An encrypted byte range of a child node, seen in plaintext.

Both of QEMU's encrypted formats keep their payload as independent 512-byte
sectors, each encrypted with the IV of its sector number: LUKS numbers the
sectors of the guest offset (``block_crypto_co_preadv`` /
``block_crypto_co_pwritev`` with the payload shifted by the header size),
qcow2 with LUKS the sectors of the host offset in the data file
(``qcow2_co_encrypt`` / ``qcow2_co_decrypt`` with ``crypt_physical_offset``),
legacy qcow2 AES those of the guest offset. :class:`EncryptedView` is that
translation: offset ``o`` of the view is byte ``o + shift`` of the child and
belongs to sector ``(o + bias) // 512``.

Requests that do not cover whole sectors are widened to them; writes then
read, decrypt, patch, encrypt and write back (QEMU's 512-byte
``request_alignment`` makes the block layer do the same). Locking: ``lock``
(owned by the view) serialises writes so that two read-modify-writes of one
sector cannot lose each other's bytes; reads take no lock (a sector is
written by one ``pwrite``, so a read sees it before or after).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from txgraph.io.crypto.cipher import SECTOR_SIZE, SectorCipher
from txgraph.io.driver import DriverNode

__all__ = ["EncryptedView"]


class EncryptedView(DriverNode):
    """Plaintext access to ``child[shift:]`` encrypted with ``cipher`` sector by sector."""

    driver_name = "x-txgraph-encrypted-view"

    def __init__(
        self,
        child: DriverNode,
        cipher: SectorCipher,
        shift: int,
        options: Mapping[str, Any] | None = None,
        *,
        bias: int = 0,
    ) -> None:
        # Never read-only itself: the child's own layer refuses writes it may not take.
        super().__init__(f"{child.node_name}.crypt", options or {}, {"file": child}, False)
        self.cipher = cipher
        self.shift = shift
        #: added to a view offset to number its sector (legacy qcow2 AES numbers guest
        #: sectors while the view is addressed by host offset; a multiple of 512)
        self.bias = bias
        self.lock = threading.Lock()

    @property
    def child(self) -> DriverNode:
        return self.children["file"]

    def _span(self, offset: int, length: int) -> tuple[int, int]:
        start = offset - offset % SECTOR_SIZE
        end = -(-(offset + length) // SECTOR_SIZE) * SECTOR_SIZE
        return start, end

    def read(self, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        start, end = self._span(offset, length)
        raw = self.child.read(start + self.shift, end - start)
        plain = self.cipher.decrypt((start + self.bias) // SECTOR_SIZE, raw)
        return plain[offset - start : offset - start + length]

    def readinto(self, offset: int, out: memoryview) -> None:
        out[:] = self.read(offset, len(out))

    def write(self, offset: int, data: bytes) -> None:
        length = len(data)
        if length == 0:
            return
        start, end = self._span(offset, length)
        with self.lock:
            if start == offset and end == offset + length:
                plain = bytes(data)
            else:
                buf = bytearray(self.read(start, end - start))
                buf[offset - start : offset - start + length] = data
                plain = bytes(buf)
            self.child.write(
                start + self.shift, self.cipher.encrypt((start + self.bias) // SECTOR_SIZE, plain)
            )

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        # Encrypted zeros are not zeros on disk: always written as data.
        self.write(offset, bytes(length))

    def discard(self, offset: int, length: int) -> None:
        """A discarded range reads back as whatever the child returns; QEMU passes it on."""
        self.child.discard(offset + self.shift, length)

    def flush(self) -> None:
        self.child.flush()

    def size(self) -> int:
        return max(0, self.child.size() - self.shift)
