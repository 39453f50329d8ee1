"""The fast path of QMP input: plain, well-formed objects go to the C ``json`` module.

Lexing QMP byte by byte in Python (:mod:`txgraph.qobject.lexer`) costs ~130 µs
per command; nearly every command is a plain JSON object on a line of its own.
:func:`fast_messages` decodes the leading run of such objects with
``json.JSONDecoder.raw_decode`` and stops at the first byte it is not sure
about; the QEMU lexer then takes everything from there, so every malformed
message still gets QEMU's error text and recovery (``json-lexer.c``,
``json-streamer.c``, ``json-parser.c`` as reproduced in this package).

Where the two grammars differ, the fast path does not decide; it declines:

- only ASCII input without a backslash (so strings need no unescaping and
  QEMU's modified-UTF-8 rules never come up), at most :data:`MAX_FAST_BYTES`
  per feed (far below QEMU's token size and count limits) and at most
  :data:`MAX_FAST_OPEN` opening brackets (below QEMU's nesting limit and
  Python's recursion limit);
- numbers as QEMU lexes them: ``0e5`` is two tokens to QEMU (and an error),
  Python would read a float; ``NaN``/``Infinity`` are not JSON to QEMU;
- integers convert as the parser converts them (int64/uint64 stay ``int``,
  anything else is a ``float``);
- a duplicate key is an error in QEMU, a silent overwrite in Python;
- single-quoted strings, bad tokens and incomplete messages make Python fail.

A decline is never an error: it only hands the bytes to the exact path.
``tests/unit/qmp/test_qmp_fast_path.py`` checks both paths agree on random
streams.
"""

from __future__ import annotations

import json
import re
from typing import Any

from txgraph.qobject.parser import integer_value

__all__ = ["fast_messages", "MAX_FAST_BYTES", "MAX_FAST_OPEN"]

MAX_FAST_BYTES = 1 << 20
MAX_FAST_OPEN = 256

_WS = re.compile(r"[ \t\r\n]*")
#: a float QEMU lexes differently: a zero with an exponent but no fraction
_ZERO_EXP = re.compile(r"-?0[eE]")


class _Decline(Exception):
    """Not for the fast path: the exact path decides."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _Decline("duplicate key")
    return out


def _float(text: str) -> float:
    if _ZERO_EXP.match(text):
        raise _Decline("0e lexes as two tokens")
    return float(text)


def _constant(text: str) -> Any:
    raise _Decline(text)


def _int(text: str) -> int | float:
    return integer_value(text.encode("ascii"))


#: shared by every connection: a JSONDecoder holds no state between calls except the C
#: scanner's key-interning memo, which only deduplicates key strings (the server runs
#: all decoding on its event-loop thread anyway)
_DECODER = json.JSONDecoder(
    object_pairs_hook=_pairs, parse_float=_float, parse_int=_int, parse_constant=_constant
)


def fast_messages(data: bytes) -> tuple[list[Any], int]:
    """The plain objects at the start of ``data`` and how many bytes they used.

    Call only when the exact path is idle (between messages). Whitespace after
    the last object is consumed too, as QEMU's lexer consumes it without a token.
    """
    if (
        len(data) > MAX_FAST_BYTES
        or not data.isascii()
        or b"\\" in data
        or data.count(b"{") + data.count(b"[") > MAX_FAST_OPEN
    ):
        return [], 0
    text = data.decode("ascii")
    out: list[Any] = []
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    done = pos
    n = len(text)
    while pos < n and text[pos] == "{":
        try:
            value, end = _DECODER.raw_decode(text, pos)
        except (ValueError, _Decline, RecursionError):
            break
        out.append(value)
        pos = done = _WS.match(text, end).end()  # type: ignore[union-attr]
    return out, done
