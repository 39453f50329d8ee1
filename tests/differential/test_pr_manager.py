"""``pr-manager-helper`` objects and the ``pr-manager`` file option, against QSD 7.2.

A real ``qemu-pr-helper`` serves the socket both peers connect to (it takes any
number of clients); sockets nobody listens on and non-socket paths are made in
each peer's directory.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.differential.harness import Call, EnginePeer, differential
from tests.differential.scenarios._common import (
    add,
    cmd,
    delete,
    fnode,
    obj_add,
    obj_del,
    qnodes,
    raw_img,
    sc,
    tg,
)

pytestmark = pytest.mark.qsd


@pytest.fixture
def helper(tmp_path: Path) -> Iterator[str]:
    """A running qemu-pr-helper on a Unix socket; killed on every exit path."""
    sock = tmp_path / "pr.sock"
    proc = subprocess.Popen(
        ["qemu-pr-helper", "-k", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("qemu-pr-helper did not start")
            time.sleep(0.02)
        yield str(sock)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _dead_socket(workdir: Path) -> None:
    """A socket file that is bound but never listened on: connect() is refused."""
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(workdir / "dead.sock"))
    s.close()


def _pr(oid: str, path: str | None) -> dict[str, object]:
    args: dict[str, object] = {"qom-type": "pr-manager-helper", "id": oid}
    if path is not None:
        args["path"] = path
    return obj_add(args)


def test_pr_manager_helper(helper: str) -> None:
    scenario = sc(
        "pr_manager_helper",
        [
            _pr("p0", None),
            _pr("p1", "{dir}/nope.sock"),
            _pr("p2", "{dir}/dead.sock"),
            _pr("p3", "{dir}/a.raw"),
            _pr("p4", helper),
            _pr("p4", helper),
            obj_add({"qom-type": "pr-manager-helper", "id": "p5", "path": helper, "bogus": 1}),
            tg("tg"),
            add(fnode("a.raw", "f0", pr_manager="nosuch")),
            add(fnode("a.raw", "f1", pr_manager="tg")),
            add(
                {
                    "driver": "host_device",
                    "node-name": "h0",
                    "filename": "{dir}/a.raw",
                    "pr-manager": "nosuch",
                }
            ),
            add(
                {
                    "driver": "host_device",
                    "node-name": "h1",
                    "filename": "{dir}/nofile",
                    "pr-manager": "tg",
                }
            ),
            add(
                {
                    "driver": "host_device",
                    "node-name": "h2",
                    "filename": "{dir}/a.raw",
                    "pr-manager": "p4",
                }
            ),
            add(fnode("nofile", "f2", pr_manager="nosuch")),
            add(fnode("a.raw", "f3", pr_manager="p4")),
            qnodes(),
            cmd(
                "blockdev-reopen",
                {"options": [{"driver": "file", "node-name": "f3", "filename": "{dir}/a.raw"}]},
            ),
            obj_del("p4"),
            delete("f3"),
            obj_del("p4"),
        ],
        setup=[raw_img("a.raw", "1M"), Call(_dead_socket)],
        theme="crypto",
    )
    comp = differential(scenario, right=EnginePeer)
    if not comp.equal:
        pytest.fail(str(comp), pytrace=False)
