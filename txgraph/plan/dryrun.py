"""A Runtime for dry runs: real headers, no writes, no locks, no sockets.

Why this design. A plan is verified against a graph another process (QEMU,
qemu-storage-daemon or ``txgraph serve``) has open, so the scratch session must
never write to those images, never take their image locks (the live process
holds them: a real lock would conflict with it, and a stray one would disturb
it), and never bind the NBD address the live process may be listening on.
At the same time, opening a *new* node must behave as in QEMU: a missing file
is an error with QEMU's text, a qcow2 overlay's header decides its backing
chain and size. So :class:`DryRunRuntime`:

* builds new nodes with the real drivers, but always read-only (``O_RDONLY``,
  no qcow2 writer, no dirty bit), remembering the mode QEMU would have used so
  the graph and queries show it; every open is recorded in :attr:`opened`;
* represents imported nodes (opened by the live process) by
  :class:`ImportedNode`, whose ``info`` is what ``query-named-block-nodes``
  reported and whose data is not readable (the dry run does not need it);
  only its allocation is (``block_status``, for the guest-view rule): from a
  read-only, unlocked driver object over the same image file, made on first
  use;
* reopens by remembering options and mode, without touching descriptors;
* simulates file-posix's image locks in memory (:class:`LockTable`): QEMU's
  ``raw_check_lock_bytes`` rule (``Failed to get "write" lock``) between all
  file nodes of the same host file, the imported ones included, whose
  permissions come from the import. So the dry run predicts the lock conflicts
  QEMU would hit in its own process, without touching a real lock;
* comes with :class:`DryRunNbdServer` (the Session's NBD server in a dry run),
  which keeps the export table but never listens.

Not simulated: ``blockdev-snapshot-sync`` with a creating ``mode`` runs
``qemu-img create`` inside the ops layer, outside the Runtime, so the plan
verifier refuses to dry-run it rather than create a file (see
:mod:`txgraph.plan.verify`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from txgraph.errors import BlockError, IOFailure, TxgraphError
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo
from txgraph.io.limits import check_write_alignment
from txgraph.io.registry import driver_class
from txgraph.io.runtime import OpenNode, Runtime

__all__ = ["DryRunRuntime", "ImportedNode", "DryRunNbdServer", "LockTable"]

_LOCK_NAMES = ("consistent read", "write", "write unchanged", "resize")
_ALL = 0xF


class ImportedNode(DriverNode):
    """A node the live process has open: known from its query answers only."""

    def __init__(
        self,
        node_name: str,
        driver: str,
        image: Mapping[str, Any],
        read_only: bool,
        options: Mapping[str, Any],
    ) -> None:
        super().__init__(node_name, options, {}, read_only)
        self.driver_name = driver
        self._image = dict(image)
        #: a read-only driver object over the same image, for block status (False: none)
        self._shadow: DriverNode | bool | None = None

    def shadow(self) -> DriverNode | None:
        """A read-only, unlocked driver object over this node's image (None: cannot be had).

        Only ``file`` nodes and the formats above them are shadowed; the live
        process keeps its locks (the shadow takes none) and nothing is written.
        """
        if self._shadow is None:
            self._shadow = False
            try:
                self._shadow = self._open_shadow() or False
            except (TxgraphError, OSError):
                self._shadow = False
        return self._shadow if isinstance(self._shadow, DriverNode) else None

    def _open_shadow(self) -> DriverNode | None:
        cls = driver_class(self.driver_name)
        if cls is None:
            return None
        if self.driver_name in ("file", "host_device"):
            filename = self.options.get("filename")
            if not isinstance(filename, str) or not filename:
                return None
            return cls(self.node_name, {"filename": filename, "locking": "off"}, {}, True)
        file = self.children.get("file")
        inner = file.shadow() if isinstance(file, ImportedNode) else None
        if inner is None:
            return None
        return cls(self.node_name, {}, {"file": inner}, True)

    @property
    def allocation_unknown(self) -> bool:
        """No shadow could be had: block status says "all data" without knowing it."""
        return self.shadow() is None

    def block_status(self, offset: int, length: int) -> BlockStatus:
        shadow = self.shadow()
        if shadow is None:  # unknown allocation: all data (DriverNode's default)
            return super().block_status(offset, length)
        return shadow.block_status(offset, length)

    def close(self) -> None:
        shadow = self._shadow
        self._shadow = False
        if isinstance(shadow, DriverNode):
            shadow.close()  # its file child is the file node's own shadow, closed there

    def read(self, offset: int, length: int) -> bytes:
        raise IOFailure("Data of an imported node is not available in a dry run", 5)

    def write(self, offset: int, data: bytes) -> None:
        raise IOFailure("A dry run never writes", 30)

    def size(self) -> int:
        return int(self._image.get("virtual-size", 0))

    def info(self) -> ImageInfo:
        img = self._image
        fs = img.get("format-specific")
        return ImageInfo(
            format=str(img.get("format", self.driver_name)),
            virtual_size=self.size(),
            filename=str(img.get("filename", "")),
            actual_size=img.get("actual-size"),
            backing_file=img.get("backing-filename"),
            backing_format=img.get("backing-filename-format"),
            cluster_size=img.get("cluster-size"),
            dirty=bool(img.get("dirty-flag")),
            format_specific=fs if isinstance(fs, dict) else None,
        )


@dataclass
class LockTable:
    """file-posix's permission locks (bytes 100+i / 200+i), per host file, in memory."""

    #: realpath -> node name -> (perm held, shared)
    holders: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def set(self, path: str, node: str, perm: int, shared: int) -> Callable[[], None]:
        """``raw_check_lock_bytes`` against the other holders, then hold (perm, shared)."""
        table = self.holders.setdefault(path, {})
        old = table.get(node, (0, _ALL))
        tightening = (old[0] | perm) != old[0] or (old[1] & shared) != old[1]
        if tightening:
            others = [v for k, v in table.items() if k != node]
            for i in range(4):
                bit = 1 << i
                if perm & bit and any(not s & bit for _p, s in others):
                    raise BlockError(f'Failed to get "{_LOCK_NAMES[i]}" lock', rule="P6-image-lock")
            for i in range(4):
                bit = 1 << i
                if not shared & bit and any(p & bit for p, _s in others):
                    raise BlockError(
                        f'Failed to get shared "{_LOCK_NAMES[i]}" lock', rule="P6-image-lock"
                    )
        table[node] = (perm, shared)

        def undo() -> None:
            table[node] = old

        return undo

    def drop(self, node: str) -> None:
        for table in self.holders.values():
            table.pop(node, None)


