"""The data-plane driver contract: one object per block node.

Mirrors QEMU's BlockDriver callbacks that matter for a live graph
(``bdrv_co_preadv``, ``bdrv_co_pwritev``, ``bdrv_co_pwrite_zeroes``,
``bdrv_co_pdiscard``, ``bdrv_co_flush``, ``bdrv_co_getlength``,
``bdrv_co_block_status``). Drivers talk to their children only through the
``children`` mapping the Runtime maintains, so that an edge swap done by the
Runtime under drain is seen by the very next request.

The generic block-layer rules every call passes are in :mod:`txgraph.io.layer`.
"""

from __future__ import annotations

import abc
import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from txgraph.errors import IOFailure
from txgraph.io.layer import LAYERS, driver_write, driver_write_zeroes, is_zero
from txgraph.io.settings import NodeSettings

__all__ = [
    "BlockStatus",
    "ImageInfo",
    "DriverNode",
    "FilterNode",
    "reacts_to_events",
    "recurse_status",
    "driver_write",
    "driver_write_zeroes",
    "is_zero",
]


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
    #: QEMU's BDRV_BLOCK_DATA where it is not simply ``not zero``: a data extent whose
    #: file range reads as zeroes (BDRV_BLOCK_RECURSE: DATA|ZERO); None means ``not zero``
    data: bool | None = None


def recurse_status(child: DriverNode, offset: int, length: int, host: int) -> BlockStatus:
    """``bdrv_co_block_status``'s BDRV_BLOCK_RECURSE step for a data run of a format node.

    The format reported ``[offset, offset+length)`` as data stored at ``host`` in
    ``child`` and asked for the child's own status there: the child's zero answer
    makes it DATA|ZERO (``data=True``), and the run ends where the child's answer
    does, except that a stretch reading as zeroes up to the child's end (or lying
    past it, ``BDRV_BLOCK_EOF``) refines the whole run, as the child's length does
    not bound what the format may place beyond it.
    """
    end = child.size()
    if host >= end:
        return BlockStatus(offset, length, True, True, host, data=True)
    st = child.block_status(host, length)
    n = max(1, min(length, st.length))
    if st.zero and host + n >= end:
        n = length
    return BlockStatus(offset, n, True, st.zero, host, data=True)


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


