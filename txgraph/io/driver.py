"""The data-plane driver contract: one object per block node.

Mirrors QEMU's BlockDriver callbacks that matter for a live graph
(``bdrv_co_preadv``, ``bdrv_co_pwritev``, ``bdrv_co_pwrite_zeroes``,
``bdrv_co_pdiscard``, ``bdrv_co_flush``, ``bdrv_co_getlength``,
``bdrv_co_block_status``). Drivers talk to their children only through the
``children`` mapping the Runtime maintains, so that an edge swap done by the
Runtime under drain is seen by the very next request.

The generic block layer
-----------------------
What QEMU's block/io.c does for *every* node whatever its driver is done here,
once, around the driver callbacks (``write``, ``write_zeroes``, ``discard``,
``flush`` as a driver defines them): a subclass's definitions are wrapped when
the class is created (``__init_subclass__``), so every call of ``node.write``
(by an export, by a parent node, by a format writing its metadata) passes the
node's generic layer first, exactly as every ``bdrv_co_pwritev`` on a
``BdrvChild`` does in QEMU. The rules, from the node's :class:`NodeSettings`:

* read-only nodes refuse writes, zero writes and discards with EPERM
  (``bdrv_co_write_req_prepare``, ``bdrv_co_pdiscard``) and do nothing on a
  flush (``bdrv_co_flush`` returns early, children included);
* ``detect-zeroes=on|unmap``: a write whose buffer is all zeroes becomes a
  zero write, allowed to unmap only with ``unmap`` (``bdrv_aligned_pwritev``);
  only for drivers that have a zero-write callback (``drv->bdrv_co_pwrite_zeroes``);
* a zero write coming from a *parent node* may unmap only if this node has
  ``discard=unmap`` (``bdrv_co_pwrite_zeroes``); one from a BlockBackend (an
  export) is passed as is, as QEMU 7.2's ``blk_co_pwrite_zeroes`` does;
* discards are dropped unless ``discard=unmap`` (``bdrv_co_pdiscard``);
* ``cache.no-flush`` is the protocol driver's business: only its flush to
  disk is skipped (``bdrv_co_flush`` still flushes to the OS and the children,
  which inherit the option).

A driver that calls ``super().write(...)`` reaches its base class's callback
directly (the layer runs once per node per request). Code that must bypass the
layer, as QEMU's copy-on-read does with ``bdrv_driver_pwritev``, uses
:func:`driver_write` / :func:`driver_write_zeroes`.

Thread discipline: the layer keeps no shared state. Per thread it records how
deep the current request is in the graph (a BlockBackend call is depth 0) and
which nodes are converting a zero write (so a driver falling back to writing
zero bytes is not converted again); both live in a ``threading.local``.
"""

from __future__ import annotations

import abc
import errno as E
import functools
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from txgraph.errors import IOFailure
from txgraph.io.settings import DetectZeroes, NodeSettings

__all__ = ["BlockStatus", "ImageInfo", "DriverNode", "FilterNode", "driver_write",
           "driver_write_zeroes", "is_zero"]


@dataclass(frozen=True)
class BlockStatus:
    """The answer to a block-status query for ``[offset, offset + length)``.

    ``allocated`` is true when this layer (not its backing) defines the data;
    ``zero`` when the range reads as zeroes; ``host_offset`` is the offset in
    the layer's ``file`` child when the data is stored there uncompressed.
    """

    offset: int
    length: int
    allocated: bool
    zero: bool
    host_offset: int | None = None


@dataclass
class ImageInfo:
    """What a node learned about its image at open (for the model and for queries).

    Mirrors the ``image`` member of QEMU's ``query-named-block-nodes``
    (``ImageInfo`` in qapi/block-core.json) plus the header facts the model
    needs to auto-open a backing chain.
    """

    #: format name as QEMU reports it (``qcow2``, ``raw``, ``file``...)
    format: str
    #: guest-visible size in bytes
    virtual_size: int
    #: the node's filename as QEMU would print it
    filename: str = ""
    #: bytes allocated on the host (``st_blocks * 512``), when it is a file
    actual_size: int | None = None
    #: backing file string from the image header, verbatim
    backing_file: str | None = None
    #: backing format from the header extension
    backing_format: str | None = None
    #: external data file name from the header extension (qcow2)
    data_file: str | None = None
    #: the image requires an external data file (qcow2 incompatible bit 2)
    has_external_data_file: bool = False
    cluster_size: int | None = None
    dirty: bool = False
    #: ``format-specific`` member of ImageInfo, already in QMP shape
    format_specific: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# -- the generic block layer ---------------------------------------------------------------
