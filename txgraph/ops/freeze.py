"""Frozen backing chains: ``bdrv_freeze_backing_chain`` and its two companions (block.c).

A frozen link (``BdrvChild.frozen``) cannot be changed by reopen, replace or
snapshot (reference/qemu-jobs.md §4). Jobs freeze the chain they work on, and
so does a ``copy-on-read`` filter with a ``bottom`` (``cor_open``), from
itself down to the bottom. The walk goes from ``top`` along
``bdrv_filter_or_cow_child`` and stops *at* ``base``: the link into ``base``
is frozen, the links below it are not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from txgraph.errors import BlockError
from txgraph.model.node import Edge
from txgraph.ops.query import filter_or_cow_edge
from txgraph.ops.session import Session
from txgraph.ops.undo_log import Transaction

__all__ = [
    "chain_links",
    "freeze_backing_chain",
    "unfreeze_backing_chain",
    "check_chain_not_frozen",
]


def chain_links(session: Session, top: str, base: str | None) -> Iterator[tuple[str, str, Edge]]:
    """``(parent, child, edge)`` for each filter-or-COW link from ``top`` down to ``base``."""
    graph = session.graph
    cur: str | None = top
    while cur is not None and cur != base:
        found = filter_or_cow_edge(graph, cur)
        if found is None:
            return
        child, edge = found
        yield cur, child, edge
        cur = child


def check_chain_not_frozen(session: Session, top: str, base: str | None) -> None:
    """``bdrv_is_backing_chain_frozen``: no link of the chain may be frozen already."""
    for parent, child, edge in chain_links(session, top, base):
        if edge.frozen:
            raise BlockError(
                f"Cannot change '{edge.name}' link from '{parent}' to '{child}'",
                rule="F1-frozen-link",
                subjects=(parent, child),
            )


def freeze_backing_chain(session: Session, tx: Transaction, top: str, base: str | None) -> None:
    """``bdrv_freeze_backing_chain``: refuse an already frozen link or a ``never_freeze``
    child (the implicit job filters commit_top and mirror_top), then freeze them all."""
    check_chain_not_frozen(session, top, base)
    links = list(chain_links(session, top, base))
    graph = session.graph
    for _parent, child, edge in links:
        if graph.nodes[child].driver in ("commit_top", "mirror_top"):
            raise BlockError(
                f"Cannot freeze '{edge.name}' link to '{child}'",
                rule="F1-frozen-link",
                subjects=(child,),
            )
    for _parent, _child, edge in links:
        tx.set(edge, "frozen", True)


def unfreeze_backing_chain(session: Session, tx: Transaction, top: str, base: str | None) -> None:
    """``bdrv_unfreeze_backing_chain``."""
    thawed = session.graph.thawed
    for parent, _child, edge in chain_links(session, top, base):
        if edge.frozen:
            tx.set(edge, "frozen", False)
            key = (parent, edge.name)
            if key not in thawed:
                thawed.add(key)
                tx.undo(_discarder(thawed, key))


def _discarder(thawed: set[tuple[str, str]], key: tuple[str, str]) -> Callable[[], None]:
    def undo() -> None:
        thawed.discard(key)

    return undo
