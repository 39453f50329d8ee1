"""Permission bits and child roles: the vocabulary of QEMU's permission system.

The ``BLK_PERM_*`` bits with their QMP and human names, and the
``BdrvChildRole`` bits (include/block/block-common.h; reference/qemu-graph.md
§1.2, §2): each edge carries the permissions its parent needs on the child
(``perm``) and those it lets other users have (``shared``). The formulas that
compute them are in :mod:`txgraph.model.child_perms`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = [
    "Perm",
    "Role",
    "PERM_ALL",
    "perm_names",
    "perm_list",
    "fast_flag_ops",
]

_F = TypeVar("_F", bound=type[enum.Flag])


def _and(self: Any, other: Any) -> Any:
    if type(other) is type(self):
        got = self._value2member_map_.get(self._value_ & other._value_)
        if got is not None:
            return got
    return enum.Flag.__and__(self, other)


def _or(self: Any, other: Any) -> Any:
    if type(other) is type(self):
        got = self._value2member_map_.get(self._value_ | other._value_)
        if got is not None:
            return got
    return enum.Flag.__or__(self, other)


def fast_flag_ops(cls: _F) -> _F:
    """``&`` and ``|`` of two members of ``cls`` without the enum call, same results.

    ``Flag.__and__`` ends in ``cls(value)``, which looks the value up in
    ``_value2member_map_`` (where every pseudo-member is kept once made) through
    three Python frames: ~0.45 us per operation in CPython 3.11, some 10,000 of them
    in a 100-deep chain open. The same map is read here first, so the result is the
    very object ``Flag``'s own operator returns (~0.15 us); an int operand or a value
    not made yet takes ``Flag``'s path. Installed after the class statement because
    ``EnumType`` puts ``Flag``'s operators on every Flag class that lacks its own.
    """
    setattr(cls, "__and__", _and)
    setattr(cls, "__or__", _or)
    return cls


@fast_flag_ops
class Perm(enum.IntFlag):
    """BLK_PERM_* bits (include/block/block-common.h)."""

    NONE = 0
    CONSISTENT_READ = 0x1
    WRITE = 0x2
    WRITE_UNCHANGED = 0x4
    RESIZE = 0x8


PERM_ALL = Perm.CONSISTENT_READ | Perm.WRITE | Perm.WRITE_UNCHANGED | Perm.RESIZE

# QMP names (BlockPermission enum) in bit order, as QEMU's bdrv_perm_names walks them.
_PERM_QMP_NAMES: tuple[tuple[Perm, str], ...] = (
    (Perm.CONSISTENT_READ, "consistent-read"),
    (Perm.WRITE, "write"),
    (Perm.WRITE_UNCHANGED, "write-unchanged"),
    (Perm.RESIZE, "resize"),
)


# Human names (block.c's permission table) used in error messages.
_PERM_HUMAN_NAMES: tuple[tuple[Perm, str], ...] = (
    (Perm.CONSISTENT_READ, "consistent read"),
    (Perm.WRITE, "write"),
    (Perm.WRITE_UNCHANGED, "write unchanged"),
    (Perm.RESIZE, "resize"),
)


def perm_names(perm: int) -> str:
    """``bdrv_perm_names``: comma-separated human names in bit order, as in error texts."""
    return ", ".join(name for bit, name in _PERM_HUMAN_NAMES if perm & bit)


def perm_list(perm: int) -> list[str]:
    """The list x-debug-query-block-graph reports: built by prepending, so highest bit first."""
    return [name for bit, name in reversed(_PERM_QMP_NAMES) if perm & bit]


def perm_from_names(names: Iterable[str]) -> Perm:
    lookup = {name: bit for bit, name in _PERM_QMP_NAMES}
    result = Perm.NONE
    for name in names:
        result |= lookup[name]
    return result


@fast_flag_ops
class Role(enum.IntFlag):
    """BdrvChildRole bits: what a child edge is for (reference/qemu-graph.md §1.2)."""

    NONE = 0
    DATA = 1 << 0
    METADATA = 1 << 1
    FILTERED = 1 << 2
    COW = 1 << 3
    PRIMARY = 1 << 4
    IMAGE = DATA | METADATA | PRIMARY
