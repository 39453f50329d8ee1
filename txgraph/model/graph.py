"""BlockGraph: QEMU's block graph over a networkx MultiDiGraph.

Vertices are block nodes (keyed by node-name) and non-node parents (keyed
``bb:<n>`` for BlockBackends, ``job:<id>`` for jobs; ``:`` cannot occur in a
node-name, so the key spaces never collide). Arcs run parent → child and are
keyed by the child name, so (parent, name) is unique exactly as QEMU's
``bdrv_find_child`` requires.

The graph itself is plain data with raw mutators; every change that must be
undoable goes through :class:`txgraph.ops.undo_log.Transaction`, which
records inverses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import networkx as nx

from txgraph.model.node import Backend, BlockNode, Edge, ParentKind

__all__ = ["BlockGraph"]


class BlockGraph:
    """The node/edge structure of one block layer instance."""

    def __init__(self) -> None:
        self.g: nx.MultiDiGraph[str] = nx.MultiDiGraph()
        # networkx's raw adjacency dicts: the hot walks read them directly because the
        # public views (``pred``/``succ``) cost an object per access.
        self._pred: dict[str, dict[str, dict[str, dict[str, Any]]]] = self.g._pred  # type: ignore[attr-defined]
        self._succ: dict[str, dict[str, dict[str, dict[str, Any]]]] = self.g._succ  # type: ignore[attr-defined]
        self.nodes: dict[str, BlockNode] = {}
        self.backends: dict[str, Backend] = {}
        #: committed generation; bumped by each committed transaction
        self.generation = 0
        #: links ``(parent, child name)`` unfrozen by the open transaction
        #: (``bdrv_unfreeze_backing_chain``): their holder let go, so they may change
        self.thawed: set[tuple[str, str]] = set()
        self._seq = 0

    # -- sequence numbers ----------------------------------------------------------------
    def next_seq(self) -> int:
        """A monotonically increasing stamp for creation and attach order."""
        self._seq += 1
        return self._seq

    # -- vertices ------------------------------------------------------------------------
    def add_node(self, node: BlockNode) -> None:
        assert node.name not in self.nodes, node.name
        self.nodes[node.name] = node
        self.g.add_node(node.name)

    def remove_node(self, name: str) -> BlockNode:
        assert self.g.degree(name) == 0, f"{name} still has edges"
        self.g.remove_node(name)
        return self.nodes.pop(name)

    def add_backend(self, backend: Backend) -> None:
        assert backend.key not in self.backends, backend.key
        self.backends[backend.key] = backend
        self.g.add_node(backend.key)

    def remove_backend(self, key: str) -> Backend:
        assert self.g.degree(key) == 0, f"{key} still has edges"
        self.g.remove_node(key)
        return self.backends.pop(key)

    def is_node(self, key: str) -> bool:
        return key in self.nodes

    def node(self, name: str) -> BlockNode:
        return self.nodes[name]

    # -- edges ---------------------------------------------------------------------------
    def attach(self, parent: str, child: str, edge: Edge) -> None:
        assert (
            not self.g.has_edge(parent, child, edge.name)
            and self.child_edge(parent, edge.name) is None
        )
        self.g.add_edge(parent, child, key=edge.name, obj=edge)
        self.invalidate_filenames(parent)

    def detach(self, parent: str, name: str) -> tuple[str, Edge]:
        found = self.child_edge(parent, name)
        assert found is not None, (parent, name)
        child, edge = found
        self.g.remove_edge(parent, child, key=name)
        self.invalidate_filenames(parent)
        return child, edge

    def invalidate_filenames(self, name: str) -> None:
        """Drop the cached open options of ``name`` and of every node above it.

        A node's filename depends only on its own options and its subtree, so
        a change there dirties exactly the node and its ancestors.
        """
        stack = [name]
        while stack:
            cur = stack.pop()
            node = self.nodes.get(cur)
            if node is None or node.full_open_cache is None:
                continue
            node.full_open_cache = None
            stack.extend(self._pred[cur])

    # The adjacency dicts are read directly: these three run on every permission
    # refresh and every filename refresh, and networkx's edge views cost 10x more.
    def child_edge(self, parent: str, name: str) -> tuple[str, Edge] | None:
        """``bdrv_find_child``-style lookup: the child and edge named ``name`` of ``parent``."""
        for child, keys in self._succ[parent].items():
            data = keys.get(name)
            if data is not None:
                return child, data["obj"]
        return None

    def children(self, parent: str) -> list[tuple[str, Edge]]:
        """``bs->children`` order: newest attached first."""
        out = [
            (child, data["obj"])
            for child, keys in self._succ[parent].items()
            for data in keys.values()
        ]
        out.sort(key=lambda ce: -ce[1].seq)
        return out

    def parents(self, child: str) -> list[tuple[str, Edge]]:
        """``bs->parents`` order: newest attached first."""
        out = [
            (parent, data["obj"])
            for parent, keys in self._pred[child].items()
            for data in keys.values()
        ]
        out.sort(key=lambda pe: -pe[1].parent_seq)
        return out

    def node_parents(self, child: str) -> list[tuple[str, Edge]]:
        return [(p, e) for p, e in self.parents(child) if e.parent_kind is ParentKind.NODE]

    def refcount(self, name: str) -> int:
        """``bs->refcnt`` as far as the graph defines it: one per parent edge, one for the monitor."""
        return int(self.g.in_degree(name)) + (1 if self.nodes[name].monitor_owned else 0)

    def edges(self) -> Iterator[tuple[str, str, Edge]]:
        for parent, child, data in self.g.edges(data=True):
            yield parent, child, data["obj"]

    # -- chain helpers (block.c bdrv_filter_child & co.) ----------------------------------
    def backing_child(self, name: str) -> str | None:
        found = self.child_edge(name, "backing")
        return found[0] if found else None

    def file_child(self, name: str) -> str | None:
        found = self.child_edge(name, "file")
        return found[0] if found else None

    def has_descendant(self, root: str, target: str) -> bool:
        """``bdrv_recurse_has_child``: ``target`` is ``root`` or reachable below it."""
        if root == target:
            return True
        if not self._pred[target]:
            return False  # nothing is above target, so it cannot be below root
        return target in nx.descendants(self.g, root)

    def subtree_topological(self, roots: Iterable[str]) -> list[str]:
        """``bdrv_topological_dfs``: the union of the roots' subtrees, parents before children.

        Only block nodes are returned; QEMU refreshes permissions in this order.
        """
        order: list[str] = []
        found: set[str] = set()

        def visit(name: str) -> None:
            # Iterative post-order DFS over children (newest first, as QEMU walks
            # bs->children), then reversed: every node precedes its descendants.
            stack: list[tuple[str, Iterator[tuple[str, Edge]]]] = [
                (name, iter(self.children(name)))
            ]
            found.add(name)
            while stack:
                cur, it = stack[-1]
                for child, _edge in it:
                    if child not in found:
                        found.add(child)
                        stack.append((child, iter(self.children(child))))
                        break
                else:
                    stack.pop()
                    order.append(cur)

        for root in roots:
            if root in self.nodes and root not in found:
                visit(root)
        order.reverse()
        return order

    # -- identity ------------------------------------------------------------------------
    def state(self) -> tuple[Any, ...]:
        """A canonical, hashable description of everything in the graph."""
        nodes = tuple(sorted((n.state() for n in self.nodes.values()), key=lambda s: s[0]))
        backends = tuple(sorted((b.state() for b in self.backends.values()), key=lambda s: s[0]))
        edges = tuple(sorted((p, c, e.state()) for p, c, e in self.edges()))
        return (nodes, backends, edges, self._seq)

    def digest(self) -> str:
        """SHA-256 of :meth:`state`: equal digests mean identical graphs."""
        return hashlib.sha256(repr(self.state()).encode()).hexdigest()
