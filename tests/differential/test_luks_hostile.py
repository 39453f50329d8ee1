"""Hostile LUKS1 headers: txgraph refuses (or accepts) each exactly as qemu-storage-daemon 7.2.

A real ``qemu-img`` LUKS image is mutated field by field (magic, version, the
cipher/mode/hash strings, payload offset, key length, master key digest and
iterations, every key slot's state, offset, stripes and salt, plus random bytes
anywhere in the 592-byte header); each variant is opened read-only with the right
secret on a live QSD and on txgraph's engine, and the replies must be equal. No
variant may crash or hang txgraph (an engine exception is a ``PythonException``
reply, which never equals QEMU's). Mutations are drawn from a fixed seed;
``TXGRAPH_LUKS_HOSTILE_SAMPLES`` (default 60) sets how many.

Every variant's reply is compared; the number refused is asserted to be large so
that the draws keep exercising the checks rather than harmless bytes.

Mutations that would make QEMU itself spin or allocate without bound (iteration
counts in the billions, gigabytes of key material) are not drawn: txgraph caps
them (see :mod:`txgraph.io.crypto.luks`) where QEMU would not answer at all.
"""

from __future__ import annotations

import os
import random
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.crypto_images import PW, template
from txgraph.oracle.peers import EnginePeer, QSDPeer

pytestmark = pytest.mark.qsd

SAMPLES = int(os.environ.get("TXGRAPH_LUKS_HOSTILE_SAMPLES", "60"))
_SLOT0 = 208
_SLOT = 48

Mutation = Callable[[bytearray, random.Random], str]


def _put(buf: bytearray, off: int, fmt: str, value: int | bytes) -> None:
    struct.pack_into(fmt, buf, off, value)


def _str_field(off: int, choices: list[bytes]) -> Mutation:
    def m(buf: bytearray, rng: random.Random) -> str:
        v = rng.choice(choices)
        buf[off : off + 32] = (v + bytes(32))[:32]
        return f"str@{off}={v!r}"

    return m


def _u32(off: int, values: list[int]) -> Mutation:
    def m(buf: bytearray, rng: random.Random) -> str:
        v = rng.choice(values)
        _put(buf, off, ">I", v)
        return f"u32@{off}={v}"

    return m


def _slot_field(field_off: int, values: list[int]) -> Mutation:
    def m(buf: bytearray, rng: random.Random) -> str:
        slot = rng.randrange(8)
        v = rng.choice(values)
        _put(buf, _SLOT0 + slot * _SLOT + field_off, ">I", v)
        return f"slot{slot}+{field_off}={v}"

    return m


def _random_bytes(buf: bytearray, rng: random.Random) -> str:
    # Leave the iteration counts alone (they cost QEMU unbounded CPU time).
    protected = {164, 165, 166, 167} | {
        _SLOT0 + s * _SLOT + i for s in range(8) for i in range(4, 8)
    }
    offs = []
    for _ in range(rng.randrange(1, 4)):
        off = rng.randrange(592)
        if off in protected:
            continue
        buf[off] = rng.randrange(256)
        offs.append(off)
    return f"bytes@{offs}"


def _salt(buf: bytearray, rng: random.Random) -> str:
    off = rng.choice([132, _SLOT0 + 8])
    buf[off + rng.randrange(32)] ^= 1 << rng.randrange(8)
    return f"flip-salt@{off}"


