"""Driver specifications: what each QEMU block driver is, as the graph sees it.

The :class:`DriverSpec` record (one per driver txgraph models) with the facts the graph
rules depend on (reference/qemu-options.md §1, §6.7; qemu-graph.md §1.3):
class (protocol, format, filter or neither), backing support, which children
it has and with which roles, which driver options it consumes, which options a
reopen may change or reset, and which permission formula its edges follow.
The QAPI schema carries the option *types*; a spec carries the semantics. The
specs themselves live one module per driver family beside this one
(:mod:`txgraph.model.drivers`); a spec is the one source of a driver's option
list, its defaults and the options a reopen may change or omit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from txgraph.model.perm_bits import Role

if TYPE_CHECKING:
    from txgraph.model.graph import BlockGraph

__all__ = [
    "DriverSpec",
    "ChildSpec",
    "ParseFilename",
    "RefreshFilename",
    "GatherChildOptions",
    "COMMON_OPTIONS",
    "RESETTABLE_COMMON_OPTIONS",
]

#: ``bdrv_runtime_opts``: options every node accepts (flattened keys).
COMMON_OPTIONS: frozenset[str] = frozenset(
    {
        "node-name",
        "driver",
        "cache.direct",
        "cache.no-flush",
        "read-only",
        "auto-read-only",
        "detect-zeroes",
        "discard",
        "force-share",
    }
)

#: ``bdrv_reset_options_allowed``'s common list: may be omitted on reopen.
#: ``force-share`` is deliberately absent (reference/qemu-options.md §6.4 step 4).
RESETTABLE_COMMON_OPTIONS: frozenset[str] = frozenset(
    {
        "node-name",
        "discard",
        "cache.direct",
        "cache.no-flush",
        "read-only",
        "auto-read-only",
        "detect-zeroes",
    }
)


#: the driver's ``bdrv_parse_filename``: ``(filename, options so far)`` -> the options the
#: legacy filename gives (raises :class:`~txgraph.errors.OpenError` with QEMU's text)
ParseFilename = Callable[[str, Mapping[str, Any]], dict[str, Any]]
#: the driver's ``bdrv_refresh_filename``: ``(graph, node, full open options)`` -> the
#: node's ``exact_filename`` ("" when only a json: description names it); the children's
#: filenames are up to date when it runs
RefreshFilename = Callable[["BlockGraph", str, Mapping[str, Any]], str]
#: the driver's ``bdrv_gather_child_options``: ``(graph, node, full_open_options)`` -> the
#: children part of the node's full open options (``full_open_options(child)`` gives one)
GatherChildOptions = Callable[["BlockGraph", str, Callable[[str], dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class ChildSpec:
    """A child a driver opens: its option key, role and whether it is mandatory."""

    name: str
    role: Role
    required: bool = True


@dataclass(frozen=True)
class DriverSpec:
    """The graph-relevant facts of one block driver."""

    name: str
    #: ``protocol`` (has bdrv_file_open), ``format``, ``filter`` or ``other`` (quorum)
    kind: str
    supports_backing: bool = False
    #: bdrv_needs_filename: opening without a filename is an error
    needs_filename: bool = False
    #: has a bdrv_reopen_prepare handler
    reopenable: bool = True
    #: options the driver consumes (flattened; a trailing '.' is a prefix)
    options: frozenset[str] = frozenset()
    #: options a reopen may omit (they reset to their default)
    mutable_opts: frozenset[str] = frozenset()
    #: options a reopen may change (beyond the common ones)
    changeable_opts: frozenset[str] = frozenset()
    #: options that appear in json: filenames (bdrv_refresh_filename's strong options)
    strong_opts: frozenset[str] = frozenset()
    #: prefixes of strong options QEMU's json: names keep as flat keys (``encrypt.key-secret``,
    #: ``inject-error.0.event``) instead of nesting them
    flat_opts: frozenset[str] = frozenset()
    #: children opened by the driver itself (``file`` of formats and filters included)
    children: tuple[ChildSpec, ...] = ()
    #: the edges' permission formula family (see txgraph.model.child_perms.child_perm)
    perm_family: str = "default"
    #: the filtered child is ``backing`` rather than ``file`` (mirror_top, commit_top)
    filtered_child_is_backing: bool = False
    #: driver-specific default values reported by queries
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: ``protocol_name``: the ``proto:`` prefixes of legacy filenames that pick this driver
    #: (``bdrv_find_protocol``; nbd registers three)
    protocol_names: tuple[str, ...] = ()
    #: ``bdrv_parse_filename``, None when the driver has none (the filename stays as given)
    parse_filename: ParseFilename | None = None
    #: ``bdrv_refresh_filename``, None for the generic rule (a format takes its primary
    #: child's name; a protocol keeps the filename it was opened with)
    refresh_filename: RefreshFilename | None = None
    #: ``bdrv_gather_child_options``, None for the generic rule (each child by edge name)
    gather_child_options: GatherChildOptions | None = None
    #: ``block_driver_can_compress``: the driver takes compressed writes
    #: (``bdrv_co_pwritev_compressed[_part]``): qcow2, qcow and vmdk write them,
    #: throttle and copy-on-read forward them to their filtered child
    can_compress: bool = False

    @property
    def is_protocol(self) -> bool:
        """Has a protocol open function; blkdebug and blkverify are filters *and* protocols."""
        return self.kind == "protocol" or self.name in ("blkdebug", "blkverify")

    @property
    def is_format(self) -> bool:
        return self.kind == "format"

    @property
    def is_filter(self) -> bool:
        return self.kind == "filter"

    def accepts_option(self, key: str) -> bool:
        """True if ``key`` (flattened) is a driver-specific option this driver consumes."""
        if key in self.options:
            return True
        return any(opt.endswith(".") and key.startswith(opt) for opt in self.options)

    def child(self, name: str) -> ChildSpec | None:
        for spec in self.children:
            if spec.name == name:
                return spec
        return None
