"""The generic block layer and the typed node settings, on real image files.

Every rule of :mod:`txgraph.io.driver`'s layer (block/io.c) is checked on real
files through real driver objects: what gets allocated is read back from the
qcow2 image with ``qemu-img map`` (the real tool), so a rule that does nothing
cannot pass.
"""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from imgkit import open_node

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import DriverNode
from txgraph.io.settings import DetectZeroes, Discard, NodeSettings
from txgraph.model.node import OpenFlag, runtime_common_options


def _qcow2(tmp_path: Path, size: str = "1M") -> Path:
    img = tmp_path / "t.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img), size], check=True)
    return img


def _open(img: Path, **common: Any) -> DriverNode:
    f = open_node("file", {"filename": str(img), "discard": "unmap"})
    return open_node("qcow2", common, {"file": f})


def _map(img: Path) -> list[tuple[int, int, bool, bool]]:
    out = subprocess.run(
        ["qemu-img", "map", "--output=json", str(img)], check=True, capture_output=True, text=True
    ).stdout
    return [(e["start"], e["length"], e["zero"], e["data"]) for e in json.loads(out)]


def _close(node: DriverNode) -> None:
    node.close()
    node.children["file"].close()


# -- settings ------------------------------------------------------------------------------
def test_strings_and_bools_parse_to_the_same_settings() -> None:
    typed = NodeSettings.parse({"cache.no-flush": False, "cache.direct": True}, False)
    qemu_opts = NodeSettings.parse({"cache.no-flush": "off", "cache.direct": "on"}, False)
    assert typed == qemu_opts
    assert typed.no_flush is False and typed.direct is True


@pytest.mark.parametrize(
    "options, text",
    [
        ({"cache.no-flush": "maybe"}, "Parameter 'cache.no-flush' expects 'on' or 'off'"),
        ({"cache.direct": 1}, "Parameter 'cache.direct' expects 'on' or 'off'"),
        ({"discard": "sometimes"}, "Invalid discard option"),
        ({"detect-zeroes": "always"}, "Parameter 'detect-zeroes' does not accept value 'always'"),
        (
            {"detect-zeroes": "unmap"},
            "setting detect-zeroes to unmap is not allowed without "
            "setting discard operation to unmap",
        ),
    ],
)
def test_garbage_is_refused_with_qemus_text(options: dict[str, Any], text: str) -> None:
    with pytest.raises(OpenError) as err:
        NodeSettings.parse(options, False)
    assert err.value.desc == text


def test_model_hands_typed_values() -> None:
    flags = OpenFlag.RDWR | OpenFlag.NO_FLUSH | OpenFlag.UNMAP
    opts = runtime_common_options(flags, "unmap")
    assert opts == {
        "read-only": False,
        "cache.direct": False,
        "cache.no-flush": True,
        "discard": Discard.UNMAP,
        "detect-zeroes": DetectZeroes.UNMAP,
    }
    assert all(type(opts[k]) is bool for k in ("read-only", "cache.direct", "cache.no-flush"))
    assert NodeSettings.parse(opts, False).no_flush is True


def test_reopen_reparses_and_refuses_garbage_without_change(tmp_path: Path) -> None:
    node = _open(_qcow2(tmp_path))
    before = node.settings
    with pytest.raises(OpenError):
        node.reopen({"detect-zeroes": "sometimes"}, False)
    assert node.settings == before
    node.reopen({"detect-zeroes": "on"}, False)
    assert node.settings.detect_zeroes is DetectZeroes.ON
    _close(node)


# -- the layer -----------------------------------------------------------------------------
def test_detect_zeroes_unmap_deallocates_on_qcow2(tmp_path: Path) -> None:
    img = _qcow2(tmp_path)
    node = _open(img, discard="unmap", **{"detect-zeroes": "unmap"})
    node.write(0, b"\x05" * 131072)
    node.write(0, bytes(65536))
    _close(node)
    assert _map(img)[:2] == [(0, 65536, True, False), (65536, 65536, False, True)]


