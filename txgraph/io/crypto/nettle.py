"""Serpent and Twofish block ciphers from GNU Nettle (the library Debian's QEMU 7.2 links).

No maintained package on PyPI provides both ciphers (``cryptography`` and
``pycryptodome`` have neither; the Twofish bindings on PyPI date from 2013 or
wrap a one-cipher crate, the Serpent one is pure Python), so txgraph calls
the system's libnettle through ``ctypes``: ``nettle_serpent_set_key`` /
``nettle_twofish_set_key`` and their ECB ``encrypt``/``decrypt`` over whole
16-byte blocks - the primitives QEMU's crypto/cipher-nettle.c uses. The modes
(CBC, XTS) are built on them by :mod:`txgraph.io.crypto.cipher`.

Without libnettle the ciphers are refused (QEMU's text is not possible there:
QEMU itself would not run), never replaced by anything else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from typing import Any

__all__ = ["NettleECB", "available"]

#: bytes enough for ``struct serpent_ctx`` (528) and ``struct twofish_ctx`` (4256)
_CTX_SIZE = 8192
_lib: Any = None
_lock = threading.Lock()


def _load() -> Any:
    global _lib
    with _lock:
        if _lib is None:
            name = ctypes.util.find_library("nettle") or "libnettle.so.8"
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                _lib = False
                return None
            for fam in ("serpent", "twofish"):
                getattr(lib, f"nettle_{fam}_set_key").argtypes = [
                    ctypes.c_void_p,
                    ctypes.c_size_t,
                    ctypes.c_char_p,
                ]
                for op in ("encrypt", "decrypt"):
                    fn = getattr(lib, f"nettle_{fam}_{op}")
                    fn.argtypes = [
                        ctypes.c_void_p,
                        ctypes.c_size_t,
                        ctypes.c_void_p,
                        ctypes.c_char_p,
                    ]
                    fn.restype = None
            _lib = lib
        return _lib or None


def available() -> bool:
    return _load() is not None


class _Ctx:
    """One direction of an ECB pass (the ``cryptography`` encryptor interface)."""

    def __init__(self, ecb: NettleECB, encrypt: bool) -> None:
        self.ecb, self.encrypt = ecb, encrypt

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        return self.ecb.run(bytes(data), self.encrypt)

    def finalize(self) -> bytes:
        return b""


class NettleECB:
    """``family`` (serpent or twofish) in ECB mode under ``key``; immutable after the key
    schedule, so threads may share it (nettle's encrypt/decrypt only read the context)."""

    def __init__(self, family: str, key: bytes) -> None:
        lib = _load()
        if lib is None:
            raise OSError("libnettle is not available")
        self.family = family
        self._ctx = ctypes.create_string_buffer(_CTX_SIZE)
        getattr(lib, f"nettle_{family}_set_key")(self._ctx, len(key), key)
        self._enc = getattr(lib, f"nettle_{family}_encrypt")
        self._dec = getattr(lib, f"nettle_{family}_decrypt")

    def run(self, data: bytes, encrypt: bool) -> bytes:
        if len(data) % 16:
            raise ValueError("whole 16-byte blocks only")
        out = ctypes.create_string_buffer(len(data))
        (self._enc if encrypt else self._dec)(self._ctx, len(data), out, data)
        return out.raw

    def encryptor(self) -> _Ctx:
        return _Ctx(self, True)

    def decryptor(self) -> _Ctx:
        return _Ctx(self, False)
