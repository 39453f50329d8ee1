"""VMDK text descriptors: ``createType``, extent lines, CIDs and the parent hint.

Reproduces QEMU 7.2's parsing in block/vmdk.c: ``vmdk_read_desc`` (at most
1 MiB - 1 bytes, a file under 4 bytes is refused), ``vmdk_parse_description``
(``name="value"`` found by substring, as QEMU does), the createType check of
``vmdk_open_desc_file``, ``vmdk_parse_extents`` (``RW <sectors> <TYPE>
"<file>" [offset]``; other lines are skipped; relative names are joined to
the descriptor's directory), ``vmdk_read_cid`` and ``vmdk_parent_open``.
Pure text handling: the callers do the I/O.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from txgraph.errors import OpenError

__all__ = [
    "Extent",
    "Descriptor",
    "parse_description",
    "parse_descriptor",
    "read_extent_list",
    "read_cid",
    "parent_hint",
    "DESC_MAX",
    "DESC_SIZE",
]

#: ``vmdk_read_desc`` reads at most this much
DESC_MAX = (1 << 20) - 1
#: ``DESC_SIZE``: what vmdk_read_cid and vmdk_parent_open look at
DESC_SIZE = 20 * 512

_DESC_TYPES = (
    "monolithicFlat",
    "vmfs",
    "vmfsSparse",
    "seSparse",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
)
_EXTENT_TYPES = ("FLAT", "SPARSE", "VMFS", "VMFSSPARSE", "SESPARSE")
_LINE = re.compile(
    rb'\s*(\S{1,10})\s+([+-]?\d+)\s+(\S{1,10})\s+"([^\n\r"]{1,511})"(?:\s+([+-]?\d+))?'
)


@dataclass(frozen=True)
class Extent:
    """One extent line: its path (joined to the descriptor's directory), type and size."""

    path: str
    type: str
    sectors: int
    flat_offset: int = 0

    @property
    def flat(self) -> bool:
        return self.type in ("FLAT", "VMFS")


@dataclass
class Descriptor:
    """What the opener needs: whether ``file`` is a descriptor, and its extents."""

    is_descriptor: bool
    create_type: str = ""
    extents: list[Extent] = field(default_factory=list)


def parse_description(desc: bytes, name: str) -> str | None:
    """``vmdk_parse_description``: the text between ``name="`` and the next quote."""
    pos = desc.find(name.encode())
    if pos < 0:
        return None
    start = pos + len(name) + 2
    if start >= len(desc):
        return None
    end = desc.find(b'"', start)
    if end < 0:
        return None
    return desc[start:end].decode("latin-1")


def parse_descriptor(desc: bytes, file_filename: str) -> Descriptor:
    """``vmdk_open_desc_file`` + ``vmdk_parse_extents`` (the extent files are not opened)."""
    desc = desc.split(b"\0", 1)[0]
    ct = parse_description(desc, "createType")
    if ct is None:
        raise OpenError("invalid VMDK image descriptor")
    if ct not in _DESC_TYPES:
        raise OpenError(f"Unsupported image type '{ct}'")
    out = Descriptor(True, ct)
    for raw in desc.split(b"\n"):
        m = _LINE.match(raw)
        if m is None:
            continue
        access, sectors_s, typ_b, fname_b, off_s = m.groups()
        typ = typ_b.decode("latin-1")
        if access != b"RW":
            continue
        bad = OpenError("Invalid extent line: " + raw.decode("latin-1"))
        if typ == "FLAT":
            if off_s is None or int(off_s) < 0:
                raise bad
            flat_offset = int(off_s)
        elif typ == "VMFS":
            if off_s is not None:
                raise bad
            flat_offset = 0
        elif off_s is not None:
            raise bad
        else:
            flat_offset = 0
        sectors = int(sectors_s)
        if sectors <= 0 or typ not in _EXTENT_TYPES:
            continue
        fname = fname_b.decode("utf-8", "replace")
        if not os.path.isabs(fname):
            if file_filename.startswith("json:") or not file_filename:
                raise OpenError(
                    "Cannot use relative paths with VMDK descriptor file "
                    f"'{file_filename}': Cannot generate a base directory for "
                    "this node"
                )
            fname = os.path.join(os.path.dirname(file_filename), fname)
        out.extents.append(Extent(fname, typ, sectors, flat_offset))
    return out


def read_extent_list(
    read_head: Callable[[str, int], bytes], size: Callable[[str], int], node: str, filename: str
) -> Descriptor:
    """``vmdk_open``'s first step on ``file``: a binary sparse header, or a descriptor."""
    length = size(node)
    if length < 4:
        raise OpenError("File is too small, not a valid image")
    head = read_head(node, min(length, DESC_MAX))
    if head[:4] in (b"KDMV", b"COWD"):
        return Descriptor(False)
    return parse_descriptor(head, filename)


def read_cid(desc: bytes, parent: bool) -> int | None:
    """``vmdk_read_cid``: the hex number after ``CID=`` / ``parentCID=``; None if unparsable."""
    name = b"parentCID" if parent else b"CID"
    desc = desc.split(b"\0", 1)[0]
    pos = desc.find(name)
    if pos < 0:
        return 0
    m = re.match(rb"\s*(?:0[xX])?([0-9a-fA-F]+)", desc[pos + len(name) + 1 :])
    if m is None:
        return None
    return int(m.group(1), 16) & 0xFFFFFFFF


def parent_hint(desc: bytes) -> str | None:
    """``vmdk_parent_open``: the ``parentFileNameHint`` value, or None."""
    desc = desc.split(b"\0", 1)[0]
    pos = desc.find(b"parentFileNameHint")
    if pos < 0:
        return None
    start = pos + len("parentFileNameHint") + 2
    end = desc.find(b'"', start)
    if end < 0 or end - start > 4095:
        raise OpenError("Invalid parent file name hint")
    return desc[start:end].decode("utf-8", "replace")
