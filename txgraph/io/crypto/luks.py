"""LUKS1 volumes: header validation and master key recovery, as QEMU 7.2 opens them.

Reproduces crypto/block-luks.c's ``qcrypto_block_luks_open`` in its order:
the key secret is required and looked up first, then the 592-byte header is
read (``qcrypto_block_luks_load_header``) and checked
(``qcrypto_block_luks_check_header``: magic, version, NUL-terminated names,
payload and key slot placement, stripes and iteration counts, with QEMU's
unsigned 32-bit arithmetic), the cipher spec strings
are parsed (``qcrypto_block_luks_parse_header``), and every enabled key slot
is tried (``qcrypto_block_luks_find_key`` / ``_load_key``: PBKDF2 of the
password, the key material decrypted like payload sectors, AF-merge, and the
PBKDF2 digest of the candidate master key compared with the header's).
``format_specific`` is ``qcrypto_block_luks_get_info``.

Hostile headers cannot make txgraph allocate or compute without bound: the
key material of a slot and the PBKDF2 iteration counts are capped (QEMU
would allocate or spin for as long as the header asks).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from txgraph.errors import OpenError
from txgraph.io.crypto.cipher import HASHES, SECTOR_SIZE, SectorCipher, UnsupportedCipher, essiv_alg
from txgraph.io.crypto.secret import SecretRef

__all__ = ["LuksVolume", "open_luks", "LUKS_MAGIC", "HEADER_SIZE", "af_merge"]

LUKS_MAGIC = b"LUKS\xba\xbe"
HEADER_SIZE = 592
_HEAD = struct.Struct(">6sH32s32s32sII20s32sI40s")  # 208 bytes
_SLOT = struct.Struct(">II32sII")  # 48 bytes
_SLOT_ENABLED = 0x00AC71F3
_SLOT_DISABLED = 0x0000DEAD
_NUM_SLOTS = 8
#: QCRYPTO_BLOCK_LUKS_KEY_SLOT_OFFSET / sector size
_HEADER_SECTORS = 4096 // SECTOR_SIZE
_U32 = 0xFFFFFFFF
#: QCRYPTO_BLOCK_LUKS_STRIPES: the only anti-forensic stripe count QEMU accepts
_STRIPES = 4000
#: txgraph's bounds for untrusted headers (QEMU has none)
MAX_KEY_MATERIAL = 16 << 20
MAX_ITERATIONS = 1 << 24

#: (cipher name in the header, key bytes) -> QCryptoCipherAlgorithm
_CIPHER_NAMES: dict[str, dict[int, str]] = {
    "aes": {16: "aes-128", 24: "aes-192", 32: "aes-256"},
    "cast5": {16: "cast5-128"},
    "serpent": {16: "serpent-128", 24: "serpent-192", 32: "serpent-256"},
    "twofish": {16: "twofish-128", 24: "twofish-192", 32: "twofish-256"},
}
_MODES = ("ecb", "cbc", "xts", "ctr")
_IVGENS = ("plain", "plain64", "essiv")

#: ``read(offset, length)`` of the volume's header area; raises OpenError
Reader = Callable[[int, int], bytes]


@dataclass(frozen=True)
class _Slot:
    active: int
    iterations: int
    salt: bytes
    key_offset: int
    stripes: int


@dataclass
class LuksVolume:
    """An unlocked LUKS1 volume: the payload cipher and what queries report."""

    cipher: SectorCipher
    #: bytes before the payload (``payload_offset_sector * 512``)
    payload_offset: int
    info: dict[str, Any]


def _cstr(raw: bytes) -> str:
    # QEMU puts the C string's bytes in its JSON replies; invalid UTF-8 comes out as U+FFFD.
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _lookup(name: str, allowed: tuple[str, ...], what: str) -> str:
    """``qcrypto_block_luks_name_lookup``: an exact QAPI enum name or QEMU's error."""
    if name not in allowed:
        raise OpenError(f"{what} '{name}' not supported")
    return name


