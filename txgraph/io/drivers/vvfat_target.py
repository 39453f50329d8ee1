"""The temporary qcow image a ``rw=on`` vvfat node keeps guest writes in.

Reproduces QEMU 7.2's block/vvfat.c ``enable_write_target`` up to the open of the
child: ``create_tmp_file`` (a ``vl.XXXXXX`` file made by ``g_mkstemp`` in
``g_get_tmp_dir()``, i.e. ``$TMPDIR`` or ``/tmp``, where ``/tmp`` becomes
``/var/tmp``; its error names the last name tried) and ``bdrv_create`` of a qcow (v1) image of the
disk's size whose backing file is ``fat:``, which ``qcow_co_create`` treats as
"no backing file" but still gives 512-byte clusters and 4096-entry L2 tables.
The image holds only the 48-byte header and the zeroed L1 table, written in
whole sectors after the header (so the file is 48 + 512 * n bytes long where the
table needs n sectors). The caller opens the image as the ``write-target`` child
and then unlinks the file, as QEMU does on POSIX hosts.
"""

from __future__ import annotations

import errno as E
import os
import secrets
import string
import struct

from txgraph.errors import OpenError

__all__ = ["create_write_target", "QCOW_CLUSTER_BITS"]

#: the write target's cluster size (512 bytes: a guest sector) and L2 size (4096 entries)
QCOW_CLUSTER_BITS = 9
_L2_BITS = 12
_HEADER = 48
_LETTERS = string.ascii_letters + string.digits


def _tmp_dir() -> str:
    """``g_get_tmp_dir`` as ``create_tmp_file`` uses it."""
    tmpdir = os.environ.get("TMPDIR") or "/tmp"
    if len(tmpdir) > 1 and tmpdir.endswith("/"):
        tmpdir = tmpdir[:-1]
    return "/var/tmp" if tmpdir == "/tmp" else tmpdir


def _mkstemp(directory: str) -> str:
    """``g_mkstemp`` on ``DIR/vl.XXXXXX``: six random letters or digits, O_EXCL, mode 0600.

    :raise OpenError: "Could not open temporary file 'NAME': ..." (the last name tried).
    """
    path = directory + "/vl.XXXXXX"
    for _ in range(100):  # glib's attempts; only EEXIST tries another name
        path = directory + "/vl." + "".join(secrets.choice(_LETTERS) for _ in range(6))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            continue
        except OSError as err:
            break_err = err.errno or E.EIO
            raise OpenError(
                f"Could not open temporary file '{path}': {os.strerror(break_err)}"
            ) from None
        os.close(fd)
        return path
    raise OpenError(f"Could not open temporary file '{path}': {os.strerror(E.EEXIST)}")


def create_write_target(size: int) -> str:
    """``enable_write_target``: the temporary qcow image of ``size`` bytes; its path.

    :raise OpenError: "Could not open temporary file ..." when ``create_tmp_file``
        fails, "Could not create '...': ..." when the image cannot be written.
    """
    path = _mkstemp(_tmp_dir())
    shift = QCOW_CLUSTER_BITS + _L2_BITS
    l1_size = (size + (1 << shift) - 1) >> shift
    header = struct.pack(
        ">IIQIIQBBHIQ", 0x514649FB, 1, 0, 0, 0, size, QCOW_CLUSTER_BITS, _L2_BITS, 0, 0, _HEADER
    )
    table_sectors = (8 * l1_size + 511) // 512
    try:
        with open(path, "r+b") as f:
            f.write(header)
            f.write(bytes(512 * table_sectors))
    except OSError as err:
        os.unlink(path)
        raise OpenError(f"Could not create '{path}': {os.strerror(err.errno or E.EIO)}") from None
    return path
