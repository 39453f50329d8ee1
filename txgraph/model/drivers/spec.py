"""Driver specifications: what each QEMU block driver is, as the graph sees it.

One :class:`DriverSpec` per driver txgraph models, with the facts the graph
rules depend on (reference/qemu-options.md §1, §6.7; qemu-graph.md §1.3):
class (protocol, format, filter or neither), backing support, which children
it has and with which roles, which driver options it consumes, which options a
reopen may change or reset, and which permission formula its edges follow.
The QAPI schema carries the option *types*; this table carries the semantics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from txgraph.model.drivers_crypto import crypto_specs
from txgraph.model.perm import Role

__all__ = [
    "DriverSpec",
    "ChildSpec",
    "DRIVER_SPECS",
    "driver_spec",
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
    #: children opened by the driver itself (``file`` of formats and filters included)
    children: tuple[ChildSpec, ...] = ()
    #: the edges' permission formula family (see txgraph.model.perm.child_perm)
    perm_family: str = "default"
    #: the filtered child is ``backing`` rather than ``file`` (mirror_top, commit_top)
    filtered_child_is_backing: bool = False
    #: driver-specific default values reported by queries
    defaults: Mapping[str, Any] = field(default_factory=dict)

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


_QCOW2_MUTABLE = frozenset(
    {
        "lazy-refcounts",
        "pass-discard-request",
        "pass-discard-snapshot",
        "pass-discard-other",
        "overlap-check",
        "overlap-check.template",
        "overlap-check.main-header",
        "overlap-check.active-l1",
        "overlap-check.active-l2",
        "overlap-check.refcount-table",
        "overlap-check.refcount-block",
        "overlap-check.snapshot-table",
        "overlap-check.inactive-l1",
        "overlap-check.inactive-l2",
        "overlap-check.bitmap-directory",
        "cache-size",
        "l2-cache-size",
        "l2-cache-entry-size",
        "refcount-cache-size",
        "cache-clean-interval",
    }
)

_FILE_OPTIONS = frozenset(
    {
        "filename",
        "aio",
        "aio-max-batch",
        "locking",
        "pr-manager",
        "drop-cache",
        "x-check-cache-dropped",
    }
)

_FILTER_FILE = (ChildSpec("file", Role.FILTERED | Role.PRIMARY),)

DRIVER_SPECS: dict[str, DriverSpec] = {
    spec.name: spec
    for spec in (
        DriverSpec(
            "file",
            "protocol",
            needs_filename=True,
            options=_FILE_OPTIONS,
            mutable_opts=frozenset({"x-check-cache-dropped"}),
            changeable_opts=frozenset({"drop-cache", "x-check-cache-dropped"}),
            defaults={"aio": "threads", "locking": "auto", "drop-cache": True},
        ),
        DriverSpec(
            "host_device",
            "protocol",
            needs_filename=True,
            options=_FILE_OPTIONS,
            mutable_opts=frozenset({"x-check-cache-dropped"}),
            changeable_opts=frozenset({"drop-cache", "x-check-cache-dropped"}),
        ),
        DriverSpec(
            "null-co",
            "protocol",
            options=frozenset({"filename", "size", "latency-ns", "read-zeroes"}),
            strong_opts=frozenset({"size", "read-zeroes"}),
            defaults={"size": 1 << 30, "latency-ns": 0, "read-zeroes": False},
        ),
        DriverSpec(
            "null-aio",
            "protocol",
            options=frozenset({"filename", "size", "latency-ns", "read-zeroes"}),
            strong_opts=frozenset({"size", "read-zeroes"}),
            defaults={"size": 1 << 30, "latency-ns": 0, "read-zeroes": False},
        ),
        DriverSpec(
            "nbd",
            "protocol",
            options=frozenset(
                {
                    "server.",
                    "export",
                    "tls-creds",
                    "tls-hostname",
                    "x-dirty-bitmap",
                    "reconnect-delay",
                    "open-timeout",
                    "host",
                    "port",
                    "path",
                }
            ),
            strong_opts=frozenset({"server.", "export", "tls-creds", "tls-hostname"}),
        ),
        DriverSpec(
            "raw",
            "format",
            options=frozenset({"offset", "size"}),
            mutable_opts=frozenset({"offset", "size"}),
            changeable_opts=frozenset({"offset", "size"}),
            strong_opts=frozenset({"offset", "size"}),
            children=(ChildSpec("file", Role.FILTERED | Role.PRIMARY),),
            perm_family="raw",
        ),
        DriverSpec(
            "qcow2",
            "format",
            supports_backing=True,
            options=_QCOW2_MUTABLE | frozenset({"encrypt.", "data-file", "data-file."}),
            mutable_opts=_QCOW2_MUTABLE,
            changeable_opts=_QCOW2_MUTABLE,
            strong_opts=frozenset({"encrypt.key-secret"}),
            children=(
                ChildSpec("file", Role.IMAGE),
                ChildSpec("data-file", Role.DATA, required=False),
            ),
        ),
        DriverSpec(
            "throttle",
            "filter",
            options=frozenset({"throttle-group"}),
            changeable_opts=frozenset({"throttle-group"}),
            strong_opts=frozenset({"throttle-group"}),
            children=_FILTER_FILE,
        ),
        DriverSpec(
            "copy-on-read",
            "filter",
            reopenable=False,
            options=frozenset({"bottom"}),
            children=_FILTER_FILE,
            perm_family="copy-on-read",
        ),
        DriverSpec(
            "copy-before-write",
            "filter",
            reopenable=False,
            options=frozenset({"bitmap."}),
            children=(
                ChildSpec("file", Role.FILTERED | Role.PRIMARY),
                ChildSpec("target", Role.DATA),
            ),
            perm_family="copy-before-write",
        ),
        DriverSpec(
            "preallocate",
            "filter",
            options=frozenset({"prealloc-align", "prealloc-size"}),
            changeable_opts=frozenset({"prealloc-align", "prealloc-size"}),
            children=_FILTER_FILE,
        ),
        DriverSpec("compress", "filter", reopenable=False, children=_FILTER_FILE),
        DriverSpec(
            "blkdebug",
            "filter",
            options=frozenset(
                {
                    "config",
                    "align",
                    "max-transfer",
                    "opt-write-zero",
                    "max-write-zero",
                    "opt-discard",
                    "max-discard",
                    "inject-error.",
                    "set-state.",
                    "take-child-perms.",
                    "unshare-child-perms.",
                    "x-image",
                }
            ),
            strong_opts=frozenset(
                {
                    "config",
                    "inject-error.",
                    "set-state.",
                    "align",
                    "max-transfer",
                    "opt-write-zero",
                    "max-write-zero",
                    "opt-discard",
                    "max-discard",
                }
            ),
            children=(ChildSpec("image", Role.FILTERED | Role.PRIMARY),),
            perm_family="blkdebug",
        ),
        DriverSpec(
            "blkverify",
            "filter",
            reopenable=False,
            options=frozenset({"x-raw", "x-image"}),
            children=(ChildSpec("raw", Role.FILTERED | Role.PRIMARY), ChildSpec("test", Role.DATA)),
        ),
        # Job filters: no options, created only by jobs (bdrv_new_open_driver), and never
        # frozen so the job can always drop them again.
        DriverSpec(
            "commit_top",
            "filter",
            reopenable=False,
            filtered_child_is_backing=True,
            perm_family="commit_top",
        ),
        DriverSpec(
            "mirror_top",
            "filter",
            reopenable=False,
            filtered_child_is_backing=True,
            perm_family="mirror_top",
        ),
        DriverSpec(
            "quorum",
            "other",
            reopenable=False,
            options=frozenset({"vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern"}),
            strong_opts=frozenset(
                {"vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern"}
            ),
            perm_family="quorum",
        ),
    )
}

DRIVER_SPECS.update({spec.name: spec for spec in crypto_specs(DriverSpec, ChildSpec)})


def driver_spec(name: str) -> DriverSpec | None:
    return DRIVER_SPECS.get(name)
