"""QEMU 7.2's JSON lexer (``qobject/json-lexer.c``): bytes in, tokens out.

A byte-driven state machine with the same states and transitions as QEMU's
table, so that every malformed input splits into the same tokens and error
tokens:

* an invalid byte ends the current token as an error token (the byte
  included) and enters the recovery state, which skips input up to the next
  structural character (``[ ] { } : ,``), ASCII control character other than
  tab, or byte 0xFE/0xFF, and hands that byte to the start state;
* a number ends at the first byte that cannot continue it (look-ahead); ``0``
  takes no exponent (``0e5`` is the integer 0, the keyword ``e``, the integer
  5), ``-``, ``1.`` and ``1e`` / ``1E+`` are incomplete and end in an error;
* a keyword is any run of ``a``-``z`` (the parser rejects unknown ones);
* strings take any byte 0x20-0xFD (validation is the parser's job);
* a token longer than 64 MiB is cut and emitted as a :data:`Tok.PARTIAL`
  token, which the parser treats as no value at all (QEMU emits it with its
  lexer state as token type).

Runs of plain string bytes, whitespace and skipped recovery bytes are
consumed with one regular-expression match each, so a multi-megabyte string
costs what its size costs, not a Python loop iteration per byte.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum, auto

__all__ = ["JSONLexer", "MAX_TOKEN_SIZE", "Tok"]

#: QEMU's MAX_TOKEN_SIZE (json-lexer.c and json-streamer.c): 64 MiB
MAX_TOKEN_SIZE = 64 << 20


class Tok(Enum):
    """Token types (QEMU's JSONTokenType, plus PARTIAL for a cut token)."""

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
    PARTIAL = auto()


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


Emit = Callable[[Tok, bytes], None]

_STRUCTURAL = {
    ord("{"): Tok.LCURLY,
    ord("}"): Tok.RCURLY,
    ord("["): Tok.LSQUARE,
    ord("]"): Tok.RSQUARE,
    ord(":"): Tok.COLON,
    ord(","): Tok.COMMA,
}
_DIGIT = frozenset(b"0123456789")
_E = frozenset(b"eE")
_START_NEXT = {
    ord('"'): _S.DQ,
    ord("'"): _S.SQ,
    ord("0"): _S.ZERO,
    ord("-"): _S.SIGN,
    **dict.fromkeys(b"123456789", _S.DIGITS),
    **dict.fromkeys(range(ord("a"), ord("z") + 1), _S.KEYWORD),
}
# States that end with look-ahead, and the token they end as.
_TERMINAL = {
    _S.ZERO: Tok.INTEGER,
    _S.DIGITS: Tok.INTEGER,
    _S.MANTISSA_DIGITS: Tok.FLOAT,
    _S.EXP_DIGITS: Tok.FLOAT,
    _S.KEYWORD: Tok.KEYWORD,
}
# Bulk runs: the bytes each state keeps consuming without a transition.
_RUN = {
    _S.START: re.compile(rb"[ \t\r\n]+"),
    _S.RECOVERY: re.compile(rb"[\t\x20-\x2b\x2d-\x39\x3b-\x5a\x5c\x5e-\x7a\x7c\x7e-\xfd]+"),
    _S.DQ: re.compile(rb"[\x20\x21\x23-\x5b\x5d-\xfd]+"),
    _S.SQ: re.compile(rb"[\x20-\x26\x28-\x5b\x5d-\xfd]+"),
    _S.DIGITS: re.compile(rb"[0-9]+"),
    _S.MANTISSA_DIGITS: re.compile(rb"[0-9]+"),
    _S.EXP_DIGITS: re.compile(rb"[0-9]+"),
    _S.KEYWORD: re.compile(rb"[a-z]+"),
}
_TOKEN_KEEPING = frozenset(_RUN) - {_S.START, _S.RECOVERY}


class JSONLexer:
    """QEMU's ``JSONLexer`` (without interpolation): ``feed`` bytes, tokens go to ``emit``."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self._state = _S.START
        self._token = bytearray()

    @property
    def idle(self) -> bool:
        """Between tokens: no partial token and no error recovery under way."""
        return self._state is _S.START and not self._token

    def feed(self, data: bytes) -> None:
        """``json_lexer_feed``: consume every byte of ``data``."""
        i, n = 0, len(data)
        while i < n:
            run = _RUN.get(self._state)
            if run is not None:
                # Never let one match carry a token past the size limit.
                end = min(n, i + MAX_TOKEN_SIZE + 1 - len(self._token))
                m = run.match(data, i, end)
                if m is not None:
                    if self._state in _TOKEN_KEEPING:
                        self._token += m.group()
                        self._check_size()
                    i = m.end()
                    continue
            c = data[i]
            i += 1
            while not self._char(c):
                pass
            self._check_size()

    def _check_size(self) -> None:
        # json_lexer_feed_char: a token may not grow past MAX_TOKEN_SIZE.
        if len(self._token) > MAX_TOKEN_SIZE:
            text = bytes(self._token)
            self._token.clear()
            self._state = _S.START
            self._emit(Tok.PARTIAL, text)

    def _char(self, c: int) -> bool:
        """One transition for byte ``c``; False when ``c`` was not consumed (look-ahead)."""
        s = self._state
        if s is _S.START:
            kind = _STRUCTURAL.get(c)
            if kind is not None:
                self._emit(kind, bytes([c]))
            elif c in b" \t\r\n":
                pass
            else:
                nxt = _START_NEXT.get(c)
                self._token.append(c)
                if nxt is None:
                    self._error()
                else:
                    self._state = nxt
            return True
        if s is _S.RECOVERY:
            if (c < 0x20 and c != 0x09) or c >= 0xFE or c in _STRUCTURAL:
                self._state = _S.START
                return False
            return True
        nxt = self._next(s, c)
        if nxt is None:
            # A digit after a leading zero is JSON_ERROR in QEMU's table, not look-ahead.
            end = None if s is _S.ZERO and c in _DIGIT else _TERMINAL.get(s)
            if end is not None:  # look-ahead: the token ends before c
                self._finish(end)
                return False
            self._token.append(c)  # JSON_ERROR consumes the byte
            self._error()
            return True
        self._token.append(c)
        if nxt is _S.START:  # a closing quote
            self._finish(Tok.STRING)
        else:
            self._state = nxt
        return True

    @staticmethod
    def _next(s: _S, c: int) -> _S | None:
        """The table of QEMU's json_lexer[] for the non-start states (None: no transition)."""
        if s is _S.DQ or s is _S.SQ:
            if c == (0x22 if s is _S.DQ else 0x27):
                return _S.START
            if c == 0x5C:
                return _S.DQ_ESC if s is _S.DQ else _S.SQ_ESC
            return s if 0x20 <= c <= 0xFD else None
        if s is _S.DQ_ESC:
            return _S.DQ if 0x20 <= c <= 0xFD else None
        if s is _S.SQ_ESC:
            return _S.SQ if 0x20 <= c <= 0xFD else None
        digit = c in _DIGIT
        if s is _S.ZERO:
            return _S.MANTISSA if c == 0x2E else None
        if s is _S.DIGITS:
            if digit:
                return _S.DIGITS
            return _S.EXP_E if c in _E else _S.MANTISSA if c == 0x2E else None
        if s is _S.SIGN:
            return _S.ZERO if c == 0x30 else _S.DIGITS if digit else None
        if s is _S.MANTISSA:
            return _S.MANTISSA_DIGITS if digit else None
        if s is _S.MANTISSA_DIGITS:
            return _S.MANTISSA_DIGITS if digit else _S.EXP_E if c in _E else None
        if s is _S.EXP_E:
            return _S.EXP_DIGITS if digit else _S.EXP_SIGN if c in (0x2B, 0x2D) else None
        if s is _S.EXP_SIGN or s is _S.EXP_DIGITS:
            return _S.EXP_DIGITS if digit else None
        assert s is _S.KEYWORD
        return _S.KEYWORD if 0x61 <= c <= 0x7A else None

    def _finish(self, kind: Tok) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _S.START
        self._emit(kind, text)

    def _error(self) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _S.RECOVERY
        self._emit(Tok.ERROR, text)
