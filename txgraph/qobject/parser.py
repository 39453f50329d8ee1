"""QEMU 7.2's JSON parser (``qobject/json-parser.c``), without recursion.

QEMU parses one message's tokens by recursive descent (``parse_value``,
``parse_object``, ``parse_pair``, ``parse_array``) and keeps the first error.
Every error makes every caller give up, so the first error is the result.
This module walks the same grammar with an explicit stack, checking in the
same order: a key is parsed as a full value before ``key is not a string in
object``, the colon is checked after the key, and ``duplicate key`` only
after the member's value parsed. Depth is bounded by the streamer's nesting
limit (1024), never by Python's recursion limit.

Integers become ``int`` when QEMU holds them as int64 or uint64 and ``float``
otherwise (strtod), so the QAPI layer and the encoder see QEMU's ``QNum`` types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from txgraph.qobject.lexer import Tok
from txgraph.qobject.utf8 import mod_utf8_codepoint, qemu_text, valid_codepoint

__all__ = ["JSONParseError", "parse_tokens", "integer_value"]

INT64_MIN, UINT64_MAX = -(2**63), 2**64 - 1
_Token = tuple[Tok, bytes]
_SIMPLE_ESCAPES = {
    0x22: '"',
    0x27: "'",
    0x5C: "\\",
    0x2F: "/",
    0x62: "\b",
    0x66: "\f",
    0x6E: "\n",
    0x72: "\r",
    0x74: "\t",
}
_KEYWORDS: dict[bytes, Any] = {b"true": True, b"false": False, b"null": None}
_HEX = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True)
class JSONParseError:
    """One unparsable message; the server answers it with a GenericError and no ``id``."""

    desc: str


class _Fail(Exception):
    """The first parse error: it ends the whole parse, as in QEMU."""


@dataclass
class _Frame:
    """One open container. For an object, ``key`` is None until its key parsed."""

    value: Any
    is_object: bool
    key: str | None = None


def parse_tokens(tokens: list[_Token]) -> Any:
    """``json_parser_parse``: the value of ``tokens``, or a JSONParseError."""
    try:
        return _parse(tokens)
    except _Fail as fail:
        return JSONParseError(f"JSON parse error, {fail}")


def _parse(tokens: list[_Token]) -> Any:
    n = len(tokens)
    pos = 0
    stack: list[_Frame] = []

    def pop() -> Tok:
        nonlocal pos
        if pos >= n:
            raise _Fail("premature EOI")
        pos += 1
        return tokens[pos - 1][0]

    while True:
        # -- parse_value at tokens[pos] ----------------------------------------------
        if pos >= n:
            raise _Fail("premature EOI")
        kind, text = tokens[pos]
        value: Any
        if kind is Tok.LCURLY or kind is Tok.LSQUARE:
            pos += 1
            close = Tok.RCURLY if kind is Tok.LCURLY else Tok.RSQUARE
            if pos >= n:
                raise _Fail("premature EOI")
            if tokens[pos][0] is not close:
                stack.append(_Frame({} if kind is Tok.LCURLY else [], kind is Tok.LCURLY))
                continue  # parse the first key / element
            pos += 1
            value = {} if kind is Tok.LCURLY else []
        elif kind is Tok.STRING:
            pos += 1
            value = _string(text)
        elif kind is Tok.INTEGER:
            pos += 1
            value = _integer(text)
        elif kind is Tok.FLOAT:
            pos += 1
            value = float(text)
        elif kind is Tok.KEYWORD:
            pos += 1
            if text not in _KEYWORDS:
                raise _Fail(f"invalid keyword '{qemu_text(text)}'")
            value = _KEYWORDS[text]
        else:
            raise _Fail("expecting value")
        # -- hand the finished value to the containers it completes -------------------
        while True:
            if not stack:
                return value
            frame = stack[-1]
            if not frame.is_object:
                frame.value.append(value)
                sep = pop()
                if sep is Tok.RSQUARE:
                    stack.pop()
                    value = frame.value
                    continue
                if sep is not Tok.COMMA:
                    raise _Fail("expected separator in list")
                break
            if frame.key is None:  # parse_pair: the key just parsed
                if not isinstance(value, str):
                    raise _Fail("key is not a string in object")
                if pop() is not Tok.COLON:
                    raise _Fail("missing : in object pair")
                frame.key = value
                break
            if frame.key in frame.value:
                raise _Fail("duplicate key")
            frame.value[frame.key] = value
            frame.key = None
            sep = pop()
            if sep is Tok.RCURLY:
                stack.pop()
                value = frame.value
                continue
            if sep is not Tok.COMMA:
                raise _Fail("expected separator in dict")
            break


def _integer(text: bytes) -> int | float:
    """parse_literal: int64, else uint64, else a double (strtod)."""
    # More than 20 digits never fits 64 bits; this also keeps int() away from
    # Python's limit on the length of integer strings.
    if len(text) <= 21:
        value = int(text)
        if INT64_MIN <= value <= UINT64_MAX:
            return value
    return float(text)


#: the parser's integer conversion, shared with the fast path (:mod:`txgraph.qobject.fast`)
integer_value = _integer


def _hex4(token: bytes, i: int) -> int:
    """cvt4hex: four hex digits at ``token[i]``, or -1 (also when the token ends)."""
    digits = token[i : i + 4]
    if len(digits) != 4 or not all(d in _HEX for d in digits):
        return -1
    return int(digits, 16)


def _string(token: bytes) -> str:
    """parse_string: escapes (with surrogate pairs) and modified UTF-8 validation."""
    quote = token[0]
    body = token[1:-1]
    if 0x5C not in body and body.isascii():
        return body.decode("ascii")  # nothing to decode: the common case
    out: list[str] = []
    i = 1
    while token[i] != quote:
        if token[i] == 0x5C:
            beg = i
            esc = token[i + 1]
            i += 2
            simple = _SIMPLE_ESCAPES.get(esc)
            if simple is not None:
                out.append(simple)
                continue
            if esc != 0x75:
                raise _Fail("invalid escape sequence in string")
            cp = _hex4(token, i)
            i += 4
            if 0xD800 <= cp <= 0xDBFF and token[i : i + 2] == b"\\u":
                low = _hex4(token, i + 2)
                if 0xDC00 <= low <= 0xDFFF:
                    cp = 0x10000 + ((cp & 0x3FF) << 10) + (low & 0x3FF)
                    i += 6
                else:
                    cp = -1
            if not valid_codepoint(cp):
                shown = token[beg : min(i, len(token))]
                raise _Fail(f"{qemu_text(shown)} is not a valid Unicode character")
            out.append(chr(cp))
        else:
            cp, i = mod_utf8_codepoint(token, i, 6)
            if cp < 0:
                raise _Fail("invalid UTF-8 sequence in string")
            out.append(chr(cp))
    return "".join(out)
