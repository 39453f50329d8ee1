"""SMT-LIB text for one check: declarations, facts and tracked rule implications.

Every constraint restates a rule over the region's constants; the facts pin
the constants to the graph, so a rule literal in an unsat core is a rule the
graph breaks. The child-permission formulas are symbolic templates
(:func:`txgraph.checker.perm_smt.template`) applied to the parent's
cumulative permissions, themselves computed in z3 from its parent edges.
"""

from __future__ import annotations

import functools

import networkx as nx

from txgraph.checker.instances import Instance
from txgraph.checker.perm_smt import template
from txgraph.checker.ranks import SPACING, seed
from txgraph.checker.region import Region
from txgraph.checker.verdict import EdgeRef
from txgraph.model.graph import BlockGraph
from txgraph.model.names import MAX_NODE_NAME

__all__ = [
    "Encoder",
    "esc",
    "strlit",
    "name_formula",
    "name_formula_shared",
    "MACRO_TEXT",
    "NAME_PRELUDE",
]

_INTERN: dict[str, int] = {}


def _intern(name: str) -> int:
    return _INTERN.setdefault(name, len(_INTERN))


def esc(name: str) -> str:
    """An SMT symbol body: ``|`` and ``\\`` cannot appear inside ``|...|``; injective."""
    if "%" not in name and "|" not in name and "\\" not in name:
        return name  # what the replacements would give, for nearly every name
    return name.replace("%", "%25").replace("|", "%7C").replace("\\", "%5C")


def strlit(s: str) -> str:
    """An SMT-LIB 2.6 string literal (non-printable and non-ASCII as ``\\u{..}``)."""
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('""')
        elif 0x20 <= o < 0x7F and ch != "\\":
            out.append(ch)
        else:
            out.append(f"\\u{{{o:x}}}")
    return '"' + "".join(out) + '"'


#: session-wide helpers for N2, over 24-bit code points
NAME_PRELUDE = (
    "(define-fun nL ((c (_ BitVec 24))) Bool (or (and (bvule #x000041 c) (bvule c #x00005a)) "
    "(and (bvule #x000061 c) (bvule c #x00007a))))\n"
    "(define-fun nD ((c (_ BitVec 24))) Bool (and (bvule #x000030 c) (bvule c #x000039)))\n"
    "(define-fun nW ((c (_ BitVec 24))) Bool (or (nL c) (nD c) (= c #x00005f) (= c #x00002e) "
    "(= c #x00002d)))\n"
)


@functools.lru_cache(maxsize=4096)
def name_formula(name: str) -> str:
    """N2 over the name's code points: ``[A-Za-z][A-Za-z0-9_.-]*`` and at most 31
    characters, or ``#block`` followed by at least three digits (needs
    :data:`NAME_PRELUDE`).

    z3's string theory decides the same regular expressions but costs ~0.4 ms per
    check; code points keep N2 in the bit-vector fragment the rest of the check uses.
    """
    cs = [f"#x{ord(ch):06x}" for ch in name]
    if not cs:
        return "false"
    wf = (
        f"(and (<= {len(cs)} {MAX_NODE_NAME}) (nL {cs[0]}) {' '.join(f'(nW {c})' for c in cs[1:])})"
    )
    prefix = [f"#x{ord(ch):06x}" for ch in "#block"]
    if len(cs) >= len(prefix) + 3:
        auto = (
            f"(and {' '.join(f'(= {a} {b})' for a, b in zip(cs, prefix))} "
            f"{' '.join(f'(nD {c})' for c in cs[len(prefix) :])})"
        )
    else:
        auto = "false"
    return f"(or {wf} {auto})"


#: the auto-name prefix of N2 (``#block`` and at least three digits)
_AUTO_PREFIX = "#block"


#: per-character macros of N2 made so far: (kind, code point) -> symbol (their text
#: is in ``MACRO_TEXT``); the same in every session, so kept for the process.
#: Owner: :func:`_char_macro`, the only writer. No lock: entries are only ever added,
#: a (kind, code point) always gets the same symbol and text (a racing second insert
#: writes the same values), each dict operation is atomic under the GIL, and the text
#: is stored before its symbol is published here, so a symbol any thread can see has
#: its text (tests/unit/checker/test_checker_fast_paths.py stresses it from threads).
_CHAR_MACROS: dict[tuple[str, int], str] = {}
#: symbol -> its ``define-fun`` (written before the symbol enters ``_CHAR_MACROS``)
MACRO_TEXT: dict[str, str] = {}


