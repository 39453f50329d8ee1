"""The generic block layer: what QEMU's block/io.c does on every node, whatever its driver.

It runs once per request and node, around the driver callbacks (``write``,
``write_compressed``, ``write_zeroes``, ``discard``, ``flush`` as a driver defines them): a subclass's definitions are wrapped when
the class is created (``__init_subclass__``), so every call of ``node.write``
(by an export, by a parent node, by a format writing its metadata) passes the
node's generic layer first, exactly as every ``bdrv_co_pwritev`` on a
``BdrvChild`` does in QEMU. The rules, from the node's :class:`~txgraph.io.settings.NodeSettings`:

* read-only nodes refuse writes, compressed writes, zero writes and discards with EPERM
  (``bdrv_co_write_req_prepare``, ``bdrv_co_pdiscard``) and do nothing on a
  flush (``bdrv_co_flush`` returns early, children included);
* ``detect-zeroes=on|unmap``: a write whose buffer is all zeroes becomes a
  zero write, allowed to unmap only with ``unmap`` (``bdrv_aligned_pwritev``);
  only for drivers that have a zero-write callback (``drv->bdrv_co_pwrite_zeroes``);
  a compressed write (``BDRV_REQ_WRITE_COMPRESSED``) converted so loses its flag;
* a zero write coming from a *parent node* may unmap only if this node has
  ``discard=unmap`` (``bdrv_co_pwrite_zeroes``); one from a BlockBackend (an
  export) is passed as is, as QEMU 7.2's ``blk_co_pwrite_zeroes`` does;
* discards are dropped unless ``discard=unmap`` (``bdrv_co_pdiscard``);
* ``cache.no-flush`` is the protocol driver's business: only its flush to
  disk is skipped (``bdrv_co_flush`` still flushes to the OS and the children,
  which inherit the option);
* a flush raises blkdebug's generic events on the node's primary child
  (``bdrv_co_flush``'s ``BLKDBG_EVENT(primary_child, ...)``): ``flush_to_os``
  before the driver's flush, ``flush_to_disk`` after the driver's flush-to-OS
  step (its metadata writes) and before the flush goes down to the primary
  child - and only when the node was written since its last successful flush
  (``write_gen`` / ``flushed_gen``) and has no ``cache.no-flush``. A driver
  whose own flush-to-disk step does something (blkdebug's rule check) asks
  :func:`flush_reaches_disk`. A driver whose flush-to-OS step itself flushes
  the primary child (qcow2's cache flushes, ``bdrv_flush(bs->file->bs)`` inside
  ``qcow2_co_flush_to_os``) runs that step inside :func:`flush_to_os`, so
  those flushes do not yet count as the flush going down.

A driver that calls ``super().write(...)`` reaches its base class's callback
directly (the layer runs once per node per request). Code that must bypass the
layer, as QEMU's copy-on-read does with ``bdrv_driver_pwritev``, uses
:func:`driver_write` / :func:`driver_write_zeroes`.

Thread discipline: the layer keeps no shared state. Per thread it records how
deep the current request is in the graph (a BlockBackend call is depth 0),
which nodes are converting a zero write (so a driver falling back to writing
zero bytes is not converted again) and the flushes under way (their pending
``flush_to_disk`` event); these live in a ``threading.local``. Each node's
write and flush generations (``DriverNode.layer_write_gen`` /
``layer_flushed_gen``) are plain attribute stores of numbers taken from one
shared counter (``next`` on an ``itertools.count`` is atomic under the GIL), so
concurrent requests need no lock: a flush records only the generation it read
before it started, so it can never claim a write that ended after that.
"""

from __future__ import annotations

import contextlib
import errno as E
import functools
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from txgraph.errors import IOFailure
from txgraph.io.settings import DetectZeroes

if TYPE_CHECKING:
    from txgraph.io.driver import DriverNode

__all__ = [
    "LAYERS",
    "driver_write",
    "driver_write_zeroes",
    "flush_reaches_disk",
    "flush_to_os",
    "fua",
    "is_zero",
    "primary_child",
    "request_from_parent",
]

#: fresh write generations for every node (``bdrv_co_write_req_finish``'s ``write_gen++``)
_GENERATIONS = itertools.count(1)


class _LayerState(threading.local):
    """Per-thread request state of the generic layer (no state is shared between threads)."""

    def __init__(self) -> None:
        #: nesting depth of driver callbacks: 0 means the caller is a BlockBackend
        self.depth = 0
        #: ids of nodes whose zero-write conversion is running on this thread
        self.converting: set[int] = set()
        #: the flushes under way on this thread, innermost last
        self.flushing: list[_FlushStep] = []
        #: ids of nodes whose write generation is held back until their FUA flush ran
        self.held: set[int] = set()


