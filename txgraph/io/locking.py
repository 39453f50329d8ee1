"""QEMU's image locking: open-file-description locks on the permission bytes.

Reproduces file-posix's ``raw_apply_lock_bytes`` / ``raw_check_lock_bytes`` /
``raw_handle_perm_lock`` (reference/qemu-graph.md §2.5): while an fd *holds*
permission bit i it keeps a shared lock on byte 100+i; while it does *not
share* bit i it keeps a shared lock on byte 200+i. Before taking a permission
it tests that nobody locks the matching "unshared" byte, and before unsharing
one that nobody holds it. Locks belong to the open file description, so two
nodes on one file conflict inside one process exactly as two processes do —
and txgraph interoperates with real qemu-img/qemu-io/QSD holding the same file.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from txgraph.errors import BlockError

__all__ = ["LockState", "prepare_perm", "relock"]

_PERM_BASE = 100
_SHARED_BASE = 200
_BITS = 4
_NAMES = ("consistent read", "write", "write unchanged", "resize")
_ALL = (1 << _BITS) - 1


@dataclass
class LockState:
    """What one fd currently locks: the bits of perm held and of shared refused."""

    perm: int = 0
    shared: int = _ALL
    locked_perm: int = 0
    locked_unshared: int = 0


def _flock(fd: int, kind: int, offset: int) -> bytes:
    # struct flock on Linux x86_64: short type, short whence, off_t start, off_t len, pid_t pid
    return struct.pack("hhqqi4x", kind, os.SEEK_SET, offset, 1, 0)


def _lock(fd: int, offset: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fd, fcntl.F_RDLCK, offset))


def _unlock(fd: int, offset: int) -> None:
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, _flock(fd, fcntl.F_UNLCK, offset))


def _locked_by_other(fd: int, offset: int) -> bool:
    """``qemu_lock_fd_test`` for an exclusive lock: does any other description hold the byte?"""
    res = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _flock(fd, fcntl.F_WRLCK, offset))
    kind: int = struct.unpack("hhqqi4x", res)[0]
    return kind != fcntl.F_UNLCK


def _apply(fd: int, state: LockState, perm_bits: int, unshared_bits: int, unlock: bool) -> None:
    for i in range(_BITS):
        bit = 1 << i
        if perm_bits & bit and not state.locked_perm & bit:
            _lock(fd, _PERM_BASE + i)
            state.locked_perm |= bit
        elif unlock and state.locked_perm & bit and not perm_bits & bit:
            _unlock(fd, _PERM_BASE + i)
            state.locked_perm &= ~bit
    for i in range(_BITS):
        bit = 1 << i
        if unshared_bits & bit and not state.locked_unshared & bit:
            _lock(fd, _SHARED_BASE + i)
            state.locked_unshared |= bit
        elif unlock and state.locked_unshared & bit and not unshared_bits & bit:
            _unlock(fd, _SHARED_BASE + i)
            state.locked_unshared &= ~bit


def _check(fd: int, perm: int, shared: int) -> None:
    for i in range(_BITS):
        bit = 1 << i
        if perm & bit and _locked_by_other(fd, _SHARED_BASE + i):
            raise BlockError(f'Failed to get "{_NAMES[i]}" lock', rule="P6-image-lock")
    for i in range(_BITS):
        bit = 1 << i
        if not shared & bit and _locked_by_other(fd, _PERM_BASE + i):
            raise BlockError(f'Failed to get shared "{_NAMES[i]}" lock', rule="P6-image-lock")


def prepare_perm(fd: int, state: LockState, perm: int, shared: int) -> Callable[[], None] | None:
    """Take the locks for (perm, shared) or raise QEMU's lock error; return the undo.

    A pure loosening cannot conflict and is applied without a check (QEMU
    skips the prepare step for it too).
    """
    old_perm, old_shared = state.perm, state.shared
    if (old_perm | perm) == old_perm and (old_shared & shared) == old_shared:
        if (perm, shared) == (old_perm, old_shared):
            return None
    else:
        _apply(fd, state, old_perm | perm, (~old_shared | ~shared) & _ALL, unlock=False)
        try:
            _check(fd, perm, shared)
        except BlockError:
            _apply(fd, state, old_perm, ~old_shared & _ALL, unlock=True)
            raise
    _apply(fd, state, perm, ~shared & _ALL, unlock=True)
    state.perm, state.shared = perm, shared

    def undo() -> None:
        _apply(fd, state, old_perm, ~old_shared & _ALL, unlock=True)
        state.perm, state.shared = old_perm, old_shared

    return undo


def relock(fd: int, state: LockState) -> LockState:
    """Take ``state``'s locks on a new fd (after a reopen replaced the descriptor)."""
    fresh = LockState(perm=state.perm, shared=state.shared)
    _apply(fd, fresh, state.perm, ~state.shared & _ALL, unlock=False)
    return fresh
