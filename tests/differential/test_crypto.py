"""Secrets, LUKS and LUKS-encrypted qcow2: every scenario agrees with qemu-storage-daemon 7.2.

The scenarios are in :mod:`tests.differential.scenarios.crypto`; debug one with
``python -m tests.differential.harness`` after adding it to the scenario list, or
by running this test with ``-k NAME``.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator

import pytest

from tests.differential.harness import EnginePeer, Scenario, cmd, differential
from tests.differential.scenarios.crypto import SCENARIOS
from tests.support.crypto_images import PW

pytestmark = pytest.mark.qsd


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_crypto_scenario(scenario: Scenario) -> None:
    comp = differential(scenario, right=EnginePeer)
    if not comp.equal:
        pytest.fail(str(comp), pytrace=False)


@pytest.fixture
def user_key() -> Iterator[int]:
    """A kernel ``user`` key holding the test password, readable by this uid (and QSD).

    Added to the user keyring, given user read permission, invalidated on exit.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    serial = libc.syscall(
        248, b"user", b"txgraph-crypto-test", PW.encode(), len(PW), ctypes.c_int(-4)
    )  # add_key(..., KEY_SPEC_USER_KEYRING)
    if serial < 0:
        pytest.fail(f"add_key failed: {os.strerror(ctypes.get_errno())}")
    try:
        # KEYCTL_SETPERM: possessor and user may do everything
        assert libc.syscall(250, 5, ctypes.c_int32(serial), ctypes.c_uint32(0x3F3F0000)) == 0
        yield serial
    finally:
        libc.syscall(250, 21, ctypes.c_int32(serial))  # KEYCTL_INVALIDATE


def test_secret_keyring_opens_luks(user_key: int) -> None:
    from tests.differential.scenarios.crypto import img, luks

    scenario = Scenario(
        name="secret_keyring_luks",
        steps=(
            cmd("object-add", {"qom-type": "secret_keyring", "id": "good", "serial": user_key}),
            cmd(
                "object-add",
                {"qom-type": "secret_keyring", "id": "dup", "serial": user_key, "format": "base64"},
            ),
            cmd("blockdev-add", luks("l", "a.luks")),
            cmd("query-named-block-nodes", {"flat": True}),
        ),
        setup=(img("a.luks"),),
        theme="crypto",
    )
    comp = differential(scenario, right=EnginePeer)
    if not comp.equal:
        pytest.fail(str(comp), pytrace=False)
