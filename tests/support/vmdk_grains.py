"""The grains of a monolithic sparse VMDK file, read straight from its bytes.

An independent reader for tests (it shares nothing with txgraph's vmdk driver):
the VMDK4 header at 0, the grain directory, each grain table, and for every
allocated grain its guest offset and what is stored there. A compressed
(streamOptimized) grain is its marker's LBA and size and a digest of the stream;
a plain grain is a digest of its bytes. Two images whose grains were written in
another order (QEMU's block-copy runs several workers at once) have the same
sorted list when they hold the same streams.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

__all__ = ["grains"]

_MAGIC = b"KDMV"
_FLAG_COMPRESSED = 1 << 16


def grains(path: Path) -> list[tuple[int, str]]:
    """``(guest offset, description)`` of each allocated grain, in guest order."""
    data = path.read_bytes()
    if data[:4] != _MAGIC:
        raise ValueError(f"{path}: not a sparse VMDK4 file")
    (_version, flags, capacity, granularity, _desc_off, _desc_size, gtes, _rgd, gd) = (
        struct.unpack_from("<IIQQQQIQQ", data, 4)
    )
    if gd == 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"{path}: grain directory at the end (a converted stream), not read here")
    compressed = bool(flags & _FLAG_COMPRESSED)
    grain_bytes = granularity * 512
    per_table = gtes * granularity
    out: list[tuple[int, str]] = []
    for t in range(-(-capacity // per_table)):
        (table,) = struct.unpack_from("<I", data, gd * 512 + 4 * t)
        if not table:
            continue
        for i in range(gtes):
            sector = t * per_table + i * granularity
            if sector >= capacity:
                break
            (grain,) = struct.unpack_from("<I", data, table * 512 + 4 * i)
            if not grain:
                continue
            at = grain * 512
            if compressed:
                lba, size = struct.unpack_from("<QI", data, at)
                stream = data[at + 12 : at + 12 + size]
                desc = f"lba {lba} size {size} {hashlib.sha256(stream).hexdigest()[:16]}"
            else:
                desc = hashlib.sha256(data[at : at + grain_bytes]).hexdigest()[:16]
            out.append((sector * 512, desc))
    return out
