"""The two sides of a comparison: a real qemu-storage-daemon and txgraph's engine.

Both answer one QMP message with the full reply dict and never raise: a daemon
that died answers ``PeerDied`` with what it printed (QEMU's assertion text when
it aborted), an engine that raised answers ``PythonException`` with the
exception — each is a finding of its own for whoever compares.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from txgraph.peers import QSD

__all__ = ["Peer", "QSDPeer", "EnginePeer", "PeerFactory"]


class Peer(Protocol):
    """One side of the comparison."""

    label: str

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        """Run one QMP message; return the full reply dict (never raise)."""

    def send_raw(self, text: str) -> dict[str, Any] | None:
        """Send raw wire text; ``None`` when this peer cannot (the step is then not compared)."""

    def close(self) -> None:
        """Release the peer (kill the process, drop the engine)."""

    def wait_event(
        self, name: str, match: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any] | None:
        """The next event ``name`` whose data contains ``match``; None when none came in time."""

    def received_events(self) -> list[dict[str, Any]]:
        """Every event received so far, in order."""


def _start_qsd(workdir: str | None, attempts: int = 5) -> QSD:
    """Start a QSD, again when one stalls at start.

    A daemon that greets but does not answer ``qmp_capabilities`` within its start
    deadline (``TimeoutError``; seen twice within a minute in a loaded run, a stall of the
    machine rather than of QEMU) is started again; :class:`txgraph.peers.QMPProcess` has
    already reaped the stalled one.
    """
    for attempt in range(attempts):
        try:
            return QSD(workdir=workdir)
        except TimeoutError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


class QSDPeer:
    """A fresh qemu-storage-daemon 7.2 process (its working directory is the peer's)."""

    label = "qsd"
    #: what the daemon printed when it died (QEMU's assertion text), else None
    death: str | None = None

    def __init__(self, workdir: Path | None = None) -> None:
        self._qsd = _start_qsd(str(workdir) if workdir else None)

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.send_raw(json.dumps(message)) or {}

    def send_raw(self, text: str) -> dict[str, Any] | None:
        if self.death is not None:
            return {"error": {"class": "PeerDied", "desc": self.death}}
        try:
            return self._qsd.send_raw(text)
        except (RuntimeError, OSError) as exc:  # QSD died or hung: a finding in itself
            self.death = f"qemu-storage-daemon: {exc}{self._last_words()}"
            return {"error": {"class": "PeerDied", "desc": self.death}}

    def _last_words(self) -> str:
        """The daemon's output after it ended (it is killed first if it hangs)."""
        proc = self._qsd.proc
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(5)
        except OSError:
            pass
        out = proc.stdout.read().decode(errors="replace").strip() if proc.stdout else ""
        # the exit status always: a SIGSEGV prints nothing after what came before it
        return (
            f": {out} (exit status {proc.returncode})"
            if out
            else f" (exit status {proc.returncode})"
        )

    def wait_event(
        self, name: str, match: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any] | None:
        if self.death is not None:
            return None
        try:
            return self._qsd.wait_event(name, match, timeout)
        except TimeoutError:
            return None
        except (RuntimeError, OSError) as exc:
            self.death = f"qemu-storage-daemon: {exc}{self._last_words()}"
            return None

    def received_events(self) -> list[dict[str, Any]]:
        return list(self._qsd.events)

    def close(self) -> None:
        try:
            self._qsd.close()
        except OSError:  # the daemon died: the socket is already broken, the process reaped
            pass


class EnginePeer:
    """txgraph's in-process QMP engine. Exceptions become a ``PythonException`` error reply.

    Every command runs with the process working directory set to the scenario directory,
    as QSD is started there: QEMU resolves some relative names (for example a qcow2 header's
    relative ``data-file`` name, and relative ``filename`` options) against its cwd.
    """

    label = "txgraph"

    def __init__(self, workdir: Path | None = None) -> None:
        self._workdir = str(workdir) if workdir else None
        self._engine: Any = None
        self._init_error: str | None = None
        #: events delivered by the engine (from command and job threads), guarded by _cond
        self._events: list[dict[str, Any]] = []
        self._taken: set[int] = set()
        self._cond = threading.Condition()
        try:
            from txgraph.ops.session import Chardev
            from txgraph.qmp.engine import Engine

            self._engine = Engine()
            self._engine.add_event_listener(self._on_event)
            # the daemon it is compared with serves its monitor on ``--chardev socket,id=qmp0``
            # (txgraph.peers.QSD): the same chardev in QOM, at no socket of its own
            self._engine.context.session.chardevs["qmp0"] = Chardev("", monitor=True)
        except Exception:  # the engine is under construction; report, do not crash the harness
            self._init_error = traceback.format_exc(limit=3)

    def _on_event(self, message: dict[str, Any]) -> None:
        with self._cond:
            self._events.append(message)
            self._cond.notify_all()

    def wait_event(
        self, name: str, match: dict[str, Any] | None = None, timeout: float = 30.0
    ) -> dict[str, Any] | None:
        """As :meth:`txgraph.peers.QMPProcess.wait_event`, on the engine's event channel."""
        want = match or {}
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, msg in enumerate(self._events):
                    data = msg.get("data", {})
                    if (
                        i not in self._taken
                        and msg.get("event") == name
                        and all(data.get(k) == v for k, v in want.items())
                    ):
                        self._taken.add(i)
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def received_events(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events)

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        if self._engine is None:
            return {
                "error": {
                    "class": "PythonException",
                    "desc": f"Engine() failed: {self._init_error}",
                }
            }
        saved = os.getcwd()
        try:
            if self._workdir:
                os.chdir(self._workdir)
            reply: dict[str, Any] = self._engine.execute(copy.deepcopy(message))
            return reply
        except Exception as exc:
            return {"error": {"class": "PythonException", "desc": f"{type(exc).__name__}: {exc}"}}
        finally:
            os.chdir(saved)

    def send_raw(self, text: str) -> dict[str, Any] | None:
        try:
            msg = json.loads(text)
        except ValueError:
            return None
        if not isinstance(msg, dict):
            return None
        return self.execute(msg)

    def close(self) -> None:
        """Close the engine's session: nodes flush and close, image files and locks go.

        Without it the images stay open until garbage collection (and qcow2 metadata
        cached in the session never reaches the file a test then inspects).
        """
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.context.session.close()


PeerFactory = Callable[[Path], Peer]
