"""The ``luks`` format driver: a LUKS1 volume on its ``file`` child.

Reproduces QEMU 7.2's block/crypto.c for ``luks``: ``block_crypto_open_generic``
(the volume is opened by :func:`txgraph.io.crypto.luks.open_luks`, header reads
failing with ``Could not read encryption header``), the guest size of
``block_crypto_co_getlength`` (file length minus the payload offset, EIO when
the payload starts past the end), reads and writes of whole 512-byte sectors
numbered from the payload start (``block_crypto_co_preadv`` / ``_pwritev``),
and ``block_crypto_get_specific_info_luks``. There is no zero-write or
discard callback in QEMU's crypto driver, so zero writes are encrypted zeros
and discards do nothing (the :class:`DriverNode` defaults).

Reopen keeps the unlocked volume: QEMU does not read the secret again
(``block_crypto_reopen_prepare`` has nothing to check); the generic reopen
rules handle the ``key-secret`` option itself.
"""

from __future__ import annotations

import errno as E
from collections.abc import Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.crypto.luks import open_luks
from txgraph.io.crypto.secret import SECRET_OPTION
from txgraph.io.crypto.view import EncryptedView
from txgraph.io.driver import DriverNode, ImageInfo
from txgraph.io.registry import register

__all__ = ["LuksNode"]


@register("luks")
class LuksNode(DriverNode):
    """A LUKS volume: the payload decrypted on read, encrypted on write."""

    driver_name = "luks"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        if "file" not in self.children:
            raise OpenError('A block device must be specified for "file"')
        file = self.children["file"]

        def read_header(offset: int, length: int) -> bytes:
            # block_crypto_read_func
            try:
                return file.read(offset, length)
            except IOFailure as err:
                raise OpenError(f"Could not read encryption header: {err.desc}") from None

        self.volume = open_luks(read_header, options.get(SECRET_OPTION))
        self.view = EncryptedView(file, self.volume.cipher, self.volume.payload_offset)

    def _sync_view(self) -> None:
        # The Runtime may swap the file child under drain; the view follows it.
        file = self.children["file"]
        if self.view.children["file"] is not file:
            self.view.children["file"] = file

    def size(self) -> int:
        length = self.children["file"].size()
        if self.volume.payload_offset > length:
            raise IOFailure("Input/output error", E.EIO)
        return length - self.volume.payload_offset

    def read(self, offset: int, length: int) -> bytes:
        self._sync_view()
        return self.view.read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self._sync_view()
        self.view.write(offset, data)

    def info(self) -> ImageInfo:
        file = self.children["file"]
        return ImageInfo(
            format="luks",
            virtual_size=self.size(),
            filename=file.info().filename,
            actual_size=file.info().actual_size,
            format_specific={"type": "luks", "data": dict(self.volume.info)},
            extra={"encrypted": True},
        )
