"""The finite space of parent contexts and roles the permission proofs range over.

A child-permission formula is a function of (driver family, parent flags, blkdebug
options, quorum option, edge role) and of the parent's cumulative (perm, shared).
The first group is finite; the proofs enumerate it and leave (perm, shared)
symbolic (or enumerate all 16 x 16 values).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from txgraph.model.child_perms import ChildPermContext
from txgraph.model.drivers import DRIVER_SPECS
from txgraph.model.perm_bits import Perm, Role

FAMILIES = ("default", "raw", "copy-on-read", "quorum", "blkdebug", "crypto")

#: every role a driver spec assigns, plus the ones the graph code assigns itself
ROLES: tuple[Role, ...] = tuple(
    sorted(
        {c.role for s in DRIVER_SPECS.values() for c in s.children}
        | {
            Role.COW,
            Role.NONE,
            Role.DATA | Role.PRIMARY,
            Role.METADATA | Role.PRIMARY,
            Role.DATA,
            Role.METADATA,
            Role.IMAGE,
            Role.FILTERED | Role.PRIMARY,
        },
        key=int,
    )
)

#: blkdebug options: none, every single bit, all bits. The options act bitwise and
#: last (perm | take, shared & ~unshare), so these cover every bit position.
_OPTS = (Perm.NONE, Perm.CONSISTENT_READ, Perm.WRITE, Perm.WRITE_UNCHANGED, Perm.RESIZE, Perm(0xF))


def contexts() -> Iterator[tuple[ChildPermContext, Role]]:
    for family in FAMILIES:
        for writable, inactive, no_io in itertools.product((False, True), repeat=3):
            base = {
                "family": family,
                "parent_writable": writable,
                "parent_inactive": inactive,
                "parent_no_io": no_io,
            }
            if family == "blkdebug":
                for take, unshare in itertools.product(_OPTS, _OPTS):
                    yield (
                        ChildPermContext(**base, take_perms=take, unshare_perms=unshare),
                        Role.FILTERED | Role.PRIMARY,
                    )  # type: ignore[arg-type]
            elif family == "quorum":
                for rc in (False, True):
                    yield ChildPermContext(**base, rewrite_corrupted=rc), Role.DATA  # type: ignore[arg-type]
            else:
                for role in ROLES:
                    yield ChildPermContext(**base), role  # type: ignore[arg-type]
