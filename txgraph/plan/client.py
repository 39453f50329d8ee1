"""A minimal synchronous QMP client for ``txgraph plan --graph-from-qmp`` and ``apply``.

Speaks the QMP wire protocol as qemu-storage-daemon and ``txgraph serve`` do
(greeting, ``qmp_capabilities``, one JSON object per line, asynchronous events
interleaved with replies, which are set aside).
"""

from __future__ import annotations

import json
import socket
from typing import Any, Protocol

from txgraph.errors import TxgraphError
from txgraph.plan.importer import GraphImport

__all__ = ["QMPClient", "QMPClientError", "QMPLike", "capture_graph", "probe_ownership"]


class QMPLike(Protocol):
    """What the capture needs of a connection: this module's client, a QSD peer, the proxy's."""

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]: ...

    def cmd(self, command: str, arguments: dict[str, Any] | None = None) -> Any: ...


class QMPClientError(TxgraphError, RuntimeError):
    """The peer refused a command the capture needs, or the connection failed."""


class QMPClient:
    def __init__(self, path: str, timeout: float = 30.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as err:
            self.sock.close()
            raise QMPClientError(f"cannot connect to QMP socket {path}: {err.strerror}") from err
        self._file = self.sock.makefile("rwb")
        self.events: list[dict[str, Any]] = []
        self.greeting = self._read()
        reply = self.execute("qmp_capabilities")
        if "error" in reply:
            raise QMPClientError(f"qmp_capabilities: {reply['error'].get('desc')}")

    def _read(self) -> dict[str, Any]:
        line = self._file.readline()
        if not line:
            raise QMPClientError("the QMP server closed the connection")
        message: dict[str, Any] = json.loads(line)
        return message

    def execute(self, command: str, arguments: dict[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self._file.write(json.dumps(msg).encode() + b"\r\n")
        self._file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            return reply

    def cmd(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        reply = self.execute(command, arguments)
        if "error" in reply:
            raise QMPClientError(f"{command}: {reply['error'].get('desc')}")
        return reply["return"]

    def close(self) -> None:
        try:
            self._file.close()
        finally:
            self.sock.close()

    def __enter__(self) -> QMPClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def capture_graph(client: QMPLike) -> GraphImport:
    """Both graph queries (plus exports, and a txgraph server's generation) in one go.

    A txgraph server answers ``x-txgraph-query-generation`` before and after
    the queries; if they differ, another client changed the graph meanwhile and
    the capture is retried, so the recorded generation belongs to the captured graph.
    """
    for _attempt in range(5):
        gen = client.execute("x-txgraph-query-generation")
        bg = client.cmd("x-debug-query-block-graph")
        nn = client.cmd("query-named-block-nodes", {"flat": True})
        ex = client.execute("query-block-exports")
        exports = ex.get("return", [])
        objects = _objects(client)
        if "error" in gen:  # QEMU / QSD: no generation to record
            jobs = client.execute("query-block-jobs").get("return", [])
            owned = probe_ownership(client, bg)
            if client.cmd("x-debug-query-block-graph") != bg:
                continue  # another client changed the graph meanwhile
            return GraphImport(bg, nn, exports, objects=objects, owned=owned, jobs=jobs)
        again = client.cmd("x-txgraph-query-generation")
        if again == gen["return"]:
            return GraphImport(
                bg,
                nn,
                exports,
                generation=int(again["generation"]),
                digest=str(again["digest"]),
                objects=objects,
            )
    raise QMPClientError("the live graph kept changing while it was captured")


_NOT_OWNED = " is not owned by the monitor"
_IN_USE = "Block device "


def probe_ownership(client: QMPLike, block_graph: dict[str, Any]) -> dict[str, bool]:
    """Which user-named nodes with a driver parent are monitor-owned, asked of QEMU itself.

    No query reveals ``bs->monitor_list``; ``qmp_blockdev_del`` does, without
    changing anything, for a node that has a parent but no BlockBackend: a node
    given inline in its parent's blockdev-add answers ``Node X is not owned by the
    monitor``, a node of its own blockdev-add ``Block device X is in use`` (its
    parent holds a second reference). A node without a driver parent is never
    probed (blockdev-del would delete it); nor is one under a BlockBackend (QEMU
    answers ``Node X is in use`` first, which tells nothing). The caller re-reads
    the graph afterwards: had a parent gone meanwhile, the capture is retried.
    """
    nodes = {n["id"]: n for n in block_graph.get("nodes", [])}
    parents: dict[Any, set[str]] = {}
    for e in block_graph.get("edges", []):
        parents.setdefault(e["child"], set()).add(str(nodes.get(e["parent"], {}).get("type")))
    out: dict[str, bool] = {}
    for gid, n in nodes.items():
        name = str(n.get("name", ""))
        kinds = parents.get(gid, set())
        if n.get("type") != "block-driver" or name.startswith("#") or not name:
            continue
        if "block-driver" not in kinds or "block-backend" in kinds:
            continue
        reply = client.execute("blockdev-del", {"node-name": name})
        desc = str(reply.get("error", {}).get("desc", ""))
        if desc.endswith(_NOT_OWNED):
            out[name] = False
        elif desc.startswith(_IN_USE):
            out[name] = True
    return out


def _objects(client: QMPLike) -> list[dict[str, Any]]:
    """Throttle groups as ``object-add`` arguments (QEMU: ``qom-list``/``qom-get``)."""
    reply = client.execute("x-txgraph-query-objects")
    if "return" in reply:
        return list(reply["return"])
    listing = client.execute("qom-list", {"path": "/objects"})
    out: list[dict[str, Any]] = []
    for entry in listing.get("return", []):
        if entry.get("type") == "child<throttle-group>":
            limits = client.cmd(
                "qom-get", {"path": f"/objects/{entry['name']}", "property": "limits"}
            )
            # QEMU reports every limit; the *-max-length ones only matter with a max.
            limits = {k: v for k, v in limits.items() if v and not k.endswith("-max-length")}
            out.append({"qom-type": "throttle-group", "id": entry["name"], "limits": limits})
    return out
