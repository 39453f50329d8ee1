"""The ``blkdebug`` filter: error injection driven by events and a state machine.

Reproduces QEMU 7.2's block/blkdebug.c:

* rules come from the ``inject-error`` / ``set-state`` options and from the
  ``config`` file (sections ``[inject-error]`` / ``[set-state]``, ``key =
  "value"`` lines; ``read_config``); a missing file fails with ``Could not
  read blkdebug config file: <strerror>``;
* the node starts in state 1; on an event (``blkdebug_debug_event``) every
  rule of that event whose ``state`` is 0 or the current state fires: the
  matching inject-error rules *replace* the active set (only if at least one
  matched), set-state rules pick the next state, applied after all rules ran;
* each request checks the active rules (``rule_check``): the first one whose
  ``sector`` is -1 or inside the request and whose ``iotype`` covers the
  request fails it with ``-errno``; a ``once`` rule is then deleted;
* events come from the parent: a format driver above the blkdebug node calls
  :meth:`debug_event` on its ``file`` child before a data request
  (``BLKDBG_EVENT(bs->file, ...)``: raw raises ``read_aio`` / ``write_aio``;
  qcow2 those, the backing and compressed reads and its metadata events), so
  a format's own metadata reads at open time arm nothing; rules already armed
  still check every request. The generic write path raises three events on the
  node it writes, this one, whoever sent the request (``bdrv_aligned_pwritev``):
  ``pwritev`` (``pwritev_zero`` for a zero write) before it, ``pwritev_done``
  after it. ``flush_to_os`` and
  ``flush_to_disk`` come from the generic flush of the parent
  (``bdrv_co_flush`` raises them on the flushed node's primary child, this
  node under a format or filter; :mod:`txgraph.io.layer`);
* a flush is checked against the rules only when it goes to the disk
  (``blkdebug_co_flush`` is the driver's ``bdrv_co_flush_to_disk``: skipped
  when nothing was written to this node since its last successful flush, or
  with ``cache.no-flush``); the flush goes on to ``image`` then, and once more
  as the generic flush of the children.

``immediately`` only changes whether QEMU yields once before failing; a
blocking data plane has nothing to yield to, so it is accepted and ignored.
"""

from __future__ import annotations

import errno as E
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import BlockStatus, DriverNode, ImageInfo
from txgraph.io.hostpath import host_path
from txgraph.io.layer import flush_reaches_disk
from txgraph.io.registry import register

__all__ = ["BlkdebugNode", "Rule", "parse_config", "EVENTS", "IOTYPES"]

EVENTS = frozenset(
    [
        "l1_update",
        "l1_grow_alloc_table",
        "l1_grow_write_table",
        "l1_grow_activate_table",
        "l2_load",
        "l2_update",
        "l2_update_compressed",
        "l2_alloc_cow_read",
        "l2_alloc_write",
        "read_aio",
        "read_backing_aio",
        "read_compressed",
        "write_aio",
        "write_compressed",
        "vmstate_load",
        "vmstate_save",
        "cow_read",
        "cow_write",
        "reftable_load",
        "reftable_grow",
        "reftable_update",
        "refblock_load",
        "refblock_update",
        "refblock_update_part",
        "refblock_alloc",
        "refblock_alloc_hookup",
        "refblock_alloc_write",
        "refblock_alloc_write_blocks",
        "refblock_alloc_write_table",
        "refblock_alloc_switch_table",
        "cluster_alloc",
        "cluster_alloc_bytes",
        "cluster_free",
        "flush_to_os",
        "flush_to_disk",
        "pwritev_rmw_head",
        "pwritev_rmw_after_head",
        "pwritev_rmw_tail",
        "pwritev_rmw_after_tail",
        "pwritev",
        "pwritev_zero",
        "pwritev_done",
        "empty_image_prepare",
        "l1_shrink_write_table",
        "l1_shrink_free_l2_clusters",
        "cor_write",
        "cluster_alloc_space",
        "none",
    ]
)
IOTYPES = ("read", "write", "write-zeroes", "discard", "flush", "block-status")
#: Without ``iotype`` a rule covers every request type except block-status.
_DEFAULT_IOTYPES = frozenset(IOTYPES[:5])


@dataclass(eq=False)
class Rule:
    """One inject-error (``new_state is None``) or set-state rule."""

    event: str
    state: int = 0
    errno: int = E.EIO
    offset: int = -1
    once: bool = False
    immediately: bool = False
    iotypes: frozenset[str] = field(default=_DEFAULT_IOTYPES)
    new_state: int | None = None


def _truthy(v: Any) -> bool:
    return v is True or str(v).lower() in ("on", "true", "yes", "1")


def _make_rule(kind: str, o: Mapping[str, Any]) -> Rule:
    event = str(o.get("event", ""))
    if event not in EVENTS:
        raise OpenError(f'Invalid event name "{event}"')
    state = int(o.get("state", 0))
    if kind == "set-state":
        if "new_state" not in o:
            raise OpenError("Parameter 'new_state' is missing")
        return Rule(event, state, new_state=int(o["new_state"]))
    iot = o.get("iotype")
    if isinstance(iot, str):
        iot = [iot]
    iotypes = _DEFAULT_IOTYPES if iot is None else frozenset(str(t) for t in iot)
    sector = int(o.get("sector", -1))
    return Rule(
        event,
        state,
        errno=int(o.get("errno", E.EIO)),
        offset=sector * 512 if sector >= 0 else -1,
        once=_truthy(o.get("once", False)),
        immediately=_truthy(o.get("immediately", False)),
        iotypes=iotypes,
    )


