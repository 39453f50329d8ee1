"""vvfat ``rw: true``: the writes txgraph refuses, beside what QSD 7.2 does with them.

Where txgraph cannot reproduce QEMU's outcome it refuses the write (EOPNOTSUPP)
and stores nothing, so the guest's view, the write target and the host directory
stay as they were:

* a changed directory cluster (QEMU stores it and commits the new tree);
* file data on a FAT32 disk whose write-back would run (QEMU 7.2 aborts in
  ``commit_one_file``'s assertion);
* random bytes over a directory cluster (QEMU aborts in ``array_get``: its
  read-only-entry check indexes the directory wrongly).

Each refusal is tested on txgraph, each QEMU outcome pinned on the real daemon.
"""

from __future__ import annotations

import errno as E
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, QSDPeer
from tests.support.vvfat_rw import CLUSTER, SECTOR, TREE, Disk, data, find, run

pytestmark = pytest.mark.qsd

_ONE: bytes = TREE["one.txt"]


def _flip(payload: bytes) -> bytes:
    return bytes(b ^ 0xA5 for b in payload)


def _rename_in_root(disk: Disk, root: Path) -> list[Any]:
    """A guest renames EMPTY.DAT's short entry (a change of a directory cluster)."""
    area = disk.read(0, 4 << 20)
    assert isinstance(area, bytes)
    at = area.find(b"EMPTY   DAT")
    sector = at - at % SECTOR
    new = bytearray(area[sector : sector + SECTOR])
    new[at - sector : at - sector + 11] = b"FULL    DAT"
    return [disk.write(sector, bytes(new)), disk.read(sector, SECTOR) == bytes(new)]


def test_qsd_takes_a_directory_change(tmp_path: Path) -> None:
    """QEMU stores a changed directory cluster and reads it back (its commit then
    works on the new tree); txgraph refuses it (the next test)."""
    trace, _host = run(QSDPeer, tmp_path / "qsd", _rename_in_root)
    assert trace[3:-1] == ["ok", True]


def test_txgraph_refuses_a_directory_change_and_changes_nothing(tmp_path: Path) -> None:
    trace, host = run(EnginePeer, tmp_path / "txgraph", _rename_in_root)
    assert trace[3:-1] == [E.errorcode[E.EOPNOTSUPP], False]
    assert host == run(EnginePeer, tmp_path / "untouched", lambda disk, root: [])[1]


def _fat32_file_write(disk: Disk, root: Path) -> list[Any]:
    at = find(disk, _ONE[:SECTOR])
    return [disk.write(at, _flip(_ONE[:SECTOR]))]


def test_qsd_aborts_committing_a_fat32_file(tmp_path: Path) -> None:
    """QEMU 7.2 on FAT32: commit_one_file's assertion fails and the daemon dies."""
    trace, host = run(QSDPeer, tmp_path / "qsd", _fat32_file_write, **{"fat-type": 32})
    assert trace[3] == "ESHUTDOWN"  # the daemon is gone: the connection dropped
    assert host["one.txt"] == _ONE


def test_txgraph_refuses_what_makes_qsd_abort_on_fat32(tmp_path: Path) -> None:
    trace, host = run(EnginePeer, tmp_path / "txgraph", _fat32_file_write, **{"fat-type": 32})
    assert trace[3] == E.errorcode[E.EOPNOTSUPP]
    assert host["one.txt"] == _ONE


def _garbage_over_sub(disk: Disk, root: Path) -> list[Any]:
    """Random bytes over the first sector of the ``sub`` directory's cluster."""
    area = disk.read(0, 4 << 20)
    assert isinstance(area, bytes)
    at = area.find(b".          \x10")  # the "." entry opens a directory's cluster
    assert at > 0 and at % CLUSTER == (area.find(_ONE[:SECTOR]) % CLUSTER)
    return [disk.write(at, data(50, SECTOR)), (root / "sub" / "inner.txt").exists()]


def test_qsd_aborts_on_garbage_over_a_directory(tmp_path: Path) -> None:
    """vvfat_write's read-only-entry check indexes s->directory wrongly: an entry with
    the read-only bit fails array_get's assertion and the daemon dies."""
    trace, host = run(QSDPeer, tmp_path / "qsd", _garbage_over_sub)
    assert trace[3] == "ESHUTDOWN"  # the daemon died checking the directory
    assert host["sub/inner.txt"] == TREE["sub"]["inner.txt"]


def test_txgraph_refuses_garbage_over_a_directory(tmp_path: Path) -> None:
    trace, host = run(EnginePeer, tmp_path / "txgraph", _garbage_over_sub)
    assert trace[3:5] == [E.errorcode[E.EOPNOTSUPP], True]
    assert host["sub/inner.txt"] == TREE["sub"]["inner.txt"]