class DryRunNbdServer:
    """The NBD server's control surface without a socket: exports are only recorded."""

    def __init__(self, runtime: Runtime | None = None) -> None:
        self.address: Any = None
        self._exports: dict[str, tuple[str, bool]] = {}

    @property
    def running(self) -> bool:
        return self.address is not None

    def start(self, addr: Mapping[str, Any]) -> None:
        if self.running:
            raise BlockError("NBD server already running")
        self.address = dict(addr)

    def stop(self) -> None:
        if not self.running:
            raise BlockError("NBD server not running")
        self.address = None
        self._exports.clear()

    def add_export(
        self,
        name: str,
        node_name: str | None,
        writable: bool,
        description: str | None = None,
        *,
        backend: str | None = None,
    ) -> None:
        if not self.running:
            raise BlockError("NBD server not running")
        self._exports[name] = (backend or node_name or "", writable)

    def check_remove(self, name: str, mode: str = "safe") -> None:
        if name not in self._exports:
            raise BlockError(f"Export '{name}' is not found")

    def remove_export(self, name: str, mode: str = "safe") -> None:
        self._exports.pop(name, None)

    def exports(self) -> list[str]:
        return list(self._exports)


class DryRunRuntime(Runtime):
    """A :class:`Runtime` that never writes, never locks and never listens (see module doc).

    Block jobs notice ``dry_run`` and simulate their data work (they move through their
    states and make their graph changes, copying nothing)."""

    dry_run = True

    def change_backing_file(
        self,
        node_name: str,
        backing_file: str | None,
        backing_fmt: str | None,
        *,
        require: bool = False,
    ) -> None:
        """A dry run never writes an image header."""

    def __init__(self) -> None:
        super().__init__()
        self.locks = LockTable()
        #: (node name, driver, read_only as QEMU would open it) for every node opened
        self.opened: list[tuple[str, str, bool]] = []
        #: node name -> the length a simulated job grew it to (its image is never written);
        #: written by a simulated job's thread, read by commands: single dict stores and
        #: lookups, atomic under the GIL, so no lock (a reader sees the old or new length)
        self.grown: dict[str, int] = {}

    # -- lengths ---------------------------------------------------------------------------
    def simulate_growth(self, name: str, length: int) -> None:
        """A simulated commit grows its base as ``commit_run``'s truncate would: later
        steps (size checks, queries) see the new length."""
        self.grown[name] = length

    def size(self, name: str) -> int:
        return self.grown[name] if name in self.grown else super().size(name)

    def info(self, name: str) -> ImageInfo:
        info = super().info(name)
        if name in self.grown:
            info = replace(info, virtual_size=self.grown[name])
        return info

    # -- nodes -----------------------------------------------------------------------------
    def _construct(self, op: OpenNode, pending: Mapping[str, DriverNode]) -> DriverNode:
        # Opened read-only whatever QEMU would do: headers are read, nothing is written.
        ro = OpenNode(op.name, op.driver, op.options, op.children, True, op.probed)
        node = super()._construct(ro, pending)
        node.read_only = op.read_only
        self.opened.append((op.name, op.driver, op.read_only))
        return node

    def add_imported(self, node: ImportedNode) -> None:
        """Publish a node the live process has open (its data stays there)."""
        self._nodes[node.node_name] = node

    def _release(self, node: DriverNode) -> None:
        self.locks.drop(node.node_name)
        self.grown.pop(node.node_name, None)
        super()._release(node)

    def prepare_reopen(self, name: str, options: Mapping[str, Any], read_only: bool) -> None:
        # Descriptors are never reopened in a dry run, so a file has nothing to check.
        node = self._prepared.get(name) or self._nodes.get(name)
        if node is not None and node.driver_name in ("file", "host_device"):
            return
        super().prepare_reopen(name, options, read_only)

    def _reopen(self, name: str, options: Mapping[str, Any], read_only: bool) -> None:
        node = self._nodes[name]
        node.refresh_limits(options)  # a file node's alignment follows its new cache mode
        node.options = dict(options)
        node.read_only = read_only
        self._track_alignment(name, node)

    # -- permissions -------------------------------------------------------------------------
    def lock_path(self, name: str) -> str | None:
        """The host file whose lock bytes a node uses (file/host_device with locking on)."""
        node = self._prepared.get(name) or self._nodes.get(name)
        if node is None or node.driver_name not in ("file", "host_device"):
            return None
        if node.options.get("locking", "auto") in ("off", False):
            return None
        filename = node.options.get("filename")
        return os.path.realpath(filename) if isinstance(filename, str) and filename else None

    def check_perm(self, name: str, perm: int, shared: int) -> Callable[[], None] | None:
        node = self._prepared.get(name) or self._nodes.get(name)
        if node is not None:
            check_write_alignment(node, perm)  # rule P5, from the real file's alignment
        path = self.lock_path(name)
        if path is None:
            return None
        return self.locks.set(path, name, perm, shared)
