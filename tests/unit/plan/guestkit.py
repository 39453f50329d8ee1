"""The newcomer's chain of issue 11: base <- mid <- top, exported as vm0, with known data.

``base`` holds 0xbb everywhere (16 MiB), ``mid`` 0xcc at [4 MiB, 8 MiB) and at
[0, 512 KiB) (hidden by top), ``top`` 0xdd at [0, 1 MiB). Reopening top with
``"backing": "base"`` therefore changes exactly [4 MiB, 8 MiB): mid's data
becomes base's. With ``mid_data=False`` mid allocates nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

MiB = 1 << 20
BASE, MID, TOP = 0xBB, 0xCC, 0xDD


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=60)


def make_chain(d: Path, *, mid_data: bool = True) -> Path:
    _sh("qemu-img", "create", "-q", "-f", "qcow2", str(d / "base.qcow2"), "16M")
    _sh("qemu-io", "-f", "qcow2", "-c", f"write -P {BASE} 0 16M", str(d / "base.qcow2"))
    _sh(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        str(d / "mid.qcow2"),
    )
    if mid_data:
        _sh(
            "qemu-io",
            "-f",
            "qcow2",
            "-c",
            f"write -P {MID} 4M 4M",
            "-c",
            f"write -P {MID} 0 512k",
            str(d / "mid.qcow2"),
        )
    _sh(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        str(d / "top.qcow2"),
    )
    _sh("qemu-io", "-f", "qcow2", "-c", f"write -P {TOP} 0 1M", str(d / "top.qcow2"))
    _sh(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "top.qcow2",
        "-F",
        "qcow2",
        str(d / "snap.qcow2"),
    )
    return d


def _layer(name: str, backing: str | None) -> dict[str, Any]:
    args: dict[str, Any] = {
        "driver": "qcow2",
        "node-name": name,
        "file": {
            "driver": "file",
            "node-name": f"{name}-file",
            "filename": f"{{dir}}/{name}.qcow2",
        },
    }
    if backing is not None:
        args["backing"] = backing
    return {"execute": "blockdev-add", "arguments": args}


def state(nbd_path: str = "{dir}/nbd.sock") -> list[dict[str, Any]]:
    """The starting graph as QMP commands (``{dir}`` is substituted by the caller)."""
    return [
        {
            "execute": "object-add",
            "arguments": {
                "qom-type": "throttle-group",
                "id": "tg0",
                "limits": {"iops-total": 1000},
            },
        },
        _layer("base", None),
        _layer("mid", "base"),
        _layer("top", "mid"),
        {
            "execute": "nbd-server-start",
            "arguments": {"addr": {"type": "unix", "data": {"path": nbd_path}}},
        },
        {
            "execute": "block-export-add",
            "arguments": {"type": "nbd", "id": "vm0", "node-name": "top", "writable": True},
        },
    ]


REOPEN_SKIP_MID: dict[str, Any] = {
    "execute": "blockdev-reopen",
    "arguments": {
        "options": [{"driver": "qcow2", "node-name": "top", "file": "top-file", "backing": "base"}]
    },
}
REOPEN_CUT: dict[str, Any] = {
    "execute": "blockdev-reopen",
    "arguments": {
        "options": [{"driver": "qcow2", "node-name": "top", "file": "top-file", "backing": None}]
    },
}
DEL_MID: dict[str, Any] = {"execute": "blockdev-del", "arguments": {"node-name": "mid"}}

#: the newcomer's plan: top skips mid, then mid goes
NEWCOMER = [REOPEN_SKIP_MID, DEL_MID]

#: a snapshot onto an empty overlay, then a throttle filter above it (keeps the view)
SNAPSHOT_AND_THROTTLE: list[dict[str, Any]] = [
    {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "qcow2",
            "node-name": "snap",
            "backing": None,
            "file": {"driver": "file", "node-name": "snap-file", "filename": "{dir}/snap.qcow2"},
        },
    },
    {"execute": "blockdev-snapshot", "arguments": {"node": "top", "overlay": "snap"}},
    {
        "execute": "x-txgraph-insert-filter",
        "arguments": {
            "node": "snap",
            "filter": {"driver": "throttle", "node-name": "throttle0", "throttle-group": "tg0"},
        },
    },
]


#: what each layer wrote (None: zeroes)
PATTERN: dict[str | None, int] = {"base": BASE, "mid": MID, "top": TOP, None: 0}


def reads(socket_path: str, export: str, expect: list[tuple[int, int, int]]) -> list[str]:
    """qemu-io reads of the export, each checked against a pattern; the failures (empty: all held)."""
    from tests.support.guest_io import run_qemu_io

    cmds = [f"read -P {pat} {off} {n}" for off, n, pat in expect]
    res = run_qemu_io(socket_path, export, cmds, read_only=True)
    assert res.rc == 0 or res.lines, res
    return [ln for ln in res.lines if "failed" in ln or "error" in ln.lower()]
