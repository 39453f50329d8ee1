"""Helpers for the io unit tests: real images made by the QEMU tools, header pokes.

Imported by the test modules of this directory by basename (pytest's default
``prepend`` import mode puts this directory on ``sys.path``).
"""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from txgraph.errors import OpenError
from txgraph.io.driver import DriverNode
from txgraph.io.registry import driver_class

_names = itertools.count()


def run(*args: str | Path) -> str:
    res = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed: {res.stderr}{res.stdout}")
    return res.stdout


def qemu_img(*args: str | Path) -> str:
    return run("qemu-img", *args)


def qemu_io(img: Path, *cmds: str, fmt: str = "qcow2") -> str:
    args: list[str | Path] = ["qemu-io", "-f", fmt]
    for c in cmds:
        args += ["-c", c]
    return run(*args, img)


def poke(path: Path, offset: int, fmt: str, value: int | bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, value) if isinstance(value, int) else value)


#: every node these helpers opened, oldest first: closed after each test by the suite's
#: ``_close_helper_nodes`` fixture (tests/conftest.py), so no test leaves image fds open
#: (one run held 577 descriptors of deleted images), whatever path it ended on
_OPENED: list[DriverNode] = []


def open_node(
    driver: str,
    options: Mapping[str, Any],
    children: Mapping[str, DriverNode] | None = None,
    read_only: bool = False,
) -> DriverNode:
    cls = driver_class(driver)
    assert cls is not None, driver
    node = cls(f"n{next(_names)}", dict(options), dict(children or {}), read_only)
    _OPENED.append(node)
    return node


def close_opened() -> None:
    """Close what the helpers opened, newest first (parents before their children, as the
    Runtime does); closing is idempotent, so nodes a test closed itself are no matter."""
    while _OPENED:
        node = _OPENED.pop()
        try:
            node.close()
        except Exception:  # a test that broke an image on purpose: its close may fail too
            pass


def open_qcow2(path: Path, read_only: bool = False, **opts: Any) -> DriverNode:
    f = open_node("file", {"filename": str(path)}, read_only=read_only)
    return open_node("qcow2", opts, {"file": f}, read_only=read_only)


def txgraph_open_error(path: Path, read_only: bool) -> str | None:
    try:
        node = open_qcow2(path, read_only)
    except OpenError as e:
        return e.desc
    node.close()
    return None


def qsd_open_error(qsd: Any, path: Path, read_only: bool) -> str | None:
    name = f"q{next(_names)}"
    reply = qsd.execute(
        "blockdev-add",
        {
            "driver": "qcow2",
            "node-name": name,
            "read-only": read_only,
            "file": {"driver": "file", "filename": str(path)},
        },
    )
    if "error" in reply:
        return str(reply["error"]["desc"])
    qsd.execute("blockdev-del", {"node-name": name})
    return None


def open_chain(path: Path, read_only: bool = True, depth: int = 0) -> DriverNode:
    """Open an image and its backing chain / data file the way the Runtime would."""
    from txgraph.io.probe import probe_format

    fmt = probe_format(path.read_bytes()[:512]) if depth == 0 else "qcow2"
    f = open_node("file", {"filename": str(path)}, read_only=read_only)
    if fmt == "raw":
        return open_node("raw", {}, {"file": f}, read_only)
    node = open_node("qcow2", {}, {"file": f}, read_only)
    info = node.info()
    if info.has_external_data_file and info.data_file:
        dpath = (
            Path(info.data_file) if os.path.isabs(info.data_file) else path.parent / info.data_file
        )
        node.children["data-file"] = open_node(
            "file", {"filename": str(dpath)}, read_only=read_only
        )
    if info.backing_file:
        bpath = (
            Path(info.backing_file)
            if os.path.isabs(info.backing_file)
            else path.parent / info.backing_file
        )
        if info.backing_format == "raw":
            bf = open_node("file", {"filename": str(bpath)}, read_only=True)
            node.children["backing"] = open_node("raw", {}, {"file": bf}, True)
        else:
            node.children["backing"] = open_chain(bpath, True, depth + 1)
    return node


def convert_raw(path: Path, out: Path) -> bytes:
    qemu_img("convert", "-O", "raw", path, out)
    return out.read_bytes()
