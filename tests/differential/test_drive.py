"""-drive against qemu-system-x86_64 7.2: the translation must build QEMU's graph.

For each case of :mod:`tests.differential.test_drive_cases`:

1. qemu-system-x86_64 -M none -S runs the drive options; its graph
   (``query-named-block-nodes``, ``x-debug-query-block-graph``, ``query-block``)
   and its stderr are recorded. A refusal is its stderr and non-zero exit.
2. ``txgraph drive`` translates the same options (in-process,
   :func:`txgraph.drive.translate.translate`); a refusal must be QEMU's stderr
   byte for byte.
3. The translated commands run on qemu-storage-daemon 7.2 and on txgraph's
   Engine; both graphs must equal QEMU's, node by node and edge by edge, with
   automatically named nodes mapped by their place in the tree
   (``<drive>/file``, ``<drive>/backing/file``...). The BlockBackend settings
   are compared with ``query-block``.

Every process gets a deadline on every wait and is killed on every exit path.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.differential.harness import EnginePeer, QSDPeer
from tests.differential.test_drive_cases import CASES, IMAGES, Case
from txgraph.drive.translate import DriveError, translate

QEMU_SYSTEM = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
#: seconds a machine may take to set up and greet (a loaded 2-core box has needed >20 s)
DEADLINE = 60.0

pytestmark = pytest.mark.qsd


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not os.access(QEMU_SYSTEM, os.X_OK):
        pytest.fail(
            "qemu-system-x86_64 is not installed; run `make qemu` (Debian's qemu-system-x86)"
        )
    root = tmp_path_factory.mktemp("drive-images")
    for args in IMAGES:
        if args[0] == "strip-backing-format":
            _strip_backing_format(root / args[1])
            continue
        subprocess.run(
            ["qemu-img", *args], cwd=root, check=True, capture_output=True, timeout=DEADLINE
        )
    return root


def _strip_backing_format(path: Path) -> None:
    """Rename the qcow2 backing-format extension (0xe2792aca) to an unknown type."""
    data = bytearray(path.read_bytes())
    at = data.find(bytes.fromhex("e2792aca"), 72, 4096)
    assert at > 0, "no backing format extension"
    data[at : at + 4] = bytes.fromhex("7478677a")
    path.write_bytes(bytes(data))


@contextmanager
def _cwd(path: Path) -> Iterator[None]:
    saved = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(saved)


class QemuSystem:
    """One qemu-system-x86_64 -M none -S with a QMP socket; always killed."""

    def __init__(self, args: tuple[str, ...], workdir: Path) -> None:
        self._tmp = tempfile.mkdtemp(prefix="qsys-")
        sock_path = os.path.join(self._tmp, "qmp.sock")
        self.proc = subprocess.Popen(
            [
                QEMU_SYSTEM,
                "-M",
                "none",
                "-nodefaults",
                "-display",
                "none",
                "-S",
                "-qmp",
                f"unix:{sock_path},server=on,wait=off",
                *args,
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.sock: socket.socket | None = None
        self.file: Any = None
        try:
            self._connect(sock_path)
        except BaseException:
            self.finish()  # never leave the process behind
            raise

    def _connect(self, sock_path: str) -> None:
        deadline = time.monotonic() + DEADLINE
        # The monitor socket exists before the drives are created; the greeting comes only
        # once the machine is set up, so a refused drive shows as EOF or a refused connection.
        while time.monotonic() < deadline and self.proc.poll() is None:
            if os.path.exists(sock_path):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(DEADLINE)
                try:
                    s.connect(sock_path)
                except OSError:
                    s.close()
                    time.sleep(0.01)
                    continue
                f = s.makefile("rwb")
                try:
                    greeting = f.readline()
                except TimeoutError:
                    f.close()
                    s.close()
                    raise  # slow, not refused: _start_qemu starts it again
                except OSError:
                    greeting = b""
                if greeting:
                    self.sock, self.file = s, f
                    try:
                        self.execute("qmp_capabilities")
                        return
                    except (EOFError, ConnectionResetError, BrokenPipeError):
                        # the greeting went out just before the refusal; a process that
                        # exits with our command unread resets the connection instead
                        self.sock = self.file = None
                f.close()
                s.close()
                break
            time.sleep(0.01)
        else:
            if self.proc.poll() is None:
                # out of time with the process still setting up: a slow start is not a
                # refused drive (that one closes the monitor or exits)
                raise TimeoutError(f"qemu-system-x86_64 did not greet within {DEADLINE:.0f} s")

    @property
    def running(self) -> bool:
        return self.file is not None

    def execute(self, command: str) -> Any:
        assert self.file is not None
        self.file.write(json.dumps({"execute": command}).encode())
        self.file.flush()
        while True:
            line = self.file.readline()
            if not line:
                raise EOFError(f"qemu-system-x86_64 closed its monitor during {command}")
            msg = json.loads(line)
            if "event" not in msg:
                return msg.get("return", msg)

    def finish(self) -> tuple[int, str]:
        """Kill (or reap) the process; return its exit status and stderr."""
        if self.file is not None:
            self.file.close()
        if self.sock is not None:
            self.sock.close()
        if self.proc.poll() is None and self.running:
            self.proc.kill()
        try:
            _out, err = self.proc.communicate(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        shutil.rmtree(self._tmp, ignore_errors=True)
        return self.proc.returncode, err.decode()


def _start_qemu(args: tuple[str, ...], workdir: Path) -> QemuSystem:
    """A qemu-system-x86_64 for one case; a start whose QMP handshake times out (seen only
    under heavy load) is killed and tried again, up to three starts."""
    for attempt in range(3):
        try:
            return QemuSystem(args, workdir)
        except (TimeoutError, ValueError):
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


_TMPFILE = re.compile(r"/var/tmp/vl\.\w+")


def _canon(value: Any, workdir: Path) -> Any:
    if isinstance(value, str):
        value = value.replace(str(workdir) + "/", "").replace(str(workdir), ".")
        return _TMPFILE.sub("{tmp}", value)
    if isinstance(value, dict):
        return {k: _canon(v, workdir) for k, v in value.items()}
    if isinstance(value, list):
        return [_canon(v, workdir) for v in value]
    return value


def _graph(
    nodes: list[dict[str, Any]], graph: dict[str, Any], roots: dict[str, str], workdir: Path
) -> dict[str, Any]:
    """Nodes and edges under each drive's root, named by their path from the drive id.

    Shared ``resize`` is left out of the edge permissions: the stand-in for QEMU's
    BlockBackend on QSD (a read-only NBD export, see :func:`_run_peer`) does not share
    resize where a device-less BlockBackend does, and raw passes its parent's sharing down.
    """
    by_name = {n["node-name"]: n for n in nodes}
    gid = {n["id"]: n["name"] for n in graph["nodes"] if n["type"] == "block-driver"}
    out_nodes: dict[str, Any] = {}
    out_edges: list[Any] = []

    def walk(name: str, label: str) -> None:
        n = by_name[name]
        out_nodes[label] = _canon(
            {
                "drv": n["drv"],
                "ro": n["ro"],
                "direct": n["cache"]["direct"],
                "no-flush": n["cache"]["no-flush"],
                "detect_zeroes": n["detect_zeroes"],
                "file": n["file"],
                "backing_file": n.get("backing_file"),
                "virtual-size": n["image"]["virtual-size"],
            },
            workdir,
        )
        for e in graph["edges"]:
            if gid.get(e["parent"]) == name and e["child"] in gid:
                child_label = f"{label}/{e['name']}"
                shared = sorted(set(e["shared-perm"]) - {"resize"})
                out_edges.append([label, child_label, sorted(e["perm"]), shared])
                walk(gid[e["child"]], child_label)

    for drive, root in sorted(roots.items()):
        walk(root, drive)
    return {"nodes": out_nodes, "edges": sorted(out_edges)}


def _qemu_backend(block: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for dev in block:
        ins = dev.get("inserted")
        entry: dict[str, Any] = {"empty": ins is None}
        if ins is not None:
            entry["write-cache"] = ins["cache"]["writeback"]
            entry["throttle"] = {
                k: v for k, v in ins.items() if k.startswith(("bps", "iops")) or k == "group"
            }
        out[dev["device"]] = entry
    return out


def _translated_backend(backend: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for dev, b in backend.items():
        entry: dict[str, Any] = {"empty": b["node-name"] is None}
        if b["node-name"] is not None:
            entry["write-cache"] = b["write-cache"]
            entry["throttle"] = b["throttle"]
        out[dev] = entry
    return out


def _mask(graph: Any, masked: tuple[tuple[str, str], ...]) -> Any:
    if isinstance(graph, dict) and "nodes" in graph:
        for label, key in masked:
            graph["nodes"].get(label, {}).pop(key, None)
    return graph


def _run_peer(
    peer: Any, commands: list[dict[str, Any]], roots: dict[str, str], workdir: Path
) -> Any:
    """Run the translation, then stand in for each BlockBackend with a read-only NBD export.

    With -S and no device, QEMU's BlockBackend asks for consistent-read and shares
    everything, which is exactly what a read-only export asks for; the node-to-node edge
    permissions below it then compare like for like.
    """
    try:
        for cmd in commands:
            reply = peer.execute(cmd)
            if "error" in reply:
                return {"error": f"{cmd['execute']}: {reply['error']['desc']}"}
        if roots:
            sock = tempfile.mktemp(prefix="drive-nbd-", suffix=".sock", dir=str(workdir))
            reply = peer.execute(
                {
                    "execute": "nbd-server-start",
                    "arguments": {"addr": {"type": "unix", "data": {"path": sock}}},
                }
            )
            assert "error" not in reply, reply
            for i, root in enumerate(sorted(roots.values())):
                reply = peer.execute(
                    {
                        "execute": "block-export-add",
                        "arguments": {
                            "type": "nbd",
                            "id": f"bb{i}",
                            "node-name": root,
                            "writable": False,
                        },
                    }
                )
                assert "error" not in reply, reply
        nodes = peer.execute({"execute": "query-named-block-nodes"})["return"]
        graph = peer.execute({"execute": "x-debug-query-block-graph"})["return"]
        return _graph(nodes, graph, roots, workdir)
    finally:
        peer.close()


def _start_qsd_peer(workdir: Path) -> QSDPeer:
    """A fresh QSD. A start that loses the start-up race (ConnectionRefused, or the reply
    to qmp_capabilities is not ``{"return": {}}``) is reaped and retried, up to three."""
    from txgraph.peers import QSD

    for attempt in range(3):
        q = QSD.__new__(QSD)
        try:
            q.__init__(workdir=str(workdir))  # type: ignore[misc]
        except (AssertionError, ConnectionRefusedError):
            proc = getattr(q, "proc", None)
            if proc is not None:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(DEADLINE)
                if proc.stdout:
                    proc.stdout.close()
            shutil.rmtree(getattr(q, "_tmp", ""), ignore_errors=True)
            if attempt == 2:
                raise
            continue
        peer = QSDPeer.__new__(QSDPeer)
        peer._qsd = q
        return peer
    raise AssertionError("unreachable")


def run_case(case: Case, workdir: Path) -> list[str]:
    """Run one case everywhere; return the differences (empty when all agree)."""
    diffs: list[str] = []
    translation = None
    with _cwd(workdir):
        try:
            translation = translate(list(case.args))
            ours_err = None
        except DriveError as err:
            ours_err = "".join(w + "\n" for w in getattr(err, "warnings", [])) + err.render()
        except Exception as bug:  # what `txgraph drive` reports as an internal error
            ours_err = f"txgraph drive: internal error: {type(bug).__name__}: {bug}\n"
    qemu = _start_qemu(case.args, workdir)
    try:
        if qemu.running:
            block = qemu.execute("query-block")
            nodes = qemu.execute("query-named-block-nodes")
            graph = qemu.execute("x-debug-query-block-graph")
    finally:
        rc, stderr = qemu.finish()
    try:
        if not qemu.running:
            if ours_err is None:
                return [f"QEMU refused (rc={rc}): {stderr!r}; txgraph translated it"]
            if ours_err != stderr:
                diffs.append(f"stderr differs:\n  qemu:    {stderr!r}\n  txgraph: {ours_err!r}")
            return diffs
        if translation is None:
            return [f"QEMU accepted; txgraph refused: {ours_err!r}"]
        ours_stderr = "".join(w + "\n" for w in translation.stderr_lines)
        if ours_stderr != stderr:
            diffs.append(f"warnings differ:\n  qemu:    {stderr!r}\n  txgraph: {ours_stderr!r}")
        roots_q = {d["device"]: d["inserted"]["node-name"] for d in block if d.get("inserted")}
        expected = _mask(_graph(nodes, graph, roots_q, workdir), case.masked)
        qb, tb = _qemu_backend(block), _translated_backend(translation.backend)
        if qb != tb:
            diffs.append(f"backend differs:\n  qemu:    {qb}\n  txgraph: {tb}")
        roots_t = {
            dev: b["node-name"]
            for dev, b in translation.backend.items()
            if b["node-name"] is not None
        }
        for label, peer in (("qsd", _start_qsd_peer(workdir)), ("txgraph", EnginePeer(workdir))):
            raw = _run_peer(peer, translation.qmp, roots_t, workdir)
            unmasked = _graph(nodes, graph, roots_q, workdir)
            for node_label, key in case.masked:
                if (
                    isinstance(raw, dict)
                    and "nodes" in raw
                    and raw["nodes"].get(node_label, {}).get(key)
                    == unmasked["nodes"].get(node_label, {}).get(key)
                ):
                    diffs.append(f"{label}: masked {node_label}.{key} no longer differs")
            got = _mask(raw, case.masked)
            if got != expected:
                diffs.append(f"{label} graph differs:\n  qemu: {expected}\n  {label}: {got}")
        return diffs
    finally:
        if translation is not None:
            for path in translation.temp_files:
                if os.path.exists(path):
                    os.unlink(path)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_drive_case(case: Case, template: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "w"
    shutil.copytree(template, workdir)
    diffs = run_case(case, workdir)
    if case.divergence:
        assert diffs, f"known divergence no longer diverges: {case.divergence}"
        pytest.xfail(case.divergence)
    assert not diffs, "\n".join(diffs)


def test_case_table_is_large_enough() -> None:
    assert len(CASES) >= 80
    assert len({c.name for c in CASES}) == len(CASES)
