"""Driver specifications of the filter drivers.

throttle, copy-on-read, copy-before-write, preallocate, compress, blkdebug and
blkverify, and the job filters ``commit_top`` and ``mirror_top`` (created only
by jobs through ``bdrv_new_open_driver``, so blockdev-add never names them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from txgraph.errors import OpenError
from txgraph.model.drivers.spec import ChildSpec, DriverSpec, ParseFilename
from txgraph.model.perm_bits import Role

if TYPE_CHECKING:
    from txgraph.model.graph import BlockGraph

__all__ = ["SPECS"]


def _parse_debug(driver: str) -> ParseFilename:
    """``blkdebug_parse_filename`` / ``blkverify_parse_filename``.

    Without the ``driver:`` prefix the whole string names the image child
    (``x-image``), so a format's filename travels through the filter to the
    child below, which then clashes with a ``filename`` of its own. With the
    prefix, blkdebug takes ``[config]:image``, blkverify ``raw:image``.
    """

    def parse(filename: str, options: Mapping[str, Any]) -> dict[str, Any]:
        prefix = driver + ":"
        if not filename.startswith(prefix):
            return {"x-image": filename}
        head, colon, image = filename[len(prefix) :].partition(":")
        if not colon:
            raise OpenError(
                "blkdebug requires both config file and image path"
                if driver == "blkdebug"
                else "blkverify requires raw copy and original image path"
            )
        if driver == "blkverify":
            return {"x-raw": head, "x-image": image}
        return {"config": head, "x-image": image} if head else {"x-image": image}

    return parse


def _refresh_blkdebug(graph: BlockGraph, name: str, opts: Mapping[str, Any]) -> str:
    """``blkdebug_refresh_filename``: ``blkdebug:CONFIG:IMAGE`` while no other option is set."""
    image = graph.child_edge(name, "image")
    if image and graph.nodes[image[0]].exact_filename:
        if set(opts) <= {"driver", "config", "x-image", "image"}:
            config = graph.nodes[name].options.get("config", "")
            return f"blkdebug:{config}:{graph.nodes[image[0]].exact_filename}"
    return ""


def _gather_blkdebug(
    graph: BlockGraph, name: str, full: Callable[[str], dict[str, Any]]
) -> dict[str, Any]:
    """``blkdebug``'s children in its open options: the image only."""
    image = graph.child_edge(name, "image")
    return {"image": full(image[0])} if image else {}


def _refresh_blkverify(graph: BlockGraph, name: str, opts: Mapping[str, Any]) -> str:
    """``blkverify_refresh_filename``: ``blkverify:RAW:TEST`` while no other option is set."""
    raw, test = graph.child_edge(name, "raw"), graph.child_edge(name, "test")
    if raw and test and set(opts) <= {"driver", "raw", "test", "x-raw", "x-image"}:
        raw_name = graph.nodes[raw[0]].exact_filename
        test_name = graph.nodes[test[0]].exact_filename
        if raw_name and test_name:
            return f"blkverify:{raw_name}:{test_name}"
    return ""


def _refresh_job_top(graph: BlockGraph, name: str, opts: Mapping[str, Any]) -> str:
    """``bdrv_commit_top_refresh_filename`` / ``bdrv_mirror_top_refresh_filename``."""
    backing = graph.backing_child(name)
    return graph.nodes[backing].filename if backing else ""


def _refresh_cbw(graph: BlockGraph, name: str, opts: Mapping[str, Any]) -> str:
    """``cbw_refresh_filename``: the source's filename."""
    file = graph.file_child(name)
    return graph.nodes[file].filename if file else ""


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
        can_compress=True,
    ),
    DriverSpec(
        "copy-on-read",
        "filter",
        reopenable=False,
        options=frozenset({"bottom"}),
        children=_FILTER_FILE,
        perm_family="copy-on-read",
        can_compress=True,
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
        refresh_filename=_refresh_cbw,
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
        flat_opts=frozenset({"inject-error.", "set-state."}),
        children=(ChildSpec("image", Role.FILTERED | Role.PRIMARY),),
        perm_family="blkdebug",
        protocol_names=("blkdebug",),
        parse_filename=_parse_debug("blkdebug"),
        refresh_filename=_refresh_blkdebug,
        gather_child_options=_gather_blkdebug,
    ),
    DriverSpec(
        "blkverify",
        "filter",
        reopenable=False,
        options=frozenset({"x-raw", "x-image"}),
        children=(ChildSpec("raw", Role.FILTERED | Role.PRIMARY), ChildSpec("test", Role.DATA)),
        protocol_names=("blkverify",),
        parse_filename=_parse_debug("blkverify"),
        refresh_filename=_refresh_blkverify,
    ),
    # Job filters: no options, created only by jobs (bdrv_new_open_driver), and never
    # frozen so the job can always drop them again.
    DriverSpec(
        "commit_top",
        "filter",
        reopenable=False,
        filtered_child_is_backing=True,
        perm_family="commit_top",
        refresh_filename=_refresh_job_top,
    ),
    DriverSpec(
        "mirror_top",
        "filter",
        reopenable=False,
        filtered_child_is_backing=True,
        perm_family="mirror_top",
        refresh_filename=_refresh_job_top,
    ),
)
