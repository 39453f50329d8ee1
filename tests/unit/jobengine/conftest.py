"""A three-layer qcow2 chain for the job tests: base <- mid <- top, each with data of its own."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from txgraph.ops.session import Session
from txgraph.qmp.command_table import CommandContext
from txgraph.qmp.engine import Engine


def make_chain(d: Path) -> None:
    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True)

    run("qemu-img", "create", "-q", "-f", "qcow2", str(d / "base.qcow2"), "4M")
    run("qemu-io", "-c", "write -P 0xaa 0 1M", "-c", "write -P 0xbb 2M 512k", str(d / "base.qcow2"))
    run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        str(d / "mid.qcow2"),
    )
    run("qemu-io", "-c", "write -P 0xcc 1M 1M", str(d / "mid.qcow2"))
    run(
        "qemu-img",
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        str(d / "top.qcow2"),
    )
    run("qemu-io", "-c", "write -P 0xdd 3M 64k", str(d / "top.qcow2"))


def chain_args(d: Path) -> dict[str, Any]:
    def f(name: str) -> dict[str, Any]:
        return {"driver": "file", "filename": str(d / f"{name}.qcow2"), "node-name": f"{name}-f"}

    return {
        "driver": "qcow2",
        "node-name": "top",
        "file": f("top"),
        "backing": {
            "driver": "qcow2",
            "node-name": "mid",
            "file": f("mid"),
            "backing": {"driver": "qcow2", "node-name": "base", "file": f("base")},
        },
    }


class Client:
    """An engine on a fresh session, its events collected."""

    def __init__(self, session: Session) -> None:
        self.engine = Engine(CommandContext(session))
        self.session = session
        self.events: list[dict[str, Any]] = []
        self.engine.add_event_listener(self.events.append)

    def __call__(self, execute: str, arguments: dict[str, Any] | None = None) -> Any:
        msg: dict[str, Any] = {"execute": execute}
        if arguments is not None:
            msg["arguments"] = arguments
        reply = self.engine.execute(msg)
        return reply.get("return", reply)


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    make_chain(tmp_path)
    return tmp_path


@pytest.fixture
def client(chain: Path) -> Iterator[Client]:
    session = Session()
    c = Client(session)
    assert c("blockdev-add", chain_args(chain)) == {}
    try:
        yield c
    finally:
        session.close()
