"""vvfat's directory entries for one host name: the VFAT long name and the 8.3 short name.

Reproduces QEMU 7.2's block/vvfat.c ``create_long_filename``,
``create_short_filename`` (with ``to_valid_short_char``), ``fat_chksum`` and
``fat_datetime`` as guest-visible bytes:

* every host name (``.`` and ``..`` aside) gets long-name entries, even one that is
  a valid 8.3 name: UTF-16LE, 13 code units per entry, last part first, the
  terminator then ``0xFFFF`` padding, the short name's checksum in byte 13;
* the short name keeps the characters GLib upper-cases into ``0-9 A-Z`` or
  ``$%'-_@~`!(){}^#&`` - as C's ``strchr`` sees a code point, i.e. by its low
  byte - up to 8 before the last dot and 3 after it; a dropped character, a
  leading dot or a second dot make the conversion lossy, and a lossy or
  duplicate name gets the first free ``~N`` tail (``ABCDEF~1``, ``ABCDE~10``).

These are pure functions over bytes; the directory scan that calls them is
:mod:`txgraph.io.drivers.vvfat_image`.
"""

from __future__ import annotations

import time

__all__ = [
    "glib_code_points",
    "long_name_entries",
    "short_name",
    "checksum",
    "fat_time",
    "fat_date",
    "ATTR_LONG",
]

#: the attribute byte of a long-name entry
ATTR_LONG = 0x0F
_VALID_PUNCT = frozenset(b"$%'-_@~`!(){}^#&")
#: byte offsets of the 13 UTF-16 units inside a long-name entry (1-10, 14-25, 28-31)
_LFN_OFFSETS = (*range(1, 11), *range(14, 26), *range(28, 32))


def glib_code_points(raw: bytes) -> list[int]:
    """The code points ``g_utf8_get_char``/``g_utf8_next_char`` walk in ``raw``.

    GLib does not validate here: a lead byte announces the sequence length, a
    bad continuation byte or an impossible lead byte gives ``(gunichar)-1``,
    and the walk moves on by the lead byte's length. A sequence cut short by
    the end of the name gives -1 and ends the walk (QEMU would go on reading
    past the string's end: undefined, so txgraph stops there).
    """
    out: list[int] = []
    pos = 0
    while pos < len(raw):
        lead = raw[pos]
        skip = _utf8_skip(lead)
        if pos + skip > len(raw):
            out.append(0xFFFFFFFF)
            break
        length, mask = _utf8_compute(lead)
        if length < 0:
            out.append(0xFFFFFFFF)
        else:
            value = lead & mask
            for k in range(1, length):
                byte = raw[pos + k]
                if byte & 0xC0 != 0x80:
                    value = 0xFFFFFFFF
                    break
                value = (value << 6) | (byte & 0x3F)
            out.append(value)
        pos += skip
    return out


def _utf8_skip(lead: int) -> int:
    """``g_utf8_skip``: how far ``g_utf8_next_char`` moves from a lead byte."""
    for length, low in ((6, 0xFC), (5, 0xF8), (4, 0xF0), (3, 0xE0), (2, 0xC0)):
        if lead >= low:
            return 1 if lead >= 0xFE else length
    return 1


def _utf8_compute(lead: int) -> tuple[int, int]:
    """``UTF8_COMPUTE``: (sequence length or -1, mask of the lead byte's value bits)."""
    if lead < 0x80:
        return 1, 0x7F
    for length, pattern, test, mask in (
        (2, 0xC0, 0xE0, 0x1F),
        (3, 0xE0, 0xF0, 0x0F),
        (4, 0xF0, 0xF8, 0x07),
        (5, 0xF8, 0xFC, 0x03),
        (6, 0xFC, 0xFE, 0x01),
    ):
        if lead & test == pattern:
            return length, mask
    return -1, 0


