"""The filters block jobs insert with a ``backing`` child: ``commit_top`` and ``mirror_top``.

``mirror_top`` also tells its job about every write (:mod:`txgraph.io.mirror`).

QEMU's ``bdrv_commit_top`` (block/commit.c) and ``bdrv_mirror_top``
(block/mirror.c) are filters over their ``backing`` child that nobody can
create with blockdev-add. ``commit_top`` passes every request through; it
exists so the job can hold the chain below it (its child edge takes nothing
and shares everything). The size is the child's (QEMU copies
``total_sectors`` at insertion).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from txgraph.io.driver import DriverNode, FilterNode
from txgraph.io.mirror import MirrorSink
from txgraph.io.registry import register

__all__ = ["JobTopFilter", "MirrorTopNode"]


@register("commit_top")
class JobTopFilter(FilterNode):
    """Requests go unchanged to ``backing``."""

    filtered_child = "backing"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        self.driver_name = str(options.get("driver", "commit_top"))


@register("mirror_top")
class MirrorTopNode(JobTopFilter):
    """``bdrv_mirror_top``: writes reach the source, then the job's sink."""

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        self.driver_name = "mirror_top"
        #: set by the job before it starts, cleared when it ends (see txgraph.io.mirror)
        self.sink: MirrorSink | None = None

    def write(self, offset: int, data: bytes) -> None:
        self.filtered.write(offset, data)
        sink = self.sink
        if sink is not None:
            sink.wrote(offset, bytes(data), len(data), False)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self.filtered.write_zeroes(offset, length, may_unmap=may_unmap)
        sink = self.sink
        if sink is not None:
            sink.wrote(offset, None, length, True)

    def discard(self, offset: int, length: int) -> None:
        self.filtered.discard(offset, length)
        sink = self.sink
        if sink is not None:
            sink.bitmap.mark(offset, length)  # discarded data may read as anything: copy again
