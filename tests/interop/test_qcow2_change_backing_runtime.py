"""``Runtime.change_backing_file`` on live nodes: errors per driver, and a stress run.

The stress test rewrites the header cluster over and over while guest writes
(which allocate clusters, grow L2 tables and refcounts, and on lazy-refcount
images set the dirty bit in the same header) run from other threads. At the
end QEMU must find a clean image whose backing is the last name written and
whose data is what the threads wrote.
"""

from __future__ import annotations

import errno
import json
import subprocess
import threading
from pathlib import Path

import pytest

from txgraph.errors import BlockError, IOFailure
from txgraph.io.runtime import Runtime

pytestmark = pytest.mark.timeout(120)


def _img(path: Path, opts: str = "cluster_size=4096", size: str = "8M") -> Path:
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, str(path), size],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def _info(path: Path) -> dict[str, object]:
    res = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    out: dict[str, object] = json.loads(res.stdout)
    return out


def _check(path: Path) -> dict[str, object]:
    res = subprocess.run(
        ["qemu-img", "check", "--output=json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode in (0, 3), res.stderr
    out = json.loads(res.stdout)
    return {k: out.get(k, 0) for k in ("check-errors", "leaks", "corruptions")}


def test_runtime_entry_point_per_driver(tmp_path: Path) -> None:
    img = _img(tmp_path / "img.qcow2")
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(1 << 20))
    rt = Runtime()
    try:
        rt.open_node("f", "file", {"filename": str(img)}, {}, False)
        rt.open_node("q", "qcow2", {}, {"file": "f"}, False)
        rt.open_node("rf", "file", {"filename": str(raw)}, {}, False)
        rt.open_node("r", "raw", {}, {"file": "rf"}, False)
        rt.open_node("t", "copy-on-read", {}, {"file": "q"}, False)
        rt.change_backing_file("q", "base.qcow2", "qcow2")
        info = rt.info("q")
        assert (info.backing_file, info.backing_format) == ("base.qcow2", "qcow2")
        assert info.extra["full-backing-filename"] == str(tmp_path / "base.qcow2")
        for name in ("r", "rf", "t", "f"):
            with pytest.raises(IOFailure) as exc:
                rt.change_backing_file(name, "x.qcow2", "qcow2")
            assert exc.value.errno == errno.ENOTSUP, name
        with pytest.raises(BlockError) as berr:
            rt.change_backing_file("nope", "x", None)
        assert str(berr.value) == "Cannot find device='' nor node-name='nope'"
        with pytest.raises(IOFailure) as exc:
            rt.change_backing_file("q", None, "qcow2")
        assert exc.value.errno == errno.EINVAL
        rt.set_read_only("q", True)
        with pytest.raises(IOFailure) as exc:
            rt.change_backing_file("q", "other.qcow2", "qcow2")
        assert exc.value.errno == errno.EPERM
        assert rt.info("q").backing_file == "base.qcow2"
        rt.set_read_only("q", False)
        # A caller that already holds the node drained (a job's completion) may call it too.
        with rt.drained():
            rt.change_backing_file("q", "other.qcow2", "raw", require=True)
        assert rt.info("q").backing_format == "raw"
    finally:
        rt.close_all()
    info = _info(img)
    assert info["backing-filename"] == "other.qcow2"
    assert info["backing-filename-format"] == "raw"


@pytest.mark.parametrize(
    ("opts", "chunk"),
    [
        ("cluster_size=4096,lazy_refcounts=on", 6000),
        # 512-byte clusters, ~10 MB written: the refcount table (one cluster covers 8 MiB) grows
        # and moves while the header is being rewritten
        ("cluster_size=512", 80_000),
        ("compat=0.10,cluster_size=65536", 6000),
    ],
)
def test_header_rewrites_race_guest_writes(tmp_path: Path, opts: str, chunk: int) -> None:
    img = _img(tmp_path / "img.qcow2", opts, "32M")
    rt = Runtime()
    writers, rounds = 3, 40
    errors: list[BaseException] = []
    start = threading.Barrier(writers + 1, timeout=60)

    def guest(k: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                off = (k * rounds + i) * chunk * 2 + 512 * k
                with rt.request():
                    rt.node("q").write(off, bytes([k + 1]) * chunk)
                if i % 10 == 9:
                    with rt.request():
                        rt.node("q").flush()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    try:
        rt.open_node("f", "file", {"filename": str(img)}, {}, False)
        rt.open_node("q", "qcow2", {}, {"file": "f"}, False)
        with rt.request():
            h0 = rt.node("q").header  # type: ignore[attr-defined]
            table0 = (h0.refcount_table_offset, h0.refcount_table_clusters)
        threads = [threading.Thread(target=guest, args=(k,)) for k in range(writers)]
        for t in threads:
            t.start()
        start.wait()
        # Rewrite for as long as the guest writes (at least 60 times, at most 5000).
        names: list[str] = []
        while len(names) < 60 or (any(t.is_alive() for t in threads) and len(names) < 5000):
            i = len(names)
            names.append(f"b{i}.qcow2" * (1 + i % 7))
            rt.change_backing_file("q", names[-1], "qcow2" if i % 2 else "raw")
        for t in threads:
            t.join(timeout=60)
            assert not t.is_alive()
        assert not errors, errors
        with rt.request():
            node = rt.node("q")
            h = node.header  # type: ignore[attr-defined]
            grown = (h.refcount_table_offset, h.refcount_table_clusters) != table0
            for k in range(writers):
                for i in range(rounds):
                    off = (k * rounds + i) * chunk * 2 + 512 * k
                    assert node.read(off, chunk) == bytes([k + 1]) * chunk
    finally:
        rt.close_all()
    last = "qcow2" if (len(names) - 1) % 2 else "raw"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", last, str(tmp_path / names[-1]), "32M"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert _check(img) == {"check-errors": 0, "leaks": 0, "corruptions": 0}
    info = _info(img)
    assert info["backing-filename"] == names[-1]
    assert info["backing-filename-format"] == last
    assert not info.get("dirty-flag")
    if chunk > 10_000:
        assert grown  # the case is about a moving refcount table: make sure it moved
