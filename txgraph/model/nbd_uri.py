"""NBD addresses from legacy filenames and options, parsed as QEMU 7.2 parses them.

Pure functions (no I/O) shared by the open path (a header backing string or a
data-file name such as ``nbd+unix:///x?socket=PATH``), the ``nbd`` driver
(``host``/``port``/``path`` legacy options) and the filename code:

* URIs go through :mod:`txgraph.model.uri` (util/uri.c's ``uri_parse`` and
  ``query_params_parse``, re-exported here).
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

from collections.abc import Mapping
from typing import Any

from txgraph.model.uri import Uri, parse_uri, query_params

__all__ = [
    "NbdAddressError",
    "Uri",
    "parse_uri",
    "query_params",
    "inet_parse",
    "nbd_parse_filename",
    "legacy_socket_options",
    "server_address",
    "exact_filename",
    "NBD_DEFAULT_PORT",
]

NBD_DEFAULT_PORT = 10809
_EN_OPTSTR = ":exportname="
_PATH_MAX = 4096


class NbdAddressError(ValueError):
    """A filename or option set QEMU refuses; ``str()`` is QEMU's message."""


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
    if comma >= 0 and optstr[comma + 1 : comma + 2] == ",":
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
        rest = text[1 + n :]
        if not host or not rest.startswith("]:"):
            raise NbdAddressError(f"error parsing IPv6 address '{text}'")
        port, m = _scan(rest[2:], ",", 32)
        if not port:
            raise NbdAddressError(f"error parsing IPv6 address '{text}'")
        pos = 1 + n + 2 + m
    else:
        host, n = _scan(text, ":", 64)
        if not host or text[n : n + 1] != ":":
            raise NbdAddressError(f"error parsing address '{text}'")
        port, m = _scan(text[n + 1 :], ",", 32)
        if not port:
            raise NbdAddressError(f"error parsing address '{text}'")
        pos = n + 1 + m
    optstr = text[pos:]
    to = optstr.find(",to=")
    if to >= 0:
        digits = optstr[to + 4 :]
        k = 1 if digits[:1] in ("-", "+") else 0
        while k < len(digits) and digits[k].isdigit():
            k += 1
        if not digits[:k].lstrip("+-") or digits[k : k + 1] not in ("", ","):
            raise NbdAddressError("error parsing to= argument")
    for flag in ("ipv4", "ipv6", "keep-alive", "mptcp"):
        at = optstr.find("," + flag)
        if at >= 0:
            _parse_flag(flag, optstr[at + 1 + len(flag) :])
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
        out.update(
            {
                "server.type": "inet",
                "server.host": host,
                "server.port": str(uri.port or NBD_DEFAULT_PORT),
            }
        )
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
        export = file[at + len(_EN_OPTSTR) :]
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
        return {
            "server.type": "inet",
            "server.host": str(host),
            "server.port": str(port if port is not None else NBD_DEFAULT_PORT),
        }
    return {}


def server_address(options: Mapping[str, Any]) -> dict[str, str]:
    """``nbd_config``: the flat SocketAddress from ``server.*`` (after the legacy options)."""
    merged = dict(options)
    merged.update(legacy_socket_options(options))
    addr = {k[len("server.") :]: v for k, v in merged.items() if k.startswith("server.")}
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
        text = (
            f"nbd+unix:///{export}?socket={addr['path']}"
            if export is not None
            else f"nbd+unix://?socket={addr['path']}"
        )
    else:
        if any(f"server.{k}" in options for k in ("ipv4", "ipv6", "to")):
            return ""
        base = f"nbd://{addr['host']}:{addr['port']}"
        text = f"{base}/{export}" if export is not None else base
    return text if len(text) < _PATH_MAX else ""
