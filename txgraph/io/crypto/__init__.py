"""Block encryption: sector ciphers, the LUKS1 header and key slots, secret references.

:mod:`.cipher` is QEMU's ``qcrypto_cipher`` + ``qcrypto_ivgen`` + the block
helpers (``qcrypto_block_cipher_{en,de}crypt_helper``), :mod:`.luks` is
crypto/block-luks.c's open path (header checks, PBKDF2, AF-merge, master key
digest), :mod:`.secret` the handle through which a driver asks for a secret
without knowing where QOM objects live. The ciphers themselves come from the
``cryptography`` package.
"""

from __future__ import annotations

from txgraph.io.crypto.cipher import SECTOR_SIZE, SectorCipher
from txgraph.io.crypto.secret import SecretRef

__all__ = ["SECTOR_SIZE", "SectorCipher", "SecretRef"]
