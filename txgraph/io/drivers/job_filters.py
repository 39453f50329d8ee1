"""The filters block jobs insert with a ``backing`` child: ``commit_top`` and ``mirror_top``.

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
from txgraph.io.registry import register

__all__ = ["JobTopFilter"]


@register("commit_top", "mirror_top")
class JobTopFilter(FilterNode):
    """Requests go unchanged to ``backing``."""

    filtered_child = "backing"

    def __init__(self, node_name: str, options: Mapping[str, Any],
                 children: Mapping[str, DriverNode], read_only: bool) -> None:
        super().__init__(node_name, options, children, read_only)
        self.driver_name = str(options.get("driver", "commit_top"))
