"""Fixtures for the reconfiguration tests: images, engines, and stand-in data-plane drivers.

The graph logic under test does not depend on what a filter or quorum does to
the bytes, only on the node being openable. Until the txgraph data plane has
``blkdebug`` and ``quorum`` (being written in txgraph/io/drivers), a minimal
pass-through stands in for them, registered only when the real one is absent.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from txgraph.io.driver import DriverNode
from txgraph.io.registry import DRIVERS, driver_class
from txgraph.qmp.engine import Engine


class _PassThrough(DriverNode):
    """Reads and writes go to the first child (quorum's children.0, blkdebug's image)."""

    def _child(self) -> DriverNode:
        for key in ("image", "file", "children.0"):
            if key in self.children:
                return self.children[key]
        return next(iter(self.children.values()))

    def read(self, offset: int, length: int) -> bytes:
        return self._child().read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self._child().write(offset, data)

    def size(self) -> int:
        return self._child().size()


def _stand_in(name: str) -> type[DriverNode]:
    return type(f"StandIn_{name}", (_PassThrough,), {"driver_name": name})


@pytest.fixture
def stand_in_drivers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make blkdebug and quorum openable even before their data-plane drivers land."""
    for name in ("blkdebug", "quorum"):
        if driver_class(name) is None:
            monkeypatch.setitem(DRIVERS, name, _stand_in(name))


def qcow2(path: Path, *extra: str, size: str = "1M") -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *extra, str(path), size], check=True)
    return path


@pytest.fixture
def chain(tmp_path: Path) -> Path:
    """base.qcow2 <- top.qcow2, plus ovl.qcow2 and ovl2.qcow2 without backing."""
    qcow2(tmp_path / "base.qcow2")
    qcow2(tmp_path / "top.qcow2", "-b", "base.qcow2", "-F", "qcow2")
    qcow2(tmp_path / "ovl.qcow2")
    qcow2(tmp_path / "ovl2.qcow2")
    return tmp_path


class Qmp:
    """An in-process engine with assertion helpers."""

    def __init__(self) -> None:
        self.engine = Engine()

    @property
    def session(self) -> Any:
        return self.engine.context.session

    def __call__(self, name: str, args: Mapping[str, Any] | None = None) -> dict[str, Any]:
        msg: dict[str, Any] = {"execute": name}
        if args is not None:
            msg["arguments"] = dict(args)
        return self.engine.execute(msg)

    def ok(self, name: str, args: Mapping[str, Any] | None = None) -> Any:
        reply = self(name, args)
        assert "return" in reply, reply
        return reply["return"]

    def fails(self, name: str, args: Mapping[str, Any] | None, desc: str) -> None:
        """The command fails with exactly ``desc`` and changes nothing at all."""
        digest, runtime = self.session.graph.digest(), self.session.runtime.state()
        reply = self(name, args)
        assert "error" in reply, reply
        assert reply["error"]["desc"] == desc, reply["error"]["desc"]
        assert self.session.graph.digest() == digest, f"graph changed by failed {name}"
        assert self.session.runtime.state() == runtime, f"runtime changed by failed {name}"

    def edges(self) -> set[tuple[str, str, str]]:
        """(parent, edge name, child) of every edge; backends by their id."""
        graph = self.session.graph
        out = set()
        for parent, child, edge in graph.edges():
            pname = graph.backends[parent].name if parent in graph.backends else parent
            out.add((pname, edge.name, child))
        return out

    def perms(self, parent: str, name: str) -> tuple[int, int]:
        found = self.session.graph.child_edge(parent, name)
        assert found is not None
        return int(found[1].perm), int(found[1].shared)


@pytest.fixture
def qmp() -> Iterator[Qmp]:
    q = Qmp()
    yield q
    q.session.close()


def file_node(path: Path, name: str | None = None, **extra: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"driver": "file", "filename": str(path), **extra}
    if name:
        d["node-name"] = name
    return d


@pytest.fixture
def fnode() -> Callable[..., dict[str, Any]]:
    return file_node