class _LayerState(threading.local):
    """Per-thread request state of the generic layer (no state is shared between threads)."""

    def __init__(self) -> None:
        #: nesting depth of driver callbacks: 0 means the caller is a BlockBackend
        self.depth = 0
        #: ids of nodes whose zero-write conversion is running on this thread
        self.converting: set[int] = set()


_STATE = _LayerState()


def _eperm() -> IOFailure:
    return IOFailure("Operation not permitted", E.EPERM)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """``buffer_is_zero``."""
    buf = data if isinstance(data, (bytes, bytearray)) else bytes(data)
    return buf.count(0) == len(buf)


def _callback(node: DriverNode, name: str) -> Callable[..., None]:
    """The driver's own callback behind the generic layer (``bdrv_driver_*``)."""
    fn = getattr(type(node), name)
    return getattr(fn, "__wrapped__", fn)  # type: ignore[no-any-return]


def driver_write(node: DriverNode, offset: int, data: bytes | bytearray | memoryview) -> None:
    """``bdrv_driver_pwritev``: the driver's write, without the generic layer."""
    _call(_callback(node, "write"), node, offset, data)


def driver_write_zeroes(node: DriverNode, offset: int, length: int, *,
                        may_unmap: bool = False) -> None:
    """``bdrv_co_do_pwrite_zeroes`` without the request checks (used by copy-on-read)."""
    _call(_callback(node, "write_zeroes"), node, offset, length, may_unmap=may_unmap)


def _call(fn: Callable[..., None], node: DriverNode, *args: Any, **kwargs: Any) -> None:
    state = _STATE
    state.depth += 1
    try:
        fn(node, *args, **kwargs)
    finally:
        state.depth -= 1


