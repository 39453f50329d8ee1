"""qemu-storage-daemon 7.2's command line, run against a txgraph engine.

Reproduces QSD's ``process_options`` (storage-daemon/qemu-storage-daemon.c):
after the scan (:mod:`txgraph.qmp.qsd_argv`), each option runs in
command-line order, so an option can only name what earlier ones created;
the first refusal ends the run with QSD's message and exit status 1.

* ``--blockdev`` = ``blockdev-add`` (implied key ``driver``), ``--export`` =
  ``block-export-add`` (implied ``type``), ``--object`` = ``object-add``
  (implied ``qom-type``): JSON when the argument starts with ``{``, keyval
  otherwise (:mod:`txgraph.qmp.keyval_visit`), then the engine's own command,
  so every refusal is the QMP command's;
* ``--nbd-server`` = ``NbdServerOptions`` (flat ``addr.type=unix,addr.path=``)
  handed to ``nbd-server-start`` in its legacy address form;
* ``--chardev``/``--monitor``: :mod:`txgraph.qmp.qsd_chardev`;
* ``--pidfile``: written once every option ran (``qemu_write_pidfile``, mode
  0600, ``PID\\n``), removed again at exit.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any

from txgraph.errors import TxgraphError
from txgraph.ops.session import Chardev
from txgraph.qmp.keyval_visit import (
    NBD_SERVER_OPTIONS,
    visit_command_arguments,
    visit_str,
)
from txgraph.qmp.qsd_argv import CmdlineError, QsdOption, Unsupported, scan_argv
from txgraph.qmp.qsd_chardev import Chardevs
from txgraph.qobject.keyval import KeyvalHelp

__all__ = ["QsdRun", "remove_pidfile", "run_command_line", "write_pidfile"]

#: option -> (QMP command, implied key)
_QMP_OPTIONS = {
    "blockdev": ("blockdev-add", "driver"),
    "export": ("block-export-add", "type"),
    "object": ("object-add", "qom-type"),
}


@dataclass
class QsdRun:
    """What a command line left to do once its options ran."""

    monitors: list[str] = field(default_factory=list)  # socket paths for QMP
    #: the chardevs, listening: the QMP server takes the monitors' sockets
    #: (:attr:`listening`), the rest stay open until :meth:`close`
    chardevs: Chardevs | None = None
    pidfile: str | None = None
    answer: str | None = None  # "help" / "version": print, exit 0
    warnings: list[str] = field(default_factory=list)  # already-rendered stderr lines

    @property
    def listening(self) -> dict[str, socket.socket]:
        """Socket path -> listening socket of every chardev not yet taken by a server."""
        return {} if self.chardevs is None else self.chardevs.listening

    def close(self) -> None:
        """At exit: stop listening on the chardevs no monitor took, remove their files."""
        if self.chardevs is not None:
            self.chardevs.close()


#: hint lines QEMU appends on the command line (error_append_hint) but never sends over QMP
_HINTS = {
    "Parameter 'id' expects an identifier": "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.\n"
}


def _execute(engine: Any, command: str, arguments: dict[str, Any], location: str) -> None:
    reply = engine.execute({"execute": command, "arguments": arguments})
    if "error" in reply:
        desc = reply["error"]["desc"]
        raise CmdlineError(desc, location, _HINTS.get(desc, ""))


def _nbd_server(engine: Any, text: str, location: str) -> None:
    """``nbd_server_start_options``: the flat SocketAddress as nbd-server-start's legacy one."""
    options = visit_str(NBD_SERVER_OPTIONS, text, None)
    addr = dict(options.pop("addr"))
    kind = addr.pop("type")
    _execute(
        engine, "nbd-server-start", {"addr": {"type": kind, "data": addr}, **options}, location
    )


def _run_one(engine: Any, chardevs: Chardevs, option: QsdOption) -> None:
    if option.name in _QMP_OPTIONS:
        command, implied = _QMP_OPTIONS[option.name]
        try:
            arguments = visit_command_arguments(command, option.arg, implied)
        except KeyvalHelp:
            if option.name == "object":  # QSD lists types/properties there; txgraph does not
                raise Unsupported("--object help is not supported", option.location) from None
            raise
        _execute(engine, command, arguments, option.location)
    elif option.name == "nbd-server":
        _nbd_server(engine, option.arg, option.location)
    elif option.name == "chardev":
        chardevs.add_chardev(option.arg, option.location)
    elif option.name == "monitor":
        chardevs.add_monitor(option.arg, option.location)
    elif option.name == "daemonize":
        raise Unsupported("--daemonize is not supported (run it in the background instead)")
    elif option.name == "trace":
        raise Unsupported("tracing is not supported", option.location)
    else:  # scan_argv only yields the names above
        raise AssertionError(option.name)


def run_command_line(argv: list[str], engine: Any) -> QsdRun:
    """Scan ``argv``, then run each option on ``engine`` in order.

    :raise CmdlineError: QSD's message for the first bad option (printed with
        :meth:`CmdlineError.render`; exit status 1). Deprecation warnings printed
        before the refusal travel in its ``warnings`` attribute.
    """
    scanned = scan_argv(argv)
    run = QsdRun(pidfile=scanned.pidfile, answer=scanned.answer)
    if run.answer is not None:
        return run
    chardevs = Chardevs(warnings=run.warnings)
    for option in scanned.options:
        try:
            _run_one(engine, chardevs, option)
        except CmdlineError as err:
            chardevs.close()
            err.warnings = list(run.warnings)
            raise
        except TxgraphError as err:
            chardevs.close()
            failure = CmdlineError(err.desc, option.location)
            failure.warnings = list(run.warnings)
            raise failure from None
        except BaseException:
            chardevs.close()
            raise
    run.monitors = list(chardevs.monitors)
    run.chardevs = chardevs
    _publish_chardevs(engine, chardevs)
    return run


def _publish_chardevs(engine: Any, chardevs: Chardevs) -> None:
    """The chardevs appear in QOM under ``/chardevs`` (``qemu_chardev_new`` adds each there)."""
    session = engine.context.session
    for ident, path in chardevs.sockets.items():
        session.chardevs[ident] = Chardev(path, monitor=ident in chardevs.in_use)


def write_pidfile(path: str) -> None:
    """``qemu_write_pidfile``: ``PID\\n`` in a file created with mode 0600.

    :raise CmdlineError: ``cannot create PID file: Could not create 'P': <errno text>``.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as err:
        raise CmdlineError(
            f"cannot create PID file: Could not create '{path}': {os.strerror(err.errno or 0)}"
        ) from None
    try:
        os.write(fd, f"{os.getpid()}\n".encode())
    finally:
        os.close(fd)


def remove_pidfile(path: str | None) -> None:
    """QSD removes its PID file when it exits."""
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass
