"""The ``quorum`` driver: N replicas, reads decided by vote, writes to all.

Reproduces QEMU 7.2's block/quorum.c:

* open checks (``quorum_open``) with QEMU's texts: at least one child,
  ``vote-threshold`` >= 1 and <= the number of children, ``blkverify`` only
  with two children and threshold 2, ``rewrite-corrupted`` not with ``fifo``;
* ``read-pattern=quorum``: every child is read; identical contents vote
  together (QEMU hashes each version, ``quorum_compute_hash``); the version
  with most votes wins if it has at least ``vote-threshold`` votes
  (``quorum_vote``); children that failed or voted for another version are
  reported with ``QUORUM_REPORT_BAD`` (``quorum_report_bad``), a lost vote with
  ``QUORUM_FAILURE`` and EIO; ``rewrite-corrupted`` writes the winner back to
  the losers (``quorum_rewrite_bad_versions``); ``blkverify`` turns any
  mismatch into EIO;
* ``read-pattern=fifo``: children are tried in order until one read succeeds
  (``read_fifo_child``);
* writes and flushes go to every child; fewer than ``vote-threshold``
  successes fail with the most common error (``quorum_vote_error``);
* children are the ``children.N`` edges, read from the live mapping on every
  request so ``x-blockdev-change`` takes effect at once.

Events reach the Runtime through ``event_sink(event_name, data)``.
"""

from __future__ import annotations

import errno as E
import os
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from txgraph.errors import IOFailure, OpenError
from txgraph.io.driver import DriverNode, ImageInfo
from txgraph.io.registry import register
from txgraph.io.settings import opt_bool, opt_int, opt_str

__all__ = ["QuorumNode"]


def _sectors(offset: int, length: int) -> dict[str, int]:
    first = offset // 512
    last = (offset + length + 511) // 512
    return {"sector-num": first, "sectors-count": last - first}


