"""The checker's rule encoding with edge permissions left free, for bounded proofs.

:class:`txgraph.checker.encode.Encoder` turns each rule instance into SMT-LIB over
constants that its facts pin to the graph. :class:`SymbolicEncoder` is the same
encoder with two changes: the ``perm``/``shared`` constants of edges are *not*
pinned (every other fact is: roles, names, flags, which templates apply), and each
instance's literal is equivalent to its formula (``lit = f``, not ``lit => f``), so
a formula can be asserted, or denied. Constants carry a prefix, so a pre-state and a
post-state of one transaction live in one problem. The rule texts are the checker's
own, not a copy: a change to a rule changes what the proofs prove.

z3 discipline: :func:`txgraph.checker.perm_smt.template` builds its terms in z3's
global context, so encoding runs under the checker session's lock; the problems
themselves are parsed into a private :class:`z3.Context` that only the caller's
thread uses (:func:`parse`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import z3

from txgraph.checker.encode import NAME_PRELUDE, Encoder, esc
from txgraph.checker.instances import Instance, edge_key
from txgraph.checker.smt import _LOCK
from txgraph.checker.verdict import EdgeRef
from txgraph.model.graph import BlockGraph

__all__ = ["SymbolicEncoder", "edge_symbols", "parse", "text", "NAME_PRELUDE"]

_FREE = ("e.p:", "e.s:")


class SymbolicEncoder(Encoder):
    """``Encoder`` whose edge permissions are variables named ``<prefix>e.p:<edge>``."""

    def __init__(self, graph: BlockGraph, declared: set[str], prefix: str) -> None:
        super().__init__(graph, declared)
        self.prefix = prefix
        #: the symbols this encoder's text refers to (``declared`` may hold more: a
        #: session's solver keeps its declarations from one problem to the next)
        self.used: set[str] = set()

    def _decl(self, name: str, sort: str) -> str:
        self.used.add(self.prefix + name)
        return super()._decl(self.prefix + name, sort)

    def _fact(self, name: str, sort: str, value: str) -> str:
        if name.startswith(_FREE):
            return self._decl(name, sort)
        return super()._fact(name, sort, value)

    def track(self, key: str, formula: str) -> None:
        sym = self._decl(esc(key), "Bool")
        self.body.append(f"(assert (= {sym} {formula}))")
        self.lits.append(self.prefix + esc(key))

    def encode(self, instances: Iterable[Instance]) -> None:
        with _LOCK:
            for inst in instances:
                self.instance(inst)


def edge_symbols(prefix: str, ref: EdgeRef) -> tuple[str, str]:
    """The names of an edge's perm and shared variables."""
    k = esc(edge_key(ref))
    return prefix + "e.p:" + k, prefix + "e.s:" + k


def text(encoders: Iterable[SymbolicEncoder], prelude: bool = True) -> str:
    """The SMT-LIB problem of the encoders: declarations first, then their assertions.

    ``prelude=False`` for a solver that already read :data:`NAME_PRELUDE`.
    """
    encs = list(encoders)
    decls = [d for e in encs for d in e.decls]
    return (NAME_PRELUDE if prelude else "") + "\n".join(
        [*decls, *(b for e in encs for b in e.body)]
    )


def parse(ctx: z3.Context, encoders: Iterable[SymbolicEncoder]) -> list[Any]:
    """Every assertion of the encoders' texts, as terms of ``ctx``."""
    return list(z3.parse_smt2_string(text(encoders), ctx=ctx))


def var(ctx: z3.Context, name: str, sort: str) -> Any:
    """A constant of ``ctx`` by name (``sort``: ``bool`` or ``bv4``)."""
    if sort == "bool":
        return z3.Bool(name, ctx)
    return z3.BitVec(name, 4, ctx)
