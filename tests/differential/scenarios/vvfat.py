"""vvfat scenarios: options, errors, the node in queries, ``fat:`` filenames, hostile trees.

A directory tree is built in the peer's directory by a setup ``Call``
(:func:`tree`); both peers must answer ``blockdev-add`` of a ``vvfat`` node alike
(QEMU 7.2's texts for a missing or unreadable directory, a bad ``fat-type``, a
long label, the read-only rules, a tree too big for the FAT or its root
directory, a file over 2 GiB), show the same node (virtual size, the json:
filename in QDict order, no children), refuse a reopen alike, and open the
``fat:[floppy:][rw:][12|16|32:]DIR`` names of image headers the same way. The
data a guest reads is compared byte for byte in tests/interop/test_vvfat_data.py.

``rw: true`` on a writable node is not here: QEMU adds a temporary qcow
``write-target`` child there, whose random name these scenarios cannot compare;
tests/interop/test_vvfat_rw_qsd.py and test_vvfat_rw_data.py compare it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.differential.scenarios._common import Call, add, cmd, delete, qnodes, sc

__all__ = ["SCENARIOS", "tree", "hostile_tree", "T"]

T = "vvfat"
#: a fixed mtime for every entry (the FAT's write time and date come from it)
MTIME = 981173106  # 2001-02-03 04:05:06 UTC


def tree(workdir: Path, root: str, spec: dict[str, Any]) -> None:
    """Build ``{dir}/root`` from ``spec``: name -> bytes (a file), dict (a directory),
    or ``("link", target)``; every entry gets the fixed mtime (atime in the future, so
    reads do not move it)."""
    base = workdir / root
    base.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        path = base / name
        if isinstance(value, dict):
            tree(workdir, f"{root}/{name}", value)
        elif isinstance(value, tuple):
            os.symlink(value[1], path)
            continue
        else:
            path.write_bytes(value)
        os.utime(path, (MTIME + 10**9, MTIME))
    os.utime(base, (MTIME + 10**9, MTIME))


def _many(count: int, size: int = 1) -> dict[str, Any]:
    return {f"file number {i:04d}.dat": bytes([i % 251]) * size for i in range(count)}


def hostile_tree(kind: str) -> dict[str, Any]:
    """Trees QEMU refuses or maps oddly (also used by the data tests)."""
    if kind == "root_full":
        return _many(200)  # 2 long-name entries + 1 short each: over 512 root entries
    if kind == "root_just_fits":
        return _many(170)
    if kind == "floppy_full":
        return {"big.bin": b"\x5a" * (1 << 21)}  # 2 MiB on a 1.44 MB floppy
    if kind == "loop":
        return {"a.txt": b"a", "loop": ("link", ".")}
    if kind == "dangling":
        return {"gone": ("link", "nowhere"), "ok.txt": b"ok"}
    raise KeyError(kind)


def _vv(name: str, directory: str = "{dir}/t", **extra: Any) -> dict[str, Any]:
    return add({"driver": "vvfat", "node-name": name, "dir": directory, "read-only": True, **extra})


_BASIC = {"a.txt": b"hello\n", "sub": {"inner.bin": bytes(range(256)) * 40}}


#: backing names of image headers that pick vvfat by its ``fat:`` prefix (DIR is {dir}/t)
_BACKINGS = (
    "fat:{dir}/t",
    "fat:floppy:{dir}/t",
    "fat:floppy:12:{dir}/t",
    "fat:32:{dir}/t",
    "fat:rw:{dir}/t",
    "fat:{dir}/nowhere",
    "fat:",
    "fat:floppy:12:16:{dir}/t",
    "fat:floppy:X:{dir}/t",
)


def _top_with_backing(workdir: Path, path: str, backing: str) -> None:
    """A qcow2 whose header names ``backing`` (format raw), written without opening it."""
    import subprocess

    subprocess.run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-u",
            "-b",
            backing.replace("{dir}", str(workdir)),
            "-F",
            "raw",
            str(workdir / path),
            "1M",
        ],
        check=True,
        capture_output=True,
    )


def _sparse(workdir: Path, path: str, size: int) -> None:
    with open(workdir / path, "wb") as f:
        f.truncate(size)


def _hostile(name: str, kind: str, **extra: Any) -> Any:
    return sc(
        f"vvfat_hostile_{name}",
        [_vv("v", **extra), qnodes()],
        setup=[Call(tree, ("t", hostile_tree(kind)))],
        theme=T,
    )


SCENARIOS = [
    sc(
        "vvfat_open_modes",
        [
            add({"driver": "vvfat", "node-name": "rw", "dir": "{dir}/t"}),
            add({"driver": "vvfat", "node-name": "rw2", "dir": "{dir}/t", "read-only": False}),
            add({"driver": "vvfat", "node-name": "auto", "dir": "{dir}/t", "auto-read-only": True}),
            _vv("ro"),
            _vv("rwflag", rw=True),
            add({"driver": "vvfat", "node-name": "nodir", "read-only": True}),
            _vv("trailing", "{dir}/t/"),
            _vv("relative", "t"),
            qnodes(),
            cmd("x-debug-query-block-graph"),
            delete("auto"),
            delete("ro"),
            qnodes(),
        ],
        setup=[Call(tree, ("t", _BASIC))],
        theme=T,
    ),
    sc(
        "vvfat_options",
        [
            _vv("f12", **{"fat-type": 12}),
            _vv("f16", **{"fat-type": 16}),
            _vv("f32", **{"fat-type": 32}),
            _vv("f0", **{"fat-type": 0}),
            _vv("f13", **{"fat-type": 13}),
            _vv("fneg", **{"fat-type": -1}),
            _vv("fwrap", **{"fat-type": 4294967312}),
            _vv("fl", floppy=True),
            _vv("fl12", floppy=True, **{"fat-type": 12}),
            _vv("fl16", floppy=True, **{"fat-type": 16}),
            _vv("fl32", floppy=True, **{"fat-type": 32}),
            _vv("fl8", floppy=True, **{"fat-type": 8}),
            _vv("lab", label="DATA DISK"),
            _vv("lab11", label="12345678901"),
            _vv("lab12", label="123456789012"),
            _vv("labutf", label="\u00e9t\u00e9"),
            _vv("labempty", label=""),
            _vv("rwoff", rw=False, floppy=False),
            _vv("bad", **{"fat-type": "16"}),
            _vv("unknown", bogus=1),
            qnodes(),
        ],
        setup=[Call(tree, ("t", _BASIC))],
        theme=T,
    ),
    sc(
        "vvfat_bad_dirs",
        [
            _vv("missing", "{dir}/nonexistent"),
            _vv("afile", "{dir}/t/a.txt"),
            _vv("empty", ""),
            _vv("emptydir", "{dir}/e"),
            _vv("sub", "{dir}/t/sub", floppy=True),
            qnodes(),
        ],
        setup=[Call(tree, ("t", _BASIC)), Call(tree, ("e", {}))],
        theme=T,
    ),
    sc(
        "vvfat_reopen_and_parents",
        [
            _vv("v"),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "vvfat", "node-name": "v", "dir": "{dir}/t", "read-only": True}
                    ]
                },
            ),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "vvfat", "node-name": "v", "dir": "{dir}/t", "read-only": False}
                    ]
                },
            ),
            add({"driver": "raw", "node-name": "r", "file": "v"}),
            add({"driver": "raw", "node-name": "r2", "file": "v", "read-only": True}),
            add(
                {
                    "driver": "raw",
                    "node-name": "nested",
                    "read-only": True,
                    "file": {"driver": "vvfat", "dir": "{dir}/t", "floppy": True},
                }
            ),
            add({"driver": "qcow2", "node-name": "notq", "file": "v", "read-only": True}),
            cmd("x-debug-query-block-graph"),
            qnodes(),
            delete("v"),
            delete("r"),
            delete("r2"),
            delete("v"),
            qnodes(),
        ],
        setup=[Call(tree, ("t", _BASIC))],
        theme=T,
    ),
    sc(
        "vvfat_fat_filenames",
        [
            *[
                add(
                    {
                        "driver": "qcow2",
                        "node-name": f"q{i}",
                        "read-only": True,
                        "file": {"driver": "file", "filename": f"{{dir}}/top{i}.qcow2"},
                    }
                )
                for i in range(len(_BACKINGS))
            ],
            qnodes(),
            cmd("x-debug-query-block-graph"),
        ],
        setup=[
            Call(tree, ("t", _BASIC)),
            *[Call(_top_with_backing, (f"top{i}.qcow2", b)) for i, b in enumerate(_BACKINGS)],
        ],
        theme=T,
    ),
    _hostile("root_full", "root_full", floppy=True),
    _hostile("root_full_fat32", "root_full", **{"fat-type": 32}),
    _hostile("root_just_fits", "root_just_fits", floppy=True),
    _hostile("floppy_full", "floppy_full", floppy=True, **{"fat-type": 12}),
    _hostile("floppy_big_ok", "floppy_full", floppy=True),
    _hostile("symlink_loop", "loop", floppy=True),
    _hostile("dangling_link", "dangling", floppy=True),
    sc(
        "vvfat_hostile_over_2g",
        [_vv("v", floppy=True), _vv("v2", "{dir}/t/sub"), qnodes()],
        setup=[Call(tree, ("t", {"sub": {"x": b"x"}})), Call(_sparse, ("t/huge.img", 3 << 30))],
        theme=T,
    ),
]
