"""vvfat ``rw: true`` under a guest that edits the disk with a real FAT tool (mtools).

The guest reads the whole floppy through the NBD export, changes a local copy with
``mcopy``/``mdel``/``mren``/``mmd`` and writes the changed sectors back in sector
order (tests/support/vvfat_rw.py ``guest_edit``). QEMU 7.2 commits such changes
to the host directory (``do_commit``: renames, new directories and files; a
deleted file stays on the host; several changes in a row can abort the daemon),
which these tests pin on the real daemon. txgraph does not reproduce QEMU's
commit of FAT or directory changes: it refuses those writes with EOPNOTSUPP, so
the host directory stays as it was - pinned here too, for the day it does.
"""

from __future__ import annotations

import errno as E
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, QSDPeer
from tests.support.vvfat_rw import TREE, Disk, guest_edit, run, snapshot

pytestmark = pytest.mark.qsd

_HOST = {
    "big.bin": TREE["big.bin"],
    "empty.dat": b"",
    "one.txt": TREE["one.txt"],
    "sub": None,
    "sub/inner.txt": TREE["sub"]["inner.txt"],
}
_NEW = b"new file\n" * 1000

#: (commands, what QEMU adds to the host tree (None: a directory), what it removes)
EDITS: dict[str, tuple[list[str], dict[str, Any], list[str]]] = {
    "create 8.3": (["mcopy -i IMG SRC ::/NEW.TXT"], {"new.txt": _NEW}, []),
    "create long name": (
        ["mcopy -i IMG SRC ::/a_long_name.text"],
        {"a_long_name.text": _NEW},
        [],
    ),
    "rename": (
        ["mren -i IMG ::/big.bin ::/huge.bin"],
        {"huge.bin": _HOST["big.bin"]},
        ["big.bin"],
    ),
    "mkdir": (["mmd -i IMG ::/newdir"], {"newdir": None}, []),
    "delete": (["mdel -i IMG ::/one.txt"], {}, []),  # QEMU leaves the host file
}


def _scenario(commands: list[str]) -> Any:
    def scenario(disk: Disk, root: Path) -> list[Any]:
        return guest_edit(disk, root.parent, commands)

    return scenario


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_qsd_commits_the_edit(tmp_path: Path, edit: str) -> None:
    commands, added, removed = EDITS[edit]
    trace, host = run(QSDPeer, tmp_path / "qsd", _scenario(commands), floppy=True)
    assert all(reply == "ok" for _s, _n, reply in trace[3:-1])
    want = {k: v for k, v in _HOST.items() if k not in removed} | added
    assert host == want


def test_qsd_dies_on_several_edits_in_a_row(tmp_path: Path) -> None:
    commands = [
        "mcopy -i IMG SRC ::/NEW.TXT",
        "mdel -i IMG ::/one.txt",
        "mmd -i IMG ::/newdir",
        "mcopy -i IMG SRC ::/newdir/x.txt",
    ]
    trace, _host = run(QSDPeer, tmp_path / "qsd", _scenario(commands), floppy=True)
    assert "ESHUTDOWN" in [reply for _s, _n, reply in trace[3:-1]]


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_txgraph_refuses_the_edit_and_keeps_the_host(tmp_path: Path, edit: str) -> None:
    commands, _added, _removed = EDITS[edit]
    trace, host = run(EnginePeer, tmp_path / "txgraph", _scenario(commands), floppy=True)
    replies = [reply for _s, _n, reply in trace[3:-1]]
    assert E.errorcode[E.EOPNOTSUPP] in replies
    assert host == _HOST
    assert snapshot(tmp_path / "txgraph" / "dir") == _HOST
