"""A streaming JSON decoder that splits a QMP byte stream into messages as QEMU 7.2 does.

QEMU reads QMP input through three stages, and txgraph reproduces each one so
that malformed input is answered with the same ``JSON parse error, ...`` text
and recovers at the same byte:

* the lexer (``json-lexer.c``, :mod:`txgraph.qobject.lexer`);
* the streamer (``json-streamer.c``, here): collects tokens until the braces
  and brackets balance (or either count goes negative), then parses them; an
  error token, or a token that would pass a limit (checked before the balance),
  reports the error and throws the collected tokens away (7.2 does not skip to the end of the
  broken message: what follows is lexed as new messages);
* the parser (``json-parser.c``, :mod:`txgraph.qobject.parser`).

Messages need no delimiter between them; a scalar at top level ends only when
the byte after it arrives, exactly like QEMU.
"""

from __future__ import annotations

from typing import Any

from txgraph.qobject.fast import fast_messages
from txgraph.qobject.lexer import MAX_TOKEN_SIZE, JSONLexer, Tok
from txgraph.qobject.parser import JSONParseError, parse_tokens
from txgraph.qobject.utf8 import mod_utf8_codepoint, qemu_text

__all__ = [
    "JSONParseError",
    "JSONStreamDecoder",
    "MAX_NESTING",
    "MAX_TOKEN_COUNT",
    "MAX_TOKEN_SIZE",
    "mod_utf8_codepoint",
    "parse_json_text",
    "qemu_text",
]

# json-streamer.c's limits (MAX_TOKEN_SIZE is shared with the lexer).
MAX_TOKEN_COUNT = 2 << 20
MAX_NESTING = 1024


class JSONStreamDecoder:
    """Feed bytes, get back complete messages (values) and parse errors, in order.

    One instance per connection (QEMU gives each monitor its own parser) and
    used by one task at a time; it holds no lock because it is never shared.
    """

    def __init__(self, *, fast: bool = True) -> None:
        #: hand plain well-formed objects to the C json module (:mod:`txgraph.qobject.fast`)
        self.fast = fast
        self._lexer = JSONLexer(self._token)
        self._tokens: list[tuple[Tok, bytes]] = []
        self._braces = 0
        self._brackets = 0
        self._size = 0
        self._out: list[Any] = []

    @property
    def pending(self) -> bool:
        """Whether a message is open (tokens collected but not yet parsed)."""
        return bool(self._tokens)

    def feed(self, data: bytes) -> list[Any]:
        """Consume ``data``; return the messages completed by it (values or JSONParseError)."""
        if self.fast and not self._tokens and self._lexer.idle:
            # Between messages, the leading plain objects take the fast path; the
            # exact path continues from the first byte the fast path declines.
            values, used = fast_messages(data)
            if used:
                if used == len(data):
                    return values
                self._out = values
                data = data[used:]
        self._lexer.feed(data)
        out, self._out = self._out, []
        return out

    def _token(self, kind: Tok, text: bytes) -> None:
        """``json_message_process_token``."""
        if kind is Tok.LCURLY:
            self._braces += 1
        elif kind is Tok.RCURLY:
            self._braces -= 1
        elif kind is Tok.LSQUARE:
            self._brackets += 1
        elif kind is Tok.RSQUARE:
            self._brackets -= 1
        elif kind is Tok.ERROR:
            return self._emit(JSONParseError(f"JSON parse error, stray '{qemu_text(text)}'"))
        # The limits are checked before the token joins the message, and before
        # the balance check: the token that would close a message past a limit
        # gets the limit's error (observed on QSD 7.2 with 2**21 + 1 tokens).
        if self._size + len(text) + 1 > MAX_TOKEN_SIZE:
            return self._emit(JSONParseError("JSON token size limit exceeded"))
        if len(self._tokens) + 1 > MAX_TOKEN_COUNT:
            return self._emit(JSONParseError("JSON token count limit exceeded"))
        if self._braces + self._brackets > MAX_NESTING:
            return self._emit(JSONParseError("JSON nesting depth limit exceeded"))
        self._tokens.append((kind, text))
        self._size += len(text)
        if self._braces < 0 or self._brackets < 0 or (self._braces == 0 and self._brackets == 0):
            return self._emit(parse_tokens(self._tokens))
        return None

    def _emit(self, result: Any) -> None:
        self._braces = self._brackets = self._size = 0
        self._tokens = []
        self._out.append(result)


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
