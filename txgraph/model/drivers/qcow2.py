"""Driver specification of ``qcow2`` (block/qcow2.c).

The options ``qcow2_update_options_prepare`` accepts on open and reopen
(``qcow2_runtime_opts``: lazy refcounts, discard passing, overlap checks and the
cache sizes) are both the mutable and the changeable set; ``encrypt.*`` and the
external data file are open-only.
"""

from __future__ import annotations

from txgraph.model.drivers.spec import ChildSpec, DriverSpec
from txgraph.model.perm_bits import Role

__all__ = ["SPECS"]

_QCOW2_MUTABLE = frozenset(
    {
        "lazy-refcounts",
        "pass-discard-request",
        "pass-discard-snapshot",
        "pass-discard-other",
        "overlap-check",
        "overlap-check.template",
        "overlap-check.main-header",
        "overlap-check.active-l1",
        "overlap-check.active-l2",
        "overlap-check.refcount-table",
        "overlap-check.refcount-block",
        "overlap-check.snapshot-table",
        "overlap-check.inactive-l1",
        "overlap-check.inactive-l2",
        "overlap-check.bitmap-directory",
        "cache-size",
        "l2-cache-size",
        "l2-cache-entry-size",
        "refcount-cache-size",
        "cache-clean-interval",
    }
)

#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
    DriverSpec(
        "qcow2",
        "format",
        supports_backing=True,
        options=_QCOW2_MUTABLE | frozenset({"encrypt.", "data-file", "data-file."}),
        mutable_opts=_QCOW2_MUTABLE,
        changeable_opts=_QCOW2_MUTABLE,
        strong_opts=frozenset({"encrypt.key-secret"}),
        flat_opts=frozenset({"encrypt."}),
        children=(
            ChildSpec("file", Role.IMAGE),
            ChildSpec("data-file", Role.DATA, required=False),
        ),
        can_compress=True,
    ),
)
