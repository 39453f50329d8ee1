"""Verdicts: what a check found, in a form both humans and the QMP layer can use."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EdgeRef", "Violation", "Verdict"]

#: V1-guest-view ranges listed in a verdict's JSON (all are counted)
MAX_RANGES = 256

#: an edge as (parent, child name, child)
EdgeRef = tuple[str, str, str]


@dataclass(frozen=True, order=True)
class Violation:
    """One broken invariant with its subjects and a sentence a user can act on."""

    rule: str
    nodes: tuple[str, ...]
    edges: tuple[EdgeRef, ...]
    sentence: str
    policy: str = "qemu"
    #: V1-guest-view only: (offset, length, layer before, layer after; None = zeroes)
    ranges: tuple[tuple[int, int, str | None, str | None], ...] = field(default=(), compare=False)
    #: V1-guest-view only: the export or device whose guest reads changed
    root: str = field(default="", compare=False)

    def key(self) -> tuple[str, tuple[str, ...], tuple[EdgeRef, ...]]:
        """Identity used to compare engines: rule and subjects."""
        return (self.rule, self.nodes, self.edges)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": self.rule,
            "nodes": list(self.nodes),
            "edges": [list(e) for e in self.edges],
            "sentence": self.sentence,
            "policy": self.policy,
        }
        if self.root:
            # A fragmented layer can change thousands of ranges: the reply lists the first
            # MAX_RANGES and counts them all.
            out["root"] = self.root
            out["ranges"] = [
                {"offset": o, "length": n, "before": b, "after": a}
                for o, n, b, a in self.ranges[:MAX_RANGES]
            ]
            out["ranges-total"] = len(self.ranges)
            out["bytes-changed"] = sum(r[1] for r in self.ranges)
        return out


@dataclass(frozen=True)
class Verdict:
    """The outcome of :func:`txgraph.checker.check`; violations are sorted."""

    ok: bool
    violations: tuple[Violation, ...]
    engine: str
    elapsed_s: float

    def rules(self) -> frozenset[str]:
        return frozenset(v.rule for v in self.violations)

    def first_sentence(self) -> str:
        return self.violations[0].sentence if self.violations else ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "engine": self.engine,
            "elapsed_s": self.elapsed_s,
            "violations": [v.to_dict() for v in self.violations],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