def _char_macro(kind: str, code: int) -> str:
    sym = _CHAR_MACROS.get((kind, code))
    if sym is None:
        if kind.startswith("nB"):  # the i-th character of the auto-name prefix
            body = f"(= #x{code:06x} #x{ord(_AUTO_PREFIX[int(kind[2:])]):06x})"
        else:
            body = f"({kind} #x{code:06x})"
        sym = f"|{kind}.{code}|"
        MACRO_TEXT[sym] = f"(define-fun {sym} () Bool {body})"
        _CHAR_MACROS[(kind, code)] = sym  # published once its text is there
    return sym


_PREFIX_KINDS = tuple(f"nB{i}" for i in range(len(_AUTO_PREFIX)))


@functools.lru_cache(maxsize=4096)
def name_formula_shared(name: str) -> tuple[str, tuple[str, ...]]:
    """:func:`name_formula` with each per-character test a session-wide macro.

    Returns the formula and the macro symbols it uses (their ``define-fun`` in
    :data:`MACRO_TEXT`): ``|nW.98|`` stands for ``(nW #x000062)``, ``|nB0.35|`` for
    the first prefix test ``(= #x000023 #x000023)``, and so on; expanded, the formula
    is :func:`name_formula`'s term for term. z3 still evaluates every test in every
    check, but parses each (test, code point) once per session instead of once per
    character of every name: a 100-deep chain's 200 auto-names were 90% of the
    check's text, and z3 spent ~4 ms expanding ``nW``/``nD`` on them (~0.5 ms so).
    """
    codes = [ord(ch) for ch in name]
    if not codes:
        return "false", ()
    first = [_char_macro("nL", codes[0])]
    rest = [_char_macro("nW", c) for c in codes[1:]]
    wf = f"(and (<= {len(codes)} {MAX_NODE_NAME}) {first[0]} {' '.join(rest)})"
    used = first + rest
    if len(codes) >= len(_AUTO_PREFIX) + 3:
        pfx = [_char_macro(k, c) for k, c in zip(_PREFIX_KINDS, codes)]
        digits = [_char_macro("nD", c) for c in codes[len(_AUTO_PREFIX) :]]
        auto = f"(and {' '.join(pfx)} {' '.join(digits)})"
        used += pfx + digits
    else:
        auto = "false"
    return f"(or {wf} {auto})", tuple(dict.fromkeys(used))


def _hex(v: int) -> str:
    return f"#x{v:x}"


def _bit(var: str, i: int) -> str:
    return f"(= ((_ extract {i} {i}) {var}) #b1)"


