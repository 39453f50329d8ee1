"""NBD addresses from legacy filenames and options, parsed as QEMU 7.2 parses them.

Pure functions (no I/O) shared by the open path (a header backing string or a
data-file name such as ``nbd+unix:///x?socket=PATH``), the ``nbd`` driver
(``host``/``port``/``path`` legacy options) and the filename code:

* :func:`parse_uri` is util/uri.c's RFC 3986 parser (``uri_parse``) with its
  quirks: a port above 65535 is a parse error, an empty host is no host,
  ``%XX`` escapes are decoded in the host and the path, and a decoded NUL ends
  the C string.
* :func:`query_params` is ``query_params_parse``: separators are the first
  ``&`` if any, else ``;``; ``name`` without ``=`` has no value.
* :func:`inet_parse` is util/qemu-sockets.c ``inet_parse`` (sscanf field
  widths, ``,to=``, ``,ipv4``/``,ipv6``/``,keep-alive``/``,mptcp`` flags).
* :func:`nbd_parse_filename` is block/nbd.c ``nbd_parse_filename`` +
  ``nbd_parse_uri`` + ``nbd_has_filename_options_conflict``.
* :func:`legacy_socket_options` and :func:`server_address` are
  ``nbd_process_legacy_socket_options`` and ``nbd_config``.
* :func:`exact_filename` is ``nbd_refresh_filename``.

Errors are :class:`NbdAddressError` carrying QEMU's text.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["NbdAddressError", "Uri", "parse_uri", "query_params", "inet_parse",
           "nbd_parse_filename", "legacy_socket_options", "server_address", "exact_filename",
           "NBD_DEFAULT_PORT"]

NBD_DEFAULT_PORT = 10809
_EN_OPTSTR = ":exportname="
_PATH_MAX = 4096


class NbdAddressError(ValueError):
    """A filename or option set QEMU refuses; ``str()`` is QEMU's message."""


# -- util/uri.c ------------------------------------------------------------------------
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
            out.append(chr(int(text[i + 1:i + 3], 16)))
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
                out.append((unescape(section[:eq]), unescape(section[eq + 1:])))
        q = q[end + 1:] if end < len(q) else ""
    return out


# -- util/qemu-sockets.c ---------------------------------------------------------------
def _scan(text: str, stop: str, width: int) -> tuple[str, int]:
    """sscanf ``%<width>[^<stop>]``: the field and where it ended."""
    n = 0
    while n < len(text) and n < width and text[n] not in stop:
        n += 1
    return text[:n], n


def _parse_flag(name: str, optstr: str) -> None:
    """``inet_parse_flag``: ``,name``, ``,name=on`` or ``,name=off``."""
    comma = optstr.find(",")
    if comma >= 0 and optstr[comma + 1:comma + 2] == ",":
        raise NbdAddressError(f"error parsing '{name}' flag '{optstr}'")
    value = optstr[:comma] if comma >= 0 else optstr
    if value not in ("", "=on", "=off"):
        raise NbdAddressError(f"error parsing '{name}' flag '{optstr}'")


def inet_parse(text: str) -> tuple[str, str]:
    """``inet_parse``: ``host:port[,opts]``, ``[v6]:port``, ``:port`` → (host, port)."""
    if text.startswith(":"):
        port, n = _scan(text[1:], ",", 32)
        if not port:
            raise NbdAddressError(f"error parsing port in address '{text}'")
        host, pos = "", 1 + n
    elif text.startswith("["):
        host, n = _scan(text[1:], "]", 64)
        rest = text[1 + n:]
        if not host or not rest.startswith("]:"):
            raise NbdAddressError(f"error parsing IPv6 address '{text}'")
        port, m = _scan(rest[2:], ",", 32)
        if not port:
            raise NbdAddressError(f"error parsing IPv6 address '{text}'")
        pos = 1 + n + 2 + m
    else:
        host, n = _scan(text, ":", 64)
        if not host or text[n:n + 1] != ":":
            raise NbdAddressError(f"error parsing address '{text}'")
        port, m = _scan(text[n + 1:], ",", 32)
        if not port:
            raise NbdAddressError(f"error parsing address '{text}'")
        pos = n + 1 + m
    optstr = text[pos:]
    to = optstr.find(",to=")
    if to >= 0:
        digits = optstr[to + 4:]
        k = 1 if digits[:1] in ("-", "+") else 0
        while k < len(digits) and digits[k].isdigit():
            k += 1
        if not digits[:k].lstrip("+-") or digits[k:k + 1] not in ("", ","):
            raise NbdAddressError("error parsing to= argument")
    for flag in ("ipv4", "ipv6", "keep-alive", "mptcp"):
        at = optstr.find("," + flag)
        if at >= 0:
            _parse_flag(flag, optstr[at + 1 + len(flag):])
    return host, port


