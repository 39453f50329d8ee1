"""Differential hostile-image run: mutated qcow2 metadata, same reads and writes, qemu-io vs txgraph.

Real images (qemu-img create + qemu-io writes) get one to three seeded
mutations of their metadata: L1 and L2 entries (pointed at other metadata,
unaligned, reserved bits, zero/compressed/COPIED flags, past EOF), refcount
table entries and refcount blocks, header offsets, feature bits. Each sample is
then opened read-write by qemu-io 7.2 (default writethrough: every write is
followed by a flush) and by txgraph's qcow2 driver, which run the same command
list. Compared per command: success or the errno text; the bytes read; and
afterwards whether the image's corrupt bit is set (``qemu-img info``).

Default: 100 samples (a few seconds). ``TXGRAPH_HOSTILE_SAMPLES=2000`` for a
long run; ``TXGRAPH_HOSTILE_SEED`` changes the seed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from interop_kit import open_qcow2, qemu_img, qemu_io

from txgraph.errors import IOFailure, OpenError

SAMPLES = int(os.environ.get("TXGRAPH_HOSTILE_SAMPLES", "100"))
SEED = int(os.environ.get("TXGRAPH_HOSTILE_SEED", "8"))
SIZE = 2 << 20

# (kind, offset, length[, pattern]); reads are dumped and compared byte for byte.
OPS: list[tuple[str, int, int, int]] = [
    ("read", 0, 512, 0),
    ("read", 65536 + 100, 512, 0),
    ("read", 256 << 10, 512, 0),
    ("read", 1 << 20, 512, 0),
    ("write", 0, 4096, 0x55),
    ("write", 512 << 10, 8192, 0x66),
    ("zero", 256 << 10, 65536, 0),
    ("write", 1 << 20, 512, 0x77),
    ("read", 0, 512, 0),
    ("read", 512 << 10, 512, 0),
    ("read", 1 << 20, 512, 0),
    ("read", 128 << 10, 512, 0),
]


def _qemu_io_cmd(kind: str, off: int, n: int, pat: int) -> str:
    if kind == "read":
        return f"read -v {off} {n}"
    if kind == "zero":
        return f"write -z {off} {n}"
    return f"write -P {pat} {off} {n}"


def _parse_qemu_io(out: str) -> list[str]:
    """One outcome per command: ``ok:<hex>`` for reads, ``ok`` for writes, or the error."""
    res: list[str] = []
    dump: list[str] = []
    for line in out.splitlines():
        if len(line) > 10 and line[8:10] == ": " and all(c in "0123456789abcdef" for c in line[:8]):
            dump.append("".join(line[11:58].split()))
        elif line.startswith("read ") and "bytes at offset" in line:
            res.append("ok:" + "".join(dump))
            dump = []
        elif line.startswith("wrote "):
            res.append("ok")
        elif " failed: " in line:
            res.append(line.split(" failed: ", 1)[1].strip())
            dump = []
    return res


class QemuCrashed(Exception):
    """qemu-io 7.2 died (e.g. ``qcow2_cache_do_get: Assertion `offset != 0' failed``)."""


def run_qemu(img: Path) -> tuple[str | None, list[str]]:
    args = ["qemu-io", "-f", "qcow2"]
    for op in OPS:
        args += ["-c", _qemu_io_cmd(*op)]
    r = subprocess.run([*args, str(img)], capture_output=True, text=True, timeout=60)
    if r.returncode < 0 or "Assertion" in r.stderr:
        raise QemuCrashed(
            r.stderr.strip().splitlines()[-1] if r.stderr.strip() else str(r.returncode)
        )
    prefix = f"qemu-io: can't open device {img}: "
    for line in r.stderr.splitlines():
        if line.startswith(prefix):
            return line[len(prefix) :], []
    return None, _parse_qemu_io(r.stdout)


def run_txgraph(img: Path) -> tuple[str | None, list[str]]:
    try:
        node = open_qcow2(img, read_only=False)
    except OpenError as e:
        return e.desc, []
    res: list[str] = []
    try:
        for kind, off, n, pat in OPS:
            try:
                if kind == "read":
                    res.append("ok:" + node.read(off, n).hex())
                    continue
                if kind == "zero":
                    node.write_zeroes(off, n)
                else:
                    node.write(off, bytes([pat]) * n)
                node.flush()  # qemu-io's default cache mode is writethrough
                res.append("ok")
            except IOFailure as e:
                res.append(os.strerror(e.errno))
    finally:
        try:
            node.close()
        except IOFailure:
            pass  # QEMU's close reports nothing to the qemu-io user either
    return None, res


def corrupt_bit(img: Path) -> bool | None:
    r = subprocess.run(
        ["qemu-img", "info", "-U", "--output=json", str(img)], capture_output=True, text=True
    )
    if r.returncode:
        return None
    return bool(json.loads(r.stdout)["format-specific"]["data"].get("corrupt"))


# -- images and mutations ------------------------------------------------------------------
def make_templates(d: Path) -> list[Path]:
    out = []
    for cs, extra in ((65536, ""), (4096, ""), (512, ""), (65536, ",compat=0.10")):
        p = d / f"t{cs}{'v2' if extra else ''}.qcow2"
        qemu_img("create", "-q", "-f", "qcow2", "-o", f"cluster_size={cs}{extra}", p, str(SIZE))
        cmds = ["write -q -P 1 0 192k", "write -q -P 3 1M 4k"]
        if not extra:
            cmds.append("write -q -z 128k 64k")
        qemu_io(p, *cmds)
        out.append(p)
    return out


class Layout:
    """Where the metadata of a template lives (read with plain struct unpacking)."""

    def __init__(self, raw: bytes) -> None:
        (
            _,
            self.version,
            _,
            _,
            self.cb,
            _,
            _,
            self.l1_size,
            self.l1_off,
            self.rt_off,
            self.rt_clusters,
            _,
            _,
        ) = struct.unpack(">4sIQIIQIIQQIIQ", raw[:72])
        self.cs: int = 1 << int(self.cb)
        mask = (1 << 56) - 512
        self.l1 = [
            (self.l1_off + 8 * i, e)
            for i, e in enumerate(
                struct.unpack(
                    f">{self.l1_size}Q", raw[self.l1_off : self.l1_off + 8 * self.l1_size]
                )
            )
        ]
        self.l2 = [e & mask for _, e in self.l1 if e & mask]
        nrt = self.rt_clusters * self.cs // 8
        self.rt = list(struct.unpack(f">{nrt}Q", raw[self.rt_off : self.rt_off + 8 * nrt]))
        self.rb = [e & ~511 for e in self.rt if e]
        self.l2e = [
            (t + 8 * j, struct.unpack(">Q", raw[t + 8 * j : t + 8 * j + 8])[0])
            for t in self.l2
            for j in range(self.cs // 8)
        ]
        self.l2e_used = [(a, e) for a, e in self.l2e if e] or self.l2e[:4]
        self.metadata: list[int] = [0, self.l1_off, self.rt_off, *self.l2, *self.rb]
        self.file_size = len(raw)


def mutate(raw: bytes, rng: random.Random) -> tuple[bytes, list[str]]:
    lay = Layout(raw)
    buf = bytearray(raw)
    notes: list[str] = []
    cs = lay.cs
    copied = 1 << 63

    def target() -> int:
        roll = rng.random()
        if roll < 0.5:
            return rng.choice(lay.metadata)
        if roll < 0.7:
            return int(rng.randrange(0, lay.file_size // cs + 4) * cs)
        if roll < 0.85:
            return rng.choice(lay.metadata) + rng.choice([512, 8, cs // 2 or 512])
        return rng.choice([1 << 40, (1 << 55) - cs, 0])

    def put(off: int, value: int, what: str) -> None:
        struct.pack_into(">Q", buf, off, value & ((1 << 64) - 1))
        notes.append(f"{what}@{off:#x}={value & ((1 << 64) - 1):#x}")

    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = rng.choice(["l1", "l2", "l2", "l2flags", "rt", "rb", "hdr"])
        if kind == "l1" and lay.l1:
            off, e = rng.choice(lay.l1[:2])
            v = rng.choice(
                [target() | copied, target(), e | rng.choice([1, 1 << 60, 0x100]), e & ~copied, 0]
            )
            put(off, v, "l1")
        elif kind == "l2":
            off, e = rng.choice(lay.l2e_used)
            put(off, target() | rng.choice([copied, 0, copied | 1, 1]), "l2")
        elif kind == "l2flags":
            off, e = rng.choice(lay.l2e_used)
            flip = rng.choice([1, copied, 1 << 62, 1 << 57, 0x1FE, 0x200, cs // 2 or 512])
            put(off, e ^ flip, "l2^")
        elif kind == "rt":
            i = rng.randrange(0, max(1, len(lay.rb) + 1))
            put(lay.rt_off + 8 * i, rng.choice([target(), 0, rng.choice(lay.metadata) | 1]), "rt")
        elif kind == "rb" and lay.rb:
            blk = lay.rb[0]
            cl = rng.choice(
                [m // cs for m in lay.metadata] + [rng.randrange(0, lay.file_size // cs)]
            )
            if 2 * cl + 2 <= cs:
                val = rng.choice([0, 0, 2, 0xFFFF])
                struct.pack_into(">H", buf, blk + 2 * cl, val)
                notes.append(f"refcount[{cl}]={val}")
        else:
            field = rng.choice(
                [
                    (40, "l1_off"),
                    (48, "rt_off"),
                    (72, "incompat"),
                    (88, "autoclear"),
                    (56, "rt_clusters"),
                    (36, "l1_size"),
                ]
            )
            if field[1] in ("l1_off", "rt_off"):
                put(
                    field[0], rng.choice(lay.metadata) if rng.random() < 0.8 else target(), field[1]
                )
            elif field[1] == "incompat" and lay.version == 3:
                put(72, rng.choice([1, 2, 1 | 2]), "incompat")
            elif field[1] == "autoclear" and lay.version == 3:
                put(88, rng.choice([1, 2, 1 << 40]), "autoclear")
            elif field[1] == "rt_clusters":
                struct.pack_into(">I", buf, 56, rng.choice([2, 3, 0x100]))
                notes.append("rt_clusters")
            else:
                struct.pack_into(">I", buf, 36, rng.choice([lay.l1_size + 1, 0x10000]))
                notes.append("l1_size")
    return bytes(buf), notes


def compare(img_q: Path, img_t: Path) -> list[str]:
    """Run both sides on identical copies; return the differences (empty = equal).

    Raises QemuCrashed when QEMU aborts; txgraph has then already run cleanly
    (any exception other than IOFailure/OpenError escapes and fails the test).
    """
    t_open, t_res = run_txgraph(img_t)
    q_open, q_res = run_qemu(img_q)
    diffs = []
    if q_open != t_open:
        diffs.append(f"open: qemu={q_open!r} txgraph={t_open!r}")
    for k, (a, b) in enumerate(zip(q_res, t_res)):
        if a != b:
            diffs.append(f"op{k} {OPS[k][0]}@{OPS[k][1]:#x}: qemu={a[:40]!r} txgraph={b[:40]!r}")
    if len(q_res) != len(t_res):
        diffs.append(f"op count: qemu={len(q_res)} txgraph={len(t_res)}")
    cq, ct = corrupt_bit(img_q), corrupt_bit(img_t)
    if cq != ct:
        diffs.append(f"corrupt bit: qemu={cq} txgraph={ct}")
    return diffs


#: Divergences left for the default seed and sample count, by sample number:
#: 12 — refcount 0 on a live L2 table: QEMU allocates a new L2 table onto it and its
#: L2 cache, keyed by offset, then serves both L1 slots from one table (txgraph keeps
#: one decoded table per slot); 73 — L1[0] points at the L1 table without COPIED:
#: QEMU frees the old "L2 table" (the L1 cluster) at once and the data cluster of the
#: same request lands on it, refused by the overlap check, while txgraph releases
#: clusters only after the flush that unreferences them. Any other divergence fails.
KNOWN_DIVERGENT = {12, 73}


def test_hostile_read_write_matches_qemu_io(tmp_path: Path) -> None:
    templates = [p.read_bytes() for p in make_templates(tmp_path)]
    rng = random.Random(SEED)
    failures: dict[int, str] = {}
    refused = crashed = 0
    for k in range(SAMPLES):
        t = rng.randrange(len(templates))
        raw, notes = mutate(templates[t], rng)
        a, b = tmp_path / "q.qcow2", tmp_path / "t.qcow2"
        a.write_bytes(raw)
        shutil.copy(a, b)
        try:
            diffs = compare(a, b)
        except QemuCrashed as e:
            crashed += 1
            print(f"sample {k} ({' '.join(notes)}): qemu-io crashed ({e}); txgraph ran cleanly")
            continue
        if diffs:
            failures[k] = f"sample {k} (template {t}, {' '.join(notes)}): " + "; ".join(diffs)
        if corrupt_bit(a):
            refused += 1
    print(
        f"{SAMPLES} samples (seed {SEED}): {refused} ended corrupt in QEMU, {crashed} crashed "
        f"qemu-io, {len(failures)} diverged"
    )
    for text in failures.values():
        print(text)
    default_run = SAMPLES == 100 and SEED == 8
    unexpected = set(failures) - KNOWN_DIVERGENT if default_run else set()
    assert not unexpected, "\n".join(failures[k] for k in sorted(unexpected))
    if default_run:
        assert set(failures) == KNOWN_DIVERGENT  # a fixed divergence must leave the list


@pytest.mark.parametrize("cs", [65536])
def test_l1_at_refcount_table_refused_like_qemu_io(cs: int, tmp_path: Path) -> None:
    """The pinned case of the issue: the write fails and the corrupt bit ends set, in both."""
    p = make_templates(tmp_path)[0]
    lay = Layout(p.read_bytes())
    raw = bytearray(p.read_bytes())
    struct.pack_into(">Q", raw, lay.l1_off, lay.rt_off | (1 << 63))
    a, b = tmp_path / "q.qcow2", tmp_path / "t.qcow2"
    a.write_bytes(bytes(raw))
    b.write_bytes(bytes(raw))
    assert compare(a, b) == []
    assert corrupt_bit(b) is True
    _, res = run_qemu(tmp_path / "q.qcow2")
    assert res == []  # a corrupt image cannot be opened read-write any more


def test_l1_copied_without_offset_crashes_qemu_io_not_txgraph(tmp_path: Path) -> None:
    """Pinned QEMU 7.2 crash: an L1 entry of only COPIED makes a write abort qemu-io
    (``qcow2_cache_do_get: Assertion `offset != 0' failed``: get_cluster_table trusts
    COPIED and loads an L2 table at 0). txgraph takes the same path, and the overlap
    check refuses the L2 write onto the header: EIO, image marked corrupt, no crash."""
    p = make_templates(tmp_path)[0]
    lay = Layout(p.read_bytes())
    raw = bytearray(p.read_bytes())
    struct.pack_into(">Q", raw, lay.l1_off, 1 << 63)
    a, b = tmp_path / "q.qcow2", tmp_path / "t.qcow2"
    a.write_bytes(bytes(raw))
    b.write_bytes(bytes(raw))
    with pytest.raises(QemuCrashed, match="offset != 0"):
        run_qemu(a)
    opened, res = run_txgraph(b)
    assert opened is None
    assert res[:4] == ["ok:" + "00" * 512] * 4  # reads see no L2 table: unallocated
    assert res[4] == "Input/output error" and set(res[5:]) == {"No medium found"}
    assert corrupt_bit(b) is True