class Encoder:
    """Accumulates one check's text; ``declared`` is the session's persistent symbol set."""

    def __init__(self, graph: BlockGraph, declared: set[str]) -> None:
        self.graph = graph
        self.declared = declared
        self.decls: list[str] = []
        self.body: list[str] = []
        self.lits: list[str] = []
        #: the formula of each of ``lits``, in the same order
        self.formulas: list[str] = []
        self._edges: dict[EdgeRef, tuple[str, str, str]] = {}

    # -- symbols and facts --------------------------------------------------------------
    def _decl(self, name: str, sort: str) -> str:
        sym = f"|{name}|"
        if name not in self.declared:
            self.declared.add(name)
            self.decls.append(f"(declare-const {sym} {sort})")
        return sym

    def _fact(self, name: str, sort: str, value: str) -> str:
        """A value the region's facts pin: its literal, inlined into every formula.

        Declaring a constant and asserting ``(= c value)`` says the same (z3
        substitutes it away) but half of a large check's text was such pairs;
        the verdicts and cores are the same, as cores only name tracked literals.
        """
        return value

    def edge(self, ref: EdgeRef) -> tuple[str, str, str]:
        # One check reads an edge from several instances (its P1, its child's P1, P3,
        # P4, G2, G3): its three terms are made once per check. The adjacency dict is
        # read directly, as networkx's edge view costs several times more.
        got = self._edges.get(ref)
        if got is None:
            e = self.graph._succ[ref[0]][ref[2]][ref[1]]["obj"]
            k = esc(f"{ref[0]}/{ref[1]}>{ref[2]}")
            got = self._edges[ref] = (
                self._fact("e.p:" + k, "(_ BitVec 4)", _hex(int(e.perm))),
                self._fact("e.s:" + k, "(_ BitVec 4)", _hex(int(e.shared))),
                self._fact("e.r:" + k, "(_ BitVec 5)", f"(_ bv{int(e.role)} 5)"),
            )
        return got

    def node_flag(self, node: str, flag: str, value: bool) -> str:
        return self._fact(f"n.{flag}:{esc(node)}", "Bool", "true" if value else "false")

    def track(self, key: str, formula: str) -> None:
        """Rule instance ``key`` with its formula; see :meth:`conjunction` and :meth:`tracked`."""
        self.lits.append(esc(key))
        self.formulas.append(formula)

    def conjunction(self) -> str:
        """Every tracked formula under ``go``, without literals: sat exactly when all hold.

        The check's common outcome is that every rule holds; this text says that alone,
        at about half the size (no literal declarations, implications or list of
        literals), so z3 parses it in half the time. Only a failure needs the literals.

        Each distinct formula text appears once: ``(and a a)`` is ``a``, so the
        conjunction decides the same, and most instances of a deep chain are textually
        equal (their facts are inlined constants: every backing edge's G2/G3/P1/P4
        formula reads the same role and permission values), which left ~80% of the
        text as repeats that z3 parsed again.
        """
        return f"(assert (=> |go| (and true {' '.join(dict.fromkeys(self.formulas))})))"

    def tracked(self) -> str:
        """Each formula behind its readable literal (``lit => f``, all literals under
        ``go``): the form whose unsat cores name the broken rules. Declares the
        literals the session has not seen yet."""
        out: list[str] = []
        for name in self.lits:
            if name not in self.declared:
                self.declared.add(name)
                out.append(f"(declare-const |{name}| Bool)")
        out.extend(f"(assert (=> |{n}| {f}))" for n, f in zip(self.lits, self.formulas))
        out.append(f"(assert (=> |go| (and true {' '.join(f'|{k}|' for k in self.lits)})))")
        return "\n".join(out)

    def _cum(self, ups: tuple[EdgeRef, ...]) -> tuple[str, str]:
        """``bdrv_get_cumulative_perm`` in z3: OR of needs, AND of shares."""
        ps, ss = [], []
        for ref in ups:
            p, s, _r = self.edge(ref)
            ps.append(p)
            ss.append(s)
        if not ps:
            return "#x0", "#xf"
        return f"(bvor #x0 {' '.join(ps)})", f"(bvand #xf {' '.join(ss)})"

    # -- rule instances -----------------------------------------------------------------
    def instance(self, inst: Instance) -> None:
        k, d = inst.kind, inst.data
        f: str
        if k == "g2card":
            _p, _n, bit, kids = d
            i = bit.bit_length() - 1
            f = f"((_ at-most 1) {' '.join(_bit(self.edge(r)[2], i) for r, _role in kids)})"
        elif k == "g2excl":
            r = self.edge(d[0])[2]
            if d[2] == "FILTERED":
                f = f"(=> {_bit(r, 2)} (= (bvand {r} #b01011) #b00000))"
            else:
                f = f"(=> {_bit(r, 3)} (= (bvand {r} #b10111) #b00000))"
        elif k == "g3one":
            rs = [self.edge(r)[2] for r, _role in d[2]]
            full = " ".join(f"(ite (= (bvand {r} #b10100) #b10100) 1 0)" for r in rs)
            part = " ".join(f"(ite (distinct (bvand {r} #b10100) #b00000) 1 0)" for r in rs)
            f = f"(and (= (+ 0 {full}) 1) (= (+ 0 {part}) 1))"
        elif k in ("g3fcow", "g3nocow"):
            f = f"(not {_bit(self.edge(d[0])[2], 3)})"
        elif k == "g3nofilt":
            f = f"(not {_bit(self.edge(d[0])[2], 2)})"
        elif k == "g4":
            a, b = (
                self._fact(f"e.n:{esc(f'{r[0]}/{r[1]}>{r[2]}')}", "Int", str(_intern(r[1])))
                for r in d[1:]
            )
            f = f"(distinct {a} {b})"
        elif k == "g5req":
            names = [
                self._fact(f"e.n:{esc(f'{r[0]}/{r[1]}>{r[2]}')}", "Int", str(_intern(r[1])))
                for r in d[3]
            ]
            want = _intern(d[2])
            f = f"(or false {' '.join(f'(= {n} {want})' for n in names)})"
        elif k == "g5quorum":
            f = f"(>= {self._fact('n.kids:' + esc(d[0]), 'Int', str(d[2]))} 1)"
        elif k == "n1":
            f = f"(and true {' '.join(f'(distinct {strlit(d[0])} {strlit(b)})' for b in d[1])})"
        elif k == "n2":
            f, macros = name_formula_shared(d[0])
            for sym in macros:
                if sym not in self.declared:
                    self.declared.add(sym)
                    self.decls.append(MACRO_TEXT[sym])
        elif k == "fs1":
            node = self.graph.nodes[d[0]]
            f = f"(=> {self.node_flag(d[0], 'fs', node.force_share)} {self.node_flag(d[0], 'ro', node.read_only)})"
        elif k == "p1node":
            ref, ctx, role, ups, force_share = d
            name, text = template(ctx, role)
            if name not in self.declared:
                self.declared.add(name)
                self.decls.append(text)
            perm, shared, _r = self.edge(ref)
            cp, cs = self._cum(ups)
            t = f"({name} {cp} {cs})"
            fs = self.node_flag(ref[2], "fs", force_share)
            f = (
                f"(and (= {perm} ((_ extract 7 4) {t})) "
                f"(= {shared} (ite {fs} #xf ((_ extract 3 0) {t}))))"
            )
        elif k == "p1root":
            perm, shared, _r = self.edge(d[0])
            f = f"(and (= {perm} {_hex(d[1])}) (= {shared} {_hex(d[2])}))"
        elif k == "p3":
            _c, a, b = d
            f = f"(= (bvand {self.edge(b)[0]} (bvnot {self.edge(a)[1]})) #x0)"
        elif k == "p4":
            cp, _cs = self._cum(d[1])
            w = self.node_flag(d[0], "w", self.graph.nodes[d[0]].writable)
            f = f"(=> (distinct (bvand {cp} #x6) #x0) {w})"
        elif k == "f1":
            ref, now = d
            cur = self._fact(
                f"f.now:{esc(ref[0] + '/' + ref[1])}",
                "Int",
                str(-1 if now is None else _intern(now)),
            )
            f = f"(= {cur} {_intern(ref[2])})"
        elif k == "j1":
            _job, parent, name, child, now = d
            cur = self._fact(
                f"j.now:{esc(parent + '/' + name)}", "Int", str(-1 if now is None else _intern(now))
            )
            f = f"(= {cur} {_intern(child)})"
        elif k == "s1":
            f = f"(not {self.node_flag(d[0], 'used', d[3])})"
        elif k == "s2":
            f = f"(= (bvand {self.edge(d[0])[0]} #x2) #x0)"
        else:
            raise AssertionError(f"no encoding for {k}")
        self.track(inst.key, f)

    # -- acyclicity ---------------------------------------------------------------------
    def ranks(self, region: Region, fixed: dict[str, int]) -> list[str]:
        """``rank(parent) > rank(child)`` on node edges with a symbolic end; returns the
        symbolic nodes."""
        if region.whole:
            fixed, symbolic = _whole_graph_ranks(self.graph)
        else:
            symbolic = sorted(region.nodes)
        sym_set = set(symbolic)

        def term(n: str) -> str:
            return self._decl("r:" + esc(n), "Int") if n in sym_set else str(fixed[n])

        seen: set[EdgeRef] = set()
        # The adjacency dicts directly, in networkx's own edge-view order: a
        # multigraph edge view's len() walks the whole adjacency (O(graph) per node).
        succ, pred = self.graph._succ, self.graph._pred
        for n in symbolic:
            refs = [(n, key, c) for c, keys in succ[n].items() for key in keys]
            refs += [(p, key, n) for p, keys in pred[n].items() for key in keys]
            for ref in refs:
                p, key, c = ref
                if ref in seen or p not in self.graph.nodes:
                    continue
                seen.add(ref)
                self.track(f"G1:edge={p}/{key}>{c}", f"(> {term(p)} {term(c)})")
        return symbolic


def _whole_graph_ranks(graph: BlockGraph) -> tuple[dict[str, int], list[str]]:
    """Constants for nodes on no cycle (from the condensation), symbols for the rest."""
    sub = graph.g.subgraph(graph.nodes)
    cond = nx.condensation(sub)
    order = list(nx.topological_sort(cond))
    fixed: dict[str, int] = {}
    symbolic: list[str] = []
    for i, comp in enumerate(order):
        members = cond.nodes[comp]["members"]
        if len(members) == 1 and not any(sub.has_edge(m, m) for m in members):
            fixed[next(iter(members))] = (len(order) - i) * SPACING
        else:
            symbolic.extend(members)
    if not symbolic:
        seed(graph, fixed)
    return fixed, sorted(symbolic)
