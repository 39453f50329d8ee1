"""URIs as QEMU 7.2's util/uri.c parses them (``uri_parse``, ``query_params_parse``).

Pure functions. The quirks that decide what an ``nbd://`` filename means are
kept: a port above 65535 is a parse error, an empty host is no host, ``%XX``
escapes are decoded in the host and the path (a decoded NUL ends the C
string), and query sections end at the first ``&`` if any, else at ``;``.
Only the fields block/nbd.c reads are kept (no fragment, no user info).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

__all__ = ["Uri", "parse_uri", "query_params", "unescape"]


_ALPHA = frozenset(string.ascii_letters)
_DIGIT = frozenset(string.digits)
_HEX = frozenset(string.hexdigits)
_UNRESERVED = _ALPHA | _DIGIT | frozenset("-._~")
_SUB_DELIM = frozenset("!$&()*+,;='")


@dataclass
class Uri:
    """The fields of QEMU's ``URI`` that nbd_parse_uri reads (``port`` 0 = absent)."""

    scheme: str | None = None
    server: str | None = None
    port: int = 0
    path: str | None = None
    query: str | None = None


def _pct(s: str, i: int) -> bool:
    return s[i] == "%" and s[i + 1] in _HEX and s[i + 2] in _HEX


def _pchar(s: str, i: int) -> bool:
    c = s[i]
    return c in _UNRESERVED or _pct(s, i) or c in _SUB_DELIM or c in ":@"


def _next(s: str, i: int) -> int:
    return i + 3 if s[i] == "%" else i + 1


def unescape(text: str) -> str:
    """``uri_string_unescape``, then C-string truncation at a decoded NUL."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        if n - i > 2 and text[i] == "%" and text[i + 1] in _HEX and text[i + 2] in _HEX:
            out.append(chr(int(text[i + 1 : i + 3], 16)))
            i += 3
        else:
            out.append(text[i])
            i += 1
    result = "".join(out)
    cut = result.find("\0")
    return result if cut < 0 else result[:cut]


class _Parser:
    """One ``rfc3986_parse_uri_reference`` run; ``s`` ends with a NUL sentinel."""

    def __init__(self, text: str) -> None:
        self.s = text + "\0\0\0"
        self.end = len(text)
        self.uri = Uri()

    def segment(self, i: int, forbid: str, empty: bool) -> int | None:
        s = self.s
        if i >= self.end or not _pchar(s, i):
            return i if empty else None
        while i < self.end and _pchar(s, i) and s[i] != forbid:
            i = _next(s, i)
        return i

    def _set_path(self, start: int, i: int) -> None:
        self.uri.path = unescape(self.s[start:i]) if i != start else None

    def path_ab_empty(self, i: int) -> int:
        start = i
        while self.s[i] == "/":
            j = self.segment(i + 1, "", True)
            assert j is not None
            i = j
        self._set_path(start, i)
        return i

    def path_absolute(self, i: int) -> int:
        start = i
        i += 1
        j = self.segment(i, "", False)
        if j is not None:
            i = j
            while self.s[i] == "/":
                j = self.segment(i + 1, "", True)
                assert j is not None
                i = j
        self._set_path(start, i)
        return i

    def path_rootless(self, i: int, forbid: str) -> int | None:
        start = i
        j = self.segment(i, forbid, False)
        if j is None:
            return None
        i = j
        while self.s[i] == "/":
            j = self.segment(i + 1, "", True)
            assert j is not None
            i = j
        self._set_path(start, i)
        return i

    def authority(self, i: int) -> int | None:
        s = self.s
        j = i
        while s[j] in _UNRESERVED or _pct(s, j) or s[j] in _SUB_DELIM or s[j] == ":":
            j = _next(s, j)
        if s[j] == "@":
            i = j + 1
        host = i
        if s[i] == "[":
            close = s.find("]", i, self.end)
            if close < 0:
                return None
            i = close + 1
        else:
            while s[i] in _UNRESERVED or _pct(s, i) or s[i] in _SUB_DELIM:
                i = _next(s, i)
        self.uri.server = unescape(s[host:i]) if i != host else None
        if s[i] == ":":
            i += 1
            if s[i] not in _DIGIT:
                return None
            port = 0
            while s[i] in _DIGIT:
                port = port * 10 + int(s[i])
                if port > 65535:
                    return None
                i += 1
            self.uri.port = port
        return i

    def tail(self, i: int) -> bool:
        s = self.s
        if s[i] == "?":
            i += 1
            start = i
            while i < self.end and (_pchar(s, i) or s[i] in "/?"):
                i = _next(s, i)
            self.uri.query = s[start:i]
        if s[i] == "#":
            i += 1
            while i < self.end and (_pchar(s, i) or s[i] in "/?[]"):
                i = _next(s, i)
        return i == self.end

    def absolute(self) -> bool:
        s = self.s
        if s[0] not in _ALPHA:
            return False
        i = 1
        while s[i] in _ALPHA or s[i] in _DIGIT or s[i] in "+-.":
            i += 1
        self.uri.scheme = s[:i]
        if s[i] != ":":
            return False
        i += 1
        r: int | None
        if s[i] == "/" and s[i + 1] == "/":
            r = self.authority(i + 2)
            if r is None:
                return False
            r = self.path_ab_empty(r)
        elif s[i] == "/":
            r = self.path_absolute(i)
        elif i < self.end and _pchar(s, i):
            r = self.path_rootless(i, "")
            if r is None:
                return False
        else:
            r = i
        return self.tail(r)

    def relative(self) -> bool:
        s = self.s
        r: int | None
        if s[0] == "/" and s[1] == "/":
            r = self.authority(2)
            if r is None:
                return False
            r = self.path_ab_empty(r)
        elif s[0] == "/":
            r = self.path_absolute(0)
        elif self.end and _pchar(s, 0):
            r = self.path_rootless(0, ":")
            if r is None:
                return False
        else:
            r = 0
        return self.tail(r)


def parse_uri(text: str) -> Uri | None:
    """``uri_parse``: an absolute URI, else a relative reference; None if neither parses."""
    p = _Parser(text)
    if p.absolute():
        return p.uri
    p = _Parser(text)
    return p.uri if p.relative() else None


def query_params(query: str | None) -> list[tuple[str, str | None]]:
    """``query_params_parse``: (name, value) pairs; ``value`` is None for a bare name."""
    out: list[tuple[str, str | None]] = []
    q = query or ""
    while q:
        end = q.find("&")
        if end < 0:
            end = q.find(";")
        if end < 0:
            end = len(q)
        eq = q.find("=", 0, end)
        section = q[:end]
        if end:
            if eq < 0:
                out.append((unescape(section), None))
            elif eq + 1 == end:
                out.append((unescape(section[:eq]), ""))
            elif eq > 0:
                out.append((unescape(section[:eq]), unescape(section[eq + 1 :])))
        q = q[end + 1 :] if end < len(q) else ""
    return out