class DriverNode(abc.ABC):
    """A live node of the data plane.

    Offsets and lengths are in bytes. Errors are raised as
    :class:`txgraph.errors.IOFailure` carrying an errno, never as bare OSError.
    """

    #: QEMU driver name (``file``, ``qcow2``, ``throttle``...)
    driver_name: str = ""
    #: ``bs->bl.request_alignment`` as permissions see it (:mod:`txgraph.io.limits`):
    #: one byte unless the driver's :meth:`refresh_limits` says otherwise
    request_alignment: int = 1
    #: the driver has its own zero-write callback (``drv->bdrv_co_pwrite_zeroes``);
    #: computed per class, detect-zeroes only converts writes for such drivers
    has_write_zeroes: ClassVar[bool] = False
    #: the child ``bdrv_primary_child`` finds (filters: their filtered child instead)
    primary_child_name: ClassVar[str | None] = "file"
    #: ``write_gen`` / ``flushed_gen`` of ``bdrv_co_flush``, kept by the generic layer
    #: (txgraph.io.layer: plain number stores, no lock needed)
    layer_write_gen: int = 0
    layer_flushed_gen: int = 0

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        self.node_name = node_name
        #: the generic settings, parsed once (again at every reopen)
        self.settings = NodeSettings.parse(options, read_only)
        self.options = dict(options)
        # The Runtime owns this dict and swaps entries under drain.
        self.children: dict[str, DriverNode] = dict(children)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, layer in LAYERS.items():
            fn = cls.__dict__.get(name)
            if fn is not None and not getattr(fn, "_txgraph_layer", False):
                setattr(cls, name, layer(fn))
        cls.has_write_zeroes = any(
            "write_zeroes" in k.__dict__
            for k in cls.__mro__
            if k is not DriverNode and issubclass(k, DriverNode)
        )

    @property
    def read_only(self) -> bool:
        return self.settings.read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        # auto-read-only may degrade a node while it opens.
        self.settings = self.settings.with_read_only(value)

    def refresh_limits(self, options: Mapping[str, Any]) -> None:
        """``bdrv_refresh_limits`` as ``bdrv_reopen_commit`` calls it, with the options
        being committed; ``self.options`` still holds the previous ones."""

    # -- data path ----------------------------------------------------------
    @abc.abstractmethod
    def read(self, offset: int, length: int) -> bytes: ...

    @abc.abstractmethod
    def write(self, offset: int, data: bytes) -> None: ...

    def write_compressed(self, offset: int, data: bytes) -> None:
        """``bdrv_driver_pwritev_compressed``: a driver without the callback
        (``block_driver_can_compress`` false) answers ENOTSUP; qcow2, qcow and vmdk
        write compressed clusters, throttle and copy-on-read forward the request."""
        raise IOFailure(os.strerror(errno.ENOTSUP), errno.ENOTSUP)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        # No zero-write callback: write a zero buffer (bdrv_co_do_pwrite_zeroes' bounce buffer).
        driver_write(self, offset, bytes(length))

    def discard(self, offset: int, length: int) -> None:
        """Discard is advisory in QEMU; the default does nothing."""

    def flush(self) -> None:
        for child in self.children.values():
            child.flush()

    def debug_event(self, event: str) -> None:
        """``bdrv_debug_event``: a parent announces what its next request is for.

        QEMU's format drivers raise these on their ``file`` child
        (``BLKDBG_EVENT(bs->file, ...)``) right before a data request; only
        blkdebug reacts, every other driver ignores them, and they never travel
        further down the graph.
        """

    @abc.abstractmethod
    def size(self) -> int: ...

    def host_extent(self, offset: int, length: int) -> tuple[int, int] | None:
        """Where a read of ``[offset, offset+length)`` here takes its bytes from, when that
        read is nothing but the same bytes of one host file: ``(fd, offset in the file)``.

        Bytes past the file's end read as zeros. A node answers only when its read
        has no effect of its own (no delay or accounting, no event a node reacts to,
        no copy, no check beyond a bounds check that raises what the read raises);
        the default is None, so any other node on the way (throttle, copy-on-read,
        blkdebug, quorum, every image format) keeps its reads. Side-effect free; call
        inside ``Runtime.request()``, and use the fd only inside that bracket.
        """
        return None

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

    def change_backing_file(
        self, backing_file: str | None, backing_fmt: str | None, *, require: bool = False
    ) -> None:
        """Rewrite the backing file string in the image (QEMU's ``bdrv_change_backing_file``).

        The generic checks come first: a format without a file, or (with
        ``require``, as ``qemu-img rebase`` asks) a file without a format, is
        ``EINVAL``; then the driver's :meth:`driver_change_backing_file`. Raises
        :class:`IOFailure` carrying QEMU's errno (callers add their own prefix,
        e.g. "Could not update backing file link: ..."). Only the image header
        changes; the ``backing`` edge is the caller's business. Thread safety
        is the driver's (qcow2: under its node lock).
        """
        if backing_fmt is not None and backing_file is None:
            raise IOFailure(os.strerror(errno.EINVAL), errno.EINVAL)
        if require and backing_file is not None and backing_fmt is None:
            raise IOFailure(os.strerror(errno.EINVAL), errno.EINVAL)
        self.driver_change_backing_file(backing_file, backing_fmt)

    def driver_change_backing_file(self, backing_file: str | None, backing_fmt: str | None) -> None:
        """``drv->bdrv_change_backing_file``; drivers without one (raw, filters...): ENOTSUP."""
        raise IOFailure(os.strerror(errno.ENOTSUP), errno.ENOTSUP)


def reacts_to_events(node: object) -> bool:
    """Whether ``node`` acts on :meth:`DriverNode.debug_event` (a blkdebug node): a
    caller may skip announcing to, or take a path that raises no events on, any other."""
    return type(node).debug_event is not DriverNode.debug_event  # type: ignore[attr-defined]


class FilterNode(DriverNode):
    """A filter driver: everything goes to the filtered ``file`` child unless overridden.

    QEMU's filters forward what they do not handle to their filtered child
    (``bdrv_co_block_status_from_file``, ``bdrv_filter_bs``); subclasses only
    override the requests they act on.
    """

    filtered_child = "file"

    @property
    def filtered(self) -> DriverNode:
        """The filtered child; a filter a job dropped from the chain has none (ENOMEDIUM)."""
        child = self.children.get(self.filtered_child)
        if child is None:
            raise IOFailure(os.strerror(errno.ENOMEDIUM), errno.ENOMEDIUM)
        return child

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

    def host_extent(self, offset: int, length: int) -> tuple[int, int] | None:
        """A filter whose reads are :meth:`read` above (forwarded unchanged, no
        ``readinto`` of its own) forwards the query; one that acts on reads does not."""
        if type(self).read is not FilterNode.read or hasattr(self, "readinto"):
            return None
        child = self.children.get(self.filtered_child)
        return None if child is None else child.host_extent(offset, length)

    def block_status(self, offset: int, length: int) -> BlockStatus:
        return self.filtered.block_status(offset, length)

    def info(self) -> ImageInfo:
        return ImageInfo(
            format=self.driver_name,
            virtual_size=self.size(),
            filename=self.filtered.info().filename,
        )


# Subclasses (FilterNode above included) were wrapped as they were defined; DriverNode's
# own defaults pass the layer too.
for _name in ("write_compressed", "write_zeroes", "discard", "flush"):
    setattr(DriverNode, _name, LAYERS[_name](DriverNode.__dict__[_name]))
