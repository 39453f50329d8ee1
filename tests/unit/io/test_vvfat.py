"""vvfat without a daemon: the ``rw`` node's lifecycle, the filename parser, names and stress.

The byte-for-byte comparison with QEMU is tests/interop/test_vvfat_data.py; the
control plane against QSD is tests/differential/scenarios/vvfat.py. Here: what
only txgraph decides (the temporary qcow image of ``rw=on`` never outlives the
open: unlinked once open, and gone after a failed open), ``vvfat_parse_filename``'s cases, the 8.3 names of
a few names whose QEMU 7.2 image was inspected, and concurrent reads of one
node (its cluster buffer is shared state under the node's lock).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tests.differential.scenarios.vvfat import tree
from txgraph.io.drivers import vvfat_names as names
from txgraph.model.drivers.vvfat import parse_filename
from txgraph.qmp.engine import Engine


def _add(engine: Engine, **args: Any) -> dict[str, Any]:
    reply: dict[str, Any] = engine.execute({"execute": "blockdev-add", "arguments": args})
    return reply


def test_rw_temporary_image_never_stays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree(tmp_path, "t", {"a.txt": b"a"})
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    engine = Engine()
    reply = _add(engine, driver="vvfat", dir=str(tmp_path / "t"), rw=True, **{"node-name": "v"})
    assert reply == {"return": {}}
    nodes = engine.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
    assert sorted(n["drv"] for n in nodes["return"]) == ["file", "qcow", "vvfat"]
    assert [n["file"].startswith(str(tmpdir) + "/vl.") for n in nodes["return"]].count(True) == 2
    assert list(tmpdir.iterdir()) == []  # unlinked once open, as QEMU does
    # a directory that cannot be read fails after the write target was made: nothing stays
    reply = _add(engine, driver="vvfat", dir=str(tmp_path / "none"), rw=True, **{"node-name": "w"})
    assert reply["error"]["desc"] == f"Could not read directory {tmp_path / 'none'}"
    assert list(tmpdir.iterdir()) == []
    assert engine.execute({"execute": "blockdev-del", "arguments": {"node-name": "v"}}) == {
        "return": {}
    }
    assert engine.execute({"execute": "query-named-block-nodes"}) == {"return": []}
    # read-only with rw: QEMU's own refusal, no temporary file made
    reply = _add(
        engine,
        driver="vvfat",
        dir=str(tmp_path / "t"),
        rw=True,
        **{"node-name": "v", "read-only": True},
    )
    assert reply["error"]["desc"] == "Unable to set VVFAT to 'rw' when drive is read-only"
    assert list(tmpdir.iterdir()) == []


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("fat:d", {"dir": "d", "fat-type": 0, "floppy": False, "rw": False}),
        ("fat:floppy:rw:12:/x", {"dir": "/x", "fat-type": 12, "floppy": True, "rw": True}),
        ("fat:16:32:/x", {"dir": "/x", "fat-type": 32, "floppy": False, "rw": False}),
        ("fat:floppy:C:/dos", {"dir": "C:/dos", "fat-type": 0, "floppy": True, "rw": False}),
        ("fat:", {"dir": "", "fat-type": 0, "floppy": False, "rw": False}),
        ("fat:/a:b", {"dir": "b", "fat-type": 0, "floppy": False, "rw": False}),
        ("fat:/x:floppy:/y", {"dir": "/y", "fat-type": 0, "floppy": True, "rw": False}),
    ],
)
def test_parse_filename(filename: str, expected: dict[str, Any]) -> None:
    assert parse_filename(filename, {}) == expected


def test_parse_filename_needs_prefix() -> None:
    from txgraph.errors import OpenError

    with pytest.raises(OpenError, match="^File name string must start with 'fat:'$"):
        parse_filename("floppy:/x", {})


@pytest.mark.parametrize(
    ("name", "taken", "short"),
    [
        # (as QEMU 7.2 wrote them into images of the data tests)
        ("a.txt", [], b"A       TXT"),
        ("upper.txt", [b"UPPER   TXT"], b"UPPER~1 TXT"),
        ("\xff\xfe.txt", [], b"TXT~1      "),
        (".dotfile", [], b"DOTFIL~1   "),
        (
            "ABCDEFGHIJ10",
            [b"ABCDEF~" + bytes([48 + i]) + b"   " for i in range(1, 10)],
            b"ABCDE~10   ",
        ),
    ],
)
def test_short_names(name: str, taken: list[bytes], short: bytes) -> None:
    raw = name.encode("latin-1") if "\xff" in name else name.encode()
    assert names.short_name(names.glib_code_points(raw), taken) == short


def test_long_name_entries_layout() -> None:
    entries = names.long_name_entries(b"A long name.txt")  # 15 units: two entries
    assert [e[0] for e in entries] == [0x42, 0x01]
    assert all(e[11] == names.ATTR_LONG and e[12] == 0 and e[26:28] == b"\0\0" for e in entries)
    assert entries[1][1:3] == b"A\0" and entries[0][1:5] == b"x\0t\0"
    assert entries[0][5:7] == b"\0\0" and entries[0][7:11] == b"\xff" * 4
    assert names.long_name_entries(b"\xff") == []


def test_concurrent_reads_agree(tmp_path: Path) -> None:
    """Eight threads reading the whole floppy at once see what one thread sees (the
    cluster buffer and the open file are the node's, taken under its lock); only tails
    of last clusters may differ, so the tree's files fill their clusters exactly."""
    tree(tmp_path, "t", {f"f{i}": bytes([i]) * 8192 * (i + 1) for i in range(8)})
    engine = Engine()
    assert _add(
        engine,
        driver="vvfat",
        dir=str(tmp_path / "t"),
        floppy=True,
        **{"node-name": "v", "read-only": True},
    ) == {"return": {}}
    node = engine.context.session.runtime.node("v")
    size = node.size()
    want = b"".join(node.read(off, 65536) for off in range(0, size, 65536))
    got: list[bytes] = []
    errors: list[BaseException] = []

    def reader(step: int) -> None:
        try:
            got.append(b"".join(node.read(off, step) for off in range(0, size, step)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(512 << (i % 6),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(got) == 8
    assert all(g == want for g in got)


def test_write_target_perms_have_the_same_z3_twin() -> None:
    """vvfat_child_perm in the checker's z3 encoding gives the formula's bits."""
    import z3

    from txgraph.checker.perm_smt import bv, smt_child_perm
    from txgraph.model.child_perms import ChildPermContext, child_perm
    from txgraph.model.perm_bits import Perm, Role

    ctx = ChildPermContext(family="vvfat", parent_writable=True)
    role = Role.DATA | Role.METADATA
    for perm in (0, 0x3, 0xF):
        for shared in (0, 0x5, 0xF):
            want = child_perm(ctx, role, Perm(perm), Perm(shared))
            got = smt_child_perm(ctx, role, bv(perm), bv(shared))
            values = tuple(z3.simplify(term).as_long() for term in got)
            assert values == (int(want[0]), int(want[1]))