def _layer_write(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def write(self: DriverNode, offset: int, data: bytes) -> None:
        if type(self).write is not write:   # reached through super(): the layer already ran
            return fn(self, offset, data)
        s = self.settings
        if s.read_only:
            raise _eperm()
        if (s.detect_zeroes is not DetectZeroes.OFF and self.has_write_zeroes
                and id(self) not in _STATE.converting and is_zero(data)):
            converting = _STATE.converting
            converting.add(id(self))
            try:
                driver_write_zeroes(self, offset, len(data),
                                    may_unmap=s.detect_zeroes is DetectZeroes.UNMAP)
            finally:
                converting.discard(id(self))
            return None
        return _call(fn, self, offset, data)

    write._txgraph_layer = True  # type: ignore[attr-defined]
    return write


def _layer_write_zeroes(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def write_zeroes(self: DriverNode, offset: int, length: int, *,
                     may_unmap: bool = False) -> None:
        if type(self).write_zeroes is not write_zeroes:
            return fn(self, offset, length, may_unmap=may_unmap)
        s = self.settings
        if s.read_only:
            raise _eperm()
        if may_unmap and _STATE.depth and not s.unmap:
            may_unmap = False  # a parent's zero write: this node was opened without unmap
        return _call(fn, self, offset, length, may_unmap=may_unmap)

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
        return _call(fn, self, offset, length)

    discard._txgraph_layer = True  # type: ignore[attr-defined]
    return discard


def _layer_flush(fn: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(fn)
    def flush(self: DriverNode) -> None:
        if type(self).flush is not flush:
            return fn(self)
        if self.settings.read_only:
            return None  # nothing can be dirty below a read-only node
        return _call(fn, self)

    flush._txgraph_layer = True  # type: ignore[attr-defined]
    return flush


_LAYERS: dict[str, Callable[[Callable[..., None]], Callable[..., None]]] = {
    "write": _layer_write, "write_zeroes": _layer_write_zeroes,
    "discard": _layer_discard, "flush": _layer_flush,
}


class DriverNode(abc.ABC):
    """A live node of the data plane.

    Offsets and lengths are in bytes. Errors are raised as
    :class:`txgraph.errors.IOFailure` carrying an errno, never as bare OSError.
    """

    #: QEMU driver name (``file``, ``qcow2``, ``throttle``...)
    driver_name: str = ""
    #: the driver has its own zero-write callback (``drv->bdrv_co_pwrite_zeroes``);
    #: computed per class, detect-zeroes only converts writes for such drivers
    has_write_zeroes: ClassVar[bool] = False

    def __init__(self, node_name: str, options: Mapping[str, Any],
                 children: Mapping[str, DriverNode], read_only: bool) -> None:
        self.node_name = node_name
        #: the generic settings, parsed once (again at every reopen)
        self.settings = NodeSettings.parse(options, read_only)
        self.options = dict(options)
        # The Runtime owns this dict and swaps entries under drain.
        self.children: dict[str, DriverNode] = dict(children)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, layer in _LAYERS.items():
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_txgraph_layer", False):
                setattr(cls, name, layer(fn))
        cls.has_write_zeroes = any("write_zeroes" in k.__dict__ for k in cls.__mro__
                                   if k is not DriverNode and issubclass(k, DriverNode))

    @property
    def read_only(self) -> bool:
        return self.settings.read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        # auto-read-only may degrade a node while it opens.
        self.settings = self.settings.with_read_only(value)

    # -- data path ----------------------------------------------------------
    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def write(self, offset: int, data: bytes) -> None: ...

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        # No zero-write callback: write a zero buffer (bdrv_co_do_pwrite_zeroes' bounce buffer).
        driver_write(self, offset, bytes(length))

    def discard(self, offset: int, length: int) -> None:
        """Discard is advisory in QEMU; the default does nothing."""

    def flush(self) -> None:
        for child in self.children.values():
            child.flush()

    @abc.abstractmethod
    def size(self) -> int: ...

    def block_status(self, offset: int, length: int) -> BlockStatus:
        return BlockStatus(offset, length, allocated=True, zero=False)

    # -- control path -------------------------------------------------------
    def info(self) -> ImageInfo:
        return ImageInfo(format=self.driver_name, virtual_size=self.size())

    def reopen(self, options: Mapping[str, Any], read_only: bool) -> None:
        """Take new options and read-only mode (``bdrv_reopen_prepare`` + commit).

        Must validate before changing anything and raise OpenError with QEMU's
        text, so the caller can treat it as a prepare step; the Runtime undoes
        a successful reopen by reopening with the old values. Subclasses
        validate their own options first, then call this.
        """
        settings = NodeSettings.parse(options, read_only)
        self.options = dict(options)
        self.settings = settings

    def close(self) -> None:
        """Release host resources (fds, mappings, locks). Idempotent."""


class FilterNode(DriverNode):
    """A filter driver: everything goes to the filtered ``file`` child unless overridden.

    QEMU's filters forward what they do not handle to their filtered child
    (``bdrv_co_block_status_from_file``, ``bdrv_filter_bs``); subclasses only
    override the requests they act on.
    """

    filtered_child = "file"

    @property
    def filtered(self) -> DriverNode:
        return self.children[self.filtered_child]

    def read(self, offset: int, length: int) -> bytes:
        return self.filtered.read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self.filtered.write(offset, data)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self.filtered.write_zeroes(offset, length, may_unmap=may_unmap)

    def discard(self, offset: int, length: int) -> None:
        self.filtered.discard(offset, length)

    def flush(self) -> None:
        self.filtered.flush()

    def size(self) -> int:
        return self.filtered.size()

    def block_status(self, offset: int, length: int) -> BlockStatus:
        return self.filtered.block_status(offset, length)

    def info(self) -> ImageInfo:
        return ImageInfo(format=self.driver_name, virtual_size=self.size(),
                         filename=self.filtered.info().filename)



# Subclasses (FilterNode above included) were wrapped as they were defined; DriverNode's
# own defaults pass the layer too.
for _name in ("write_zeroes", "discard", "flush"):
    setattr(DriverNode, _name, _LAYERS[_name](DriverNode.__dict__[_name]))
