"""Sector ciphers with IV generators, as QEMU's crypto layer applies them to disk sectors.

Reproduces ``qcrypto_block_cipher_encrypt_helper`` / ``..._decrypt_helper``:
the data is cut into 512-byte sectors, each sector gets the IV its number
generates (``qcrypto_ivgen_plain`` — the low 32 bits, little endian —,
``plain64`` — all 64 bits —, ``essiv`` — the 64-bit number encrypted with a
key that is the hash of the volume key), and is en/decrypted on its own. The
cipher modes are QEMU's ``QCryptoCipherMode`` (ecb, cbc, xts, ctr); XTS keys
hold both halves (``qcrypto_cipher_new`` with twice the key length).

The primitives come from ``cryptography``; serpent and twofish, which it
lacks, come from GNU Nettle (:mod:`txgraph.io.crypto.nettle`, the library
QEMU's nettle backend uses), in ECB, CBC and XTS mode; CTR with them is
refused with :class:`UnsupportedCipher`.
"""

from __future__ import annotations

import hashlib
import importlib
import struct
from collections.abc import Callable
from typing import Any, cast

from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes

from txgraph.errors import OpenError

__all__ = [
    "SECTOR_SIZE",
    "SectorCipher",
    "UnsupportedCipher",
    "cipher_key_len",
    "essiv_alg",
    "aes256_cbc_decrypt",
    "hash_digest_len",
    "HASHES",
]

#: QCRYPTO_BLOCK_LUKS_SECTOR_SIZE / QCRYPTO_BLOCK_QCOW_SECTOR_SIZE
SECTOR_SIZE = 512

#: QCryptoCipherAlgorithm -> (family, key bytes)
_ALGS: dict[str, tuple[str, int]] = {
    "aes-128": ("aes", 16),
    "aes-192": ("aes", 24),
    "aes-256": ("aes", 32),
    "cast5-128": ("cast5", 16),
    "des": ("des", 8),
    "3des": ("3des", 24),
    "serpent-128": ("serpent", 16),
    "serpent-192": ("serpent", 24),
    "serpent-256": ("serpent", 32),
    "twofish-128": ("twofish", 16),
    "twofish-192": ("twofish", 24),
    "twofish-256": ("twofish", 32),
}

#: QCryptoHashAlgorithm -> digest length (``qcrypto_hash_digest_len``)
HASHES: dict[str, int] = {
    "md5": 16,
    "sha1": 20,
    "sha224": 28,
    "sha256": 32,
    "sha384": 48,
    "sha512": 64,
    "ripemd160": 20,
}


class UnsupportedCipher(OpenError):
    """A cipher QEMU knows but the ``cryptography`` package does not provide."""


def cipher_key_len(alg: str) -> int:
    """``qcrypto_cipher_get_key_len``."""
    return _ALGS[alg][1]


def hash_digest_len(alg: str) -> int:
    return HASHES[alg]


def _block_cipher(alg: str, key: bytes) -> BlockCipherAlgorithm:
    family = _ALGS[alg][0]
    if family == "aes":
        return algorithms.AES(key)
    name = {"cast5": "CAST5", "3des": "TripleDES"}.get(family)
    # Newer cryptography releases moved the old ciphers to the "decrepit" package.
    for module in (
        "cryptography.hazmat.decrepit.ciphers.algorithms",
        "cryptography.hazmat.primitives.ciphers.algorithms",
    ):
        try:
            cls = getattr(importlib.import_module(module), name or "", None)
        except ImportError:
            continue
        if cls is not None:
            return cast(BlockCipherAlgorithm, cls(key))
    raise UnsupportedCipher(
        f"Cipher algorithm '{alg}' is not available in txgraph "
        "(the cryptography package has no implementation)"
    )


def _block_size(alg: str) -> int:
    return 16 if _ALGS[alg][0] in ("aes", "serpent", "twofish") else 8


