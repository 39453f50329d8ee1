"""The ``secret`` QOM object and secret lookups, as QEMU 7.2's crypto/secret*.c.

``object-add qom-type=secret`` reproduces ``qcrypto_secret_complete``: the
value comes from ``data`` or ``file`` (``qcrypto_secret_load_data``: exactly
one of them, the file read whole as ``g_file_get_contents`` does, with glib's
error texts) or, for ``secret_keyring``, from the kernel key ``serial``
(``keyctl_read``, x86_64 Linux), is base64-decoded when ``format=base64`` (``qbase64_decode``:
QEMU's character check, then glib's lenient decoder), and, with ``keyid``,
decrypted with another secret as AES-256-CBC key and the base64 ``iv``
(``qcrypto_secret_decrypt``, PKCS#7-style padding count checked as QEMU does).

:func:`lookup_secret` / :func:`lookup_utf8` are ``qcrypto_secret_lookup`` and
``qcrypto_secret_lookup_as_utf8``; drivers get them behind a
:class:`txgraph.io.crypto.SecretRef` so the lookup happens at QEMU's point of
the open. A secret's value is read once at object-add (QEMU's drivers copy
what they need at open), so deleting a secret that an open node used is
allowed, as in QSD 7.2.

The value lives only in :attr:`SecretObject.rawdata` (not in ``repr``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from txgraph.errors import BlockError, OpenError
from txgraph.io.crypto.cipher import aes256_cbc_decrypt
from txgraph.io.crypto.secret import SecretRef
from txgraph.io.hostpath import host_path
from txgraph.ops.session import QomObject, Session

__all__ = [
    "SecretObject",
    "SECRET_TYPES",
    "check_secret_properties",
    "load_secret",
    "lookup_secret",
    "lookup_utf8",
    "secret_ref",
    "glib_base64_decode",
]

SECRET_TYPES = frozenset({"secret", "secret_keyring"})
#: x86_64 ``SYS_keyctl`` and ``KEYCTL_READ`` (linux/keyctl.h)
_SYS_KEYCTL = 250
_KEYCTL_READ = 11

_B64_VALID = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\n")
_B64_RANK = {
    c: i for i, c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
}
_B64_RANK[ord("=")] = 0


@dataclass
class SecretObject(QomObject):
    """A loaded ``secret``: its bytes after decoding and decryption."""

    rawdata: bytes = field(default=b"", repr=False)


def check_secret_properties(props: dict[str, Any]) -> None:
    """The property setters (run before the id is claimed): ``loaded`` is read-only."""
    if "loaded" in props:
        raise BlockError("Property 'secret.loaded' is not writable")


def glib_base64_decode(text: bytes) -> bytes:
    """``qbase64_decode``: QEMU's checks, then ``g_base64_decode``'s lenient decoding.

    glib decodes complete quadruples only, ignores characters outside the
    alphabet and drops one output byte per ``=`` at the end of a quadruple.
    """
    if b"\0" in text:
        raise BlockError("Base64 data contains embedded NUL characters")
    if any(c not in _B64_VALID for c in text):
        raise BlockError("Base64 data contains invalid characters")
    out = bytearray()
    value = count = 0
    last0 = last1 = 0
    for c in text:
        rank = _B64_RANK.get(c)
        if rank is None:
            continue
        last1, last0 = last0, c
        value = ((value << 6) | rank) & 0xFFFFFF
        count += 1
        if count == 4:
            out.append(value >> 16)
            if last1 != ord("="):
                out.append((value >> 8) & 0xFF)
            if last0 != ord("="):
                out.append(value & 0xFF)
            count = 0
    return bytes(out)


def _read_file(path: str) -> bytes:
    """``g_file_get_contents`` with glib's messages behind QEMU's ``Unable to read``."""
    try:
        fd = os.open(host_path(path), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise BlockError(
            f"Unable to read {path}: Failed to open file \u201c{path}\u201d: "
            f"{os.strerror(err.errno or 5)}"
        ) from None
    try:
        chunks: list[bytes] = []
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except OSError as err:
                raise BlockError(
                    f"Unable to read {path}: Error reading file \u201c{path}\u201d: "
                    f"{os.strerror(err.errno or 5)}"
                ) from None
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _read_keyring(serial: int) -> bytes:
    """``qcrypto_secret_keyring_load_data``: the payload of a kernel key (``keyctl_read``)."""
    if serial == 0:
        raise BlockError("'serial' should not be equal to 0")
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    c_serial = ctypes.c_int32(serial)
    for _attempt in range(4):  # the key may grow between the size probe and the read
        size = libc.syscall(_SYS_KEYCTL, _KEYCTL_READ, c_serial, None, ctypes.c_size_t(0))
        if size >= 0:
            buf = ctypes.create_string_buffer(max(size, 1))
            got = libc.syscall(_SYS_KEYCTL, _KEYCTL_READ, c_serial, buf, ctypes.c_size_t(size))
            if got >= 0 and got <= size:
                return buf.raw[:got]
        if size < 0 or got < 0:
            err = ctypes.get_errno()
            raise BlockError(
                f"Unable to read serial key {serial & 0xFFFFFFFF:08x}: {os.strerror(err)}"
            )
    raise BlockError(f"Unable to read serial key {serial & 0xFFFFFFFF:08x}: {os.strerror(5)}")


def load_secret(
    session: Session, obj_id: str, props: dict[str, Any], qom_type: str = "secret"
) -> SecretObject:
    """``qcrypto_secret_complete``: load, then decrypt (keyid) or decode (base64)."""
    data, path = props.get("data"), props.get("file")
    if qom_type == "secret_keyring":
        raw = _read_keyring(int(props.get("serial", 0)))
    elif path is not None:
        if data is not None:
            raise BlockError("'file' and 'data' are mutually exclusive")
        raw = _read_file(path)
    elif data is not None:
        # QEMU keeps the C string: it ends at the first NUL.
        raw = data.encode("utf-8").split(b"\0", 1)[0]
    else:
        raise BlockError("Either 'file' or 'data' must be provided")
    base64 = props.get("format", "raw") == "base64"
    keyid = props.get("keyid")
    if keyid is not None:
        raw = _decrypt(session, obj_id, keyid, props.get("iv"), raw, base64)
    elif base64:
        raw = glib_base64_decode(raw)
    return SecretObject(obj_id, qom_type, dict(props), rawdata=raw)


def _decrypt(
    session: Session, obj_id: str, keyid: str, iv_text: str | None, raw: bytes, base64: bool
) -> bytes:
    """``qcrypto_secret_decrypt``: AES-256-CBC with the key secret and the base64 IV."""
    if keyid == obj_id:
        # The object is already in /objects while it completes, still without data.
        raise BlockError(f"Secret with id '{obj_id}' has no data")
    key = lookup_secret(session, keyid)
    if len(key) != 32:
        raise BlockError("Key should be 32 bytes in length")
    if iv_text is None:
        raise BlockError("IV is required to decrypt secret")
    iv = glib_base64_decode(iv_text.encode("utf-8"))
    if len(iv) != 16:
        raise BlockError(f"IV should be 16 bytes in length not {len(iv)}")
    cipher = glib_base64_decode(raw) if base64 else raw
    if len(cipher) % 16:
        raise BlockError(f"Length {len(cipher)} must be a multiple of block size 16")
    if not cipher:
        return b""
    plain = aes256_cbc_decrypt(key, iv, cipher)
    pad = plain[-1]
    if pad > 16 or pad > len(plain):
        raise BlockError(f"Incorrect number of padding bytes ({pad}) found on decrypted data")
    return plain[: len(plain) - pad]


def lookup_secret(session: Session, secret_id: str) -> bytes:
    """``qcrypto_secret_lookup``."""
    from txgraph.ops.qom import objects_table

    objects_table(session)  # the lookup goes through object_get_objects_root
    obj = session.objects.get(secret_id)
    if obj is None:
        raise OpenError(f"No secret with id '{secret_id}'")
    if not isinstance(obj, SecretObject):
        raise OpenError(f"Object with id '{secret_id}' is not a secret")
    return obj.rawdata


def lookup_utf8(session: Session, secret_id: str) -> str:
    """``qcrypto_secret_lookup_as_utf8``."""
    data = lookup_secret(session, secret_id)
    try:
        # g_utf8_validate with a length refuses embedded NULs too
        if b"\0" not in data:
            return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    raise OpenError(f"Data from secret {secret_id} is not valid UTF-8")


def secret_ref(session: Session, secret_id: str | None) -> SecretRef | None:
    """A reference the driver resolves when QEMU would look the secret up."""
    if secret_id is None:
        return None
    return SecretRef(secret_id, lambda sid: lookup_utf8(session, sid))
