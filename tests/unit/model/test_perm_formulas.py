"""The per-edge permission formulas against the edges QEMU 7.2 reports.

Each case is an (edge kind, parent cumulative perms) -> (perm, shared) pair
observed with x-debug-query-block-graph on qemu-storage-daemon 7.2
(reference/qemu-graph.md §2.4); the differential suite checks the same
against the live binary, these pin the formulas themselves.
"""

from __future__ import annotations

import pytest

from txgraph.model.child_perms import ChildPermContext, child_perm
from txgraph.model.perm_bits import PERM_ALL, Perm, Role, perm_list, perm_names

R, W, U, S = Perm.CONSISTENT_READ, Perm.WRITE, Perm.WRITE_UNCHANGED, Perm.RESIZE
NONE = Perm.NONE


@pytest.mark.parametrize(
    ("family", "writable", "role", "parent", "expected"),
    [
        # rw qcow2 with no users: its metadata child is written and resized, never shared for W/S
        ("default", True, Role.IMAGE, (NONE, PERM_ALL), (R | W | S, R | U)),
        # ro qcow2 with any users
        ("default", False, Role.IMAGE, (NONE, PERM_ALL), (R, R | U)),
        # backing edge, parent unused / users share write
        ("default", True, Role.COW, (NONE, PERM_ALL), (NONE, PERM_ALL)),
        ("default", True, Role.COW, (R | W, R | W | U), (R, PERM_ALL)),
        # backing edge when the parent's users do not share write
        ("default", True, Role.COW, (R, R | U), (R, R | U)),
        # filter passes through (throttle under a writable export)
        ("default", True, Role.FILTERED | Role.PRIMARY, (R | W, R | W | U), (R | W, R | W | U)),
        # quorum children never share write or resize
        ("quorum", True, Role.DATA, (NONE, PERM_ALL), (NONE, R | U)),
        ("quorum", True, Role.DATA, (R | W, R | W | U), (R | W, R | U)),
        # vvfat's write target: write + consistent-read, only write-unchanged shared,
        # whatever the parent's users ask (vvfat_child_perm)
        ("vvfat", True, Role.DATA | Role.METADATA, (NONE, PERM_ALL), (R | W, U)),
        ("vvfat", True, Role.DATA | Role.METADATA, (R | W | S, NONE), (R | W, U)),
        # copy-on-read adds write-unchanged for populating reads
        (
            "copy-on-read",
            True,
            Role.FILTERED | Role.PRIMARY,
            (R | W, R | W | U),
            (R | W | U, R | W | U),
        ),
    ],
)
def test_formula_matches_observed_edge(
    family: str, writable: bool, role: Role, parent: tuple[Perm, Perm], expected: tuple[Perm, Perm]
) -> None:
    ctx = ChildPermContext(family=family, parent_writable=writable)
    assert child_perm(ctx, role, *parent) == expected


def test_blkdebug_take_and_unshare_child_perms() -> None:
    ctx = ChildPermContext(family="blkdebug", parent_writable=True, take_perms=W, unshare_perms=W)
    assert child_perm(ctx, Role.FILTERED | Role.PRIMARY, NONE, PERM_ALL) == (W, R | U | S)


def test_error_names_and_query_lists_follow_qemu_order() -> None:
    assert perm_names(W | S) == "write, resize"
    assert perm_names(R | U) == "consistent read, write unchanged"
    assert perm_list(R | W | S) == ["resize", "write", "consistent-read"]
