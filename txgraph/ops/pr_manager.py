"""The ``pr-manager-helper`` QOM object and the ``pr-manager`` option of file nodes.

Reproduces QEMU 7.2's scsi/pr-manager-helper.c and scsi/pr-manager.c as far
as the storage daemon shows them: ``object-add`` connects to the helper's
Unix socket at once (``pr_manager_helper_complete`` ->
``pr_manager_helper_initialize``: connect, read the helper's 4-byte feature
word, answer with 0) and fails with QEMU's texts when nobody listens; the
connection stays open while the object lives (``PR_MANAGER_STATUS_CHANGED``
is emitted once connected). ``pr_manager_lookup`` is what ``raw_open_common``
calls for ``pr-manager=ID`` before it opens the file, so an unknown or
wrong-typed id wins over every error of the file itself (``host_device``'s
device check included). QEMU lets a manager in use be deleted (file nodes
only use it for SG_IO); so does txgraph.

Ownership: the socket belongs to its :class:`PrManagerObject`; it is touched
only by object-add/-del, which run one at a time on the session (QMP
commands are serialised), and closed by :meth:`PrManagerObject.close`.
"""

from __future__ import annotations

import errno as E
import os
import select
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from txgraph.errors import BlockError, OpenError
from txgraph.io.hostpath import host_path
from txgraph.ops.session import QomObject, Session

__all__ = ["PR_TYPES", "PrManagerObject", "pr_helper_connect", "pr_manager_lookup"]

PR_TYPES = frozenset({"pr-manager-helper"})
#: sizeof(struct sockaddr_un.sun_path)
_SUN_PATH = 108
#: the deadline of the feature handshake (QEMU blocks; txgraph never waits unbounded)
HANDSHAKE_TIMEOUT = 10.0


@dataclass
class PrManagerObject(QomObject):
    """A connected ``pr-manager-helper``."""

    sock: socket.socket | None = field(default=None, repr=False)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    """``qio_channel_read_all`` with a deadline (poll, not select: fds may exceed 1024)."""
    buf = b""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise BlockError(f"Unable to read from socket: {os.strerror(E.ETIMEDOUT)}")
        try:
            chunk = sock.recv(n - len(buf))
        except OSError as err:
            raise BlockError(
                f"Unable to read from socket: {os.strerror(err.errno or E.EIO)}"
            ) from None
        if not chunk:
            raise BlockError("Unexpected end-of-file before all data were read")
        buf += chunk
    return buf


def pr_helper_connect(session: Session, obj_id: str, props: dict[str, Any]) -> PrManagerObject:
    """``pr_manager_helper_complete``: connect and negotiate, or QEMU's error."""
    path = props.get("path")
    if not isinstance(path, str):
        raise BlockError("Parameter 'path' is missing")
    raw = host_path(path)
    if len(raw) > _SUN_PATH:
        raise BlockError(f"UNIX socket path '{path}' is too long")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            sock.connect(raw)
        except OSError as err:
            raise BlockError(
                f"Failed to connect to '{path}': {os.strerror(err.errno or E.ECONNREFUSED)}"
            ) from None
        sock.setblocking(False)
        _recv_exact(sock, 4, time.monotonic() + HANDSHAKE_TIMEOUT)
        try:
            sock.setblocking(True)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            sock.sendall(b"\0\0\0\0")
        except OSError as err:
            raise BlockError(
                f"Unable to write to socket: {os.strerror(err.errno or E.EIO)}"
            ) from None
    except BaseException:
        sock.close()
        raise
    session.emit_event("PR_MANAGER_STATUS_CHANGED", {"id": obj_id, "connected": True})
    return PrManagerObject(obj_id, "pr-manager-helper", dict(props), sock=sock)


def pr_manager_lookup(session: Session, obj_id: str) -> None:
    """``pr_manager_lookup``: the id must name a persistent reservation manager."""
    from txgraph.ops.qom import objects_table

    objects_table(session)  # the lookup goes through object_get_objects_root
    obj = session.objects.get(obj_id)
    if obj is None:
        raise OpenError(f"No persistent reservation manager with id '{obj_id}'")
    if not isinstance(obj, PrManagerObject):
        raise OpenError(f"Object with id '{obj_id}' is not a persistent reservation manager")
