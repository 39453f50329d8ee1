"""Generated ``--blockdev`` keyval strings: QSD 7.2 and txgraph say the same thing.

Each example is ``--blockdev <generated> --blockdev driver=null-co``: the second
option always fails (no node-name), so QSD exits whether or not it accepted the
first one, and the message (the first one's refusal, or the second's) tells
whether the generated string was parsed, typed and opened the same way.
Bounded by the hypothesis profile (``HYPOTHESIS_PROFILE=ci``: 40 examples).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.qsd import QSD_BINARY
from txgraph.ops.session import Session
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine
from txgraph.qmp.qsd_argv import CmdlineError
from txgraph.qmp.qsd_cmdline import run_command_line

pytestmark = pytest.mark.qsd

KEYS = st.sampled_from(
    [
        "driver",
        "node-name",
        "size",
        "read-only",
        "cache.direct",
        "cache.no-flush",
        "latency-ns",
        "children.0",
        "children.1.driver",
        "children.0.size",
        "vote-threshold",
        "discard",
        "detect-zeroes",
        "read-zeroes",
        "bogus",
        "a.b",
        "0",
        "",
        "help",
        "x..y",
        "cache",
    ]
)
VALUES = st.sampled_from(
    [
        "null-co",
        "quorum",
        "n",
        "on",
        "off",
        "maybe",
        "0x10",
        "1M",
        "-1",
        "",
        "a,,b",
        "x.y",
        "unmap",
        "2",
        "010",
        "1.5",
    ]
)
ITEMS = st.one_of(st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), KEYS)


@st.composite
def blockdev_strings(draw: st.DrawFn) -> str:
    items = draw(st.lists(ITEMS, min_size=0, max_size=6))
    if draw(st.booleans()):
        items.insert(0, draw(st.sampled_from(["null-co", "quorum", "null-aio", "bogus"])))
    elif draw(st.booleans()):
        items.insert(0, "driver=null-co")
    text = ",".join(items)
    return text + ("," if draw(st.booleans()) else "")


def _qsd(argv: list[str]) -> str:
    proc = subprocess.Popen(
        ["qemu-storage-daemon", *argv],
        executable=QSD_BINARY,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, (argv, out, err)
    return out + err


def _txgraph(argv: list[str]) -> str:
    session = Session()
    try:
        run_command_line(argv, Engine(CommandContext(session)))
    except CmdlineError as err:
        return "".join(err.warnings) + err.render()
    finally:
        session.close()
    raise AssertionError(f"txgraph accepted {argv}")


@given(blockdev_strings())
def test_generated_blockdev_strings(text: str) -> None:
    argv = ["--blockdev", text, "--blockdev", "driver=null-co"]
    assert _txgraph(argv) == _qsd(argv)


def test_the_sentinel_fails_after_a_good_blockdev(tmp_path: Path) -> None:
    argv = ["--blockdev", "null-co,node-name=n", "--blockdev", "driver=null-co"]
    expected = (
        "qemu-storage-daemon: --blockdev driver=null-co: 'node-name' must be "
        "specified for the root node\n"
    )
    assert _qsd(argv) == expected == _txgraph(argv)


OBJECT_KEYS = st.sampled_from(
    [
        "qom-type",
        "id",
        "x-iops-total",
        "x-bps-read",
        "x-iops-total-max",
        "limits.iops-total",
        "limits.bps-total",
        "poll-max-ns",
        "bogus",
        "limits",
        "x-iops-size",
    ]
)
OBJECT_VALUES = st.sampled_from(
    ["throttle-group", "iothread", "tg0", "t", "1bad", "10", "-1", "0x10", "abc", "", "1.5", "100"]
)


@st.composite
def object_strings(draw: st.DrawFn) -> str:
    items = draw(
        st.lists(st.tuples(OBJECT_KEYS, OBJECT_VALUES).map("=".join), min_size=0, max_size=5)
    )
    if draw(st.booleans()):
        items.insert(0, draw(st.sampled_from(["throttle-group", "iothread", "bogus"])))
    return ",".join(items)


@given(object_strings())
def test_generated_object_strings(text: str) -> None:
    argv = ["--object", text, "--blockdev", "driver=null-co"]
    assert _txgraph(argv) == _qsd(argv)


EXPORT_KEYS = st.sampled_from(
    [
        "type",
        "id",
        "node-name",
        "name",
        "writable",
        "description",
        "bitmaps.0",
        "writethrough",
        "iothread",
        "bogus",
        "device",
    ]
)
EXPORT_VALUES = st.sampled_from(
    ["nbd", "fuse", "e", "n", "missing", "on", "off", "maybe", "", "x,,y"]
)


@st.composite
def export_strings(draw: st.DrawFn) -> str:
    items = draw(
        st.lists(st.tuples(EXPORT_KEYS, EXPORT_VALUES).map("=".join), min_size=0, max_size=5)
    )
    if draw(st.booleans()):
        items.insert(0, "nbd")
    return ",".join(items)


@given(export_strings())
def test_generated_export_strings(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prefix = [
            "--blockdev",
            "null-co,node-name=n,read-only=on",
            "--nbd-server",
            f"addr.type=unix,addr.path={tmp}/nbd.sock",
        ]
        argv = [*prefix, "--export", text, "--blockdev", "driver=null-co"]
        assert _txgraph(argv) == _qsd(argv)