def test_detect_zeroes_off_writes_data(tmp_path: Path) -> None:
    img = _qcow2(tmp_path)
    node = _open(img)
    node.write(0, bytes(65536))
    _close(node)
    assert _map(img)[0] == (0, 65536, False, True)


def test_detect_zeroes_after_reopen(tmp_path: Path) -> None:
    img = _qcow2(tmp_path)
    node = _open(img)
    node.reopen({"detect-zeroes": DetectZeroes.ON}, False)
    node.write(0, bytes(65536))
    _close(node)
    assert _map(img)[0] == (0, 65536, True, False)


def test_discard_only_with_unmap(tmp_path: Path) -> None:
    img = _qcow2(tmp_path)
    node = _open(img)
    node.write(0, b"\x01" * 65536)
    node.discard(0, 65536)  # discard=ignore: dropped
    assert node.read(0, 4) == b"\x01" * 4
    node.reopen({"discard": "unmap"}, False)
    node.discard(0, 65536)
    assert node.read(0, 4) == bytes(4)
    _close(node)


def test_read_only_refuses_every_write_and_flush_is_a_noop(tmp_path: Path) -> None:
    img = _qcow2(tmp_path)
    node = _open(img)
    node.reopen({}, True)
    ops: list[Callable[[], None]] = [
        lambda: node.write(0, b"x"),
        lambda: node.write_zeroes(0, 512),
        lambda: node.discard(0, 512),
    ]
    for op in ops:
        with pytest.raises(IOFailure) as err:
            op()
        assert err.value.errno == errno.EPERM and err.value.desc == "Operation not permitted"
    node.flush()
    _close(node)


def test_parent_zero_write_cannot_unmap_a_child_without_unmap(tmp_path: Path) -> None:
    """``bdrv_co_pwrite_zeroes``: a raw parent's unmapping zero write keeps the qcow2 allocated."""
    img = _qcow2(tmp_path)
    q = _open(img)  # discard=ignore
    raw = open_node("raw", {}, {"file": q})
    raw.write(0, b"\x01" * 65536)
    raw.write_zeroes(0, 65536, may_unmap=True)
    assert q.read(0, 4) == bytes(4)
    raw.close()
    _close(q)
    entry = _map(img)[0]
    assert entry[:3] == (0, 65536, True)
    # QEMU keeps the preallocated cluster when it may not unmap: the host offset survives.
    out = json.loads(
        subprocess.run(
            ["qemu-img", "map", "--output=json", str(img)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert "offset" in out[0]


def test_blockdev_add_and_reopen_hand_typed_settings_to_the_drivers(tmp_path: Path) -> None:
    """The defaults blockdev-add stores as "off" strings arrive as False (the no-flush bug)."""
    from txgraph.qmp.engine import Engine

    img = _qcow2(tmp_path)
    engine = Engine()
    add = engine.execute(
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "qcow2",
                "node-name": "q",
                "file": {"driver": "file", "node-name": "f", "filename": str(img)},
            },
        }
    )
    assert add == {"return": {}}
    rt = engine.context.session.runtime
    assert rt.node("q").settings == NodeSettings()
    assert rt.node("f").settings == NodeSettings(discard=Discard.UNMAP)  # child role default
    assert rt.node("f").no_flush is False
    reopen = engine.execute(
        {
            "execute": "blockdev-reopen",
            "arguments": {
                "options": [
                    {
                        "driver": "qcow2",
                        "node-name": "q",
                        "file": "f",
                        "discard": "unmap",
                        "detect-zeroes": "unmap",
                        "cache": {"no-flush": True},
                    }
                ]
            },
        }
    )
    assert reopen == {"return": {}}
    assert rt.node("q").settings == NodeSettings(
        no_flush=True, discard=Discard.UNMAP, detect_zeroes=DetectZeroes.UNMAP
    )
    engine.context.session.close()
