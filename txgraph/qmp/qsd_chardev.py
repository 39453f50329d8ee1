"""QSD's ``--chardev`` and ``--monitor``: a QMP monitor on a unix socket.

``--chardev`` is QemuOpts, not keyval (``qemu_opts_parse_noisily`` with the
implied key ``backend``, then ``qemu_chr_new_from_opts``): bare words are
booleans (``server`` = ``server=on``, ``nowait`` = ``wait=off``) with QEMU's
deprecation warning, ``id`` is the opts' id, unknown keys are refused while
parsing. txgraph serves QMP itself, so of the backends it implements the one
a QSD monitor needs: ``socket,path=P,server=on,wait=off``. ``--monitor`` is
keyval (``MonitorOptions``, implied key ``chardev``) and then ``monitor_init``.

Owner: one :class:`Chardevs` per ``txgraph serve`` run, used only by the
thread that processes the command line (no lock needed). Its listening sockets
pass to the QMP server (a monitor's) or stay with the run until it ends
(:meth:`Chardevs.close`).
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

from txgraph.model.names import id_wellformed
from txgraph.qmp.keyval_visit import MONITOR_OPTIONS, visit_str
from txgraph.qmp.qsd_argv import PROG, CmdlineError, Unsupported

__all__ = ["Chardevs", "parse_chardev_opts"]

#: the keys ``qemu_chardev_opts`` knows (chardev/char.c, 7.2); others: "Invalid parameter"
CHARDEV_KEYS = frozenset(
    {
        "backend",
        "path",
        "host",
        "port",
        "fd",
        "localaddr",
        "localport",
        "to",
        "ipv4",
        "ipv6",
        "wait",
        "server",
        "delay",
        "nodelay",
        "reconnect",
        "telnet",
        "tn3270",
        "websocket",
        "tls-creds",
        "tls-authz",
        "width",
        "height",
        "cols",
        "rows",
        "mux",
        "signal",
        "name",
        "debug",
        "size",
        "chardev",
        "append",
        "logfile",
        "logappend",
        "abstract",
        "tight",
    }
)
_BOOL_KEYS = frozenset(
    {
        "wait",
        "server",
        "delay",
        "nodelay",
        "telnet",
        "tn3270",
        "websocket",
        "ipv4",
        "ipv6",
        "mux",
        "signal",
        "append",
        "logappend",
        "abstract",
        "tight",
    }
)
#: chardev backends QEMU 7.2 builds into QSD; txgraph implements ``socket`` only
BACKENDS = frozenset(
    {
        "socket",
        "file",
        "pipe",
        "null",
        "pty",
        "stdio",
        "ringbuf",
        "memory",
        "mux",
        "serial",
        "tty",
        "parallel",
        "parport",
        "udp",
        "qemu-vdagent",
        "dbus",
        "spicevmc",
        "spiceport",
        "testdev",
        "msmouse",
        "wctablet",
        "braille",
        "console",
        "vc",
    }
)
_BOOL_WORDS = ("on", "off", "yes", "no", "true", "false", "y", "n")
SUN_PATH_MAX = 107
_ID_HINT = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.\n"


def _value(text: str, pos: int) -> tuple[str, int]:
    """``get_opt_value``: up to the next single comma, ``,,`` being a literal comma."""
    out: list[str] = []
    while pos < len(text):
        if text[pos] == ",":
            if text[pos + 1 : pos + 2] != ",":
                break
            pos += 1
        out.append(text[pos])
        pos += 1
    return "".join(out), pos


def parse_chardev_opts(
    text: str, location: str, warnings: list[str]
) -> tuple[str | None, dict[str, str]]:
    """``opts_do_parse`` with ``permit_abbrev``: (id, the other options; last value wins)."""
    opts: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    ident: str | None = None
    pos = 0
    first = True
    while pos < len(text):
        end = pos
        while end < len(text) and text[end] not in "=,":
            end += 1
        if end < len(text) and text[end] == "=":
            name = text[pos:end]
            value, pos = _value(text, end + 1)
        elif first:
            name = "backend"
            value, pos = _value(text, pos)
        else:
            word = text[pos:end]
            pos = end
            name, value = (word[2:], "off") if word.startswith("no") else (word, "on")
            warnings.append(
                f"{PROG}: {location}: warning: short-form boolean option "
                f"'{word}' deprecated\nPlease use {name}={value} instead\n"
            )
        first = False
        pos += 1 if pos < len(text) else 0
        pairs.append((name, value))
    # the id is taken out and checked first (opts_parse_id, qemu_opts_create)
    for name, value in pairs:
        if name == "id":
            ident = value
    if ident is not None and not id_wellformed(ident):
        raise CmdlineError("Parameter 'id' expects an identifier", location, _ID_HINT)
    for name, value in pairs:
        if name == "id":
            continue
        if name not in CHARDEV_KEYS:
            raise CmdlineError(f"Invalid parameter '{name}'", location)
        if name in _BOOL_KEYS and value not in _BOOL_WORDS:
            raise CmdlineError(f"Parameter '{name}' expects 'on' or 'off'", location)
        opts[name] = value
    return ident, opts


#: pending connections a listening chardev queues before the QMP server accepts them
LISTEN_BACKLOG = 128


def _listen(path: str, location: str) -> socket.socket:
    """``unix_listen_saddr`` at ``--chardev``: unlink a stale file, bind, listen.

    QSD listens as soon as the chardev exists, before the later options run; a
    client that sees the socket file can connect from then on (its greeting
    comes once the monitor serves). The socket is never unbound in between: a
    supervisor that waits for the file to appear must find it listening.
    """
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        raise CmdlineError(
            f"Failed to unlink socket {path}: {os.strerror(err.errno or 0)}", location
        ) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(LISTEN_BACKLOG)
    except OSError as err:
        sock.close()
        raise CmdlineError(
            f"Failed to bind socket to {path}: {os.strerror(err.errno or 0)}", location
        ) from None
    return sock


def _on(value: str | None, default: bool) -> bool:
    return default if value is None else value in _BOOL_WORDS[::2]


@dataclass
class Chardevs:
    """The chardevs and monitors of one command line, in the order given."""

    sockets: dict[str, str] = field(default_factory=dict)  # id -> socket path
    in_use: set[str] = field(default_factory=set)
    monitors: list[str] = field(default_factory=list)  # socket paths to serve QMP on
    warnings: list[str] = field(default_factory=list)
    #: socket path -> its listening socket, until the QMP server takes a monitor's
    listening: dict[str, socket.socket] = field(default_factory=dict)

    def close(self) -> None:
        """Stop listening on what nobody took and remove those socket files (QEMU's
        listener cleanup when a chardev goes, and on a command line it refused)."""
        for path, sock in self.listening.items():
            sock.close()
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.listening.clear()

    def add_chardev(self, text: str, location: str) -> None:
        """``--chardev``: ``qemu_chr_new_from_opts`` for a listening unix socket."""
        ident, opts = parse_chardev_opts(text, location, self.warnings)
        backend = opts.get("backend")
        if ident is None:
            raise CmdlineError("chardev: no id specified", location)
        if backend is None:
            raise CmdlineError(f'chardev: "{ident}" missing backend', location)
        if backend not in BACKENDS:
            raise CmdlineError(f"'{backend}' is not a valid char driver name", location)
        if backend != "socket":
            raise Unsupported(
                f"chardev backend '{backend}' is not supported "
                "(only socket,path=...,server=on,wait=off)",
                location,
            )
        path = opts.get("path")
        if path is None:
            if "host" in opts or "port" in opts:
                raise Unsupported("only unix sockets (path=) are supported", location)
            raise CmdlineError(f"Unable to parse FD number {opts.get('fd', '')}", location)
        if ident in self.sockets:
            raise CmdlineError("duplicate yank instance", location)
        if len(path.encode()) > SUN_PATH_MAX:
            raise CmdlineError(
                f"UNIX socket path '{path}' is too long",
                location,
                f"Path must be less than {SUN_PATH_MAX + 1} bytes\n",
            )
        extra = sorted(set(opts) - {"backend", "path", "server", "wait"})
        if extra or not _on(opts.get("server"), False):
            raise Unsupported("only socket,path=...,server=on,wait=off is supported", location)
        if _on(opts.get("wait"), True):
            raise Unsupported(
                "wait=on (waiting for a first client) is not supported; add wait=off", location
            )
        self.listening[path] = _listen(path, location)
        self.sockets[ident] = path

    def add_monitor(self, text: str, location: str) -> None:
        """``--monitor``: ``monitor_init`` for a QMP monitor on a chardev (QSD has no HMP)."""
        options = visit_str(MONITOR_OPTIONS, text, "chardev")
        name = options["chardev"]
        if name not in self.sockets:
            raise CmdlineError(f'chardev "{name}" not found', location)
        if options.get("mode", "control") == "readline":
            raise CmdlineError("Only QMP is supported", location)
        if name in self.in_use:
            raise CmdlineError(f"Device '{name}' is in use", location)
        if options.get("pretty"):
            raise Unsupported("pretty=on is not supported", location)
        self.in_use.add(name)
        self.monitors.append(self.sockets[name])
