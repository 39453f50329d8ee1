"""The all-or-nothing proof shared by every fault-injection test.

A fault is injected before each *primitive* step of an operation in turn
(``session.fail_next_at = k``: the model edits of the undo log), and then
before each *prepare* step in turn (``session.fail_next_prepare_at = k``: the
data-plane work done before the verdict — opening a driver object, validating
a reopen, taking image locks, reading a config file, creating an image).
After every such failure these must equal what they were before the operation:

* the graph digest;
* the data plane's state (:meth:`Runtime.state`: live and prepared driver
  objects, their children, their lock bookkeeping, the BlockBackends);
* the live driver objects themselves: the same objects, with the same
  options, mode and children (an abort touches no live driver object);
* the number of drains (an abort never quiesces the data plane);
* the open file descriptors of this process on the test's image directories
  (``/proc/self/fd``; descriptors elsewhere belong to other tests' garbage and
  daemon threads, which may close theirs at any moment);
* the image locks as the kernel sees them: for every image file, which of
  QEMU's lock bytes (100+i, 200+i) some open file description holds.

This fails if a step forgets to record its inverse, an inverse restores the
wrong thing, a prepared object leaks, or a command touches the live data plane
before its commit.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Callable
from typing import Any

import pytest

from txgraph.ops.session import Session
from txgraph.ops.undo_log import InjectedFault

__all__ = ["assert_all_steps_atomic", "fingerprint", "open_fds", "image_locks"]

_LOCK_BYTES = (100, 101, 102, 103, 200, 201, 202, 203)


def open_fds(dirs: list[str]) -> list[str]:
    """What this process's descriptors on files under ``dirs`` point to (sorted multiset)."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the descriptor listdir itself used
        if any(target.startswith(d + "/") for d in dirs):
            out.append(target)
    return sorted(out)


def image_locks(paths: list[str]) -> dict[str, tuple[int, ...]]:
    """Per image file, the QEMU lock bytes some open file description holds (F_OFD_GETLK)."""
    out: dict[str, tuple[int, ...]] = {}
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            held = []
            for byte in _LOCK_BYTES:
                probe = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, byte, 1, 0)
                res = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, probe)
                if struct.unpack("hhqqi4x", res)[0] != fcntl.F_UNLCK:
                    held.append(byte)
            out[path] = tuple(held)
        finally:
            os.close(fd)
    return out


def _image_paths(session: Session) -> list[str]:
    paths = {
        str(n.options["filename"])
        for n in session.graph.nodes.values()
        if n.driver == "file" and isinstance(n.options.get("filename"), str)
    }
    return sorted(paths)


def _live_objects(session: Session) -> list[tuple[Any, ...]]:
    rt = session.runtime
    out = []
    for name in sorted(rt.node_names()):
        node = rt.node(name)
        out.append(
            (
                name,
                id(node),
                node.read_only,
                repr(sorted(node.options.items())),
                tuple(sorted((e, id(c)) for e, c in node.children.items())),
                getattr(node, "fd", None),
            )
        )
    return out


def fingerprint(session: Session, paths: list[str]) -> dict[str, Any]:
    """Everything an aborted operation must leave exactly as it was."""
    return {
        "graph": session.graph.digest(),
        "runtime": session.runtime.state(),
        "live objects": _live_objects(session),
        "drains": session.runtime.drain_count,
        "fds": open_fds(sorted({os.path.dirname(p) for p in paths})),
        "image locks": image_locks(paths),
    }


def _fail_and_compare(
    setup: Callable[[Session], None],
    op: Callable[[Session], Any],
    kind: str,
    k: int,
    check: bool,
    paths: list[str],
) -> None:
    session = Session(name_seed=1, check=check)
    try:
        setup(session)
        before = fingerprint(session, paths)
        if kind == "primitive":
            session.fail_next_at = k
        else:
            session.fail_next_prepare_at = k
        with pytest.raises(InjectedFault):
            op(session)
        after = fingerprint(session, paths)
        for key in before:
            assert after[key] == before[key], f"{key} changed after a fault at {kind} step {k}"
    finally:
        session.close()


def assert_all_steps_atomic(
    setup: Callable[[Session], None], op: Callable[[Session], Any], *, check: bool = True
) -> int:
    """Run ``op`` once to count its steps, then fail it at each; returns the primitive count."""
    probe = Session(name_seed=1, check=check)
    setup(probe)
    # every image the setup or the operation opens: their locks and descriptors are compared
    paths = _image_paths(probe)
    op(probe)
    paths = sorted({*paths, *_image_paths(probe)})
    steps, prepare_steps = probe.last_steps, probe.last_prepare_steps
    probe.close()
    assert steps > 0
    for k in range(1, steps + 1):
        _fail_and_compare(setup, op, "primitive", k, check, paths)
    for k in range(1, prepare_steps + 1):
        _fail_and_compare(setup, op, "prepare", k, check, paths)
    return steps
