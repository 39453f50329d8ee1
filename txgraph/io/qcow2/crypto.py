"""qcow2 encryption: the ``encrypt.*`` options and the LUKS payload cipher.

Reproduces the encryption parts of QEMU 7.2's qcow2 open:
``qcow2_update_options_prepare`` (the ``encrypt.format`` given must be the
header's: ``Header reported ... but options specify ...``, ``No encryption
in image header, but options specified format ...``), the CRYPTO header
extension of ``qcow2_read_extensions`` (its offset must be cluster aligned;
the LUKS volume is opened through ``qcow2_crypto_hdr_read_func``, which may
only read inside the extension's area) and ``crypt_physical_offset``: LUKS
payload sectors are numbered by their host offset, so encryption is a view
of the data file (:class:`txgraph.io.crypto.view.EncryptedView` with no
shift) that every data read and write of the driver goes through.

Legacy AES (crypt method 1) opens as in qemu-storage-daemon 7.2 (the system
emulators refuse it, ``bdrv_uses_whitelist``; the daemon does not): the
password is the key, nothing verifies it, and sectors are numbered by their
*guest* offset (``crypt_physical_offset`` is false), so the driver hands the
view each request's guest-minus-host delta.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.crypto.cipher import SectorCipher
from txgraph.io.crypto.luks import LuksVolume, open_luks
from txgraph.io.crypto.secret import SECRET_OPTION, SecretRef

__all__ = ["Qcow2Crypto"]

_FORMATS = {1: "aes", 2: "luks"}


class Qcow2Crypto:
    """The encryption state of one qcow2 open (``s->crypto`` and ``s->crypto_opts``)."""

    def __init__(self, options: Mapping[str, Any], read: Callable[[int, int], bytes]) -> None:
        fmt = options.get("encrypt.format")
        self.format: str | None = fmt if isinstance(fmt, str) else None
        ref = options.get(SECRET_OPTION)
        self.secret: SecretRef | None = ref if isinstance(ref, SecretRef) else None
        self._read = read
        self.volume: LuksVolume | None = None
        #: the legacy AES cipher (crypt method 1)
        self.aes: SectorCipher | None = None

    def check_options(self, crypt_method: int) -> None:
        """``qcow2_update_options_prepare``'s switch on the header's crypt method."""
        if crypt_method == 0 and self.format is not None:
            raise OpenError(
                f"No encryption in image header, but options specified format '{self.format}'"
            )
        expected = _FORMATS.get(crypt_method)
        if expected is not None and self.format is not None and self.format != expected:
            raise OpenError(
                f"Header reported '{expected}' encryption format but options "
                f"specify '{self.format}'"
            )

    def open(self, ext: bytes, cluster_size: int) -> None:
        """The CRYPTO extension's open: bounded header reads, then ``qcrypto_block_open``."""
        offset, length = struct.unpack(">QQ", ext)
        if offset % cluster_size:
            raise OpenError(
                f"Encryption header offset '{offset}' is not a multiple of "
                f"cluster size '{cluster_size}'"
            )

        def read(pos: int, n: int) -> bytes:
            # qcow2_crypto_hdr_read_func
            if pos + n > length:
                raise OpenError("Request for data outside of extension header")
            try:
                return self._read(offset + pos, n)
            except IOFailure as err:
                raise OpenError(f"Could not read encryption header: {err.desc}") from None

        self.volume = open_luks(read, self.secret, "encrypt.")

    def open_aes(self) -> None:
        """``qcrypto_block_qcow_open`` / ``_init``: the password, zero-padded or cut to 16
        bytes, is the AES-128-CBC key; IVs are plain64 of the guest sector."""
        if self.secret is None:
            raise OpenError("Parameter 'encrypt.key-secret' is required for cipher")
        password = self.secret.resolve().encode("utf-8").split(b"\0", 1)[0]
        key = (password[:16] + bytes(16))[:16]
        self.aes = SectorCipher("aes-128", "cbc", "plain64", None, key)

    def format_specific(self) -> dict[str, Any]:
        """``qcow2_get_specific_info``'s ``encrypt`` member."""
        if self.volume is None:
            return {"format": "aes"}
        return {"format": "luks", **self.volume.info}