# -- block/nbd.c -----------------------------------------------------------------------
def _parse_nbd_uri(filename: str) -> dict[str, str]:
    """``nbd_parse_uri``; raises with QEMU's single message for every failure."""
    bad = NbdAddressError("No valid URL specified")
    uri = parse_uri(filename)
    if uri is None or uri.scheme not in ("nbd", "nbd+tcp", "nbd+unix"):
        raise bad
    is_unix = uri.scheme == "nbd+unix"
    out: dict[str, str] = {}
    path = uri.path or ""
    if path.startswith("/"):
        path = path[1:]
    if path:
        out["export"] = path
    params = query_params(uri.query)
    if len(params) > 1 or (is_unix and not params) or (not is_unix and params):
        raise bad
    if is_unix:
        name, value = params[0]
        # QEMU 7.2 dereferences the missing value of a bare "socket" and crashes;
        # txgraph answers as upstream QEMU does.
        if uri.server or uri.port or name != "socket" or value is None:
            raise bad
        out.update({"server.type": "unix", "server.path": value})
    else:
        if not uri.server:
            raise bad
        host = uri.server
        if host.startswith("["):
            host = host[1:-1]
        out.update({"server.type": "inet", "server.host": host,
                    "server.port": str(uri.port or NBD_DEFAULT_PORT)})
    return out


def nbd_parse_filename(filename: str, options: Mapping[str, Any]) -> dict[str, str]:
    """``nbd_parse_filename``: the options a legacy ``nbd…`` filename adds.

    ``options`` are the node's options so far (for the conflict check).
    """
    for key in options:
        if key in ("host", "port", "path", "export") or key.startswith("server."):
            raise NbdAddressError(f"Option '{key}' cannot be used with a file name")
    if "://" in filename:
        return _parse_nbd_uri(filename)
    out: dict[str, str] = {}
    file = filename
    at = file.find(_EN_OPTSTR)
    if at >= 0:
        export = file[at + len(_EN_OPTSTR):]
        if not export:
            return out
        file = file[:at]
        out["export"] = export
    if not file.startswith("nbd:"):
        raise NbdAddressError("File name string for NBD must start with 'nbd:'")
    spec = file[4:]
    if not spec:
        return out
    if spec.startswith("unix:"):
        out.update({"server.type": "unix", "server.path": spec[5:]})
    else:
        host, port = inet_parse(spec)
        out.update({"server.type": "inet", "server.host": host, "server.port": port})
    return out


def legacy_socket_options(options: Mapping[str, Any]) -> dict[str, str]:
    """``nbd_process_legacy_socket_options``: ``path``/``host``/``port`` → ``server.*``."""
    path, host, port = (options.get(k) for k in ("path", "host", "port"))
    if path is None and host is None and port is None:
        return {}
    if any(k.startswith("server.") for k in options):
        raise NbdAddressError("Cannot use 'server' and path/host/port at the same time")
    if path is not None and host is not None:
        raise NbdAddressError("path and host may not be used at the same time")
    if path is not None:
        if port is not None:
            raise NbdAddressError("port may not be used without host")
        return {"server.type": "unix", "server.path": str(path)}
    if host is not None:
        return {"server.type": "inet", "server.host": str(host),
                "server.port": str(port if port is not None else NBD_DEFAULT_PORT)}
    return {}


def server_address(options: Mapping[str, Any]) -> dict[str, str]:
    """``nbd_config``: the flat SocketAddress from ``server.*`` (after the legacy options)."""
    merged = dict(options)
    merged.update(legacy_socket_options(options))
    addr = {k[len("server."):]: v for k, v in merged.items() if k.startswith("server.")}
    if not addr:
        raise NbdAddressError("NBD server address missing")
    kind = addr.get("type")
    if kind is None:
        raise NbdAddressError("Parameter 'type' is missing")
    if kind == "unix":
        if "path" not in addr:
            raise NbdAddressError("Parameter 'path' is missing")
        return {"type": "unix", "path": str(addr["path"])}
    if kind == "inet":
        for key in ("host", "port"):
            if key not in addr:
                raise NbdAddressError(f"Parameter '{key}' is missing")
        return {"type": "inet", "host": str(addr["host"]), "port": str(addr["port"])}
    raise NbdAddressError(f"Parameter 'type' does not accept value '{kind}'")


def exact_filename(options: Mapping[str, Any]) -> str:
    """``nbd_refresh_filename``: the pseudo-filename QEMU reports for an nbd node."""
    try:
        addr = server_address(options)
    except NbdAddressError:
        return ""
    export = options.get("export")
    if addr["type"] == "unix":
        text = (f"nbd+unix:///{export}?socket={addr['path']}" if export is not None
                else f"nbd+unix://?socket={addr['path']}")
    else:
        if any(f"server.{k}" in options for k in ("ipv4", "ipv6", "to")):
            return ""
        base = f"nbd://{addr['host']}:{addr['port']}"
        text = f"{base}/{export}" if export is not None else base
    return text if len(text) < _PATH_MAX else ""