class SectorCipher:
    """A volume cipher: algorithm, mode, IV generator and key (QEMU's QCryptoBlock cipher).

    Stateless between calls, so any number of threads may use one object.
    """

    def __init__(self, alg: str, mode: str, ivgen: str, ivhash: str | None, key: bytes) -> None:
        if alg not in _ALGS:
            raise UnsupportedCipher(f"Cipher algorithm '{alg}' not supported")
        self.alg, self.mode, self.ivgen_alg = alg, mode, ivgen
        bs = _block_size(alg)
        #: ``qcrypto_cipher_get_iv_len``: ECB takes no IV, the other modes one block
        self.niv = 0 if mode == "ecb" else bs
        _check_key_length(alg, mode, len(key))
        self._xts_manual: tuple[Any, Any] | None = None
        self._nettle: Any = None
        if _ALGS[alg][0] in _NETTLE:
            self._init_nettle(key)
        elif mode == "xts":
            if _ALGS[alg][0] != "aes":
                raise UnsupportedCipher(f"Cipher mode xts with '{alg}' is not available in txgraph")
            half = len(key) // 2
            if len(key) in (32, 64) and key[:half] != key[half:]:
                # Both XTS halves in one key: the AES primitive takes 32 or 64 bytes for XTS.
                self._algo: Callable[[], BlockCipherAlgorithm] = lambda: algorithms.AES(key)
            else:
                # AES-192-XTS, or equal halves: the library refuses both, QEMU's nettle does not.
                self._xts_manual = (
                    Cipher(algorithms.AES(key[:half]), modes.ECB()),
                    Cipher(algorithms.AES(key[half:]), modes.ECB()),
                )
                self._algo = lambda: algorithms.AES(key[:half])
        else:
            _block_cipher(alg, key)  # refuses unavailable families at open, not at I/O
            self._algo = lambda: _block_cipher(alg, key)
        self._essiv: Any = None
        if ivgen == "essiv":
            # qcrypto_ivgen_essiv_init: the IV key is the hash of the volume key; the cipher
            # used is the caller's ivcipheralg (qcrypto_block_luks_essiv_cipher).
            digest = hashlib.new(ivhash or "sha256", key).digest()
            ivalg = _essiv_alg(alg, len(digest))
            if _ALGS[ivalg][0] in _NETTLE:
                self._essiv = _nettle_ecb(ivalg, digest)
            else:
                self._essiv = Cipher(_block_cipher(ivalg, digest), modes.ECB())

    def _init_nettle(self, key: bytes) -> None:
        """serpent/twofish: nettle ECB under the modes QEMU's generic code builds on it."""
        if self.mode == "xts":
            half = len(key) // 2
            self._xts_manual = (
                _nettle_ecb(self.alg, key[:half]),
                _nettle_ecb(self.alg, key[half:]),
            )
        elif self.mode in ("ecb", "cbc"):
            self._nettle = _nettle_ecb(self.alg, key)
        else:
            raise UnsupportedCipher(
                f"Cipher mode {self.mode} with '{self.alg}' is not available in txgraph"
            )

    def _iv(self, sector: int) -> bytes:
        """``qcrypto_ivgen_calculate`` for ``sector``, ``niv`` bytes long."""
        if self.ivgen_alg == "plain":
            raw = struct.pack("<I", sector & 0xFFFFFFFF)
        else:
            raw = struct.pack("<Q", sector & 0xFFFFFFFFFFFFFFFF)
        raw = (raw + bytes(self.niv))[: self.niv]
        if self._essiv is not None:
            enc = self._essiv.encryptor()
            raw = enc.update(raw) + enc.finalize()
        return raw

    def _mode(self, sector: int) -> Any:
        if self.mode == "ecb":
            return modes.ECB()
        iv = self._iv(sector)
        if self.mode == "cbc":
            return modes.CBC(iv)
        if self.mode == "xts":
            return modes.XTS(iv)
        return modes.CTR(iv)

    def _run(self, first_sector: int, data: bytes, encrypt: bool) -> bytes:
        if len(data) % SECTOR_SIZE:
            raise ValueError("sector cipher needs whole sectors")
        out = bytearray(len(data))
        view = memoryview(data)
        if self._nettle is not None:
            for i in range(0, len(data), SECTOR_SIZE):
                sector = bytes(view[i : i + SECTOR_SIZE])
                iv = self._iv(first_sector + i // SECTOR_SIZE) if self.mode == "cbc" else b""
                out[i : i + SECTOR_SIZE] = _nettle_sector(
                    self._nettle, self.mode, iv, sector, encrypt
                )
            return bytes(out)
        if self._xts_manual is not None:
            for i in range(0, len(data), SECTOR_SIZE):
                out[i : i + SECTOR_SIZE] = _xts_sector(
                    *self._xts_manual,
                    self._iv(first_sector + i // SECTOR_SIZE),
                    bytes(view[i : i + SECTOR_SIZE]),
                    encrypt,
                )
            return bytes(out)
        for i in range(0, len(data), SECTOR_SIZE):
            c: Any = Cipher(self._algo(), self._mode(first_sector + i // SECTOR_SIZE))
            ctx = c.encryptor() if encrypt else c.decryptor()
            out[i : i + SECTOR_SIZE] = ctx.update(view[i : i + SECTOR_SIZE]) + ctx.finalize()
        return bytes(out)

    def decrypt(self, first_sector: int, data: bytes) -> bytes:
        """``qcrypto_block_cipher_decrypt_helper`` from sector ``first_sector`` on."""
        return self._run(first_sector, data, False)

    def encrypt(self, first_sector: int, data: bytes) -> bytes:
        """``qcrypto_block_cipher_encrypt_helper`` from sector ``first_sector`` on."""
        return self._run(first_sector, data, True)


def _essiv_alg(alg: str, digest_len: int) -> str:
    """``qcrypto_block_luks_essiv_cipher``: the ESSIV cipher takes the digest as its key."""
    family = _ALGS[alg][0]
    if _ALGS[alg][1] == digest_len:
        return alg
    names = {"aes": "AES", "serpent": "Serpent", "twofish": "Twofish"}
    if family not in names:
        raise OpenError(f"Cipher {alg} not supported with essiv")
    for name, (fam, klen) in _ALGS.items():
        if fam == family and klen == digest_len:
            return name
    raise OpenError(f"No {names[family]} cipher with key size {digest_len} available")


essiv_alg = _essiv_alg


def _check_key_length(alg: str, mode: str, nkey: int) -> None:
    """``qcrypto_cipher_validate_key_length`` with QEMU's texts."""
    want = _ALGS[alg][1]
    if mode == "xts":
        if alg in ("des", "3des"):
            raise OpenError("XTS mode not compatible with DES-RFB/3DES")
        if nkey % 2:
            raise OpenError("XTS cipher key length should be a multiple of 2")
        if nkey // 2 != want:
            raise OpenError(f"Cipher key length {nkey} should be {want * 2}")
    elif nkey != want:
        raise OpenError(f"Cipher key length {nkey} should be {want}")


def _xts_sector(ecb1: Any, ecb2: Any, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    """IEEE 1619 XTS of one whole-block data unit with two AES-ECB keys (K1 data, K2 tweak)."""
    enc2 = ecb2.encryptor()
    tweak = int.from_bytes(enc2.update(iv) + enc2.finalize(), "little")
    stream = bytearray()
    for _ in range(len(data) // 16):
        stream += tweak.to_bytes(16, "little")
        tweak <<= 1
        if tweak >> 128:  # multiply by alpha in GF(2^128)
            tweak = (tweak & ((1 << 128) - 1)) ^ 0x87
    mask = int.from_bytes(stream, "little")
    pre = (int.from_bytes(data, "little") ^ mask).to_bytes(len(data), "little")
    ctx = ecb1.encryptor() if encrypt else ecb1.decryptor()
    mid = ctx.update(pre) + ctx.finalize()
    return (int.from_bytes(mid, "little") ^ mask).to_bytes(len(data), "little")


_NETTLE = frozenset({"serpent", "twofish"})


def _nettle_ecb(alg: str, key: bytes) -> Any:
    from txgraph.io.crypto.nettle import NettleECB

    try:
        return NettleECB(_ALGS[alg][0], key)
    except OSError:
        raise UnsupportedCipher(
            f"Cipher algorithm '{alg}' is not available in txgraph (libnettle not found)"
        ) from None


def _nettle_sector(ecb: Any, mode: str, iv: bytes, data: bytes, encrypt: bool) -> bytes:
    """One sector in ECB or CBC (``qcrypto_nettle_cipher_*``: CBC chains 16-byte blocks)."""
    if mode == "ecb":
        return bytes(ecb.run(data, encrypt))
    out = bytearray()
    prev = iv
    for i in range(0, len(data), 16):
        block = data[i : i + 16]
        if encrypt:
            prev = ecb.run(bytes(a ^ b for a, b in zip(block, prev, strict=True)), True)
            out += prev
        else:
            plain = ecb.run(block, False)
            out += bytes(a ^ b for a, b in zip(plain, prev, strict=True))
            prev = block
    return bytes(out)


def aes256_cbc_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """One AES-256-CBC decryption without padding handling (``qcrypto_cipher_decrypt``)."""
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    return dec.update(data) + dec.finalize()
