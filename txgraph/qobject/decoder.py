"""A streaming JSON decoder that splits a QMP byte stream into messages as QEMU does.

QEMU reads QMP input through three stages, and txgraph reproduces each one so
that malformed input is answered with the same ``JSON parse error, ...`` text
and recovers at the same byte:

* the lexer (QEMU's ``json-lexer.c``): a byte-driven state machine producing
  tokens. An invalid byte ends the current token as an error token (the byte
  included) and enters a recovery state that skips input up to the next
  structural character, control character or byte 0xFE/0xFF;
* the streamer (``json-streamer.c``): collects tokens until the braces and
  brackets balance (or go negative), enforcing size, count and nesting limits;
* the parser (``json-parser.c``): builds the value, reporting the first error.

Messages need no delimiter between them; a scalar at top level ends only when
the byte after it arrives, exactly like QEMU. Integers become Python ``int``
when QEMU would hold them as int64 or uint64 and ``float`` otherwise, so the
QAPI layer and the encoder see the same number types as QEMU's ``QNum``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

__all__ = ["JSONParseError", "JSONStreamDecoder", "mod_utf8_codepoint", "qemu_text"]

# Limits of QEMU's json-streamer (bytes of all tokens, tokens, open braces+brackets).
MAX_TOKEN_SIZE = 64 << 20
MAX_TOKEN_COUNT = 2 << 20
MAX_NESTING = 1024

INT64_MIN, INT64_MAX, UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1


@dataclass(frozen=True)
class JSONParseError:
    """One unparsable message; the server answers it with a GenericError and no ``id``."""

    desc: str


class _T(Enum):
    LCURLY = auto()
    RCURLY = auto()
    LSQUARE = auto()
    RSQUARE = auto()
    COLON = auto()
    COMMA = auto()
    INTEGER = auto()
    FLOAT = auto()
    KEYWORD = auto()
    STRING = auto()
    ERROR = auto()


class _S(Enum):
    START = auto()
    RECOVERY = auto()
    DQ = auto()
    DQ_ESC = auto()
    SQ = auto()
    SQ_ESC = auto()
    ZERO = auto()
    DIGITS = auto()
    SIGN = auto()
    MANTISSA = auto()
    MANTISSA_DIGITS = auto()
    EXP_E = auto()
    EXP_SIGN = auto()
    EXP_DIGITS = auto()
    KEYWORD = auto()


_STRUCTURAL = {ord("{"): _T.LCURLY, ord("}"): _T.RCURLY, ord("["): _T.LSQUARE,
               ord("]"): _T.RSQUARE, ord(":"): _T.COLON, ord(","): _T.COMMA}
_WHITESPACE = frozenset(b" \t\r\n")
_DIGITS = frozenset(b"0123456789")
_LOWER = frozenset(range(ord("a"), ord("z") + 1))
# Bytes where the recovery state hands over to the start state again.
_RESYNC = frozenset([*(c for c in range(0x20) if c != 0x09), 0xFE, 0xFF, *b"[]{}"])
# What a number state emits when the next byte does not continue it.
_NUMBER_END = {_S.ZERO: _T.INTEGER, _S.DIGITS: _T.INTEGER, _S.MANTISSA_DIGITS: _T.FLOAT,
               _S.EXP_DIGITS: _T.FLOAT, _S.KEYWORD: _T.KEYWORD}

_Token = tuple[_T, bytes]
_LOOKAHEAD = object()


class JSONStreamDecoder:
    """Feed bytes, get back complete messages (values) and parse errors, in order.

    One instance per connection: QEMU resets its parser when a client connects.
    """

    def __init__(self) -> None:
        self._state = _S.START
        self._token = bytearray()
        self._tokens: list[_Token] = []
        self._braces = 0
        self._brackets = 0
        self._size = 0
        self._out: list[Any] = []

    def feed(self, data: bytes) -> list[Any]:
        """Consume ``data``; return the messages completed by it (values or JSONParseError)."""
        for byte in data:
            while self._step(byte) is _LOOKAHEAD:
                pass
        out, self._out = self._out, []
        return out

    # -- lexer (json-lexer.c) ------------------------------------------------------------
    def _step(self, c: int) -> object:
        """Advance the lexer by one byte; return _LOOKAHEAD if ``c`` must be fed again."""
        s = self._state
        if s is _S.START:
            if c in _WHITESPACE:
                return None
            kind = _STRUCTURAL.get(c)
            if kind is not None:
                self._emit(kind, bytes([c]))
                return None
            self._token.append(c)
            if c == 0x22:
                self._state = _S.DQ
            elif c == 0x27:
                self._state = _S.SQ
            elif c == 0x30:
                self._state = _S.ZERO
            elif c in _DIGITS:
                self._state = _S.DIGITS
            elif c == 0x2D:
                self._state = _S.SIGN
            elif c in _LOWER:
                self._state = _S.KEYWORD
            else:
                self._error()
            return None
        if s is _S.RECOVERY:
            if c in _RESYNC:
                self._state = _S.START
                return _LOOKAHEAD
            return None
        if s in (_S.DQ, _S.SQ):
            if c < 0x20 or c > 0xFD:
                self._token.append(c)
                self._error()
            elif c == 0x5C:
                self._token.append(c)
                self._state = _S.DQ_ESC if s is _S.DQ else _S.SQ_ESC
            elif c == (0x22 if s is _S.DQ else 0x27):
                self._token.append(c)
                self._finish(_T.STRING)
            else:
                self._token.append(c)
            return None
        if s in (_S.DQ_ESC, _S.SQ_ESC):
            self._token.append(c)
            if c < 0x20 or c > 0xFD:
                self._error()
            else:
                self._state = _S.DQ if s is _S.DQ_ESC else _S.SQ
            return None
        return self._number_or_keyword(s, c)

    def _number_or_keyword(self, s: _S, c: int) -> object:
        digit = c in _DIGITS
        nxt: _S | None = None
        if s is _S.ZERO:
            nxt = {0x2E: _S.MANTISSA, 0x65: _S.EXP_E, 0x45: _S.EXP_E}.get(c)
            if digit:
                self._token.append(c)
                self._error()   # QEMU's lexer rejects leading zeros outright
                return None
        elif s is _S.DIGITS:
            nxt = _S.DIGITS if digit else {0x2E: _S.MANTISSA, 0x65: _S.EXP_E, 0x45: _S.EXP_E}.get(c)
        elif s is _S.SIGN:
            nxt = _S.ZERO if c == 0x30 else _S.DIGITS if digit else None
        elif s is _S.MANTISSA:
            nxt = _S.MANTISSA_DIGITS if digit else None
        elif s is _S.MANTISSA_DIGITS:
            nxt = _S.MANTISSA_DIGITS if digit else {0x65: _S.EXP_E, 0x45: _S.EXP_E}.get(c)
        elif s is _S.EXP_E:
            nxt = _S.EXP_DIGITS if digit else _S.EXP_SIGN if c in (0x2B, 0x2D) else None
        elif s is _S.EXP_SIGN:
            nxt = _S.EXP_DIGITS if digit else None
        elif s is _S.EXP_DIGITS:
            nxt = _S.EXP_DIGITS if digit else None
        elif s is _S.KEYWORD:
            nxt = _S.KEYWORD if c in _LOWER else None
        if nxt is not None:
            self._token.append(c)
            self._state = nxt
            return None
        end = _NUMBER_END.get(s)
        if end is None:                # an incomplete number: the byte is part of the error
            self._token.append(c)
            self._error()
            return None
        self._finish(end)
        return _LOOKAHEAD

    def _finish(self, kind: _T) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _S.START
        self._emit(kind, text)

    def _error(self) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _S.RECOVERY
        self._emit(_T.ERROR, text)

    # -- streamer (json-streamer.c) ------------------------------------------------------
    def _emit(self, kind: _T, text: bytes) -> None:
        if kind is _T.ERROR:
            return self._flush(JSONParseError(f"JSON parse error, stray '{qemu_text(text)}'"))
        if kind is _T.LCURLY:
            self._braces += 1
        elif kind is _T.RCURLY:
            self._braces -= 1
        elif kind is _T.LSQUARE:
            self._brackets += 1
        elif kind is _T.RSQUARE:
            self._brackets -= 1
        if self._size + len(text) + 1 > MAX_TOKEN_SIZE:
            return self._flush(JSONParseError("JSON token size limit exceeded"))
        if len(self._tokens) + 1 > MAX_TOKEN_COUNT:
            return self._flush(JSONParseError("JSON token count limit exceeded"))
        if self._braces + self._brackets > MAX_NESTING:
            return self._flush(JSONParseError("JSON nesting depth limit exceeded"))
        self._tokens.append((kind, text))
        self._size += len(text)
        if (self._braces > 0 or self._brackets > 0) and self._braces >= 0 and self._brackets >= 0:
            return None
        return self._flush(_Parser(self._tokens).parse())

    def _flush(self, result: Any) -> None:
        self._braces = self._brackets = self._size = 0
        self._tokens = []
        self._out.append(result)


class _ParseFailure(Exception):
    pass


class _Parser:
    """json-parser.c: recursive descent over one message's tokens; the first error wins."""

    def __init__(self, tokens: list[_Token]) -> None:
        self._tokens = tokens
        self._pos = 0
        self._err: str | None = None

    def parse(self) -> Any:
        try:
            return self._value()
        except _ParseFailure:
            assert self._err is not None
            return JSONParseError(f"JSON parse error, {self._err}")

    def _fail(self, message: str) -> _ParseFailure:
        if self._err is None:
            self._err = message
        return _ParseFailure()

    def _peek(self) -> _Token:
        if self._pos >= len(self._tokens):
            raise self._fail("premature EOI")
        return self._tokens[self._pos]

    def _pop(self) -> _Token:
        tok = self._peek()
        self._pos += 1
        return tok

    def _value(self) -> Any:
        kind, text = self._peek()
        if kind is _T.LCURLY:
            return self._object()
        if kind is _T.LSQUARE:
            return self._array()
        self._pos += 1
        if kind is _T.STRING:
            return self._string(text)
        if kind is _T.INTEGER:
            value = int(text)
            if INT64_MIN <= value <= UINT64_MAX:
                return value
            return float(text)     # strtod, as QEMU falls back to a double
        if kind is _T.FLOAT:
            return float(text)
        if kind is _T.KEYWORD:
            word = {b"true": True, b"false": False, b"null": None}
            if text in word:
                return word[text]
            raise self._fail(f"invalid keyword '{qemu_text(text)}'")
        self._pos -= 1
        raise self._fail("expecting value")

    def _object(self) -> dict[str, Any]:
        self._pop()
        result: dict[str, Any] = {}
        if self._peek()[0] is _T.RCURLY:
            self._pop()
            return result
        self._pair(result)
        kind, _ = self._pop()
        while kind is not _T.RCURLY:
            if kind is not _T.COMMA:
                raise self._fail("expected separator in dict")
            self._pair(result)
            kind, _ = self._pop()
        return result

    def _pair(self, result: dict[str, Any]) -> None:
        self._peek()
        key = self._value()
        if not isinstance(key, str):
            raise self._fail("key is not a string in object")
        if self._pop()[0] is not _T.COLON:
            raise self._fail("missing : in object pair")
        value = self._value()
        if key in result:
            raise self._fail("duplicate key")
        result[key] = value

    def _array(self) -> list[Any]:
        self._pop()
        result: list[Any] = []
        if self._peek()[0] is _T.RSQUARE:
            self._pop()
            return result
        result.append(self._value())
        kind, _ = self._pop()
        while kind is not _T.RSQUARE:
            if kind is not _T.COMMA:
                raise self._fail("expected separator in list")
            result.append(self._value())
            kind, _ = self._pop()
        return result

    def _string(self, token: bytes) -> str:
        """parse_string: escapes (with surrogate pairs) and modified UTF-8 validation."""
        quote = token[0]
        out: list[str] = []
        i = 1
        while token[i] != quote:
            if token[i] == 0x5C:
                beg = i
                esc = chr(token[i + 1])
                i += 2
                simple = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b",
                          "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
                if esc in simple:
                    out.append(simple[esc])
                    continue
                if esc != "u":
                    raise self._fail("invalid escape sequence in string")
                cp = _hex4(token, i)
                i += 4
                if 0xD800 <= cp <= 0xDBFF and token[i:i + 2] == b"\\u":
                    low = _hex4(token, i + 2)
                    if 0xDC00 <= low <= 0xDFFF:
                        cp = 0x10000 + ((cp & 0x3FF) << 10) + (low & 0x3FF)
                        i += 6
                    else:
                        cp = -1
                if not _valid_codepoint(cp):
                    shown = token[beg:min(i, len(token))]
                    raise self._fail(f"{qemu_text(shown)} is not a valid Unicode character")
                out.append(chr(cp))
            else:
                cp, i = mod_utf8_codepoint(token, i, 6)
                if cp < 0:
                    raise self._fail("invalid UTF-8 sequence in string")
                out.append(chr(cp))
        return "".join(out)


