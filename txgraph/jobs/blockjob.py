"""A block job's place in the graph: its vertex, its node children and its BlockBackend.

Reproduces blockjob.c's graph side: ``block_job_create`` adds the job as a
parent of its main node (``"main node"``, perm 0, shared as the driver asks),
``block_job_add_bdrv`` adds further job children (``"active node"``,
``"intermediate node"`` ...) — each a ``child_job`` edge that stays at its
node when the node is replaced, and each blocking every op on the node with
``block device is in use by block job: <type>`` — and a job that does I/O
opens an anonymous BlockBackend of its own (``blk_new_with_bs``). In
permission conflicts the job is named ``<type> job '<id>'``.
"""

from __future__ import annotations

from txgraph.jobs.job import Job
from txgraph.model.node import Backend, Edge, ParentKind
from txgraph.model.perm_bits import Perm, Role
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.session import JOB_BLK_PREFIX, Session
from txgraph.ops.undo_log import Transaction

__all__ = [
    "GraphJob",
    "job_key",
    "job_blk_key",
    "add_job_vertex",
    "add_job_child",
    "add_job_blk",
    "remove_job_blk",
    "remove_job_children",
    "remove_job_graph",
    "unref_unused",
    "default_job_id",
]


def job_key(job_id: str) -> str:
    return f"job:{job_id}"


def job_blk_key(job_id: str, role: str = "blk") -> str:
    """The graph key of one of the job's own BlockBackends (anonymous: ``an unnamed block
    device``); ``role`` tells them apart (commit has one on its top and one on its base)."""
    return f"{JOB_BLK_PREFIX}{job_id}:{role}"


def default_job_id(session: Session, node: str) -> str:
    """``block_job_create``: without ``job-id`` the ID is the node's BlockBackend name.

    qemu-storage-daemon has no named BlockBackends (exports are anonymous), so
    this is ``''`` there, which ``job_create`` then refuses as an invalid ID.
    """
    for parent, edge in session.graph.parents(node):
        backend = session.graph.backends.get(parent)
        if backend is not None and edge.parent_kind is ParentKind.ROOT and backend.name:
            return backend.name
    return ""


def add_job_vertex(session: Session, tx: Transaction, job_id: str, job_type: str) -> None:
    tx.add_backend(
        Backend(
            key=job_key(job_id),
            kind=ParentKind.JOB,
            name=job_id,
            description=f"{job_type} job '{job_id}'",
            job_type=job_type,
        )
    )


def add_job_child(
    session: Session, tx: Transaction, job_id: str, label: str, node: str, perm: Perm, shared: Perm
) -> None:
    """``block_job_add_bdrv``: one more ``child_job`` edge, then the node's perms refresh."""
    key = job_key(job_id)
    count = sum(1 for _c, e in session.graph.children(key) if e.qemu_name == label)
    name = label if count == 0 else f"{label}#{count}"
    tx.attach(
        key,
        node,
        Edge(
            name=name,
            role=Role.NONE,
            parent_kind=ParentKind.JOB,
            perm=perm,
            shared=shared,
            label=label,
        ),
    )
    refresh_perms(session, tx, [node])


def add_job_blk(
    session: Session,
    tx: Transaction,
    job_id: str,
    node: str,
    perm: Perm,
    shared: Perm,
    role: str = "blk",
) -> str:
    """``blk_new_with_bs``: one of the job's own BlockBackends on ``node``; returns its key."""
    key = job_blk_key(job_id, role)
    tx.add_backend(Backend(key=key, kind=ParentKind.ROOT, perm=perm, shared=shared))
    tx.attach(
        key,
        node,
        Edge(
            name="root",
            role=Role.FILTERED | Role.PRIMARY,
            parent_kind=ParentKind.ROOT,
            perm=perm,
            shared=shared,
        ),
    )
    refresh_perms(session, tx, [node])
    tx.rt.open_backend(key)
    return key


def remove_job_blk(session: Session, tx: Transaction, job_id: str, role: str = "blk") -> str | None:
    """``blk_unref`` of one of the job's BlockBackends (if it still has it); returns the
    node it was on."""
    key = job_blk_key(job_id, role)
    if key not in session.graph.backends:
        return None
    found = session.graph.child_edge(key, "root")
    if found is not None:
        tx.detach(key, "root")
    tx.remove_backend(key)
    tx.rt.close_backend(key)
    if found is None:
        return None
    refresh_perms(session, tx, [found[0]])
    return found[0]


def remove_job_children(session: Session, tx: Transaction, job_id: str) -> list[str]:
    """``block_job_remove_all_bdrv``: the job's child edges go (the vertex stays until the
    job is freed); returns the nodes they held."""
    key = job_key(job_id)
    held: list[str] = []
    if key in session.graph.backends:
        for child, edge in session.graph.children(key):
            tx.detach(key, edge.name)
            held.append(child)
        refresh_perms(session, tx, [c for c in held if c in session.graph.nodes])
    return held


def remove_job_graph(session: Session, tx: Transaction, job_id: str) -> list[str]:
    """The job lets go of the graph: its BlockBackends, its children and its vertex.

    Returns the nodes it held (callers unref the ones nothing references any more).
    """
    prefix = job_blk_key(job_id, "")
    held: list[str] = []
    for key in [k for k in session.graph.backends if k.startswith(prefix)]:
        node = remove_job_blk(session, tx, job_id, key[len(prefix) :])
        if node is not None:
            held.append(node)
    held += remove_job_children(session, tx, job_id)
    if job_key(job_id) in session.graph.backends:
        tx.remove_backend(job_key(job_id))
    return held


def unref_unused(session: Session, tx: Transaction, names: list[str]) -> None:
    """``bdrv_unref`` of the nodes that lost their last reference."""
    from txgraph.ops.blockdev import unref_node

    graph = session.graph
    for name in names:
        if name in graph.nodes and graph.refcount(name) == 0:
            unref_node(session, tx, name)


class GraphJob(Job):
    """A job that holds part of the graph: it lets go of it when it is dismissed."""

    def protect(self, session: Session, tx: Transaction, links: list[tuple[str, str, str]]) -> None:
        """Record the links the job's data depends on (the safe policy's J1 rule)."""
        tx.set(session.graph.backends[job_key(self.id)], "protects", tuple(links))

    def unprotect(self, session: Session, tx: Transaction) -> None:
        backend = session.graph.backends.get(job_key(self.id))
        if backend is not None and backend.protects:
            tx.set(backend, "protects", ())

    def release_blk(self, session: Session, tx: Transaction, role: str = "blk") -> None:
        node = remove_job_blk(session, tx, self.id, role)
        if node is not None:
            unref_unused(session, tx, [node])

    def release(self, session: Session, tx: Transaction) -> None:
        """``block_job_free``: the held nodes nothing else references close."""
        unref_unused(session, tx, remove_job_graph(session, tx, self.id))
