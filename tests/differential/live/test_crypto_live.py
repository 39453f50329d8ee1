"""Guest data through NBD exports of luks and encrypted qcow2 (LUKS, legacy AES) nodes, QSD vs txgraph.

Both peers get byte-identical copies of the same encrypted images (made once by
``qemu-img``, filled by ``qemu-io`` with the secret), open them with the secret,
export them writable, and a real ``qemu-io`` guest writes unaligned data, zeroes
and reads patterns back; the whole guest view is checksummed before and after.
The final offline image report compares the files too (the ciphertext is
deterministic for a given key, so both peers must leave the same bytes).
"""

from __future__ import annotations

import pytest

from tests.differential.harness import Call, cmd
from tests.differential.live.harness import View, io, live_differential
from tests.differential.live.scenarios.common import add, export, export_del, fnode, sc
from tests.support.crypto_images import AES, PW, copy_template, qemu_io

pytestmark = pytest.mark.qsd


def _images(workdir: object) -> None:
    from pathlib import Path

    d = Path(str(workdir))
    for name, fmt, opts in (
        ("a.luks", "luks", ""),
        ("a.qcow2", "qcow2", ""),
        ("aes.qcow2", "qcow2", AES),
    ):
        copy_template(d / name, fmt, opts)
        qemu_io(d / name, fmt, "write -P 0x11 0 70000", "write -P 0x22 1M 4096")


SECRET = cmd("object-add", {"qom-type": "secret", "id": "good", "data": PW})
GUEST = (
    "write -P 0x5a 1000 100000",
    "write -z 300000 5000",
    "write -P 0x66 4193792 512",
    "read -P 0x11 0 1000",
    "read -P 0x5a 1000 100000",
    "read -P 0 300000 5000",
    "read -P 0x22 1M 4096",
    "read -P 0x66 4193792 512",
)

SCENARIO = sc(
    "crypto_guest_data",
    [
        SECRET,
        add({"driver": "luks", "node-name": "l", "key-secret": "good", "file": fnode("a.luks")}),
        add(
            {
                "driver": "qcow2",
                "node-name": "q",
                "encrypt": {"format": "luks", "key-secret": "good"},
                "file": fnode("a.qcow2"),
            }
        ),
        add(
            {
                "driver": "qcow2",
                "node-name": "a",
                "encrypt": {"format": "aes", "key-secret": "good"},
                "file": fnode("aes.qcow2"),
            }
        ),
        export("el", "l"),
        export("eq", "q"),
        export("ea", "a"),
        View("el"),
        View("eq"),
        View("ea"),
        io("el", *GUEST),
        io("eq", *GUEST),
        io("ea", *GUEST),
        View("el"),
        View("eq"),
        View("ea"),
        cmd("object-del", {"id": "good"}),
        io("el", "read -P 0x5a 1000 100000", ro=True),
        export_del("el"),
        export_del("eq"),
        export_del("ea"),
        cmd("blockdev-del", {"node-name": "l"}),
        cmd("blockdev-del", {"node-name": "q"}),
        cmd("blockdev-del", {"node-name": "a"}),
    ],
    setup=(Call(_images),),
    theme="crypto",
)


def test_crypto_guest_data() -> None:
    comp = live_differential(SCENARIO)
    if not comp.equal:
        pytest.fail(str(comp), pytrace=False)
