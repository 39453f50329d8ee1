"""What QEMU's queries do not show about an imported graph, inferred from what they do.

Used by :mod:`txgraph.plan.importer`: the role of every edge (``BdrvChildRole``,
from the parent's driver and the edge name; a raw window's file edge is DATA),
the frozen links of running jobs and which job filters are implicit. Each
inference names the QEMU function whose result it reconstructs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from txgraph.model.drivers import driver_spec
from txgraph.model.graph import BlockGraph
from txgraph.model.node import ParentKind
from txgraph.model.perm_bits import Role
from txgraph.ops.query import filter_or_cow_edge
from txgraph.ops.session import Session

__all__ = ["infer_role", "windowed", "freeze_job_chains", "AUTO_NAME"]

#: QEMU's automatic node names (``#block`` + counter + two random digits)
AUTO_NAME = re.compile(r"#block(\d+)\d\d\Z")


def infer_role(
    parent_driver: str | None, parent_kind: ParentKind, edge: str, sibling_edges: Iterable[str]
) -> Role:
    """The BdrvChildRole QEMU gives ``edge`` of a parent with ``parent_driver`` (§1.3)."""
    if parent_kind is ParentKind.JOB:
        return Role.NONE
    if parent_kind is ParentKind.ROOT:
        return Role.FILTERED | Role.PRIMARY
    spec = driver_spec(parent_driver or "")
    if edge == "backing":
        return Role.FILTERED | Role.PRIMARY if spec is not None and spec.is_filter else Role.COW
    if edge.startswith("children."):
        return Role.DATA
    if spec is not None:
        child = spec.child(edge)
        if child is not None:
            if spec.name == "qcow2" and edge == "file" and "data-file" in sibling_edges:
                return Role.METADATA | Role.PRIMARY
            return child.role
    return Role.IMAGE if edge == "file" else Role.DATA


def windowed(graph: BlockGraph, name: str) -> bool:
    """A raw node with an ``offset``/``size`` window (read back from its json: filename)."""
    explicit = graph.nodes[name].explicit
    return "size" in explicit or bool(explicit.get("offset", 0))


#: the filters block jobs insert (stream: copy-on-read; commit: commit_top; mirror and
#: active commit: mirror_top); a job's frozen chain starts at one of them
_JOB_FILTERS = ("copy-on-read", "commit_top", "mirror_top")


def freeze_job_chains(session: Session) -> None:
    """The frozen links of running jobs, which no query shows (``bdrv_freeze_backing_chain``).

    Every job freezes the chain it works on from its filter down, and holds an
    edge (``block_job_add_bdrv``) to each node of it: stream from its
    copy-on-read filter through the active and intermediate nodes, commit from
    commit_top through the intermediate nodes into ``base``, active commit from
    mirror_top down to ``base``. A plain mirror holds none of its source's
    chain, so nothing is frozen for it. So: from each job filter that the job
    holds or that sits on a node it holds, walk ``bdrv_filter_or_cow_child``
    and freeze each link whose child the job holds, up to the first it does not.
    """
    graph = session.graph
    for key, backend in graph.backends.items():
        if backend.kind is not ParentKind.JOB:
            continue
        held = {child for child, _edge in graph.children(key)}
        for name, node in graph.nodes.items():
            if node.driver not in _JOB_FILTERS:
                continue
            below = filter_or_cow_edge(graph, name)
            if name not in held and (below is None or below[0] not in held):
                continue
            _mark_implicit(session, name)
            links: list[tuple[str, str, str]] = []
            cur: str | None = name
            while cur is not None:
                found = filter_or_cow_edge(graph, cur)
                if found is None or found[0] not in held:
                    break
                found[1].frozen = True
                links.append((cur, found[1].name, found[0]))
                cur = found[0]
            # what the safe policy's J1 rule keeps the job's data from losing
            backend.protects = (*backend.protects, *links)


def _mark_implicit(session: Session, name: str) -> None:
    """A job filter opened without a filter-node-name is implicit (``bs->implicit``):
    QEMU shows it by giving it its child's filename (``bdrv_refresh_filename``)."""
    graph = session.graph
    node = graph.nodes[name]
    children = graph.children(name)
    if len(children) == 1 and AUTO_NAME.match(name):
        child = graph.nodes[children[0][0]]
        node.implicit = node.filename == child.filename
