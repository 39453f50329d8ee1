"""Driver specifications of the filter drivers.

throttle, copy-on-read, copy-before-write, preallocate, compress, blkdebug and
blkverify, and the job filters ``commit_top`` and ``mirror_top`` (created only
by jobs through ``bdrv_new_open_driver``, so blockdev-add never names them).
"""

from __future__ import annotations

from txgraph.model.drivers.spec import ChildSpec, DriverSpec
from txgraph.model.perm_bits import Role

__all__ = ["SPECS"]

_FILTER_FILE = (ChildSpec("file", Role.FILTERED | Role.PRIMARY),)

#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
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
)
