"""Malformed arguments: qemu-storage-daemon 7.2 and txgraph's QAPI validator give the same error.

Every case here fails in QEMU's QAPI input visitor, before the command runs, so
QSD's answer depends only on the arguments. The cases cover each kind of
error text and each form of path QEMU prints: full paths through objects and
lists (``options[0].file.filename``) for missing/unexpected/wrong-type members,
and the bare member name (or ``null`` inside a list) for enum values,
narrow-integer ranges and alternates.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.qsd import QSD
from txgraph.errors import QAPIError
from txgraph.qmp.qapi import validate_arguments

pytestmark = pytest.mark.qsd

QAPI_TEXT = re.compile(
    r"^(Parameter '[^']*' (is missing|is unexpected|does not accept value|expects)"
    r"|Invalid parameter type for ')"
)

F = {"driver": "file", "filename": "/nonexistent"}

CASES: list[tuple[str, dict[str, Any]]] = [
    # blockdev-add: the BlockdevOptions union, boxed at top level
    ("blockdev-add", {}),
    ("blockdev-add", {"driver": 1}),
    ("blockdev-add", {"driver": "nope"}),
    ("blockdev-add", {"driver": "null-co", "bogus": 1}),
    ("blockdev-add", {"driver": "null-co", "size": "x"}),
    ("blockdev-add", {"driver": "null-co", "size": 1.0}),
    ("blockdev-add", {"driver": "null-co", "size": 2**63}),
    ("blockdev-add", {"driver": "null-co", "size": 2**64}),
    ("blockdev-add", {"driver": "null-co", "latency-ns": "x"}),
    ("blockdev-add", {"driver": "null-co", "latency-ns": -(2**63) - 1}),
    ("blockdev-add", {"driver": "null-co", "read-only": "yes"}),
    ("blockdev-add", {"driver": "null-co", "node-name": None}),
    ("blockdev-add", {"driver": "null-co", "cache": 1}),
    ("blockdev-add", {"driver": "null-co", "cache": {"direct": 1}}),
    ("blockdev-add", {"driver": "null-co", "discard": "bad"}),
    ("blockdev-add", {"driver": "raw", "file": 5}),
    ("blockdev-add", {"driver": "raw", "file": None}),
    ("blockdev-add", {"driver": "raw"}),
    ("blockdev-add", {"driver": "raw", "file": {"driver": "file"}}),
    ("blockdev-add", {"driver": "raw", "file": {"driver": "file", "filename": 3}}),
    ("blockdev-add", {"driver": "raw", "file": {**F, "aio": "x"}}),
    ("blockdev-add", {"driver": "raw", "file": F, "offset": "x"}),
    ("blockdev-add", {"driver": "qcow2", "file": "x", "backing": 3}),
    (
        "blockdev-add",
        {
            "driver": "qcow2",
            "file": "x",
            "backing": {
                "driver": "raw",
                "file": {"driver": "raw", "file": {**F, "locking": "sometimes"}},
            },
        },
    ),
    ("blockdev-add", {"driver": "qcow2", "file": "x", "overlap-check": 5}),
    ("blockdev-add", {"driver": "qcow2", "file": "x", "overlap-check": "nope"}),
    ("blockdev-add", {"driver": "qcow2", "file": "x", "overlap-check": {"template": "nope"}}),
    (
        "blockdev-add",
        {"driver": "qcow2", "file": "x", "encrypt": {"format": "aes", "key-secret": 1}},
    ),
    ("blockdev-add", {"driver": "blkdebug", "image": "x", "max-transfer": 2**32}),
    ("blockdev-add", {"driver": "blkdebug", "image": "x", "max-transfer": -(2**31) - 1}),
    (
        "blockdev-add",
        {"driver": "blkdebug", "image": {"driver": "blkdebug", "image": "y", "opt-discard": 2**31}},
    ),
    ("blockdev-add", {"driver": "blkdebug", "image": "x", "inject-error": {}}),
    ("blockdev-add", {"driver": "blkdebug", "image": "x", "inject-error": [1]}),
    ("blockdev-add", {"driver": "blkdebug", "image": "x", "inject-error": [{}]}),
    ("blockdev-add", {"driver": "blkdebug", "image": "x", "inject-error": [{"event": "nope"}]}),
    (
        "blockdev-add",
        {"driver": "blkdebug", "image": "x", "inject-error": [{"event": "read_aio", "errno": "x"}]},
    ),
    ("blockdev-add", {"driver": "quorum", "vote-threshold": 1, "children": ["a", 1]}),
    ("blockdev-add", {"driver": "quorum", "vote-threshold": 1, "children": [{"driver": "raw"}]}),
    ("blockdev-add", {"driver": "throttle", "file": "x", "throttle-group": None}),
    ("blockdev-add", {"driver": "nbd", "server": {"type": "inet"}}),
    (
        "blockdev-add",
        {"driver": "nbd", "server": {"type": "unix", "path": "/x"}, "reconnect-delay": 2**32},
    ),
    ("blockdev-add", {"driver": "null-co", "x": 1, "y": 2, "z": 3}),
    # blockdev-reopen: a list of BlockdevOptions
    ("blockdev-reopen", {}),
    ("blockdev-reopen", {"options": {}}),
    ("blockdev-reopen", {"options": [5]}),
    ("blockdev-reopen", {"options": [{}]}),
    ("blockdev-reopen", {"options": [{"driver": 1}]}),
    (
        "blockdev-reopen",
        {"options": [{"driver": "null-co"}, {"driver": "raw", "file": {"driver": "x"}}]},
    ),
    ("blockdev-reopen", {"options": [{"driver": "null-co", "x": 1}]}),
    (
        "blockdev-reopen",
        {"options": [{"driver": "qcow2", "file": "f", "backing": None, "x": 1, "y": 2}]},
    ),
    ("blockdev-reopen", {"options": [{"driver": "raw", "file": {"driver": "raw"}}]}),
    ("blockdev-reopen", {"options": [{"driver": "raw", "file": {"driver": "raw", "file": 5}}]}),
    ("blockdev-reopen", {"options": [{"driver": "null-co", "latency-ns": "x"}]}),
    ("blockdev-reopen", {"options": [{"driver": "null-co", "cache": {"no-flush": True, "q": 1}}]}),
    ("blockdev-reopen", {"options": [{"driver": "blkdebug", "image": "x", "max-transfer": "x"}]}),
    (
        "blockdev-reopen",
        {
            "options": [
                {
                    "driver": "blkdebug",
                    "image": "x",
                    "inject-error": [{"event": "read_aio", "once": 1}],
                }
            ]
        },
    ),
    (
        "blockdev-reopen",
        {
            "options": [
                {
                    "driver": "blkdebug",
                    "image": "x",
                    "inject-error": [{"event": "read_aio", "iotype": "bad"}],
                }
            ]
        },
    ),
    ("blockdev-reopen", {"options": [{"driver": "quorum", "vote-threshold": 1, "children": {}}]}),
    # blockdev-del
    ("blockdev-del", {}),
    ("blockdev-del", {"node-name": 1}),
    ("blockdev-del", {"node-name": None}),
    ("blockdev-del", {"node-name": "a", "x": 1}),
    # object-add: the ObjectOptions union, throttle-group variant
    ("object-add", {}),
    ("object-add", {"qom-type": 1, "id": "t"}),
    ("object-add", {"qom-type": "nope", "id": "a"}),
    ("object-add", {"qom-type": "throttle-group"}),
    ("object-add", {"qom-type": "throttle-group", "id": 1}),
    ("object-add", {"qom-type": "throttle-group", "id": "t", "q": 1}),
    ("object-add", {"qom-type": "throttle-group", "id": "t", "limits": 1}),
    ("object-add", {"qom-type": "throttle-group", "id": "t", "limits": {"x": 1}}),
    ("object-add", {"qom-type": "throttle-group", "id": "t", "limits": {"iops-total": "x"}}),
    ("object-add", {"qom-type": "throttle-group", "id": "t", "x-iops-total": 1.5}),
    # x-blockdev-change
    ("x-blockdev-change", {}),
    ("x-blockdev-change", {"parent": "a", "child": 1}),
    ("x-blockdev-change", {"parent": "a", "node": 1}),
    ("x-blockdev-change", {"parent": "a", "child": "c", "zz": 1}),
    # blockdev-snapshot / blockdev-snapshot-sync
    ("blockdev-snapshot", {"node": "a"}),
    ("blockdev-snapshot", {"node": "a", "overlay": 3}),
    ("blockdev-snapshot-sync", {}),
    ("blockdev-snapshot-sync", {"snapshot-file": "a", "format": 1}),
    ("blockdev-snapshot-sync", {"snapshot-file": "a", "device": "d", "mode": "x"}),
    # transaction: a list of TransactionAction (tag 'type', wrapped 'data')
    ("transaction", {}),
    ("transaction", {"actions": 1}),
    ("transaction", {"actions": [{}]}),
    ("transaction", {"actions": [{"type": 1}]}),
    ("transaction", {"actions": [{"type": "nope"}]}),
    ("transaction", {"actions": [{"type": "blockdev-snapshot"}]}),
    ("transaction", {"actions": [{"type": "blockdev-snapshot", "data": {"node": "a"}}]}),
    (
        "transaction",
        {"actions": [{"type": "blockdev-snapshot", "data": {"node": "a", "overlay": "b", "z": 1}}]},
    ),
    ("transaction", {"actions": [{"type": "blockdev-snapshot-sync", "data": 1}]}),
    (
        "transaction",
        {
            "actions": [
                {"type": "blockdev-snapshot-sync", "data": {"snapshot-file": "a", "mode": "bad"}}
            ]
        },
    ),
    ("transaction", {"actions": [{"type": "abort", "data": {}, "x": 2}]}),
    ("transaction", {"actions": [], "properties": {"completion-mode": "x"}}),
    (
        "transaction",
        {
            "actions": [
                {
                    "type": "block-dirty-bitmap-add",
                    "data": {"node": "a", "name": "b", "granularity": 2**32},
                }
            ]
        },
    ),
    (
        "transaction",
        {
            "actions": [
                {
                    "type": "block-dirty-bitmap-add",
                    "data": {"node": "a", "name": "b", "granularity": "x"},
                }
            ]
        },
    ),
]


@pytest.fixture(scope="module")
def daemon() -> Iterator[QSD]:
    for attempt in range(20):
        try:
            qsd = QSD()
            break
        except ConnectionRefusedError:  # its socket file appears a moment before it listens
            time.sleep(0.05 * attempt)
    else:
        raise RuntimeError("qemu-storage-daemon never accepted a connection")
    yield qsd
    qsd.close()


def test_enough_cases() -> None:
    assert len(CASES) >= 40


@pytest.mark.parametrize(
    ("command", "arguments"), CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)]
)
def test_same_error(daemon: QSD, command: str, arguments: dict[str, Any]) -> None:
    reply = daemon.execute(command, arguments)
    assert "error" in reply, reply
    assert QAPI_TEXT.match(reply["error"]["desc"]), f"not a QAPI error: {reply}"
    with pytest.raises(QAPIError) as info:
        validate_arguments(command, arguments)
    assert (info.value.error_class, info.value.desc) == (
        reply["error"]["class"],
        reply["error"]["desc"],
    )


PASSES_VALIDATION: list[tuple[str, dict[str, Any]]] = [
    ("blockdev-add", {"driver": "null-co", "size": -1}),
    ("blockdev-add", {"driver": "null-co", "latency-ns": 2**64 - 1}),
    ("blockdev-add", {"driver": "qcow2", "file": "nonexistent", "backing": None}),
    ("blockdev-del", {"node-name": "nonexistent"}),
    ("x-blockdev-change", {"parent": "nonexistent"}),
    ("blockdev-snapshot-sync", {"snapshot-file": "a"}),
    ("object-add", {"qom-type": "throttle-group", "id": "t", "limits": {"bps-total": -1}}),
]


@pytest.mark.parametrize(
    ("command", "arguments"),
    PASSES_VALIDATION,
    ids=[f"{c}-{i}" for i, (c, _) in enumerate(PASSES_VALIDATION)],
)
def test_valid_arguments_reach_the_command(
    daemon: QSD, command: str, arguments: dict[str, Any]
) -> None:
    """QSD fails these only in the block layer; the validator must let them through."""
    reply = daemon.execute(command, arguments)
    assert "error" in reply and not QAPI_TEXT.match(reply["error"]["desc"]), reply
    validate_arguments(command, arguments)
