"""Driver specifications of the protocol drivers: file, host_device, null-co, null-aio, nbd.

``file`` and ``host_device`` share block/file-posix.c's ``raw_runtime_opts``
and ``raw_reopen_prepare`` (only ``drop-cache`` and ``x-check-cache-dropped``
change on reopen); the null drivers (block/null.c) and nbd (block/nbd.c) have
no children.
"""

from __future__ import annotations

from txgraph.model.drivers.spec import DriverSpec

__all__ = ["SPECS"]

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

#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
    DriverSpec(
        "file",
        "protocol",
        needs_filename=True,
        options=_FILE_OPTIONS,
        mutable_opts=frozenset({"x-check-cache-dropped"}),
        changeable_opts=frozenset({"drop-cache", "x-check-cache-dropped"}),
        defaults=_FILE_DEFAULTS,
    ),
    DriverSpec(
        "host_device",
        "protocol",
        needs_filename=True,
        options=_FILE_OPTIONS,
        mutable_opts=frozenset({"x-check-cache-dropped"}),
        changeable_opts=frozenset({"drop-cache", "x-check-cache-dropped"}),
        defaults=_FILE_DEFAULTS,
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
)
