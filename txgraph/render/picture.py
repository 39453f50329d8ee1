"""What a picture of a block graph shows, taken from the model in QEMU's vocabulary.

A :class:`Picture` is the drawable content of one graph state: the nodes with
their driver, read-only mode, filename and how they came to exist (named by the
user, opened implicitly for a parent as ``bdrv_open_inherit`` does for
``file``/``backing`` references, or inserted implicitly by a job), the parents
that are not nodes (exports, devices, jobs: QEMU's BlockBackends and job
parents, drawn as in ``x-debug-query-block-graph``), and every edge with its
child name, ``perm``/``shared-perm`` and whether a job froze it
(``bdrv_freeze_backing_chain``).

:func:`changes` compares two pictures the way a plan step changes a graph, so
the renderers can highlight what a step adds, removes or alters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from txgraph.model.graph import BlockGraph
from txgraph.model.node import ParentKind
from txgraph.model.perm_bits import perm_list
from txgraph.ops.filenames import refresh_filename

__all__ = [
    "NodeView",
    "ParentView",
    "EdgeView",
    "Picture",
    "Changes",
    "StepPictures",
    "StepRecorder",
    "picture_of",
    "changes",
]


@dataclass(frozen=True)
class NodeView:
    """One block node (``BlockDriverState``)."""

    name: str
    driver: str
    read_only: bool
    filename: str
    #: opened for a parent's reference instead of by its own blockdev-add
    implicit_open: bool
    #: a job filter inserted without a filter-node-name (hidden in QEMU's queries)
    job_implicit: bool


@dataclass(frozen=True)
class ParentView:
    """A parent that is not a node: export, device (BlockBackend) or job."""

    key: str
    kind: str
    label: str


@dataclass(frozen=True)
class EdgeView:
    """One ``BdrvChild``: ``parent --name--> child``."""

    parent: str
    name: str
    child: str
    perm: tuple[str, ...]
    shared: tuple[str, ...]
    frozen: bool

    @property
    def key(self) -> str:
        return f"{self.parent}/{self.name}"


@dataclass(frozen=True)
class Picture:
    nodes: dict[str, NodeView]
    parents: dict[str, ParentView]
    edges: dict[str, EdgeView]


@dataclass
class Changes:
    """What differs between two pictures, by node name and by edge key (``parent/name``)."""

    nodes_added: set[str] = field(default_factory=set)
    nodes_removed: set[str] = field(default_factory=set)
    nodes_changed: set[str] = field(default_factory=set)
    edges_added: set[str] = field(default_factory=set)
    edges_removed: set[str] = field(default_factory=set)
    edges_changed: set[str] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return not (
            self.nodes_added
            or self.nodes_removed
            or self.nodes_changed
            or self.edges_added
            or self.edges_removed
            or self.edges_changed
        )


def _parent_view(graph: BlockGraph, key: str) -> ParentView:
    backend = graph.backends[key]
    if key.startswith("bb:export:"):
        return ParentView(key, "export", f"export {key[len('bb:export:') :]}")
    if backend.kind is ParentKind.JOB:
        return ParentView(key, "job", f"job {backend.name}")
    return ParentView(
        key, "device", f"device {backend.name}" if backend.name else backend.description
    )


def picture_of(graph: BlockGraph) -> Picture:
    """The picture of ``graph`` as it is now (filenames refreshed as QEMU's queries do)."""
    nodes: dict[str, NodeView] = {}
    for name, node in graph.nodes.items():
        refresh_filename(graph, name)
        nodes[name] = NodeView(
            name,
            node.driver,
            node.read_only,
            node.filename,
            implicit_open=node.inherits_from is not None and not node.monitor_owned,
            job_implicit=node.implicit,
        )
    parents = {key: _parent_view(graph, key) for key in graph.backends}
    edges: dict[str, EdgeView] = {}
    for parent, child, edge in graph.edges():
        view = EdgeView(
            parent,
            edge.qemu_name,
            child,
            tuple(perm_list(edge.perm)),
            tuple(perm_list(edge.shared)),
            edge.frozen,
        )
        edges[view.key] = view
    return Picture(nodes, parents, edges)


def changes(before: Picture, after: Picture) -> Changes:
    """The nodes and edges a step added, removed or changed (an edge that moved is changed)."""
    out = Changes()
    out.nodes_added = set(after.nodes) - set(before.nodes)
    out.nodes_removed = set(before.nodes) - set(after.nodes)
    out.nodes_changed = {
        n for n in set(before.nodes) & set(after.nodes) if before.nodes[n] != after.nodes[n]
    }
    out.edges_added = set(after.edges) - set(before.edges)
    out.edges_removed = set(before.edges) - set(after.edges)
    out.edges_changed = {
        e for e in set(before.edges) & set(after.edges) if before.edges[e] != after.edges[e]
    }
    return out


@dataclass(frozen=True)
class StepPictures:
    """The graph just before and just after one plan step."""

    before: Picture
    after: Picture


class StepRecorder:
    """A ``verify_plan`` observer that keeps the picture before and after every step.

    Owned by the thread running the dry run; nothing else touches it.
    """

    def __init__(self) -> None:
        self._before: dict[int, Picture] = {}
        self.steps: dict[int, StepPictures] = {}

    def __call__(self, index: int, phase: str, graph: BlockGraph) -> None:
        if phase == "before":
            self._before[index] = picture_of(graph)
        else:
            self.steps[index] = StepPictures(self._before.pop(index), picture_of(graph))