class _FlushStep:
    """One node's ``bdrv_co_flush`` in progress: its ``flush_to_disk`` event, raised once."""

    __slots__ = ("node", "primary", "to_disk", "raised", "to_os")

    def __init__(self, node: DriverNode, primary: DriverNode | None, to_disk: bool) -> None:
        self.node = node
        self.primary = primary
        self.to_disk = to_disk
        self.raised = False
        #: the driver's flush-to-OS step is running (:func:`flush_to_os`)
        self.to_os = False

    def reach_disk(self) -> bool:
        """The flush-to-OS step is over: raise ``flush_to_disk`` (once) if the flush
        goes to the disk; whether it does."""
        if self.to_disk and not self.raised:
            self.raised = True
            if self.primary is not None:
                self.primary.debug_event("flush_to_disk")
        return self.to_disk


_STATE = _LayerState()


def _eperm() -> IOFailure:
    return IOFailure("Operation not permitted", E.EPERM)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """``buffer_is_zero``."""
    buf = data if isinstance(data, (bytes, bytearray)) else bytes(data)
    # Most data is not zero and says so in its first bytes: look there before the whole.
    head = buf[:256]
    if head.count(0) != len(head):
        return False
    return buf.count(0) == len(buf)


def _callback(node: DriverNode, name: str) -> Callable[..., None]:
    """The driver's own callback behind the generic layer (``bdrv_driver_*``)."""
    fn = getattr(type(node), name)
    return getattr(fn, "__wrapped__", fn)  # type: ignore[no-any-return]


def driver_write(node: DriverNode, offset: int, data: bytes | bytearray | memoryview) -> None:
    """``bdrv_driver_pwritev``: the driver's write, without the generic layer."""
    _call(_callback(node, "write"), node, offset, data)


def driver_write_zeroes(
    node: DriverNode, offset: int, length: int, *, may_unmap: bool = False
) -> None:
    """``bdrv_co_do_pwrite_zeroes`` without the request checks (used by copy-on-read)."""
    _call(_callback(node, "write_zeroes"), node, offset, length, may_unmap=may_unmap)


def request_from_parent() -> bool:
    """Inside a driver callback: whether the request came from a parent node (through a
    ``BdrvChild``) rather than from a BlockBackend. A BlockBackend checks a request
    against its length first (``blk_check_byte_request``); a parent may write past a
    node's end when it holds RESIZE (``bdrv_co_write_req_prepare``), and the node's
    length then grows (``bdrv_co_write_req_finish``)."""
    return _STATE.depth > 1


def primary_child(node: DriverNode) -> DriverNode | None:
    """``bdrv_primary_child``: a filter's filtered child, else the child its driver names
    as primary (``file`` for the formats, ``image`` for blkdebug), if attached."""
    name = getattr(node, "filtered_child", None) or node.primary_child_name
    return node.children.get(name) if name else None


def flush_reaches_disk(node: DriverNode) -> bool:
    """Inside ``node``'s flush callback: whether ``bdrv_co_flush`` calls the driver's
    flush-to-disk step this time (written since the last flush, no ``cache.no-flush``);
    raises the pending ``flush_to_disk`` event first, as QEMU does right before it."""
    for step in reversed(_STATE.flushing):
        if step.node is node:
            return step.reach_disk()
    return False


@contextlib.contextmanager
def flush_to_os(node: DriverNode) -> Iterator[None]:
    """Inside ``node``'s flush callback: the block of its ``bdrv_co_flush_to_os`` step.
    Flushes of the primary child made there are the driver's own (``bdrv_flush`` of
    ``bs->file->bs``), not ``bdrv_co_flush`` going down to the children, so they do not
    raise the pending ``flush_to_disk`` event. Outside a flush of ``node``, nothing."""
    step = next((st for st in reversed(_STATE.flushing) if st.node is node), None)
    if step is None:
        yield
        return
    before, step.to_os = step.to_os, True
    try:
        yield
    finally:
        step.to_os = before


def _bump(node: DriverNode) -> None:
    """``bdrv_co_write_req_finish``: the node was written (whatever the outcome)."""
    if id(node) not in _STATE.held:
        node.layer_write_gen = next(_GENERATIONS)