@register("quorum")
class QuorumNode(DriverNode):
    """Replicated storage with voting reads."""

    driver_name = "quorum"

    def __init__(
        self,
        node_name: str,
        options: Mapping[str, Any],
        children: Mapping[str, DriverNode],
        read_only: bool,
    ) -> None:
        super().__init__(node_name, options, children, read_only)
        #: ``event_sink(name, data)``: set by the Runtime to emit QMP events.
        self.event_sink: Callable[[str, dict[str, Any]], None] | None = None
        count = len(self._kids())
        if count < 1:
            raise OpenError("Number of provided children must be 1 or more")
        self.threshold = opt_int(options, "vote-threshold", 0, minimum=-(2**63))
        if self.threshold < 1:
            raise OpenError("Parameter 'vote-threshold' expects a value >= 1")
        if self.threshold > count:
            raise OpenError("threshold may not exceed children count")
        pattern = opt_str(options, "read-pattern", "quorum")
        if pattern not in ("quorum", "fifo"):
            raise OpenError("Please set read-pattern as fifo or quorum")
        self.fifo = pattern == "fifo"
        # quorum_open reads blkverify and rewrite-corrupted for read-pattern=quorum only
        # (fifo reads never vote): under fifo both are ignored, not even checked.
        # Typed: bool("off") would be True.
        self.blkverify = not self.fifo and opt_bool(options, "blkverify", False)
        self.rewrite = not self.fifo and opt_bool(options, "rewrite-corrupted", False)
        if self.blkverify and (count != 2 or self.threshold != 2):
            raise OpenError(
                "blkverify=on can only be set if there are exactly two files "
                "and vote-threshold is 2"
            )
        #: the length settled at open (QEMU caches total_sectors; quorum has no
        #: variable length, so children added later do not change it)
        self._length = self._children_length()

    def _kids(self) -> list[tuple[str, DriverNode]]:
        """``children.N`` edges in index order (QEMU keeps them in an array)."""
        kids = [
            (k, v)
            for k, v in self.children.items()
            if k.startswith("children.") and k[9:].isdigit()
        ]
        return sorted(kids, key=lambda kv: int(kv[0][9:]))

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        if self.event_sink is not None:
            self.event_sink(event, data)

    def _report_bad(
        self, kind: str, child: DriverNode, offset: int, length: int, err: int | None
    ) -> None:
        data: dict[str, Any] = {
            "type": kind,
            "node-name": child.node_name,
            **_sectors(offset, length),
        }
        if err is not None:
            data["error"] = os.strerror(err)
        self._emit("QUORUM_REPORT_BAD", data)

    def _failure(self, offset: int, length: int) -> IOFailure:
        self._emit("QUORUM_FAILURE", {"reference": self.node_name, **_sectors(offset, length)})
        return IOFailure("Input/output error", E.EIO)

    # -- reads ---------------------------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        kids = self._kids()
        if self.fifo:
            return self._read_fifo(kids, offset, length)
        versions: dict[bytes, list[DriverNode]] = {}
        errors: list[tuple[DriverNode, int]] = []
        for _, child in kids:
            try:
                versions.setdefault(child.read(offset, length), []).append(child)
            except IOFailure as e:
                errors.append((child, e.errno))
        for child, err in errors:
            self._report_bad("read", child, offset, length, err)
        successes = sum(len(v) for v in versions.values())
        if successes < self.threshold:
            raise _most_common_error([err for _, err in errors])
        # max() keeps the first of equal counts: the lowest-numbered child's version wins ties.
        winner = max(versions, key=lambda data: len(versions[data]))
        if len(versions) > 1 and self.blkverify:
            raise IOFailure("Input/output error", E.EIO)
        if len(versions[winner]) < self.threshold:
            raise self._failure(offset, length)
        for data, voters in versions.items():
            if data is winner:
                continue
            for child in voters:
                self._report_bad("read", child, offset, length, None)
                if self.rewrite:
                    child.write(offset, winner)
        return winner

    def _read_fifo(self, kids: list[tuple[str, DriverNode]], offset: int, length: int) -> bytes:
        last = E.EIO
        for _, child in kids:
            try:
                return child.read(offset, length)
            except IOFailure as e:
                self._report_bad("read", child, offset, length, e.errno)
                last = e.errno
        raise IOFailure(os.strerror(last), last)

    # -- writes --------------------------------------------------------------------------
    def _to_all(
        self, kind: str, offset: int, length: int, op: Callable[[DriverNode], None]
    ) -> None:
        errors: list[int] = []
        kids = self._kids()
        for _, child in kids:
            try:
                op(child)
            except IOFailure as e:
                errors.append(e.errno)
                self._report_bad(kind, child, offset, length, e.errno)
        if len(kids) - len(errors) < self.threshold:
            raise _most_common_error(errors)

    def write(self, offset: int, data: bytes) -> None:
        self._to_all("write", offset, len(data), lambda c: c.write(offset, data))

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        self._to_all(
            "write", offset, length, lambda c: c.write_zeroes(offset, length, may_unmap=may_unmap)
        )

    def discard(self, offset: int, length: int) -> None:
        self._to_all("write", offset, length, lambda c: c.discard(offset, length))

    def flush(self) -> None:
        self._to_all("flush", 0, 0, lambda c: c.flush())

    def size(self) -> int:
        return self._length

    def _children_length(self) -> int:
        """``quorum_co_getlength``: every child must agree, else EIO."""
        sizes = {child.size() for _, child in self._kids()}
        if len(sizes) != 1:
            raise IOFailure("Input/output error", E.EIO)
        return sizes.pop()

    def info(self) -> ImageInfo:
        return ImageInfo(format="quorum", virtual_size=self.size(), filename="")


def _most_common_error(errors: list[int]) -> IOFailure:
    """``quorum_vote_error``: the errno most children agreed on."""
    err = Counter(errors).most_common(1)[0][0] if errors else E.EIO
    return IOFailure(os.strerror(err), err)
