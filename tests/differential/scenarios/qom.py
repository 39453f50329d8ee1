"""qom-list and qom-get on the objects container and on objects, QSD 7.2 vs txgraph.

The order of ``/objects`` in ``qom-list`` is GLib's hash-table order of the ids,
including the tombstones object-del and failed object-adds leave and the
table's resizes; the scenarios add enough objects to resize it and delete
some in between.
"""

from __future__ import annotations

from typing import Any

from tests.differential.scenarios._common import cmd, obj_add, obj_del, sc

__all__ = ["SCENARIOS"]

T = "qom"


def _ls(path: str) -> dict[str, Any]:
    return cmd("qom-list", {"path": path})


def _get(path: str, prop: str) -> dict[str, Any]:
    return cmd("qom-get", {"path": path, "property": prop})


def _secret(oid: str, **extra: Any) -> dict[str, Any]:
    return obj_add({"qom-type": "secret", "id": oid, "data": "pw", **extra})


def _tg(oid: str, **limits: int) -> dict[str, Any]:
    return obj_add({"qom-type": "throttle-group", "id": oid, "limits": limits})


SCENARIOS = [
    sc(
        "qom_list_objects_order",
        [
            _ls("/"),
            _ls("/objects"),
            _secret("s0"),
            _tg("tg", **{"iops-total": 100}),
            obj_add({"qom-type": "iothread", "id": "io0"}),
            _ls("/objects"),
            *[_secret(f"sec{i}") for i in range(12)],
            _ls("/objects"),
            obj_del("sec3"),
            obj_del("io0"),
            *[obj_del(f"sec{i}") for i in range(5, 11)],
            _ls("/objects"),
            _secret("sec3"),
            _secret("zz"),
            _ls("/objects/"),
            _ls("objects"),
        ],
        theme=T,
    ),
    sc(
        "qom_list_failed_adds",
        [
            _secret("a"),
            _tg("bad", **{"iops-total": -1}),
            _secret("badsecret", format="base64", data="%%%"),
            obj_add({"qom-type": "secret", "id": "nofile", "file": "/nonexistent/secret"}),
            _secret("b"),
            _secret("a"),
            _ls("/objects"),
        ],
        theme=T,
    ),
    sc(
        "qom_list_paths",
        [
            _secret("s0"),
            _tg("tg"),
            obj_add({"qom-type": "iothread", "id": "io0"}),
            _ls("/objects/s0"),
            _ls("/objects/tg"),
            _ls("/objects/io0"),
            _ls("s0"),
            _ls("objects/tg"),
            _ls("/nosuch"),
            _ls("/objects/nosuch"),
            _ls("nosuch"),
            _ls(""),
            _ls("/objects/s0/data"),
        ],
        theme=T,
    ),
    sc(
        "qom_get_properties",
        [
            _secret("s0"),
            _secret("s1", format="base64", data="cHc="),
            _tg("tg", **{"iops-total": 100, "bps-read": 4096}),
            obj_add({"qom-type": "throttle-group", "id": "tx", "x-iops-total": 5}),
            obj_add({"qom-type": "iothread", "id": "io0", "poll-max-ns": 1000}),
            _get("/", "type"),
            _get("/objects", "type"),
            _get("/objects", "s0"),
            _get("/objects/s0", "type"),
            *[_get("/objects/s0", p) for p in ("data", "file", "keyid", "iv", "format", "loaded")],
            _get("/objects/s1", "format"),
            _get("/objects/s1", "data"),
            _get("/objects/s0", "nosuch"),
            _get("/objects/tg", "limits"),
            _get("/objects/tg", "x-bps-read"),
            _get("/objects/tg", "iops-total"),
            _get("/objects/tx", "x-iops-total"),
            _get("/objects/tx", "x-iops-total-max-length"),
            *[_get("io0", p) for p in ("poll-max-ns", "thread-pool-max", "aio-max-batch", "type")],
            _get("/objects/nosuch", "type"),
            _get("/objects", "nosuch"),
        ],
        theme=T,
    ),
]

#: ``/chardevs``: the monitor's chardev of the daemon's command line (``--chardev
#: socket,id=qmp0 --monitor chardev=qmp0``), reached by absolute and partial paths
SCENARIOS += [
    sc(
        "qom_list_chardevs",
        [
            _ls("/"),
            _ls("/chardevs"),
            _ls("chardevs"),
            _ls("/chardevs/qmp0"),
            _ls("qmp0"),
            _ls("/chardevs/qmp1"),
            _get("/chardevs", "type"),
            _get("/chardevs", "qmp0"),
            _get("/chardevs/qmp0", "type"),
            _get("/chardevs/qmp0", "connected"),
            _get("qmp0", "nope"),
            _get("/", "chardevs"),
            _secret("qmp0"),
            _ls("/objects"),
            _ls("qmp0"),
            _ls("/chardevs/qmp0"),
            _ls("/objects/qmp0"),
            _secret("chardevs"),
            _ls("chardevs"),
        ],
        theme=T,
    ),
]
