"""Driver specification of ``quorum`` (block/quorum.c).

Its children ``children.N`` are opened from an array, not named in the spec
(:mod:`txgraph.ops.drivers.quorum`); it has no reopen handler.
"""

from __future__ import annotations

from txgraph.model.drivers.spec import DriverSpec

__all__ = ["SPECS"]

#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
    DriverSpec(
        "quorum",
        "other",
        reopenable=False,
        options=frozenset({"vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern"}),
        strong_opts=frozenset({"vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern"}),
        perm_family="quorum",
    ),
)
