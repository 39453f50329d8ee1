"""Builders shared by the live scenario modules: images, nodes, exports, guest I/O."""

from __future__ import annotations

from typing import Any

from tests.differential.harness import SetupAction, cmd, qemu_img, qemu_io
from tests.differential.live.harness import IO, LiveScenario, LiveStep, Split, View, io

__all__ = [
    "IO",
    "View",
    "Split",
    "io",
    "cmd",
    "sc",
    "hd",
    "fnode",
    "add",
    "reopen",
    "export",
    "export_del",
    "snap",
    "snap_sync",
    "overlay",
    "BASE",
    "CHAIN",
    "CHAIN3",
    "RAWS",
    "W",
    "R",
    "QUERY",
    "qcow2",
    "raw",
    "fill",
]

#: the write/read pair most scenarios use (a guest write and its read-back)
W = "write -P 0xab 0 64k"
R = "read -P 0xab 0 64k"
QUERY = cmd("query-named-block-nodes", {"flat": True})


def qcow2(path: str, size: str = "4M", backing: str | None = None) -> SetupAction:
    extra = f"-b {backing} -F qcow2 " if backing else ""
    return qemu_img(f"create -q -f qcow2 {extra}{{dir}}/{path} {size}")


def raw(path: str, size: str = "4M") -> SetupAction:
    return qemu_img(f"create -q -f raw {{dir}}/{path} {size}")


def fill(path: str, fmt: str, *writes: str) -> SetupAction:
    """Put guest data into an image with qemu-io (``writes`` are qemu-io commands)."""
    args = " ".join(f"-c '{w}'" for w in writes)
    return qemu_io(f"-f {fmt} {args} {{dir}}/{path}")


#: base.qcow2 with data 0x11 at 0..1M and 0x22 at 2M..2.5M; two empty overlay images;
#: solo.qcow2 (0x77 at 0..512k), a second independent disk
BASE = (
    qcow2("base.qcow2"),
    fill("base.qcow2", "qcow2", "write -P 0x11 0 1M", "write -P 0x22 2M 512k"),
    qcow2("ov.qcow2"),
    qcow2("ov2.qcow2"),
    qcow2("solo.qcow2"),
    fill("solo.qcow2", "qcow2", "write -P 0x77 0 512k"),
)
#: top.qcow2 over base.qcow2 (backing named in the header); top has 0x44 at 512k..768k
CHAIN = (
    *BASE,
    qcow2("top.qcow2", backing="base.qcow2"),
    fill("top.qcow2", "qcow2", "write -P 0x44 512k 256k"),
)
#: up.qcow2 over top.qcow2 over base.qcow2; up has 0x88 at 3M..3M+64k
CHAIN3 = (
    *CHAIN,
    qcow2("up.qcow2", backing="top.qcow2"),
    fill("up.qcow2", "qcow2", "write -P 0x88 3M 64k"),
)
#: three raw images with the same data (quorum children), and a different one
RAWS = (
    *(raw(f"q{i}.raw") for i in range(3)),
    *(fill(f"q{i}.raw", "raw", "write -P 0x55 0 1M") for i in range(3)),
    raw("other.raw"),
    fill("other.raw", "raw", "write -P 0x66 0 1M"),
)


def fnode(image: str, name: str | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"driver": "file", "filename": "{dir}/" + image}
    if name:
        d["node-name"] = name
    d.update({k.replace("_", "-"): v for k, v in extra.items()})
    return d


def hd(name: str, image: str, **extra: Any) -> dict[str, Any]:
    """A qcow2 node ``name`` over a file node ``name-file`` on ``{dir}/image``."""
    d: dict[str, Any] = {"driver": "qcow2", "node-name": name, "file": fnode(image, f"{name}-file")}
    d.update({k.replace("_", "-"): v for k, v in extra.items()})
    return d


def add(args: dict[str, Any]) -> dict[str, Any]:
    return cmd("blockdev-add", args)


def reopen(*entries: dict[str, Any]) -> dict[str, Any]:
    return cmd("blockdev-reopen", {"options": list(entries)})


def export(
    eid: str, node: str, name: str | None = None, writable: bool = True, **extra: Any
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "type": "nbd",
        "id": eid,
        "node-name": node,
        "name": name or eid,
        "writable": writable,
    }
    args.update(extra)
    return cmd("block-export-add", args)


def export_del(eid: str, mode: str | None = "hard") -> dict[str, Any]:
    """``block-export-del``, by default in ``hard`` mode.

    ``safe`` mode right after a guest (qemu-io) disconnected races with txgraph's NBD
    connection thread noticing the disconnect ("export 'e0' still in use" under load,
    while QSD has already dropped the client); ``mode=None`` sends QEMU's default.
    """
    return cmd("block-export-del", {"id": eid, **({"mode": mode} if mode else {})})


def overlay(name: str, image: str = "ov.qcow2") -> dict[str, Any]:
    """A fresh qcow2 overlay node with ``backing: null`` (blockdev-snapshot's target)."""
    return add(
        {
            "driver": "qcow2",
            "node-name": name,
            "backing": None,
            "file": fnode(image, f"{name}-file"),
        }
    )


def snap(node: str, ov: str) -> dict[str, Any]:
    return cmd("blockdev-snapshot", {"node": node, "overlay": ov})


def snap_sync(node: str, image: str, name: str, **extra: Any) -> dict[str, Any]:
    return cmd(
        "blockdev-snapshot-sync",
        {
            "node-name": node,
            "snapshot-file": "{dir}/" + image,
            "snapshot-node-name": name,
            "format": "qcow2",
            **extra,
        },
    )


def sc(
    name: str,
    steps: list[LiveStep],
    setup: tuple[SetupAction, ...] = BASE,
    doc: str = "",
    xfail: str | None = None,
    theme: str = "",
) -> LiveScenario:
    return LiveScenario(name, tuple(steps), tuple(setup), doc, xfail, theme)
