"""Secrets, LUKS and LUKS-encrypted qcow2 on qemu-storage-daemon 7.2 and on txgraph.

Encrypted images carry random salts, a random UUID and timing-dependent
iteration counts, all of which ``query-named-block-nodes`` reports; so every
image is made once (``qemu-img create ... iter-time=10``, fast key slots) in a
template directory and *copied* into each peer's directory, and both peers see
the same bytes. Not registered in ``scenarios.SCENARIOS`` (run by
tests/differential/test_crypto.py).
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from typing import Any

from tests.differential.harness import Call, Scenario, WriteFile
from tests.differential.scenarios._common import (
    add,
    cmd,
    delete,
    fnode,
    graph,
    obj_add,
    obj_del,
    qnodes,
    raw_img,
    sc,
    tg,
)
from tests.support.crypto_images import AES, CBC_ESSIV, PW, copy_template

T = "crypto"
K32 = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="  # base64 of 32 ASCII bytes
IV = "MDEyMzQ1Njc4OTAxMjM0NQ=="  # base64 of 16 bytes

_RECIPES: dict[str, tuple[str, str]] = {
    "a.luks": ("luks", ""),
    "cbc.luks": ("luks", CBC_ESSIV),
    "a.qcow2": ("qcow2", ""),
    "aes.qcow2": ("qcow2", AES),
}


def _copy(workdir: Path, name: str, dest: str | None = None) -> None:
    fmt, opts = _RECIPES[name]
    copy_template(workdir / (dest or name), fmt, opts)


def img(name: str, dest: str | None = None) -> Call:
    return Call(_copy, (name, dest))


def _patch_crypto_ext(workdir: Path, name: str, offset_delta: int, length: int | None) -> None:
    """Change the CRYPTO header extension (offset, length) of a qcow2 v3 image in place."""
    path = workdir / name
    data = bytearray(path.read_bytes()[:65536])
    pos = struct.unpack_from(">I", data, 100)[0]  # header_length
    while pos + 8 <= len(data):
        magic, size = struct.unpack_from(">II", data, pos)
        if magic == 0 or size > len(data):
            break
        if magic == 0x0537BE77:
            off, ln = struct.unpack_from(">QQ", data, pos + 8)
            struct.pack_into(
                ">QQ", data, pos + 8, off + offset_delta, ln if length is None else length
            )
            with open(path, "r+b") as f:
                f.seek(pos + 8)
                f.write(bytes(data[pos + 8 : pos + 24]))
            return
        pos += 8 + ((size + 7) & ~7)
    raise AssertionError("no CRYPTO extension")


def crypto_ext(name: str, offset_delta: int = 0, length: int | None = None) -> Call:
    return Call(_patch_crypto_ext, (name, offset_delta, length))


def secret(oid: str, **props: Any) -> dict[str, Any]:
    return obj_add({"qom-type": "secret", "id": oid, **props})


def luks(name: str, path: str, key: str | None = "good", **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"driver": "luks", "node-name": name, "file": fnode(path, f"{name}-f")}
    if key is not None:
        d["key-secret"] = key
    d.update(extra)
    return d


def eqcow2(
    name: str, path: str, key: str | None = "good", fmt: str = "luks", **extra: Any
) -> dict[str, Any]:
    d: dict[str, Any] = {"driver": "qcow2", "node-name": name, "file": fnode(path, f"{name}-f")}
    if key is not None:
        d["encrypt"] = {"format": fmt, "key-secret": key}
    d.update(extra)
    return d


SCENARIOS: list[Scenario] = [
    sc(
        "secret_errors",
        [
            secret("s0"),
            secret("s1", data="x", file="{dir}/pw.txt"),
            secret("s2", file="{dir}/nope.txt"),
            secret("s3", file="{dir}/sub"),
            secret("s4", data="!!!", format="base64"),
            secret("s5", data="x", format="hex"),
            secret("s6", data="x", bogus=1),
            secret("s7", data="x", loaded=True),
            secret("bad id", data="x"),
            secret("n64", file="{dir}/nul64.txt", format="base64"),
            secret("s8", data="aGVsbG8=\n", format="base64"),
            secret("s8", data="!!", format="base64"),
            obj_del("s8"),
            obj_del("s8"),
        ],
        setup=[
            WriteFile("pw.txt", b"hello"),
            WriteFile("nul64.txt", b"aGVs\0bG8="),
            Call(lambda d: (d / "sub").mkdir()),
        ],
        theme=T,
    ),
    sc(
        "secret_keyring",
        [
            obj_add({"qom-type": "secret_keyring", "id": "k0"}),
            obj_add({"qom-type": "secret_keyring", "id": "k1", "serial": 0}),
            obj_add({"qom-type": "secret_keyring", "id": "k2", "serial": 1}),
            obj_add(
                {"qom-type": "secret_keyring", "id": "k3", "serial": 0x7FFFFFF0, "format": "base64"}
            ),
            obj_add({"qom-type": "secret_keyring", "id": "k4", "serial": -2000}),
        ],
        theme=T,
    ),
    sc(
        "secret_keyid",
        [
            secret("k32", data=K32, format="base64"),
            secret("short", data="hello"),
            tg("tg"),
            secret("e1", data="hello", keyid="nokey"),
            secret("e2", data="hello", keyid="short"),
            secret("e3", data="hello", keyid="tg"),
            secret("e4", data="hello", keyid="k32"),
            secret("e5", data="hello", keyid="k32", iv="abc"),
            secret("e6", data="hello", keyid="k32", iv="MDEyMzQ1Njc="),
            secret("e7", data="hello", keyid="k32", iv=IV),
            secret("e8", data="aGVsbG9oZWxsb2hlbGxvaA==", keyid="k32", iv=IV, format="base64"),
            secret("e9", data="x", keyid="k32", iv="!!"),
            secret("self", data="x", keyid="self"),
            # a real encrypted password: AES-256-CBC of "abc123" + PKCS#7 padding
            secret("enc", data="zeN0QlpMsmD3PeUAmMSPmg==", keyid="k32", iv=IV, format="base64"),
        ],
        theme=T,
    ),
    sc(
        "luks_open_secrets",
        [
            add(luks("l0", "a.luks", key=None)),
            add(luks("l1", "a.luks", key="nosuch")),
            secret("bad", data="wrong"),
            secret("good", data=PW),
            tg("tg"),
            add(luks("l2", "a.luks", key="bad")),
            add(luks("l3", "a.luks", key="tg")),
            add(luks("l4", "plain.raw")),
            add(luks("l5", "a.luks")),
            qnodes(),
            graph(),
            obj_del("good"),
            cmd(
                "blockdev-reopen",
                {"options": [{"driver": "luks", "node-name": "l5", "file": "l5-f"}]},
            ),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {"driver": "luks", "node-name": "l5", "key-secret": "other", "file": "l5-f"}
                    ]
                },
            ),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {
                            "driver": "luks",
                            "node-name": "l5",
                            "key-secret": "good",
                            "file": "l5-f",
                            "read-only": True,
                        }
                    ]
                },
            ),
            qnodes(),
            graph(),
            delete("l5"),
            delete("l5-f"),
            add(luks("l6", "a.luks", key="good")),
        ],
        setup=[img("a.luks"), raw_img("plain.raw", "4M")],
        theme=T,
    ),
    sc(
        "secret_base64_decoding",
        [
            # glib's lenient decoder, observed through the LUKS password it yields
            secret("b1", data="YWJjMTIz", format="base64"),
            secret("b2", data="YWJj\nMTIz\n", format="base64"),
            secret("b3", data="YWJjMTIzX", format="base64"),
            secret("b4", data="YWJjMTIz====", format="base64"),
            secret("b5", data="YWJjMTI=", format="base64"),
            secret("b6", data="YW=jMTIz", format="base64"),
            add(luks("l1", "a.luks", key="b1", **{"read-only": True})),
            add(luks("l2", "a.luks", key="b2", **{"read-only": True})),
            add(luks("l3", "a.luks", key="b3", **{"read-only": True})),
            add(luks("l4", "a.luks", key="b4", **{"read-only": True})),
            add(luks("l5", "a.luks", key="b5", **{"read-only": True})),
            add(luks("l6", "a.luks", key="b6", **{"read-only": True})),
            secret("f1", file="{dir}/nul.txt"),
            secret("f2", file="{dir}/latin1.txt"),
            secret("f3", file="{dir}/pw.txt"),
            add(luks("l7", "a.luks", key="f1", **{"read-only": True})),
            add(luks("l8", "a.luks", key="f2", **{"read-only": True})),
            add(luks("l9", "a.luks", key="f3", **{"read-only": True})),
        ],
        setup=[
            img("a.luks"),
            WriteFile("nul.txt", PW.encode() + b"\0"),
            WriteFile("latin1.txt", b"abc\xe9"),
            WriteFile("pw.txt", PW.encode()),
        ],
        theme=T,
    ),
    sc(
        "luks_cipher_variants",
        [
            secret("good", data=PW),
            add(luks("c", "cbc.luks", **{"read-only": True})),
            qnodes(),
        ],
        setup=[img("cbc.luks")],
        theme=T,
    ),
    sc(
        "luks_encrypted_secret",
        [
            secret("k32", data=K32, format="base64"),
            secret("good", data="zeN0QlpMsmD3PeUAmMSPmg==", keyid="k32", iv=IV, format="base64"),
            add(luks("l", "a.luks")),
            qnodes(),
        ],
        setup=[img("a.luks")],
        theme=T,
    ),
    sc(
        "qcow2_luks_open_secrets",
        [
            add(eqcow2("q0", "a.qcow2", key=None)),
            secret("bad", data="wrong"),
            secret("good", data=PW),
            add(eqcow2("q1", "a.qcow2", key="bad")),
            add(eqcow2("q2", "a.qcow2", key="bad", fmt="aes")),
            add(eqcow2("q3", "a.qcow2", key="nosuch")),
            add(eqcow2("q4", "plain.raw", key="nosuch")),
            add(eqcow2("q5", "plain.qcow2", key="good")),
            add(luks("l6", "a.qcow2", key="good")),
            add(eqcow2("q6", "a.luks", key="good")),
            add(
                {
                    "driver": "qcow2",
                    "node-name": "q7",
                    "encrypt": {"key-secret": "good"},
                    "file": fnode("a.qcow2"),
                }
            ),
            add(eqcow2("q8", "a.qcow2")),
            qnodes(),
            graph(),
            cmd(
                "blockdev-reopen",
                {"options": [{"driver": "qcow2", "node-name": "q8", "file": "q8-f"}]},
            ),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {
                            "driver": "qcow2",
                            "node-name": "q8",
                            "encrypt": {"format": "luks", "key-secret": "good"},
                            "file": "q8-f",
                            "read-only": True,
                        }
                    ]
                },
            ),
            qnodes(),
            obj_del("good"),
            delete("q8"),
        ],
        setup=[
            img("a.qcow2"),
            img("a.luks"),
            raw_img("plain.raw", "4M"),
            Call(
                lambda d: subprocess.run(
                    ["qemu-img", "create", "-q", "-f", "qcow2", str(d / "plain.qcow2"), "1M"],
                    check=True,
                )
            ),
        ],
        theme=T,
    ),
    sc(
        "qcow2_aes_open",
        [
            add(eqcow2("a0", "aes.qcow2", key=None)),
            secret("any", data="not-the-password"),
            secret("good", data=PW),
            add(eqcow2("a1", "aes.qcow2", key="nosuch", fmt="aes")),
            add(eqcow2("a2", "aes.qcow2", key="good", fmt="luks")),
            add(eqcow2("a3", "aes.qcow2", key="any", fmt="aes", **{"read-only": True})),
            add(eqcow2("a4", "plain.qcow2", key="good", fmt="aes")),
            qnodes(),
            graph(),
            delete("a3"),
            delete("a3-f"),
            add(eqcow2("a5", "aes.qcow2", key="good", fmt="aes")),
            qnodes(),
        ],
        setup=[
            img("aes.qcow2"),
            Call(
                lambda d: subprocess.run(
                    ["qemu-img", "create", "-q", "-f", "qcow2", str(d / "plain.qcow2"), "1M"],
                    check=True,
                )
            ),
        ],
        theme=T,
    ),
    sc(
        "qcow2_luks_hostile_crypto_ext",
        [
            secret("good", data=PW),
            add(eqcow2("h1", "unaligned.qcow2", **{"read-only": True})),
            add(eqcow2("h2", "short.qcow2", **{"read-only": True})),
            add(eqcow2("h3", "tiny.qcow2", **{"read-only": True})),
            add(eqcow2("h4", "moved.qcow2", **{"read-only": True})),
            add(eqcow2("h5", "past.qcow2", **{"read-only": True})),
        ],
        setup=[
            img("a.qcow2", "unaligned.qcow2"),
            crypto_ext("unaligned.qcow2", 512),
            img("a.qcow2", "short.qcow2"),
            crypto_ext("short.qcow2", 0, 4096),
            img("a.qcow2", "tiny.qcow2"),
            crypto_ext("tiny.qcow2", 0, 100),
            img("a.qcow2", "moved.qcow2"),
            crypto_ext("moved.qcow2", -65536),
            img("a.qcow2", "past.qcow2"),
            crypto_ext("past.qcow2", 1 << 30),
        ],
        theme=T,
    ),
    sc(
        "luks_reopen_read_only",
        [
            secret("good", data=PW),
            add(luks("l", "a.luks", **{"read-only": True})),
            add(eqcow2("q", "a.qcow2", **{"read-only": True})),
            graph(),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {
                            "driver": "luks",
                            "node-name": "l",
                            "key-secret": "good",
                            "file": "l-f",
                            "read-only": False,
                        },
                        {
                            "driver": "qcow2",
                            "node-name": "q",
                            "file": "q-f",
                            "read-only": False,
                            "encrypt": {"format": "luks", "key-secret": "good"},
                        },
                    ]
                },
            ),
            qnodes(),
            graph(),
            cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}}),
            cmd("block-export-add", {"type": "nbd", "id": "e", "node-name": "l", "writable": True}),
            graph(),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {
                            "driver": "luks",
                            "node-name": "l",
                            "key-secret": "good",
                            "file": "l-f",
                            "read-only": True,
                        }
                    ]
                },
            ),
            cmd("block-export-del", {"id": "e"}),
            cmd("nbd-server-stop"),
            cmd(
                "blockdev-reopen",
                {
                    "options": [
                        {
                            "driver": "luks",
                            "node-name": "l",
                            "key-secret": "good",
                            "file": "l-f",
                            "read-only": True,
                        }
                    ]
                },
            ),
            graph(),
        ],
        setup=[img("a.luks"), img("a.qcow2")],
        theme=T,
    ),
    sc(
        "luks_export_perms",
        [
            secret("good", data=PW),
            add(luks("l", "a.luks")),
            cmd("nbd-server-start", {"addr": {"type": "unix", "data": {"path": "{dir}/nbd.sock"}}}),
            cmd("block-export-add", {"type": "nbd", "id": "e", "node-name": "l", "writable": True}),
            graph(),
            cmd("block-export-del", {"id": "e"}),
            cmd("nbd-server-stop"),
            graph(),
        ],
        setup=[img("a.luks")],
        theme=T,
    ),
]
