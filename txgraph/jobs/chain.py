"""Backing-chain walks over the model graph, as the job commands need them (block.c).

``bdrv_cow_bs``, ``bdrv_filter_bs``, ``bdrv_skip_filters``, ``bdrv_chain_contains``,
``bdrv_find_overlay`` and ``bdrv_find_backing_image``, on the committed or
staged model (never on the data plane).
"""

from __future__ import annotations

from txgraph.model.drivers import driver_spec
from txgraph.model.graph import BlockGraph
from txgraph.model.perm_bits import Role
from txgraph.ops.query import filter_or_cow_child

__all__ = [
    "cow_bs",
    "filter_bs",
    "skip_filters",
    "is_filter",
    "chain_contains",
    "find_overlay",
    "find_backing_image",
    "backing_chain_next",
]


def is_filter(graph: BlockGraph, name: str) -> bool:
    spec = driver_spec(graph.nodes[name].driver)
    return spec is not None and spec.is_filter


def cow_bs(graph: BlockGraph, name: str) -> str | None:
    """``bdrv_cow_bs``: the backing child of a non-filter."""
    if is_filter(graph, name):
        return None
    for child, edge in graph.children(name):
        if edge.role & Role.COW:
            return child
    return None


def filter_bs(graph: BlockGraph, name: str) -> str | None:
    """``bdrv_filter_bs``: the filtered child of a filter."""
    if not is_filter(graph, name):
        return None
    return filter_or_cow_child(graph, name)


def skip_filters(graph: BlockGraph, name: str | None) -> str | None:
    """``bdrv_skip_filters``."""
    while name is not None and is_filter(graph, name):
        nxt = filter_bs(graph, name)
        if nxt is None:
            break
        name = nxt
    return name


def backing_chain_next(graph: BlockGraph, name: str) -> str | None:
    """``bdrv_backing_chain_next``: the next non-filter below ``name``'s backing."""
    return skip_filters(graph, cow_bs(graph, skip_filters(graph, name) or name))


def chain_contains(graph: BlockGraph, top: str, base: str) -> bool:
    """``bdrv_chain_contains``: ``base`` is ``top`` or below it along filter-or-COW links."""
    cur: str | None = top
    while cur is not None:
        if cur == base:
            return True
        cur = filter_or_cow_child(graph, cur)
    return False


def find_overlay(graph: BlockGraph, active: str, base: str | None) -> str | None:
    """``bdrv_find_overlay``: the non-filter directly above ``base`` (or the bottom-most
    image when ``base`` is None)."""
    base = skip_filters(graph, base)
    cur = skip_filters(graph, active)
    while cur is not None:
        nxt = backing_chain_next(graph, cur)
        if nxt == base:
            return cur
        cur = nxt
    return None


def find_backing_image(graph: BlockGraph, active: str, filename: str) -> str | None:
    """``bdrv_find_backing_image``: the layer below ``active`` that ``filename`` names.

    A layer matches by its filename or by the backing string of the layer above.
    """
    cur: str | None = skip_filters(graph, active)
    while cur is not None:
        nxt = backing_chain_next(graph, cur)
        if nxt is None:
            return None
        above = graph.nodes[cur]
        node = graph.nodes[nxt]
        if filename in (above.backing_file, node.filename):
            return nxt
        cur = nxt
    return None