MUTATIONS: list[Mutation] = [
    lambda b, r: (b.__setitem__(slice(0, 6), b"LUKS\xba\xbf"), "magic")[1],
    lambda b, r: (_put(b, 6, ">H", r.choice([0, 2, 3, 0xFFFF])), "version")[1],
    lambda b, r: (
        b.__setitem__(slice(8 + 32 * r.randrange(3), 40 + 32 * r.randrange(1)), b"x" * 32),
        "unterminated",
    )[1],
    _u32(164, [0, 1]),
    # (serpent and twofish come from libnettle, as in QEMU)
    _str_field(8, [b"aes", b"cast5", b"des", b"AES", b"", b"aes-xts", b"serpent", b"twofish"]),
    _str_field(
        40,
        [
            b"xts-plain64",
            b"cbc-plain",
            b"xts",
            b"cbc-essiv",
            b"cbc-essiv:sha256",
            b"gcm-plain64",
            b"xts-plain64:sha1",
            b"ecb-plain",
            b"xts-essiv:md4",
            b"xts-random",
        ],
    ),
    _str_field(72, [b"sha1", b"sha512", b"md5", b"whirlpool", b"SHA256", b""]),
    _u32(104, [0, 1, 8, 4039, 4040, 4041, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 20]),
    _u32(108, [0, 16, 24, 32, 48, 64, 33, 128, 0xFFFFFFFF]),
    _salt,
    lambda b, r: (b.__setitem__(112 + r.randrange(20), r.randrange(256)), "digest")[1],
    _slot_field(0, [0, 0xDEAD, 0x00AC71F3, 0x12345678]),
    _slot_field(40, [0, 1, 8, 504, 512, 4040, 0x7FFFFFFF, 0xFFFFFFF8]),
    _slot_field(44, [0, 1, 2, 100, 3999, 4000, 4001, 8000]),
    _slot_field(4, [0, 1, 1000]),
    _random_bytes,
]


def _variants(source: bytes) -> list[tuple[str, bytes]]:
    rng = random.Random(20261201)
    out = []
    for i in range(SAMPLES):
        buf = bytearray(source)
        descs = [rng.choice(MUTATIONS)(buf, rng) for _ in range(rng.choice([1, 1, 2]))]
        out.append((f"m{i}:" + ",".join(descs), bytes(buf)))
    return out


def _open(peer: QSDPeer | EnginePeer, workdir: Path, name: str) -> dict[str, object]:
    reply = peer.execute(
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "luks",
                "node-name": "l",
                "key-secret": "good",
                "read-only": True,
                "file": {
                    "driver": "file",
                    "node-name": "f",
                    "filename": str(workdir / name),
                    "read-only": True,
                },
            },
        }
    )
    if "error" not in reply:
        size = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
        peer.execute({"execute": "blockdev-del", "arguments": {"node-name": "l"}})
        peer.execute({"execute": "blockdev-del", "arguments": {"node-name": "f"}})
        sizes = sorted(
            (n["node-name"], n["image"]["virtual-size"])  # type: ignore[index]
            for n in size["return"]
        )  # type: ignore[union-attr]
        return {"return": sizes}
    return reply


def test_hostile_luks_headers(tmp_path: Path) -> None:
    image = template("luks", "", "4M").read_bytes()
    variants = _variants(image[:592])
    qdir, tdir = tmp_path / "qsd", tmp_path / "txgraph"
    qdir.mkdir()
    tdir.mkdir()
    qsd, eng = QSDPeer(qdir), EnginePeer(tdir)
    try:
        for peer in (qsd, eng):
            peer.execute(
                {
                    "execute": "object-add",
                    "arguments": {"qom-type": "secret", "id": "good", "data": PW},
                }
            )
        diffs = []
        refused = 0
        for i, (desc, header) in enumerate(variants):
            name = f"m{i}.luks"
            for d in (qdir, tdir):
                (d / name).write_bytes(header + image[592:])
            want, got = _open(qsd, qdir, name), _open(eng, tdir, name)
            refused += "error" in want
            if want != got:
                diffs.append(f"{desc}: qsd {want} != txgraph {got}")
            (qdir / name).unlink()
            (tdir / name).unlink()
        assert not diffs, "\n".join(diffs[:10])
        # The mutations must exercise the refusals, not only harmless bytes.
        assert refused >= len(variants) // 3, refused
    finally:
        qsd.close()
        eng.close()