def parse_config(text: str) -> list[Rule]:
    """The blkdebug config file: QEMU's ini dialect with double-quoted values."""
    rules: list[Rule] = []
    section: str | None = None
    current: dict[str, Any] = {}

    def flush() -> None:
        if section in ("inject-error", "set-state"):
            rules.append(_make_rule(section, current))

    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            flush()
            section, current = line[1:-1].strip(), {}
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise OpenError(f"Could not parse blkdebug config file: {line}")
        current[key.strip()] = value.strip().strip('"')
    flush()
    return rules


def _list_option(options: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """A list option either as a real list or flattened (``key.0.event`` ...)."""
    value = options.get(key)
    if isinstance(value, list):
        return value
    items: dict[int, dict[str, Any]] = {}
    prefix = key + "."
    for k, v in options.items():
        if k.startswith(prefix):
            idx, _, member = k[len(prefix) :].partition(".")
            if idx.isdigit():
                if member.startswith("iotype."):
                    items.setdefault(int(idx), {}).setdefault("iotype", []).append(v)
                else:
                    items.setdefault(int(idx), {})[member] = v
    return [items[i] for i in sorted(items)]


@register("blkdebug")
class BlkdebugNode(DriverNode):
    """A pass-through filter over ``image`` that fails requests as its rules say."""

    driver_name = "blkdebug"
    primary_child_name = "image"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        rules: list[Rule] = []
        config = options.get("config")
        if config:
            try:
                with open(host_path(str(config)), encoding="utf-8") as f:
                    rules += parse_config(f.read())
            except OSError as e:
                raise OpenError(
                    f"Could not read blkdebug config file: {os.strerror(e.errno or E.EIO)}"
                ) from None
        rules += [_make_rule("inject-error", o) for o in _list_option(options, "inject-error")]
        rules += [_make_rule("set-state", o) for o in _list_option(options, "set-state")]
        if "image" not in self.children:
            raise OpenError('A block device must be specified for "image"')
        self.rules = rules
        self.state = 1
        self.active: list[Rule] = []
        self._lock = threading.Lock()

    @property
    def image(self) -> DriverNode:
        return self.children["image"]

    # -- the state machine -------------------------------------------------------------------
    def debug_event(self, event: str) -> None:
        """``blkdebug_debug_event``."""
        with self._lock:
            new_state = self.state
            injected: list[Rule] | None = None
            for rule in self.rules:
                if rule.event != event or (rule.state and rule.state != self.state):
                    continue
                if rule.new_state is None:
                    if injected is None:
                        injected = []
                    injected.append(rule)
                else:
                    new_state = rule.new_state
            if injected is not None:
                self.active = injected
            self.state = new_state

    def _check(self, offset: int, length: int, iotype: str) -> None:
        """``rule_check``."""
        with self._lock:
            for rule in self.active:
                hit = rule.offset == -1 or (length and offset <= rule.offset < offset + length)
                if hit and iotype in rule.iotypes:
                    break
            else:
                return
            if not rule.errno:
                return
            if rule.once:
                self.active.remove(rule)
                self.rules.remove(rule)
            err = rule.errno
        raise IOFailure(os.strerror(err), err)

    # -- data path -----------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length, "read")
        return self.image.read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        # bdrv_aligned_pwritev raises pwritev / pwritev_done on the node it writes (this
        # one), around the driver's write and whether or not that fails
        self.debug_event("pwritev")
        try:
            self._check(offset, len(data), "write")
            self.image.write(offset, data)
        finally:
            self.debug_event("pwritev_done")

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self.debug_event("pwritev_zero")  # bdrv_aligned_pwritev of a zero write
        try:
            self._check(offset, length, "write-zeroes")
            self.image.write_zeroes(offset, length, may_unmap=may_unmap)
        finally:
            self.debug_event("pwritev_done")

    def discard(self, offset: int, length: int) -> None:
        self._check(offset, length, "discard")
        self.image.discard(offset, length)

    def flush(self) -> None:
        """``bdrv_co_flush`` of this node: ``blkdebug_co_flush``, then the children."""
        if flush_reaches_disk(self):
            self._check(0, 0, "flush")
            self.image.flush()
        self.image.flush()

    def truncate(self, length: int) -> None:
        """``blkdebug_co_truncate``: passed to ``image`` unchecked (ENOTSUP where it cannot
        resize, as ``bdrv_co_truncate`` of a driver without the callback)."""
        truncate = getattr(self.image, "truncate", None)
        if truncate is None:
            raise IOFailure(os.strerror(E.ENOTSUP), E.ENOTSUP)
        truncate(length)

    def size(self) -> int:
        return self.image.size()

    def block_status(self, offset: int, length: int) -> BlockStatus:
        self._check(offset, length, "block-status")
        return self.image.block_status(offset, length)

    def info(self) -> ImageInfo:
        fi = self.image.info()
        return ImageInfo(format="blkdebug", virtual_size=self.size(), filename=fi.filename)
