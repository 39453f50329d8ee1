"""Driver specification of ``vvfat`` (block/vvfat.c): a host directory as a FAT disk.

A protocol driver (``bdrv_file_open``, protocol prefix ``fat:``) without
children in read-only use; with ``rw=on`` it has a ``write-target`` child whose
edge takes write and consistent-read and shares write-unchanged only
(``vvfat_child_perm``, perm family ``vvfat``); every option is strong (``vvfat_strong_runtime_opts``),
so its nodes are always named by a json: filename, and it has no
``bdrv_reopen_prepare``. :func:`parse_filename` is ``vvfat_parse_filename``.
The open rules are :mod:`txgraph.ops.drivers.vvfat`, the device
:mod:`txgraph.io.drivers.vvfat`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from txgraph.errors import OpenError
from txgraph.model.drivers.spec import DriverSpec

__all__ = ["SPECS", "parse_filename"]

_OPTIONS = frozenset({"dir", "fat-type", "floppy", "label", "rw"})


def parse_filename(filename: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``vvfat_parse_filename``: ``fat:[floppy:][rw:][12|16|32:]DIR``.

    The flags are found anywhere in the string (``strstr`` of ``:32:``, ``:16:``,
    ``:12:``, ``:floppy:``, ``:rw:``); the directory is what follows the last
    ':', or the last two characters before it too when they are a DOS drive
    letter and its colon (``fat:floppy:C:dir``).
    """
    if not filename.startswith("fat:"):
        raise OpenError("File name string must start with 'fat:'")
    fat_type = 0
    for bits in (32, 16, 12):
        if f":{bits}:" in filename:
            fat_type = bits
            break
    last = filename.rindex(":")
    if filename[last - 2] == ":" and filename[last - 1].isascii() and filename[last - 1].isalpha():
        directory = filename[last - 1 :]
    else:
        directory = filename[last + 1 :]
    return {
        "dir": directory,
        "fat-type": fat_type,
        "floppy": ":floppy:" in filename,
        "rw": ":rw:" in filename,
    }


#: this family's specs, merged into :data:`txgraph.model.drivers.DRIVER_SPECS`
SPECS: tuple[DriverSpec, ...] = (
    DriverSpec(
        "vvfat",
        "protocol",
        reopenable=False,
        options=_OPTIONS,
        strong_opts=_OPTIONS,
        defaults={"fat-type": 0, "floppy": False, "rw": False},
        protocol_names=("fat",),
        perm_family="vvfat",
        parse_filename=parse_filename,
    ),
)
