"""vvfat ``rw: true``: what a guest writes, reads back and leaves in the host directory.

Each scenario is played through a writable NBD export on qemu-storage-daemon
7.2 and on txgraph; every step's reply (``ok``, the bytes read, the errno of a
refused request) and the host directory afterwards must be equal
(tests/support/vvfat_rw.py). The scenarios cover what txgraph reproduces of
QEMU's write path: file data rewritten in place (committed to the host file,
from the first changed cluster on), sub-sector writes, the boot sector's
one writable byte, writes before the FAT (EPERM), read-only host files (EPERM),
the second FAT copy, writes into a free cluster (QEMU's consistency check then
refuses every commit: the guest reads its data, the host keeps the old files),
the disk's tail, one write over two files, unusual names beside the file, FAT12,
floppies, FAT32 writes QEMU survives, seeded random sequences, and concurrent
clients on txgraph. The writes txgraph refuses are in test_vvfat_rw_refusals.py.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer
from tests.support.vvfat_rw import (
    CLUSTER,
    READ_ONLY,
    SECTOR,
    TREE,
    Disk,
    data,
    differential,
    find,
    run,
)
from txgraph.io.nbd.client import NbdClient

pytestmark = pytest.mark.qsd

_ONE: bytes = TREE["one.txt"]
_BIG: bytes = TREE["big.bin"]


def _flip(payload: bytes) -> bytes:
    return bytes(b ^ 0xA5 for b in payload)


@pytest.mark.parametrize(
    "shape", [{}, {"fat-type": 12}, {"floppy": True}, {"floppy": True, "fat-type": 16}], ids=str
)
def test_rewrite_first_cluster_of_a_file(tmp_path: Path, shape: dict[str, Any]) -> None:
    def scenario(disk: Disk, root: Path) -> list[Any]:
        at = find(disk, _ONE[:SECTOR])
        new = _flip(_ONE[:SECTOR])
        return [disk.write(at, new), disk.read(at, 2 * SECTOR), (root / "one.txt").read_bytes()]

    trace = differential(tmp_path, scenario, **shape)
    assert trace[3] == "ok"
    assert trace[5] == _flip(_ONE[:SECTOR]) + _ONE[SECTOR:]  # on the host while it runs


@pytest.mark.parametrize("cluster", [1, 2, 3])
def test_rewrite_a_later_cluster(tmp_path: Path, cluster: int) -> None:
    """commit_one_file from a later cluster (7.2.22 walks the chain to it correctly)."""

    def scenario(disk: Disk, root: Path) -> list[Any]:
        at = find(disk, _BIG[:SECTOR]) + cluster * CLUSTER
        new = _flip(_BIG[cluster * CLUSTER : cluster * CLUSTER + SECTOR])
        return [
            disk.write(at + SECTOR, new),
            disk.read(at, CLUSTER),
            disk.read(at - CLUSTER, CLUSTER),
        ]

    trace = differential(tmp_path, scenario)
    assert trace[3] == "ok"


def test_sub_sector_writes_and_two_files(tmp_path: Path) -> None:
    def scenario(disk: Disk, root: Path) -> list[Any]:
        one = find(disk, _ONE[:SECTOR])
        inner = find(disk, TREE["sub"]["inner.txt"][:SECTOR])
        return [
            disk.write(one + 1000, b"sub-sector"),
            disk.write(inner + 3, b"x" * 2000),  # past the file's 700 bytes
            disk.read(one, CLUSTER),
            disk.read(inner, CLUSTER),
        ]

    differential(tmp_path, scenario)


def test_boot_sector_and_the_sectors_before_the_fat(tmp_path: Path) -> None:
    def scenario(disk: Disk, root: Path) -> list[Any]:
        boot = 63 * SECTOR
        sector = disk.read(boot, SECTOR)
        assert isinstance(sector, bytes)
        dirty = sector[:0x25] + b"\x01" + sector[0x26:]
        other = sector[:3] + b"X" + sector[4:]
        return [
            disk.write(boot, dirty),  # reserved1: the one byte a guest may change
            disk.read(boot, SECTOR),
            disk.write(boot, other),
            disk.write(0, bytes(SECTOR)),  # the MBR
            disk.write(boot, dirty + dirty),
            disk.read(0, 64 * SECTOR),
        ]

    trace = differential(tmp_path, scenario)
    assert trace[3:6] == ["ok", trace[4], "EPERM"] and trace[6:8] == ["EPERM", "EPERM"]


def test_second_fat_copy_and_an_unchanged_first_fat(tmp_path: Path) -> None:
    def scenario(disk: Disk, root: Path) -> list[Any]:
        fat1 = 64 * SECTOR
        head = disk.read(fat1, SECTOR)
        boot = disk.read(63 * SECTOR, SECTOR)
        assert isinstance(head, bytes) and isinstance(boot, bytes)
        one = find(disk, _ONE[:SECTOR])
        # the second copy starts sectors_per_fat (the boot sector's word at 0x16) later
        fat2 = fat1 + int.from_bytes(boot[0x16:0x18], "little") * SECTOR
        steps: list[Any] = [disk.read(fat2, SECTOR) == head]
        steps += [
            disk.write(fat1, head),
            disk.write(fat2, _flip(head)),
            disk.read(fat2, SECTOR),
            disk.write(one, _flip(_ONE[:SECTOR])),  # a commit: the target is emptied
            disk.read(fat2, SECTOR),
            disk.read(one, SECTOR),
            # after qcow_make_empty cut the image back: new clusters and tables again
            disk.write(fat2 + SECTOR, _flip(head)),
            disk.read(fat2, 2 * SECTOR),
        ]
        return steps

    trace = differential(tmp_path, scenario)
    assert trace[3] is True and trace[6] != trace[9]


def test_a_free_cluster_blocks_every_commit(tmp_path: Path) -> None:
    def scenario(disk: Disk, root: Path) -> list[Any]:
        one = find(disk, _ONE[:SECTOR])
        big = find(disk, _BIG[:SECTOR])
        free = big + 8 * CLUSTER  # past every file of the tree
        return [
            disk.write(free, data(9, SECTOR)),
            disk.write(one, _flip(_ONE[:SECTOR])),
            disk.read(free, SECTOR),
            disk.read(one, SECTOR),
            (root / "one.txt").read_bytes() == _ONE,
        ]

    trace = differential(tmp_path, scenario)
    assert trace[-2] is True


def test_the_disk_tail(tmp_path: Path) -> None:
    end = 528482304

    def scenario(disk: Disk, root: Path) -> list[Any]:
        return [
            disk.write(end - SECTOR, data(5, SECTOR)),
            disk.read(end - 2 * SECTOR, 2 * SECTOR),
        ]

    differential(tmp_path, scenario)


def test_a_read_only_host_file(tmp_path: Path) -> None:
    """A file without write bits at the scan: its clusters refuse writes (EPERM)."""
    tree = dict(TREE) | {READ_ONLY: data(6, 5000)}

    def scenario(disk: Disk, root: Path) -> list[Any]:
        ro = find(disk, tree[READ_ONLY][:SECTOR])
        one = find(disk, _ONE[:SECTOR])
        return [
            disk.write(ro, bytes(SECTOR)),
            disk.write(one - SECTOR, bytes(2 * SECTOR)),  # ends in one.txt, starts before
            disk.read(ro, SECTOR),
        ]

    trace = differential(tmp_path, scenario, tree)
    assert trace[3] == "EPERM"


def test_concurrent_writers_on_txgraph(tmp_path: Path) -> None:
    """Four clients rewrite clusters of two files and read back at once: the node's
    lock keeps the write target, the marks and the commits whole."""
    rounds = 6

    def scenario(disk: Disk, root: Path) -> list[Any]:
        one = find(disk, _ONE[:SECTOR])
        big = find(disk, _BIG[:SECTOR])
        addr = disk.addr
        errors: list[str] = []

        def worker(k: int) -> None:
            base = [one, big, big + CLUSTER, big + 2 * CLUSTER][k]
            with NbdClient(addr, "v") as client:
                for r in range(rounds):
                    payload = data(10 * k + r, SECTOR)
                    client.write(base + SECTOR * (r % 4), payload)
                    if client.read(base + SECTOR * (r % 4), SECTOR) != payload:
                        errors.append(f"worker {k} round {r}")

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not any(t.is_alive() for t in threads)
        return [errors, disk.read(one, SECTOR * 4), disk.read(big, 3 * CLUSTER)]

    trace, host = run(EnginePeer, tmp_path / "txgraph", scenario)
    assert trace[3] == []
    guest_one, guest_big = trace[4], trace[5]
    assert host["one.txt"] is not None and host["big.bin"] is not None
    assert host["one.txt"][: 4 * SECTOR] == guest_one
    assert host["big.bin"][: 3 * CLUSTER] == guest_big
    for k, base in ((0, 0), (1, 0), (2, CLUSTER), (3, 2 * CLUSTER)):
        got = (host["one.txt"] if k == 0 else host["big.bin"])[base : base + 4 * SECTOR]
        want = b"".join(data(10 * k + r, SECTOR) for r in range(2, 6))
        assert got == want[2 * SECTOR :] + want[: 2 * SECTOR]


def test_one_write_over_two_files(tmp_path: Path) -> None:
    """One request changes two files: both are written back, in the order of QEMU's
    walk of the tree (what the cluster buffer then holds shows in a short file's tail)."""
    tree: dict[str, Any] = {
        "adir": {"f1.txt": data(20, 700)},
        "zfile.txt": data(21, 3000),
        "other.txt": data(22, 100),
    }

    def scenario(disk: Disk, root: Path) -> list[Any]:
        f1 = find(disk, tree["adir"]["f1.txt"][:SECTOR])
        files = [find(disk, tree[n][:100]) for n in ("zfile.txt", "other.txt")]
        # the boundary between two file clusters: before f1 unless adir's own cluster
        # sits there (readdir order decides), else between the two root files
        boundary = f1 if f1 - CLUSTER in files else max(files)
        assert boundary == f1 or boundary - CLUSTER == min(files)  # two file clusters
        span = disk.write(boundary - SECTOR, data(23, 2 * SECTOR))
        reads = [disk.read(at, CLUSTER) for at in (*files, f1)]
        return [span, *reads]

    trace = differential(tmp_path, scenario, tree)
    assert trace[3] == "ok"


def test_fat32_writes_that_commit_nothing(tmp_path: Path) -> None:
    """FAT32 writes QEMU survives: a FAT sector, a free cluster, then file data (no
    commit while the free cluster holds data)."""

    def scenario(disk: Disk, root: Path) -> list[Any]:
        one = find(disk, _ONE[:SECTOR])
        big = find(disk, _BIG[:SECTOR])
        fat = disk.read(64 * SECTOR, SECTOR)
        assert isinstance(fat, bytes)
        return [
            disk.write(64 * SECTOR, fat),
            disk.write(big + 8 * CLUSTER, data(30, SECTOR)),
            disk.write(one, _flip(_ONE[:SECTOR])),
            disk.read(one, SECTOR),
        ]

    trace = differential(tmp_path, scenario, **{"fat-type": 32})
    assert trace[3:6] == ["ok", "ok", "ok"]


#: trees whose names take QEMU's long-name, short-name and label paths: a data write
#: must commit (or not) exactly as on QEMU, whatever names sit beside the file
NAME_TREES: dict[str, dict[str, Any]] = {
    "non-ascii": {"r\u00e9sum\u00e9.doc": b"r", "\u65e5\u672c.txt": b"j"},
    "punctuation": {"name with spaces and [brackets] + = ; ,": b"p", "a.b.c.d": b"d"},
    "long": {"x" * 200: b"l", ".dotfile": b"x", "...": b"t"},
    "case": {"UPPER.TXT": b"U", "Mixed Case.Ext": b"m", "QEMU VVFAT": b"like the label"},
    "trailing space": {"sub": {"x.txt": b"x", "X.TXT ": b"t"}},
    "same prefix": {f"same name {i}.txt": b"s" for i in range(12)},
}


@pytest.mark.parametrize("names", sorted(NAME_TREES))
def test_rewrite_beside_unusual_names(tmp_path: Path, names: str) -> None:
    tree = {"one.txt": _ONE} | NAME_TREES[names]

    def scenario(disk: Disk, root: Path) -> list[Any]:
        at = find(disk, _ONE[:SECTOR])
        return [disk.write(at, _flip(_ONE[:SECTOR])), disk.read(at, SECTOR)]

    differential(tmp_path, scenario, tree)


def test_rewrite_with_a_label(tmp_path: Path) -> None:
    def scenario(disk: Disk, root: Path) -> list[Any]:
        at = find(disk, _ONE[:SECTOR])
        return [disk.write(at, _flip(_ONE[:SECTOR])), disk.read(0, 64 * SECTOR)]

    differential(tmp_path, scenario, label="MYDISK")


@pytest.mark.parametrize("seed", range(int(os.environ.get("VVFAT_SEEDS", "10"))))
def test_random_write_sequences(tmp_path: Path, seed: int) -> None:
    """Seeded sequences of the writes txgraph serves - file data anywhere in the three
    files, a free cluster, the second FAT, an unchanged first FAT or directory
    sector, unaligned and multi-cluster spans - with reads between them.
    ``VVFAT_SEEDS=N`` runs N seeds (10 by default)."""
    import random

    def scenario(disk: Disk, root: Path) -> list[Any]:
        rng = random.Random(seed)
        one = find(disk, _ONE[:SECTOR])
        big = find(disk, _BIG[:SECTOR])
        inner = find(disk, TREE["sub"]["inner.txt"][:SECTOR])
        boot = disk.read(63 * SECTOR, SECTOR)
        assert isinstance(boot, bytes)
        fat1 = 64 * SECTOR
        fat2 = fat1 + int.from_bytes(boot[0x16:0x18], "little") * SECTOR
        root_dir = fat1 + 2 * (fat2 - fat1)
        steps: list[Any] = []
        for _ in range(14):
            kind = rng.choice(["one", "big", "inner", "free", "fat2", "fat1", "dir", "span"])
            if kind in ("fat1", "dir"):
                at = fat1 if kind == "fat1" else root_dir
                same = disk.read(at, SECTOR)
                if not isinstance(same, bytes):  # the peer is gone: the trace says so
                    steps.append(same)
                    break
                steps.append(disk.write(at, same))
                continue
            # (start, room): each kind stays inside its own clusters, since random bytes
            # over a directory cluster make QSD abort (test_garbage_over_a_directory)
            base, room = {
                "one": (one, CLUSTER),
                "big": (big, 4 * CLUSTER),
                "inner": (inner, CLUSTER),
                "free": (big + 9 * CLUSTER, CLUSTER),
                "fat2": (fat2, 4 * SECTOR),
                "span": (big + CLUSTER - 700, 3 * CLUSTER),
            }[kind]
            length = min(rng.choice([1, 100, SECTOR, 3 * SECTOR, CLUSTER + 5]), room)
            at = base + rng.randrange(0, room - length + 1)
            steps.append(disk.write(at, data(rng.randrange(1000), length)))
            # reads stay off directory clusters: their entries hold each tree's ctime
            steps.append(disk.read(base, room))
        return steps

    differential(tmp_path, scenario)
