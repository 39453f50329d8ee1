"""Driver specification of ``quorum`` (block/quorum.c).

Its children ``children.N`` are opened from an array, not named in the spec
(:mod:`txgraph.ops.drivers.quorum`); it has no reopen handler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from txgraph.model.drivers.spec import DriverSpec

if TYPE_CHECKING:
    from txgraph.model.graph import BlockGraph

__all__ = ["SPECS"]


def _gather_quorum(
    graph: BlockGraph, name: str, full: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """``quorum_gather_child_options``: the children as a list, in index order."""
    kids = sorted(
        ((e.name, c) for c, e in graph.children(name) if e.name.startswith("children.")),
        key=lambda ec: int(ec[0].split(".")[1]),
    )
    return {"children": [full(c) for _n, c in kids]}


#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
    DriverSpec(
        "quorum",
        "other",
        reopenable=False,
        options=frozenset({"vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern"}),
        strong_opts=frozenset({"vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern"}),
        perm_family="quorum",
        gather_child_options=_gather_quorum,
    ),
)
