"""Confinement of image-header references (txgraph.ops.confine).

Hostile headers: a backing of ``/etc/passwd``, an NBD URI, a ``json:`` NBD
description, a relative ``../`` escape, a symlink leading out, and an external
data file outside. Under ``--policy safe`` (and with ``--confine-dir`` under
``qemu``) each is refused with a message naming the image and the reference,
and nothing is left behind; under ``--policy qemu`` without directories
txgraph does what qemu-storage-daemon 7.2 does (compared live).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import QSDPeer
from txgraph.ops.confine import configure
from txgraph.ops.session import Session
from txgraph.peers import TxgraphDaemon
from txgraph.qmp.commands import CommandContext
from txgraph.qmp.engine import Engine

pytestmark = pytest.mark.qsd


def _qimg(*args: str) -> None:
    subprocess.run(["qemu-img", "create", "-q", *args], check=True)


@pytest.fixture()
def images(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """``images/`` holds the untrusted images, ``outside/`` what they must not reach."""
    inside, outside = tmp_path / "images", tmp_path / "outside"
    inside.mkdir()
    outside.mkdir()
    _qimg("-f", "qcow2", str(outside / "b.qcow2"), "1M")
    _qimg("-f", "raw", str(outside / "d.raw"), "1M")
    _qimg("-f", "qcow2", str(inside / "ok_base.qcow2"), "1M")
    (inside / "link.qcow2").symlink_to(outside / "b.qcow2")
    sock = tmp_path / "n.sock"
    raw = outside / "exported.raw"
    raw.write_bytes(b"\x5a" * 65536)
    proc = subprocess.Popen(
        ["qemu-nbd", "-k", str(sock), "-f", "raw", "-x", "x", "--persistent", "-r", str(raw)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(2000):
            if sock.exists() or proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.01"], check=True)
        assert sock.exists(), "qemu-nbd did not start"
        hostile = {
            "passwd": ("/etc/passwd", "raw"),
            "nbduri": (f"nbd+unix:///x?socket={sock}", "raw"),
            "nbdlegacy": (f"nbd:unix:{sock}:exportname=x", "raw"),
            "json": (
                f'json:{{"driver":"raw","file":{{"driver":"nbd","path":"{sock}","export":"x"}}}}',
                "raw",
            ),
            "escape": ("../outside/b.qcow2", "qcow2"),
            "symlink": ("link.qcow2", "qcow2"),
        }
        for name, (backing, fmt) in hostile.items():
            _qimg(
                "-f", "qcow2", "-u", "-b", backing, "-F", fmt, str(inside / f"{name}.qcow2"), "1M"
            )
        _qimg(
            "-f",
            "qcow2",
            "-o",
            f"data_file={outside / 'd.raw'},data_file_raw=on",
            str(inside / "datafile.qcow2"),
            "1M",
        )
        _qimg(
            "-f",
            "qcow2",
            "-u",
            "-b",
            "ok_base.qcow2",
            "-F",
            "qcow2",
            str(inside / "ok.qcow2"),
            "1M",
        )
        yield {"inside": inside, "outside": outside, "hostile": hostile, "sock": sock}
    finally:
        proc.terminate()
        proc.wait(10)


def _add(name: str, inside: Path) -> dict[str, Any]:
    return {
        "execute": "blockdev-add",
        "arguments": {
            "driver": "qcow2",
            "node-name": "top",
            "read-only": True,
            "file": {"driver": "file", "filename": str(inside / f"{name}.qcow2")},
        },
    }


def _nodes(peer: Any) -> list[Any]:
    reply = peer.execute({"execute": "query-named-block-nodes", "arguments": {"flat": True}})
    return sorted((n["drv"], n["file"], n["ro"]) for n in reply["return"])


CASES = ["passwd", "nbduri", "nbdlegacy", "json", "escape", "symlink", "datafile"]


@pytest.mark.parametrize("case", CASES)
def test_safe_policy_refuses_hostile_reference(images: dict[str, Any], case: str) -> None:
    engine = Engine(CommandContext(Session(policy="safe")))
    try:
        reply = engine.execute(_add(case, images["inside"]))
        desc = reply["error"]["desc"]
        image = str(images["inside"] / f"{case}.qcow2")
        kind = "data-file" if case == "datafile" else "backing"
        prefix = "" if case == "datafile" else "Could not open backing file: "
        assert desc.startswith(f"{prefix}Image '{image}' refers to {kind} '"), desc
        assert "txgraph confinement" in desc and str(images["inside"]) in desc, desc
        if case in CASES[:4]:
            backing = images["hostile"][case][0]
            assert f"'{backing}'" in desc, desc
        assert _nodes(engine) == []
    finally:
        engine.context.session.close()


def test_safe_policy_accepts_a_chain_inside_the_image_directory(images: dict[str, Any]) -> None:
    engine = Engine(CommandContext(Session(policy="safe")))
    try:
        assert engine.execute(_add("ok", images["inside"])) == {"return": {}}
        assert [n[1] for n in _nodes(engine) if n[0] == "qcow2"] == sorted(
            [str(images["inside"] / "ok.qcow2"), str(images["inside"] / "ok_base.qcow2")]
        )
    finally:
        engine.context.session.close()


def test_qemu_policy_opens_what_qsd_opens(images: dict[str, Any]) -> None:
    """Without confinement txgraph follows every hostile reference exactly as QSD 7.2 does."""
    outcomes: dict[str, list[Any]] = {"qsd": [], "txgraph": []}
    for label in outcomes:
        peer: Any = QSDPeer(images["inside"]) if label == "qsd" else Engine()
        try:
            for case in CASES:
                reply = peer.execute(_add(case, images["inside"]))
                outcomes[label].append((case, reply, _nodes(peer)))
                if "return" in reply:
                    peer.execute({"execute": "blockdev-del", "arguments": {"node-name": "top"}})
        finally:
            if label == "qsd":
                peer.close()
            else:
                peer.context.session.close()
    assert outcomes["qsd"] == outcomes["txgraph"]
    assert all("return" in reply for _c, reply, _n in outcomes["qsd"])


def test_serve_confine_dir_under_qemu_policy(images: dict[str, Any], tmp_path: Path) -> None:
    """``txgraph serve --confine-dir`` turns confinement on under the qemu policy."""
    inside = images["inside"]
    with TxgraphDaemon(["--confine-dir", str(inside)], workdir=str(tmp_path)) as daemon:
        ok = daemon.execute("blockdev-add", _add("ok", inside)["arguments"])
        assert ok == {"return": {}}
        daemon.execute("blockdev-del", {"node-name": "top"})
        bad = daemon.execute("blockdev-add", _add("escape", inside)["arguments"])
        resolved = os.path.join(str(inside), "../outside/b.qcow2")
        assert bad["error"]["desc"] == (
            f"Could not open backing file: Image '{inside / 'escape.qcow2'}' refers to backing "
            f"'{resolved}', which is outside the allowed directories (txgraph confinement: "
            f"allowed directories {os.path.realpath(inside)}; use --confine-dir to allow more, "
            "or --policy qemu)"
        )


def test_configure_adds_directories(images: dict[str, Any]) -> None:
    session = Session(policy="safe")
    configure(session, [str(images["outside"]), str(images["inside"])])
    engine = Engine(CommandContext(session))
    try:
        assert engine.execute(_add("escape", images["inside"])) == {"return": {}}
        assert "error" in engine.execute(
            {
                **_add("passwd", images["inside"]),
                "arguments": {**_add("passwd", images["inside"])["arguments"], "node-name": "top2"},
            }
        )
    finally:
        session.close()


def test_plan_verification_confines_under_safe(images: dict[str, Any]) -> None:
    """``txgraph plan`` (safe by default) refuses the hostile step; ``--policy qemu`` accepts it."""
    from txgraph.plan.format import parse_steps
    from txgraph.plan.verify import verify_plan

    steps = parse_steps(
        [
            _add("escape", images["inside"]),
            _add("ok", images["inside"])
            | {"arguments": {**_add("ok", images["inside"])["arguments"], "node-name": "top2"}},
        ]
    )
    safe = verify_plan(steps, None, policy="safe").to_dict()
    qemu = verify_plan(steps, None, policy="qemu").to_dict()
    assert not safe["ok"] and qemu["ok"], (safe, qemu)
    text = json.dumps(safe)
    assert "txgraph confinement" in text and "escape.qcow2" in text
    widened = verify_plan(
        steps, None, policy="safe", confine_dirs=(str(images["inside"].parent),)
    ).to_dict()
    assert widened["ok"], widened