def long_name_entries(raw: bytes) -> list[bytearray]:
    """``create_long_filename``: the long-name entries of host name ``raw``, in directory
    order; none when ``raw`` is not UTF-8 (``g_utf8_to_utf16`` fails, QEMU goes on).

    Byte 13 (the checksum) is left 0; :func:`checksum` fills it once the short
    name is known. Bytes 12, 26 and 27 stay 0, the attribute is ``0x0F``.
    """
    try:
        units = raw.decode("utf-8").encode("utf-16-le")
    except UnicodeError:
        return []
    length = len(units) // 2
    count = (length * 2 + 25) // 26
    padded = units + b"\0\0"
    entries = [bytearray(32) for _ in range(count)]
    for i, entry in enumerate(entries):
        entry[11] = ATTR_LONG
        entry[0] = (count - i) | (0x40 if i == 0 else 0)
    for i in range(26 * count):
        entry = entries[count - 1 - i // 26]
        entry[_LFN_OFFSETS[i % 26]] = padded[i] if i < 2 * length + 2 else 0xFF
    return entries


def _short_char(point: int) -> int:
    """``to_valid_short_char``: the 8.3 byte of one code point, 0 if it has none.

    ``g_unichar_toupper`` maps one code point to one (a case with a longer
    uppercase form keeps its own code point, as does a value that is no code
    point); the set test is C's ``strchr(set, c)``, which compares the low byte.
    """
    code = point
    if point <= 0x10FFFF:
        upper = chr(point).upper()
        code = ord(upper) if len(upper) == 1 else point
    low = code & 0xFF
    if 0x30 <= code <= 0x39 or 0x41 <= code <= 0x5A or low in _VALID_PUNCT:
        return low
    return 0


def short_name(name: list[int], taken: list[bytes]) -> bytes:
    """``create_short_filename``: the 11 name bytes of the short entry of the host name
    whose code points (:func:`glib_code_points`) are ``name``.

    ``taken`` holds the name bytes of the entries already in this directory that
    are not long-name entries (the volume label in the root, ``.`` and ``..``
    elsewhere): the result differs from all of them.
    """
    out = bytearray(b" " * 11)
    j = 0
    lossy = False
    last_dot: int | None = None
    for pos, char in enumerate(name):
        if char == 0x2E:
            if j == 0:
                lossy = True  # a leading dot (or dots after nothing valid)
            else:
                if last_dot is not None:
                    lossy = True
                last_dot = pos
        elif last_dot is None:
            value = _short_char(char)
            if j < 8 and value:
                out[j] = value
                j += 1
            else:
                lossy = True
    if last_dot is not None:
        j = 0
        for char in name[last_dot + 1 :]:
            value = _short_char(char)
            if j < 3 and value:
                out[8 + j] = value
                j += 1
            else:
                lossy = True
    if out[0] == 0xE5:  # DIR_KANJI: a first byte 0xE5 would read as "deleted"
        out[0] = 0x05
    base_end = next((k for k in range(8) if out[k] == 0x20), 8)
    seen = set(taken)
    for i in range(1 if lossy else 0, 999999):
        if i > 0:
            tail = f"~{i}".encode()
            start = min(base_end, 8 - len(tail))
            out[start : start + len(tail)] = tail
        if bytes(out) not in seen:
            return bytes(out)
    raise AssertionError("no free numeric tail")  # 999998 names share one base: not reachable


def checksum(short: bytes) -> int:
    """``fat_chksum``: the long-name checksum of an 11-byte short name."""
    total = 0
    for byte in short:
        total = ((((total & 1) << 7) | (total >> 1)) + byte) & 0xFF
    return total


def fat_time(stamp: int) -> int:
    """``fat_datetime(t, 1)``: local time as ``hour<<11 | minute<<5 | second/2``."""
    t = time.localtime(stamp)
    return ((t.tm_sec // 2) | (t.tm_min << 5) | (t.tm_hour << 11)) & 0xFFFF


def fat_date(stamp: int) -> int:
    """``fat_datetime(t, 0)``: local date as ``(year-1980)<<9 | month<<5 | day`` (16 bits)."""
    t = time.localtime(stamp)
    return (t.tm_mday | (t.tm_mon << 5) | ((t.tm_year - 1980) << 9)) & 0xFFFF
