"""Host file names as QEMU hands them to the kernel.

QEMU's JSON parser stores U+0000 inside a string as modified UTF-8 (the bytes
C0 80) rather than ending the string there, so a QMP filename, socket path or
config path containing ``\\u0000`` names a file whose name has those two
bytes. Python refuses embedded NULs (``ValueError: embedded null byte``);
:func:`host_path` gives the bytes QEMU would use, so such names fail (or
succeed) as they do in qemu-storage-daemon 7.2 and never leak Python text.
"""

from __future__ import annotations

import os

__all__ = ["host_path"]


def host_path(name: str) -> bytes:
    """The bytes of ``name`` as open(2)/connect(2)/getaddrinfo(3) get them from QEMU."""
    return os.fsencode(name).replace(b"\0", b"\xc0\x80")
