"""QMP output exactly as QEMU writes it: key order, number and string formatting.

QEMU serialises replies with ``qobject_to_json``. Three details make its bytes
differ from ``json.dumps``, and txgraph reproduces all of them so that a
byte-for-byte comparison with qemu-storage-daemon holds:

* object members come out in ``QDict`` iteration order: by hash bucket
  (``tdb_hash(key) % 512``), and within one bucket the key inserted last
  comes first;
* doubles are printed with ``%.17g`` (``0.1`` → ``0.10000000000000001``,
  ``1e5`` → ``100000``, overflow → ``inf``);
* strings are ASCII: every code point below 0x20 or from 0x7F up is escaped
  as ``\\uXXXX`` with upper-case hex (surrogate pairs above U+FFFF).

The same ordering also decides which problem ``qmp_dispatch`` reports first
when a message has several, so :func:`qdict_order` is shared with the QAPI layer.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

__all__ = ["encode", "encode_message", "qdict_order", "ghash_first"]

QDICT_BUCKET_MAX = 512

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


@functools.lru_cache(maxsize=1 << 14)
def _tdb_hash(key: str) -> int:
    """The hash QEMU's QDict uses to pick a bucket (from Samba's tdb).

    Memoised: every message and reply orders its keys, nearly always the same
    few hundred member names, and the byte loop costs tens of microseconds.
    """
    raw = key.encode("utf-8", "surrogatepass")
    value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
    for i, c in enumerate(raw):
        value = (value + (c << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


def qdict_order(keys: Iterable[str]) -> list[str]:
    """``keys`` (in insertion order) in the order ``qdict_first``/``qdict_next`` visit them."""
    return list(_qdict_order(tuple(keys)))


#: key sets up to this size are memoised; a bigger one (a client's odd message) is
#: sorted each time, so the cache never keeps large key tuples alive
_MEMO_KEYS = 64


def _qdict_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    """:func:`qdict_order` of one key tuple, memoised for small key sets: the order
    depends on the keys and their insertion order alone, and messages and options
    repeat the same few key sets (each ``json:`` filename of a transaction step sorts
    the same dicts again)."""
    return _memo_qdict_order(keys) if len(keys) <= _MEMO_KEYS else _sort_qdict(keys)


@functools.lru_cache(maxsize=1 << 12)
def _memo_qdict_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    return _sort_qdict(keys)


def _sort_qdict(keys: tuple[str, ...]) -> tuple[str, ...]:
    indexed = list(enumerate(keys))
    indexed.sort(key=lambda ik: (_tdb_hash(ik[1]) % QDICT_BUCKET_MAX, -ik[0]))
    return tuple(k for _, k in indexed)


def _g_str_hash(key: str) -> int:
    h = 5381
    for b in key.encode("utf-8", "surrogatepass"):
        signed = b - 256 if b >= 0x80 else b  # glib hashes through `signed char`
        h = (h * 33 + signed) & 0xFFFFFFFF
    return h if h >= 2 else 2  # 0 and 1 mark unused/tombstone slots


def ghash_first(inserted: list[str], remaining: set[str]) -> str | None:
    """The first key a GHashTable iterator yields among ``remaining``.

    QEMU's QObject input visitor records an object's members in a GHashTable
    (inserted in QDict order), removes each one it visits, and reports the first
    key an iterator finds as "unexpected". For up to 7 keys the table keeps its
    initial 8 slots (modulus 7, quadratic probing), which is reproduced here;
    bigger objects fall back to the first remaining key in insertion order.
    """
    if not remaining:
        return None
    if len(inserted) > 7:
        return next(k for k in inserted if k in remaining)
    slots: list[str | None] = [None] * 8
    for key in inserted:
        index, step = (_g_str_hash(key) * 11 & 0xFFFFFFFF) % 7, 0
        while slots[index] is not None:
            step += 1
            index = (index + step) & 7
        slots[index] = key
    return next(k for k in slots if k is not None and k in remaining)


def _encode_str(text: str, out: list[str]) -> None:
    """A string as ``to_json`` quotes it (see the module docstring)."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        # Nothing to escape (printable ASCII is 0x20-0x7E): node names, paths and
        # driver names nearly always, and the loop below costs ~0.3 us per character
        # (a json: filename of a 20-step transaction spent a tenth of it here).
        out.append(f'"{text}"')
        return
    _encode_str_escaped(text, out)


def _encode_str_escaped(text: str, out: list[str]) -> None:
    out.append('"')
    for ch in text:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
            continue
        cp = ord(ch)
        if 0xD800 <= cp <= 0xDFFF:
            cp = 0xFFFD  # a lone surrogate is not valid UTF-8 for QEMU
        if cp > 0xFFFF:
            cp -= 0x10000
            out.append(f"\\u{0xD800 | (cp >> 10):04X}\\u{0xDC00 | (cp & 0x3FF):04X}")
        elif cp < 0x20 or cp >= 0x7F:
            out.append(f"\\u{cp:04X}")
        else:
            out.append(ch)
    out.append('"')


def _encode_scalar(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(f"{value:.17g}")
    elif isinstance(value, str):
        _encode_str(value, out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} as QMP JSON")


def _encode(value: Any, out: list[str]) -> None:
    """``qobject_to_json`` without recursion: a message may nest 1024 levels deep."""
    # Work items: a value to print, or a literal text (separators, closers).
    todo: list[tuple[bool, Any]] = [(False, value)]
    while todo:
        literal, item = todo.pop()
        if literal:
            out.append(item)
        elif isinstance(item, dict):
            out.append("{")
            todo.append((True, "}"))
            keys = _qdict_order(tuple(item))
            for n in range(len(keys) - 1, -1, -1):
                todo.append((False, item[keys[n]]))
                todo.append((True, ": "))
                todo.append((False, keys[n]))
                if n:
                    todo.append((True, ", "))
        elif isinstance(item, (list, tuple)):
            out.append("[")
            todo.append((True, "]"))
            for n in range(len(item) - 1, -1, -1):
                todo.append((False, item[n]))
                if n:
                    todo.append((True, ", "))
        else:
            _encode_scalar(item, out)


def encode(value: Any) -> str:
    """``value`` as QEMU's ``qobject_to_json`` would print it."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def encode_message(value: Any) -> bytes:
    """One QMP server message: QEMU's JSON followed by CRLF."""
    return (encode(value) + "\r\n").encode("ascii")
