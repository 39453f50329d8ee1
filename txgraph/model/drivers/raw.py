"""Driver specification of the ``raw`` format (block/raw-format.c).

``offset`` and ``size`` select a window of the child; both may change or be
omitted on reopen (``raw_reopen_prepare``), and a window turns the file edge
from FILTERED into DATA (:mod:`txgraph.ops.drivers.raw`).
"""

from __future__ import annotations

from txgraph.model.drivers.spec import ChildSpec, DriverSpec
from txgraph.model.perm_bits import Role

__all__ = ["SPECS"]

#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
    DriverSpec(
        "raw",
        "format",
        options=frozenset({"offset", "size"}),
        mutable_opts=frozenset({"offset", "size"}),
        changeable_opts=frozenset({"offset", "size"}),
        strong_opts=frozenset({"offset", "size"}),
        children=(ChildSpec("file", Role.FILTERED | Role.PRIMARY),),
        perm_family="raw",
    ),
)
