"""Hand-built block graphs for the checker tests (realistic perms via compute_refresh)."""

from __future__ import annotations

from txgraph.model.graph import BlockGraph
from txgraph.model.node import Backend, BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.perm_bits import Perm, Role
from txgraph.model.perm_refresh import compute_refresh

R, W, U, S = Perm.CONSISTENT_READ, Perm.WRITE, Perm.WRITE_UNCHANGED, Perm.RESIZE
FP = Role.FILTERED | Role.PRIMARY


class GB:
    """A tiny builder: nodes, edges and backends, then ``refresh()`` for QEMU's perms."""

    def __init__(self) -> None:
        self.g = BlockGraph()

    def node(self, name: str, driver: str, rw: bool = True, **kw: object) -> str:
        self.g.add_node(BlockNode(name, driver, flags=OpenFlag.RDWR if rw else OpenFlag.NONE, **kw))  # type: ignore[arg-type]
        return name

    def edge(
        self,
        parent: str,
        child: str,
        name: str,
        role: Role,
        kind: ParentKind = ParentKind.NODE,
        perm: Perm = Perm.NONE,
        shared: Perm = R | W | U | S,
        frozen: bool = False,
    ) -> Edge:
        e = Edge(name, role, kind, perm, shared, frozen=frozen, seq=self.g.next_seq())
        e.parent_seq = e.seq
        self.g.attach(parent, child, e)
        return e

    def backend(
        self,
        key: str,
        child: str,
        perm: Perm,
        shared: Perm,
        name: str = "",
        description: str = "an unnamed block device",
    ) -> None:
        self.g.add_backend(Backend(key, ParentKind.ROOT, name, description, perm, shared))
        self.edge(key, child, "root", FP, ParentKind.ROOT, perm, shared)

    def refresh(self) -> BlockGraph:
        for ch in compute_refresh(self.g, list(self.g.nodes)):
            found = self.g.child_edge(ch.parent, ch.name)
            assert found is not None
            found[1].perm, found[1].shared = ch.perm, ch.shared
        return self.g

    def image(
        self, name: str, rw: bool = True, backing: str | None = None, driver: str = "qcow2"
    ) -> str:
        self.node(f"{name}-file", "file", rw=rw)
        self.node(name, driver, rw=rw, backing_file=f"{backing}.qcow2" if backing else "")
        self.edge(name, f"{name}-file", "file", Role.IMAGE if driver == "qcow2" else FP)
        if backing is not None:
            self.edge(name, backing, "backing", Role.COW)
        return name


def chain(export: bool = True) -> GB:
    """export(writable) -> top(rw) -> mid(ro) -> base(ro), each qcow2 over its file."""
    b = GB()
    b.image("base", rw=False)
    b.image("mid", rw=False, backing="base")
    b.image("top", backing="mid")
    if export:
        b.backend("bb:0", "top", R | W, R | W | U)
    b.refresh()
    return b
