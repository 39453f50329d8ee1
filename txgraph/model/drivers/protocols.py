"""Driver specifications of the protocol drivers: file, host_device, null-co, null-aio, nbd.

``file`` and ``host_device`` share block/file-posix.c's ``raw_runtime_opts``
and ``raw_reopen_prepare`` (only ``drop-cache`` and ``x-check-cache-dropped``
change on reopen); the null drivers (block/null.c) and nbd (block/nbd.c) have
no children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from txgraph.errors import OpenError
from txgraph.model.drivers.spec import DriverSpec, ParseFilename, RefreshFilename
from txgraph.model.nbd_uri import NbdAddressError, nbd_parse_filename
from txgraph.model.nbd_uri import exact_filename as nbd_exact_filename

if TYPE_CHECKING:
    from txgraph.model.graph import BlockGraph

__all__ = ["SPECS"]


def _strip_prefix(driver: str) -> ParseFilename:
    """``raw_parse_filename``/``hdev_parse_filename``: drop an optional ``driver:`` prefix."""

    def parse(filename: str, options: Mapping[str, Any]) -> dict[str, Any]:
        prefix = driver + ":"
        return {"filename": filename[len(prefix) :] if filename.startswith(prefix) else filename}

    return parse


def _parse_nbd(filename: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``nbd_parse_filename`` (:func:`txgraph.model.nbd_uri.nbd_parse_filename`)."""
    try:
        return dict(nbd_parse_filename(filename, options))
    except NbdAddressError as err:
        raise OpenError(str(err)) from None


def _refresh_nbd(graph: BlockGraph, name: str, opts: Mapping[str, Any]) -> str:
    """``nbd_refresh_filename``: the URI or legacy name of the server and export."""
    return nbd_exact_filename(graph.nodes[name].options)


def _null(driver: str) -> tuple[ParseFilename, RefreshFilename]:
    """``null_file_parse_filename`` and ``null_refresh_filename`` of ``driver``."""

    def parse(filename: str, options: Mapping[str, Any]) -> dict[str, Any]:
        if filename != f"{driver}://":
            raise OpenError(f"The only allowed filename for this driver is '{driver}://'")
        return {}

    def refresh(graph: BlockGraph, name: str, opts: Mapping[str, Any]) -> str:
        # only the options that do not change what the node is leave a plain name
        return f"{driver}://" if set(opts) <= {"filename", "driver", "latency-ns"} else ""

    return parse, refresh


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

#: ``raw_open_common``'s defaults (file-posix: aio=threads, locking=auto, drop-cache=on)
_FILE_DEFAULTS = {"aio": "threads", "locking": "auto", "drop-cache": True}


def _posix_file(driver: str) -> DriverSpec:
    """file-posix's two drivers (``bdrv_file`` and ``bdrv_host_device``) share one option list."""
    return DriverSpec(
        driver,
        "protocol",
        needs_filename=True,
        options=_FILE_OPTIONS,
        mutable_opts=frozenset({"x-check-cache-dropped"}),
        changeable_opts=frozenset({"drop-cache", "x-check-cache-dropped"}),
        defaults=_FILE_DEFAULTS,
        protocol_names=(driver,),
        parse_filename=_strip_prefix(driver),
    )


def _null_driver(driver: str) -> DriverSpec:
    """block/null.c's two drivers differ only in how they complete a request."""
    parse, refresh = _null(driver)
    return DriverSpec(
        driver,
        "protocol",
        options=frozenset({"filename", "size", "latency-ns", "read-zeroes"}),
        strong_opts=frozenset({"size", "read-zeroes"}),
        defaults={"size": 1 << 30, "latency-ns": 0, "read-zeroes": False},
        protocol_names=(driver,),
        parse_filename=parse,
        refresh_filename=refresh,
    )


#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
    _posix_file("file"),
    _posix_file("host_device"),
    _null_driver("null-co"),
    _null_driver("null-aio"),
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
        protocol_names=("nbd", "nbd+tcp", "nbd+unix"),
        parse_filename=_parse_nbd,
        refresh_filename=_refresh_nbd,
    ),
)