def fua(node: DriverNode, request: Callable[[], None]) -> None:
    """A BlockBackend's write or zero write with ``BDRV_REQ_FUA`` on ``node``.

    No driver of txgraph writes FUA through to the disk, so the node emulates it
    (``bdrv_driver_pwritev`` / ``bdrv_co_do_pwrite_zeroes``): a flush of the node
    after the successful write, inside the same request - before the request's
    ``write_gen`` bump, so that flush does not see the write it follows as
    unflushed (the next one does).
    """
    held = _STATE.held
    if id(node) in held:  # nested (cannot happen from a BlockBackend): plain order
        request()
        node.flush()
        return
    held.add(id(node))
    try:
        request()
        node.flush()
    finally:
        held.discard(id(node))
        _bump(node)


def _call(fn: Callable[..., None], node: DriverNode, *args: Any, **kwargs: Any) -> None:
    state = _STATE
    state.depth += 1
    try:
        fn(node, *args, **kwargs)
    finally:
        state.depth -= 1


def _layer_data_write(name: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The layer of a data write callback: ``write`` (``bdrv_driver_pwritev``) or
    ``write_compressed`` (``bdrv_driver_pwritev_compressed``); the same rules for both."""
    return functools.partial(_layer_write, name=name)


def _layer_write(fn: Callable[..., None], *, name: str) -> Callable[..., None]:
    @functools.wraps(fn)
    def write(self: DriverNode, offset: int, data: bytes) -> None:
        if getattr(type(self), name) is not write:  # reached through super(): already ran
            return fn(self, offset, data)
        s = self.settings
        if s.read_only:
            raise _eperm()
        if (
            s.detect_zeroes is not DetectZeroes.OFF
            and self.has_write_zeroes
            and id(self) not in _STATE.converting
            and is_zero(data)
        ):
            converting = _STATE.converting
            converting.add(id(self))
            try:
                driver_write_zeroes(
                    self, offset, len(data), may_unmap=s.detect_zeroes is DetectZeroes.UNMAP
                )
            finally:
                converting.discard(id(self))
                _bump(self)
            return None
        try:
            return _call(fn, self, offset, data)
        finally:
            _bump(self)

    write._txgraph_layer = True  # type: ignore[attr-defined]
    return write


def _layer_write_zeroes(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def write_zeroes(
        self: DriverNode, offset: int, length: int, *, may_unmap: bool = False
    ) -> None:
        if type(self).write_zeroes is not write_zeroes:
            return fn(self, offset, length, may_unmap=may_unmap)
        s = self.settings
        if s.read_only:
            raise _eperm()
        if may_unmap and _STATE.depth and not s.unmap:
            may_unmap = False  # a parent's zero write: this node was opened without unmap
        try:
            return _call(fn, self, offset, length, may_unmap=may_unmap)
        finally:
            _bump(self)

    write_zeroes._txgraph_layer = True  # type: ignore[attr-defined]
    return write_zeroes


def _layer_discard(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def discard(self: DriverNode, offset: int, length: int) -> None:
        if type(self).discard is not discard:
            return fn(self, offset, length)
        s = self.settings
        if s.read_only:
            raise _eperm()
        if not s.unmap:
            return None  # BDRV_O_UNMAP is off: the request succeeds and does nothing
        try:
            return _call(fn, self, offset, length)
        finally:
            _bump(self)

    discard._txgraph_layer = True  # type: ignore[attr-defined]
    return discard


def _layer_flush(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def flush(self: DriverNode) -> None:
        if type(self).flush is not flush:
            return fn(self)
        flushing = _STATE.flushing
        for step in flushing:
            if step.primary is self and not step.to_os:  # a parent's flush goes down
                step.reach_disk()
        s = self.settings
        if s.read_only:
            return None  # nothing can be dirty below a read-only node
        current = self.layer_write_gen
        primary = primary_child(self)
        if primary is not None:
            primary.debug_event("flush_to_os")
        step = _FlushStep(self, primary, not s.no_flush and current != self.layer_flushed_gen)
        flushing.append(step)
        try:
            _call(fn, self)
            step.reach_disk()  # a driver that flushes no child: the event still comes
        finally:
            flushing.pop()
        self.layer_flushed_gen = current
        return None

    flush._txgraph_layer = True  # type: ignore[attr-defined]
    return flush


LAYERS: dict[str, Callable[[Callable[..., None]], Callable[..., None]]] = {
    "write": _layer_data_write("write"),
    "write_compressed": _layer_data_write("write_compressed"),
    "write_zeroes": _layer_write_zeroes,
    "discard": _layer_discard,
    "flush": _layer_flush,
}
