"""Block exports: nbd-server-start/-stop, block-export-add/-del, query-block-exports.

Reproduces ``qmp_nbd_server_start``, ``blk_exp_add`` + ``nbd_export_create``
and ``qmp_block_export_del`` (block/export/export.c, nbd/server.c): an export
is an anonymous BlockBackend whose ``root`` edge takes consistent-read (and
write when writable) and shares everything but resize, so the usual
permission rules decide whether a node can be exported.

The model's backend ``bb:export:<id>`` has a data-plane twin, a Runtime
BlockBackend of the same key, created and removed by the transaction's delta;
the NBD server (owned by the Session, above the data plane) serves each
export through it. Its ``root`` follows every graph change like any other
edge, so ``query-block-exports`` (read from the model) and the guest's I/O
always name the same node.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from txgraph.errors import BlockError
from txgraph.model.names import id_wellformed
from txgraph.model.node import Backend, Edge, ParentKind
from txgraph.model.perm_bits import PERM_ALL, Perm, Role
from txgraph.ops.open import lookup_bs
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

__all__ = [
    "Export",
    "nbd_server_start",
    "nbd_server_stop",
    "stage_block_export_add",
    "stage_block_export_del",
    "query_block_exports",
    "export_backend_key",
    "export_node",
    "find_export_backend",
]


@dataclass(frozen=True)
class Export:
    """A block export (QEMU's ``BlockExport``); the node it serves is its backend's root edge."""

    id: str
    type: str
    name: str
    writable: bool


def export_backend_key(export_id: str) -> str:
    return f"bb:export:{export_id}"


def export_node(session: Session, export_id: str) -> str | None:
    """The node an export serves now (``blk_bs(exp->blk)``), from the model."""
    found = session.graph.child_edge(export_backend_key(export_id), "root")
    return found[0] if found is not None else None


def _nbd(session: Session) -> Any:
    return session.nbd


def nbd_server_start(session: Session, arguments: dict[str, Any]) -> None:
    """``nbd-server-start``: TLS is not available in txgraph and is refused clearly.

    The credentials are looked up first, as ``nbd_get_tls_creds`` does, so a
    wrong id gets QEMU's text; ``tls-authz`` without ``tls-creds`` is stored and
    never used by QEMU, so it changes nothing here either.
    """
    if "tls-creds" in arguments:
        creds = arguments["tls-creds"]
        obj = session.objects.get(creds)
        if obj is None:
            raise BlockError(f"No TLS credentials with id '{creds}'")
        if not obj.qom_type.startswith("tls-creds"):
            raise BlockError(f"Object with id '{creds}' is not TLS credentials")
        raise BlockError("TLS is not supported by the txgraph NBD server")
    _nbd(session).start(arguments["addr"])


def nbd_server_stop(session: Session) -> None:
    """``nbd-server-stop``: the NBD exports go away with the server (their backends too)."""
    server = _nbd(session)
    if not server.running:
        raise BlockError("NBD server not running")
    with session.transaction() as tx:
        for export in [e for e in session.exports.values() if e.type == "nbd"]:
            _detach_export(session, tx, export)
    server.stop()


def stage_block_export_add(session: Session, tx: Transaction, args: dict[str, Any]) -> None:
    """``blk_exp_add`` then ``nbd_export_create``, checks in their order."""
    export_id = args["id"]
    if not id_wellformed(export_id):
        raise BlockError("Invalid block export id")
    if export_id in session.exports:
        raise BlockError(f"Block export id '{export_id}' is already in use")
    if args["type"] != "nbd":
        raise BlockError("No driver found for the requested export type")
    node_name = lookup_bs(session, None, args["node-name"])
    writable = bool(args.get("writable", False))
    node = session.graph.nodes[node_name]
    if writable and node.read_only:
        raise BlockError("Cannot export read-only node as writable")
    perm = Perm.CONSISTENT_READ | (Perm.WRITE if writable else Perm.NONE)
    key = export_backend_key(export_id)
    tx.add_backend(Backend(key=key, kind=ParentKind.ROOT, perm=perm, shared=PERM_ALL))
    tx.attach(
        key,
        node_name,
        Edge(
            name="root",
            role=Role.FILTERED | Role.PRIMARY,
            parent_kind=ParentKind.ROOT,
            perm=perm,
            shared=PERM_ALL,
        ),
    )
    refresh_perms(session, tx, [node_name])
    server = _nbd(session)
    if not server.running:
        raise BlockError("NBD server not running")
    name = args.get("name", node_name)
    if len(name.encode()) > 4096:
        raise BlockError(f"export name '{name}' too long")
    if any(e.name == name for e in session.exports.values()):
        raise BlockError(f"NBD server already has export named '{name}'")
    # NBD does not follow a resize while serving, so nobody may resize the node.
    backend = session.graph.backends[key]
    tx.set(backend, "shared", PERM_ALL & ~Perm.RESIZE)
    edge = session.graph.child_edge(key, "root")
    assert edge is not None
    tx.set_edge_perm(key, "root", perm, PERM_ALL & ~Perm.RESIZE)
    refresh_perms(session, tx, [node_name])
    tx.rt.open_backend(key)
    # The server learns of the export once its backend exists (after the delta).
    description = args.get("description")
    tx.on_commit(lambda: server.add_export(name, None, writable, description, backend=key))
    export = Export(export_id, "nbd", name, writable)
    session.exports[export_id] = export
    tx.undo(lambda: session.exports.pop(export_id, None))


def stage_block_export_del(session: Session, tx: Transaction, args: dict[str, Any]) -> None:
    """``qmp_block_export_del``: safe mode refuses while clients are connected."""
    export_id = args["id"]
    export = session.exports.get(export_id)
    if export is None:
        raise BlockError(f"Export '{export_id}' is not found")
    mode = args.get("mode", "safe")
    server = _nbd(session)
    server.check_remove(export.name, mode)
    _detach_export(session, tx, export)
    # Only once the transaction commits do its clients go (QEMU: blk_exp_request_shutdown).
    tx.on_commit(lambda: server.remove_export(export.name, "hard"))
    tx.on_commit(lambda: session.emit_event("BLOCK_EXPORT_DELETED", {"id": export_id}))


def _detach_export(session: Session, tx: Transaction, export: Export) -> None:
    key = export_backend_key(export.id)
    child, _edge = tx.detach(key, "root")
    tx.remove_backend(key)
    tx.rt.close_backend(key)
    del session.exports[export.id]
    tx.undo(lambda: session.exports.__setitem__(export.id, export))
    try:
        refresh_perms(session, tx, [child])
    except BlockError:
        pass  # dropping a user only loosens requirements (bdrv_root_unref_child)
    # blk_unref drops the backend's reference: a node nobody else holds (an implicitly
    # opened child whose parent was deleted meanwhile) goes with it (bdrv_unref)
    from txgraph.ops.blockdev import unref_node

    if child in session.graph.nodes:
        unref_node(session, tx, child)


def query_block_exports(session: Session) -> list[dict[str, Any]]:
    """``qmp_query_block_exports``: QEMU prepends while walking, so the newest comes first."""
    return [
        {
            "type": e.type,
            "id": e.id,
            "node-name": export_node(session, e.id),
            "shutting-down": False,
        }
        for e in reversed(list(session.exports.values()))
    ]


def find_export_backend(session: Session, export_id: str) -> str | None:
    """``blk_by_export_id``: the graph key of an export's BlockBackend, if the export exists."""
    if export_id not in session.exports:
        return None
    key = export_backend_key(export_id)
    return key if key in session.graph.backends else None
