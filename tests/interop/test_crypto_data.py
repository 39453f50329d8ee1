"""LUKS and LUKS-encrypted qcow2 guest data: txgraph reads and writes what QEMU does.

Images are made and filled by ``qemu-img`` / ``qemu-io`` (``--object secret``);
txgraph's ``luks`` and ``qcow2`` drivers must read them byte for byte like
``qemu-img convert -O raw`` (whole image and unaligned sub-ranges), and after
txgraph writes (unaligned, across sectors and clusters, zero writes), QEMU must
read back exactly the expected bytes and ``qemu-img check`` must be clean.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest
from interop_kit import open_node

from tests.support.crypto_images import (
    AES,
    CBC_ESSIV,
    PW,
    convert_raw,
    copy_template,
    image_opts,
    qemu_io,
    secret_object,
)
from txgraph.errors import OpenError
from txgraph.io.crypto.secret import SECRET_OPTION, SecretRef
from txgraph.io.driver import DriverNode

#: (format, qemu-img create options): the default suite runs the variants the differential
#: tests make anyway (each qemu-img create costs seconds of PBKDF2 benchmarking);
#: TXGRAPH_CRYPTO_VARIANTS=all adds the others
VARIANTS = [("luks", ""), ("luks", CBC_ESSIV), ("qcow2", ""), ("qcow2", AES)]
#: serpent and twofish (through libnettle): XTS as qemu-img makes it, and CBC with ESSIV
VARIANTS += [
    ("luks", "cipher-alg=serpent-256"),
    ("luks", "cipher-alg=twofish-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256"),
]
if os.environ.get("TXGRAPH_CRYPTO_VARIANTS") == "all":
    VARIANTS += [
        ("luks", "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=plain,hash-alg=sha512"),
        # (aes-192 is not here: qemu-img 7.2 create aborts on its 96000-byte key material,
        # "do_qcrypto_block_cipher_encdec: Assertion `QEMU_IS_ALIGNED(len, sectorsize)'")
        ("luks", "cipher-alg=aes-128,cipher-mode=ctr,ivgen-alg=plain64"),
        ("luks", "cipher-alg=aes-128,cipher-mode=xts,hash-alg=sha512"),
        ("qcow2", "cluster_size=4096"),
    ]
IDS = [f"{f}-{o.split(',')[0].replace('encrypt.format=', '') or 'default'}" for f, o in VARIANTS]


def _ref(pw: str = PW) -> SecretRef:
    return SecretRef("s0", lambda _sid: pw)


def _open(path: Path, fmt: str, read_only: bool = False, pw: str = PW) -> DriverNode:
    f = open_node("file", {"filename": str(path)}, read_only=read_only)
    key = "key-secret" if fmt == "luks" else "encrypt.key-secret"
    opts: dict[str, object] = {key: "s0", SECRET_OPTION: _ref(pw)}
    return open_node(fmt, opts, {"file": f}, read_only)


def _fill(path: Path, fmt: str) -> None:
    qemu_io(
        path,
        fmt,
        "write -P 0x11 0 70000",
        "write -P 0x22 131072 4096",
        "write -z 200000 70000",
        "write -P 0x33 1048575 3",
        "write -P 0x44 3145728 65536",
    )


@pytest.mark.parametrize("fmt,opts", VARIANTS, ids=IDS)
def test_reads_match_qemu_img_convert(tmp_path: Path, fmt: str, opts: str) -> None:
    img = copy_template(tmp_path / f"a.{fmt}", fmt, opts)
    _fill(img, fmt)
    want = convert_raw(img, fmt, tmp_path / "want.raw")
    node = _open(img, fmt, read_only=True)
    try:
        assert node.size() == len(want)
        assert node.read(0, len(want)) == want
        rng = random.Random(13)
        for _ in range(20):
            off = rng.randrange(len(want))
            n = rng.randrange(1, min(200000, len(want) - off) + 1)
            assert node.read(off, n) == want[off : off + n], (off, n)
    finally:
        node.close()


@pytest.mark.parametrize("fmt,opts", VARIANTS, ids=IDS)
def test_writes_read_back_by_qemu(tmp_path: Path, fmt: str, opts: str) -> None:
    img = copy_template(tmp_path / f"a.{fmt}", fmt, opts)
    _fill(img, fmt)
    expect = bytearray(convert_raw(img, fmt, tmp_path / "before.raw"))
    node = _open(img, fmt)
    rng = random.Random(7)
    try:
        for i in range(15):
            off = rng.randrange(len(expect) - 1)
            n = rng.randrange(1, min(150000, len(expect) - off) + 1)
            data = bytes([(i * 37 + j) & 0xFF for j in range(256)]) * (n // 256 + 1)
            node.write(off, data[:n])
            expect[off : off + n] = data[:n]
        node.write_zeroes(65536 * 5 + 100, 70000)
        expect[65536 * 5 + 100 : 65536 * 5 + 100 + 70000] = bytes(70000)
        assert node.read(0, len(expect)) == bytes(expect)
        node.flush()
    finally:
        node.close()
    (tmp_path / "expect.raw").write_bytes(bytes(expect))
    got = convert_raw(img, fmt, tmp_path / "after.raw")
    assert got == bytes(expect)
    res = subprocess.run(
        [
            "qemu-img",
            "compare",
            *secret_object(),
            "--image-opts",
            image_opts(img, fmt),
            f"driver=raw,file.filename={tmp_path / 'expect.raw'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    if fmt == "qcow2":
        res = subprocess.run(
            ["qemu-img", "check", *secret_object(), "--image-opts", image_opts(img, fmt)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("fmt", ["luks", "qcow2"])
def test_wrong_password_is_refused(tmp_path: Path, fmt: str) -> None:
    img = copy_template(tmp_path / f"a.{fmt}", fmt)
    with pytest.raises(OpenError) as exc:
        _open(img, fmt, read_only=True, pw="wrong")
    assert exc.value.desc == "Invalid password, cannot unlock any keyslot"


def test_encrypted_overlay_over_plain_backing(tmp_path: Path) -> None:
    """qcow2-luks over a raw backing: unallocated reads come from the backing in clear,
    partial writes copy the backing's rest of the cluster up and encrypt it."""
    base = tmp_path / "base.raw"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "raw", str(base), "4M"], check=True, timeout=120
    )
    subprocess.run(
        ["qemu-io", "-f", "raw", "-c", "write -P 0x77 0 4M", str(base)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    ov = tmp_path / "ov.qcow2"
    # qemu-img create with a backing: made per test (the template cache has no backing)
    from tests.support.crypto_images import create

    create(ov, "qcow2", "4M", f"backing_file={base},backing_fmt=raw")
    qemu_io(ov, "qcow2", "write -P 0x11 65536 4096")
    node = _open(ov, "qcow2")
    bf = open_node("file", {"filename": str(base)}, read_only=True)
    node.children["backing"] = open_node("raw", {}, {"file": bf}, True)
    try:
        want = bytearray(convert_raw(ov, "qcow2", tmp_path / "want.raw"))
        assert node.read(0, len(want)) == bytes(want)
        node.write(200000, b"\x5a" * 3000)  # COW of the backing's cluster
        want[200000:203000] = b"\x5a" * 3000
        node.write(65536 + 100, b"\x66" * 10)  # in place, inside an allocated cluster
        want[65636:65646] = b"\x66" * 10
        node.flush()
    finally:
        node.close()
    assert convert_raw(ov, "qcow2", tmp_path / "after.raw") == bytes(want)
    res = subprocess.run(
        ["qemu-img", "check", *secret_object(), "--image-opts", image_opts(ov, "qcow2")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
