"""Image format probing and the qcow2 header entry point.

Reproduces QEMU 7.2's ``find_image_format`` / ``bdrv_probe_all``: each driver
scores the first 512 bytes, qcow2 scores 100 when the magic matches and the
version is at least 2 (``qcow2_probe``), the other formats' scores are in
:mod:`txgraph.io.formats.probes`, raw always scores 1 (``raw_probe``).
"""

from __future__ import annotations

import struct

from txgraph.io.qcow2.constants import MAGIC
from txgraph.io.qcow2.header import Qcow2Header, Reader, read_qcow2_header

__all__ = ["probe_format", "read_qcow2_header", "Qcow2Header", "Reader", "PROBE_SIZE"]

#: how many leading bytes QEMU reads to probe a format
PROBE_SIZE = 512


def probe_format(first_bytes: bytes, filename: str = "") -> str:
    """The format QEMU would probe for an image starting with ``first_bytes``.

    An empty (zero-length) file probes as raw without reading, as in QEMU.
    Only the first :data:`PROBE_SIZE` bytes are looked at; the other formats'
    scores are in :mod:`txgraph.io.formats.probes`.
    """
    buf = first_bytes[:PROBE_SIZE]
    if len(buf) >= 8 and buf[:4] == MAGIC and struct.unpack(">I", buf[4:8])[0] >= 2:
        return "qcow2"
    from txgraph.io.formats.probes import best_format

    return best_format(buf, filename)