def _split_sectors(key_bytes: int, stripes: int) -> int:
    """``qcrypto_block_luks_splitkeylen_sectors`` (rounded to the header size)."""
    sectors = -(-(key_bytes * stripes) // SECTOR_SIZE)
    return (-(-sectors // _HEADER_SECTORS) * _HEADER_SECTORS) & _U32


def af_merge(hash_alg: str, key_len: int, stripes: int, material: bytes) -> bytes:
    """``qcrypto_afsplit_decode``: XOR-and-diffuse the stripes back into one key."""
    block = bytes(key_len)
    for i in range(stripes - 1):
        block = _diffuse(hash_alg, _xor(block, material[i * key_len : (i + 1) * key_len]))
    return _xor(block, material[(stripes - 1) * key_len : stripes * key_len])


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _diffuse(hash_alg: str, block: bytes) -> bytes:
    """``qcrypto_afsplit_hash``: hash each digest-sized piece with its big-endian index."""
    dlen = HASHES[hash_alg]
    out = bytearray()
    for i in range(-(-len(block) // dlen)):
        piece = block[i * dlen : (i + 1) * dlen]
        out += hashlib.new(hash_alg, struct.pack(">I", i) + piece).digest()[: len(piece)]
    return bytes(out)


def _pbkdf2(hash_alg: str, secret: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    if iterations > MAX_ITERATIONS:
        raise OpenError(
            f"LUKS PBKDF2 iteration count {iterations} exceeds txgraph's limit of {MAX_ITERATIONS}"
        )
    try:
        return hashlib.pbkdf2_hmac(hash_alg, secret, salt, max(iterations, 1), length)
    except ValueError:  # ripemd160 absent from this OpenSSL build
        raise UnsupportedCipher(f"Hash algorithm {hash_alg} is not available in txgraph") from None


def open_luks(read: Reader, secret: SecretRef | None, prefix: str = "") -> LuksVolume:
    """``qcrypto_block_luks_open``: validate the header and unlock the master key."""
    if secret is None:
        raise OpenError(f"Parameter '{prefix}key-secret' is required for cipher")
    password = secret.resolve().encode("utf-8").split(b"\0", 1)[0]
    raw = read(0, HEADER_SIZE)
    fields = _HEAD.unpack(raw[: _HEAD.size])
    (
        magic,
        version,
        cipher_name,
        cipher_mode,
        hash_spec,
        payload_sector,
        key_bytes,
        mk_digest,
        mk_salt,
        mk_iters,
        uuid,
    ) = fields
    slots = [_Slot(*_SLOT.unpack_from(raw, _HEAD.size + i * _SLOT.size)) for i in range(_NUM_SLOTS)]
    _check_header(
        magic,
        version,
        (cipher_name, cipher_mode, hash_spec),
        key_bytes,
        payload_sector,
        mk_iters,
        slots,
    )
    alg, mode, ivgen, ivhash, hash_alg = _parse_spec(
        _cstr(cipher_name), _cstr(cipher_mode), _cstr(hash_spec), key_bytes
    )
    master = _find_key(
        read,
        password,
        slots,
        alg,
        mode,
        ivgen,
        ivhash,
        hash_alg,
        key_bytes,
        mk_digest,
        mk_salt,
        mk_iters,
    )
    info: dict[str, Any] = {
        "cipher-alg": alg,
        "cipher-mode": mode,
        "ivgen-alg": ivgen,
        "hash-alg": hash_alg,
        "payload-offset": payload_sector * SECTOR_SIZE,
        "master-key-iters": mk_iters,
        "uuid": _cstr(uuid),
        "slots": [_slot_info(s) for s in slots],
    }
    if ivgen == "essiv":
        info["ivgen-hash-alg"] = ivhash
    return LuksVolume(
        SectorCipher(alg, mode, ivgen, ivhash, master), payload_sector * SECTOR_SIZE, info
    )


def _slot_info(slot: _Slot) -> dict[str, Any]:
    active = slot.active == _SLOT_ENABLED
    out: dict[str, Any] = {"active": active, "key-offset": slot.key_offset * SECTOR_SIZE}
    if active:
        out["iters"] = slot.iterations
        out["stripes"] = slot.stripes
    return out


def _check_header(
    magic: bytes,
    version: int,
    names: tuple[bytes, bytes, bytes],
    key_bytes: int,
    payload_sector: int,
    mk_iters: int,
    slots: list[_Slot],
) -> None:
    """``qcrypto_block_luks_check_header`` (QEMU 7.2's checks, in its order)."""
    if magic != LUKS_MAGIC:
        raise OpenError("Volume is not in LUKS format")
    if version != 1:
        raise OpenError(f"LUKS version {version} is not supported")
    for raw, what in zip(names, ("cipher name", "cipher mode", "hash spec")):
        if b"\0" not in raw:
            raise OpenError(f"LUKS header {what} is not NUL terminated")
    if payload_sector < _HEADER_SECTORS:
        raise OpenError("LUKS payload is overlapping with the header")
    if mk_iters == 0:
        raise OpenError("LUKS key iteration count is zero")
    for i, s1 in enumerate(slots):
        start1, len1 = s1.key_offset, _split_sectors(key_bytes, s1.stripes)
        if s1.stripes != _STRIPES:
            raise OpenError(f"Keyslot {i} is corrupted (stripes {_i32(s1.stripes)} != {_STRIPES})")
        if s1.active not in (_SLOT_ENABLED, _SLOT_DISABLED):
            raise OpenError(f"Keyslot {i} state (active/disable) is corrupted")
        if s1.active == _SLOT_ENABLED and s1.iterations == 0:
            raise OpenError(f"Keyslot {i} iteration count is zero")
        if start1 < _HEADER_SECTORS:
            raise OpenError(f"Keyslot {i} is overlapping with the LUKS header")
        if (start1 + len1) & _U32 > payload_sector:
            raise OpenError(f"Keyslot {i} is overlapping with the encrypted payload")
        for j in range(i + 1, _NUM_SLOTS):
            s2 = slots[j]
            start2, len2 = s2.key_offset, _split_sectors(key_bytes, s2.stripes)
            if (start1 + len1) & _U32 > start2 and (start2 + len2) & _U32 > start1:
                raise OpenError(f"Keyslots {i} and {j} are overlapping in the header")


def _i32(v: int) -> int:
    """A uint32 printed with ``%d``."""
    return v - (1 << 32) if v & 0x80000000 else v


def _parse_spec(
    cipher_name: str, cipher_mode: str, hash_spec: str, key_bytes: int
) -> tuple[str, str, str, str | None, str]:
    """``qcrypto_block_luks_parse_header``: ``<mode>-<ivgen>[:<ivhash>]`` and the names."""
    mode_name, dash, ivgen_name = cipher_mode.partition("-")
    if not dash:
        raise OpenError(f"Unexpected cipher mode string format '{cipher_mode}'")
    ivgen_name, colon, ivhash_name = ivgen_name.partition(":")
    ivhash = _lookup(ivhash_name, tuple(HASHES), "Hash algorithm") if colon else None
    mode = _lookup(mode_name, _MODES, "Cipher mode")
    size = key_bytes // 2 if mode == "xts" else key_bytes
    alg = _CIPHER_NAMES.get(cipher_name, {}).get(size)
    if alg is None:
        raise OpenError(f"Algorithm '{cipher_name}' with key size {size} bytes not supported")
    hash_alg = _lookup(hash_spec, tuple(HASHES), "Hash algorithm")
    ivgen = _lookup(ivgen_name, _IVGENS, "IV generator")
    if ivgen == "essiv":
        if not colon:
            raise OpenError("Missing IV generator hash specification")
        assert ivhash is not None
        essiv_alg(alg, HASHES[ivhash])
    return alg, mode, ivgen, ivhash, hash_alg


def _find_key(
    read: Reader,
    password: bytes,
    slots: list[_Slot],
    alg: str,
    mode: str,
    ivgen: str,
    ivhash: str | None,
    hash_alg: str,
    key_bytes: int,
    mk_digest: bytes,
    mk_salt: bytes,
    mk_iters: int,
) -> bytes:
    """``qcrypto_block_luks_find_key``: the first enabled slot the password opens."""
    for slot in slots:
        if slot.active != _SLOT_ENABLED:
            continue
        length = key_bytes * slot.stripes
        if length > MAX_KEY_MATERIAL:
            raise OpenError(f"LUKS key material of {length} bytes exceeds txgraph's limit")
        slot_key = _pbkdf2(hash_alg, password, slot.salt, slot.iterations, key_bytes)
        material = read(slot.key_offset * SECTOR_SIZE, length)
        # The key material is encrypted like payload sectors 0.. with the slot key.
        padded = material + bytes(-len(material) % SECTOR_SIZE)
        plain = SectorCipher(alg, mode, ivgen, ivhash, slot_key).decrypt(0, padded)[:length]
        candidate = af_merge(hash_alg, key_bytes, slot.stripes, plain)
        if _pbkdf2(hash_alg, candidate, mk_salt, mk_iters, len(mk_digest)) == mk_digest:
            return candidate
    raise OpenError("Invalid password, cannot unlock any keyslot")