def _hex4(token: bytes, i: int) -> int:
    digits = token[i:i + 4]
    try:
        return int(digits, 16) if len(digits) == 4 and all(
            chr(d) in "0123456789abcdefABCDEF" for d in digits) else -1
    except ValueError:
        return -1


def _valid_codepoint(cp: int) -> bool:
    """QEMU's is_valid_codepoint: no surrogates, no noncharacters, in Unicode range."""
    if cp < 0 or cp > 0x10FFFF or (cp & 0xFFFFF800) == 0xD800:
        return False
    return not (0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE)


_MIN_CP = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)


def mod_utf8_codepoint(data: bytes, i: int, limit: int) -> tuple[int, int]:
    """Decode one code point at ``data[i]`` as QEMU's mod_utf8_codepoint does.

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
    chars: list[str] = []
    i = 0
    while i < len(raw):
        cp, i = mod_utf8_codepoint(raw, i, len(raw) - i + 1)
        chars.append("\ufffd" if cp < 0 else chr(cp))
    return "".join(chars)


def parse_json_text(text: str) -> Any:
    """``qobject_from_json``: parse one complete JSON text, or raise ValueError with QEMU's text."""
    decoder = JSONStreamDecoder()
    # A trailing space ends a top-level scalar the way the end of input does for QEMU.
    results = decoder.feed(text.encode("utf-8", "surrogatepass") + b" ")
    if not results:
        raise ValueError("JSON parse error, premature EOI")
    first = results[0]
    if isinstance(first, JSONParseError):
        raise ValueError(first.desc)
    if len(results) > 1:
        raise ValueError("JSON parse error, expecting value")
    return first
