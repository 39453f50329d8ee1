"""QEMU's modified UTF-8 (``util/unicode.c``) and how raw bytes show up in QEMU's messages.

Shared by the parser (string tokens are validated with it) and the error
texts (``stray '...'`` prints the raw token bytes through ``%s``).
"""

from __future__ import annotations

__all__ = ["mod_utf8_codepoint", "qemu_text", "valid_codepoint"]

_MIN_CP = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)


def valid_codepoint(cp: int) -> bool:
    """QEMU's ``is_valid_codepoint``: no surrogates, no noncharacters, in Unicode range."""
    if cp < 0 or cp > 0x10FFFF or (cp & 0xFFFFF800) == 0xD800:
        return False
    return not (0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE)


def mod_utf8_codepoint(data: bytes, i: int, limit: int) -> tuple[int, int]:
    """Decode one code point at ``data[i]`` as QEMU's ``mod_utf8_codepoint`` does.

    Returns (code point or -1, index after the bytes consumed). ``\\xC0\\x80``
    is accepted as U+0000 (modified UTF-8); overlong forms, surrogates,
    noncharacters and bytes 0xFE/0xFF are invalid. A sequence cut short by a
    non-continuation byte consumes only the bytes before it.
    """
    byte = data[i]
    i += 1
    if byte < 0x80:
        return byte, i
    if byte >= 0xFE or not byte & 0x40:
        return -1, i
    length, mask = 0, 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    cp = byte & (mask - 1)
    for k in range(1, length):
        nxt = data[i] if k < limit and i < len(data) else 0
        if nxt & 0xC0 != 0x80:
            return -1, i
        i += 1
        cp = (cp << 6) | (nxt & 0x3F)
    if cp > 0x10FFFF or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return -1, i
    if 0xD800 <= cp <= 0xDFFF:
        return -1, i
    if cp < _MIN_CP[length - 2] and not (cp == 0 and length == 2):
        return -1, i
    return cp, i


def qemu_text(raw: bytes) -> str:
    """Raw bytes as QEMU prints them through ``%s`` into a QString.

    The text ends at the first NUL (C string) and every invalid sequence
    becomes U+FFFD when the reply is encoded (to_json's treatment).
    """
    raw = raw.split(b"\0", 1)[0]
    try:
        # Fast path: plain ASCII is printed as is (a stray token can be 64 MiB).
        return raw.decode("ascii")
    except UnicodeDecodeError:
        pass
    chars: list[str] = []
    i = 0
    while i < len(raw):
        cp, i = mod_utf8_codepoint(raw, i, len(raw) - i + 1)
        chars.append("\ufffd" if cp < 0 else chr(cp))
    return "".join(chars)
