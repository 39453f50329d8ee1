"""Block nodes, non-node parents and edges: the vertices and arcs of a BlockGraph.

These mirror QEMU's BlockDriverState, BlockBackend/BlockJob and BdrvChild
(reference/qemu-graph.md §1.1, qemu-options.md §0) with only the state the
graph rules and the query commands need.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from txgraph.model.options import Provenance
from txgraph.model.perm_bits import PERM_ALL, Perm, Role, fast_flag_ops

__all__ = [
    "OpenFlag",
    "DetectZeroes",
    "Discard",
    "BlockNode",
    "Backend",
    "Edge",
    "ParentKind",
    "runtime_common_options",
]


@fast_flag_ops
class OpenFlag(enum.IntFlag):
    """The BDRV_O_* flags that carry option semantics (qemu-options.md §0.3)."""

    NONE = 0
    RDWR = 0x0002
    SNAPSHOT = 0x0008
    TEMPORARY = 0x0010
    NOCACHE = 0x0020
    NATIVE_AIO = 0x0080
    NO_BACKING = 0x0100
    NO_FLUSH = 0x0200
    COPY_ON_READ = 0x0400
    INACTIVE = 0x0800
    CHECK = 0x1000
    ALLOW_RDWR = 0x2000
    UNMAP = 0x4000
    PROTOCOL = 0x8000
    NO_IO = 0x10000
    AUTO_RDONLY = 0x20000
    IO_URING = 0x40000


class DetectZeroes(enum.StrEnum):
    """``BlockdevDetectZeroesOptions`` (qapi/block-core.json): the parsed ``detect-zeroes``."""

    OFF = "off"
    ON = "on"
    UNMAP = "unmap"


class Discard(enum.StrEnum):
    """``BlockdevDiscardOptions``: what ``discard`` resolves to (``BDRV_O_UNMAP`` set or not).

    QEMU also accepts ``off``/``on`` as aliases (``bdrv_parse_discard_flags``);
    they resolve to these two values.
    """

    IGNORE = "ignore"
    UNMAP = "unmap"


def runtime_common_options(flags: OpenFlag, detect_zeroes: str) -> dict[str, object]:
    """The generic per-node settings as resolved, typed values, under QEMU's option keys.

    This is what the data plane needs from ``bdrv_open_common`` /
    ``bdrv_reopen_commit``: the open flags (``BDRV_O_RDWR``, ``NOCACHE``,
    ``NO_FLUSH``, ``UNMAP``) and ``bs->detect_zeroes``, as bools and enums
    rather than the strings QEMU keeps in the options QDict (which stay
    strings in :attr:`BlockNode.options`, because reopen compares them typed).
    An unknown ``detect_zeroes`` value raises ValueError: it is a bug, not input.
    """
    return {
        "read-only": not flags & OpenFlag.RDWR,
        "cache.direct": bool(flags & OpenFlag.NOCACHE),
        "cache.no-flush": bool(flags & OpenFlag.NO_FLUSH),
        "discard": Discard.UNMAP if flags & OpenFlag.UNMAP else Discard.IGNORE,
        "detect-zeroes": DetectZeroes(detect_zeroes),
    }


class ParentKind(enum.Enum):
    """BdrvChildClass: who is on the parent side of an edge."""

    NODE = "node"  # child_of_bds
    ROOT = "root"  # child_root: a BlockBackend (export, device, job-internal)
    JOB = "job"  # child_job: stays at its node on replace


@dataclass
class BlockNode:
    """One BlockDriverState.

    ``options`` holds the effective flattened options and ``explicit`` the ones
    the user gave (json: values count as given); child keys are removed from
    both once the children are open, exactly as QEMU does.
    """

    name: str
    driver: str
    options: dict[str, Any] = field(default_factory=dict)
    explicit: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Provenance] = field(default_factory=dict)
    flags: OpenFlag = OpenFlag.NONE
    detect_zeroes: str = "off"
    force_share: bool = False
    #: the parent this node was implicitly created for (None: top-level or referenced)
    inherits_from: str | None = None
    monitor_owned: bool = False
    #: a job filter inserted without a filter-node-name
    implicit: bool = False
    #: the format driver was chosen by probing the content
    probed: bool = False
    filename: str = ""
    exact_filename: str = ""
    #: header facts (format drivers)
    backing_file: str = ""
    backing_format: str = ""
    auto_backing_file: str = ""
    #: the image reported by the data plane at open, in QMP ImageInfo shape
    image: dict[str, Any] = field(default_factory=dict)
    #: quorum: next child index (never reused)
    next_child_index: int = 0
    #: creation order (all_bdrv_states) and naming order (graph_bdrv_states)
    seq: int = 0
    name_seq: int = 0
    #: cached full open options (``bs->full_open_options``); None when the node or
    #: anything below it changed since the last filename refresh
    full_open_cache: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def read_only(self) -> bool:
        return not self.flags & OpenFlag.RDWR

    @property
    def writable(self) -> bool:
        """``bdrv_is_writable``: RDWR and not INACTIVE."""
        return bool(self.flags & OpenFlag.RDWR) and not self.flags & OpenFlag.INACTIVE

    @property
    def cache_direct(self) -> bool:
        return bool(self.flags & OpenFlag.NOCACHE)

    @property
    def cache_no_flush(self) -> bool:
        return bool(self.flags & OpenFlag.NO_FLUSH)

    @property
    def discard(self) -> Discard:
        return Discard.UNMAP if self.flags & OpenFlag.UNMAP else Discard.IGNORE

    def runtime_options(self) -> dict[str, object]:
        """The node's generic settings, typed, for its data-plane driver (see
        :func:`runtime_common_options`)."""
        return runtime_common_options(self.flags, self.detect_zeroes)

    def state(self) -> tuple[Any, ...]:
        """Everything that defines the node, for hashing and equality in tests.

        ``filename``/``exact_filename`` are left out: they are a cache derived
        from the graph (``bdrv_refresh_filename`` recomputes them before every
        use), not state a transaction owns.
        """
        return (
            self.name,
            self.driver,
            sorted(self.options.items(), key=lambda kv: kv[0]),
            sorted(self.explicit.items(), key=lambda kv: kv[0]),
            sorted((k, v.source.value, v.parent, v.edge) for k, v in self.provenance.items()),
            int(self.flags),
            self.detect_zeroes,
            self.force_share,
            self.inherits_from,
            self.monitor_owned,
            self.implicit,
            self.probed,
            self.backing_file,
            self.backing_format,
            self.auto_backing_file,
            self.next_child_index,
            self.seq,
            self.name_seq,
        )


@dataclass
class Backend:
    """A non-node parent: a BlockBackend (export or device) or a block job.

    ``perm``/``shared`` are what it requests on its root edge.
    """

    key: str
    kind: ParentKind
    #: QMP-visible name (export id, device id, job id); "" for anonymous backends
    name: str = ""
    #: the owner as named in permission-conflict errors
    description: str = "an unnamed block device"
    perm: Perm = Perm.NONE
    shared: Perm = PERM_ALL
    seq: int = 0
    #: a job's type (``stream``, ``commit``...), "" for BlockBackends
    job_type: str = ""
    #: links ``(parent, child name, child)`` whose change would lose data the job still
    #: copies (the safe policy's J1 rule)
    protects: tuple[tuple[str, str, str], ...] = ()

    def state(self) -> tuple[Any, ...]:
        return (
            self.key,
            self.kind.value,
            self.name,
            self.description,
            int(self.perm),
            int(self.shared),
            self.seq,
            self.job_type,
            self.protects,
        )


@dataclass
class Edge:
    """One BdrvChild. Identity is (parent, name); replace operations only move ``child``."""

    name: str
    role: Role
    parent_kind: ParentKind = ParentKind.NODE
    perm: Perm = Perm.NONE
    shared: Perm = PERM_ALL
    frozen: bool = False
    #: position in the parent's children list (QEMU inserts at the head: newest first)
    seq: int = 0
    #: position in the child's parents list; re-targeting moves the edge to the head
    #: of the new child's list while it keeps its place among the parent's children
    parent_seq: int = 0
    #: the child name QEMU shows when it differs from the graph key ``name``: a job's
    #: children share names ("intermediate node"), keys must be unique per parent
    label: str = ""

    @property
    def qemu_name(self) -> str:
        """``BdrvChild.name`` as QEMU prints it (queries, permission conflicts)."""
        return self.label or self.name

    def state(self) -> tuple[Any, ...]:
        return (
            self.name,
            int(self.role),
            self.parent_kind.value,
            int(self.perm),
            int(self.shared),
            self.frozen,
            self.seq,
            self.parent_seq,
            self.label,
        )
