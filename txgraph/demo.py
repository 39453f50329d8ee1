"""The built-in example: a quorum of qcow2 chains behind a throttle filter.

``txgraph demo`` creates real qcow2 images (a two-layer chain per quorum
member, made with qemu-img), assembles the graph through the same QMP
commands a management layer would send, prints it, explains for every node
why its cache and read-only values are what they are, and then shows steps
QEMU refuses, with txgraph's structured explanation beside QEMU's text.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from txgraph.model.node import ParentKind
from txgraph.model.options import Source
from txgraph.model.perm_bits import perm_list
from txgraph.ops.session import Session
from txgraph.qmp.engine import Engine

__all__ = ["run_demo", "explain_node", "render_tree"]

_EXPLAINED = ("read-only", "cache.direct", "cache.no-flush")


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def _build_images(workdir: Path) -> list[Path]:
    tops = []
    for i in range(3):
        base = workdir / f"base{i}.qcow2"
        top = workdir / f"disk{i}.qcow2"
        _qemu_img("create", "-q", "-f", "qcow2", str(base), "64M")
        _qemu_img("create", "-q", "-f", "qcow2", "-b", base.name, "-F", "qcow2", str(top))
        tops.append(top)
    return tops


def example_commands(tops: list[Path]) -> list[dict[str, Any]]:
    """The QMP script that assembles the example graph."""
    children = [
        {
            "driver": "qcow2",
            "node-name": f"disk{i}",
            "file": {"driver": "file", "node-name": f"disk{i}-file", "filename": str(top)},
        }
        for i, top in enumerate(tops)
    ]
    return [
        {
            "execute": "object-add",
            "arguments": {
                "qom-type": "throttle-group",
                "id": "tg0",
                "limits": {"iops-total": 1000},
            },
        },
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "quorum",
                "node-name": "vote",
                "vote-threshold": 2,
                "cache": {"direct": False, "no-flush": False},
                "children": children,
            },
        },
        {
            "execute": "blockdev-add",
            "arguments": {
                "driver": "throttle",
                "node-name": "throttled",
                "throttle-group": "tg0",
                "file": "vote",
            },
        },
    ]


def render_tree(session: Session) -> str:
    """The graph as an indented tree from each root, with edge permissions."""
    graph = session.graph
    lines: list[str] = []

    def walk(name: str, prefix: str, label: str) -> None:
        node = graph.nodes[name]
        ro = "ro" if node.read_only else "rw"
        lines.append(f"{prefix}{label}{name} [{node.driver}, {ro}]")
        for child, edge in sorted(graph.children(name), key=lambda ce: ce[1].name):
            perm = ",".join(perm_list(edge.perm)) or "-"
            shared = ",".join(perm_list(edge.shared)) or "-"
            walk(child, prefix + "    ", f"--{edge.name} ({perm} / shared {shared})--> ")

    roots = [
        n
        for n in graph.nodes
        if not any(e.parent_kind is ParentKind.NODE for _p, e in graph.parents(n))
    ]
    for root in sorted(roots):
        walk(root, "", "")
    return "\n".join(lines)


def explain_node(session: Session, name: str) -> str:
    """Why a node has its read-only and cache values (the provenance of each)."""
    node = session.graph.nodes.get(name)
    if node is None:
        return f"no node named '{name}'"
    out = [f"{name} ({node.driver}):"]
    for key in _EXPLAINED:
        value = node.options.get(key)
        out.append(f"  {key} = {value!r}: {_trace(session, name, key)}")
    return "\n".join(out)


def _trace(session: Session, name: str, key: str) -> str:
    """Follow inherited values up to where they were decided."""
    steps: list[str] = []
    seen: set[str] = set()
    cur: str | None = name
    while cur is not None and cur not in seen and cur in session.graph.nodes:
        seen.add(cur)
        prov = session.graph.nodes[cur].provenance.get(key)
        if prov is None:
            steps.append("not recorded")
            break
        steps.append(prov.describe())
        if prov.source is not Source.INHERITED:
            break
        cur = prov.parent
    return " <- ".join(steps)


def run_demo(workdir: Path | None = None, *, plain: bool = False) -> int:
    cleanup = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="txgraph-demo-")) if workdir is None else workdir
    wd.mkdir(parents=True, exist_ok=True)
    engine = Engine()
    try:
        print(f"== 1. Images: three qcow2 overlays, each on its own qcow2 base, in {wd}")
        tops = _build_images(wd)
        print("== 2. Assemble: throttle filter over a 2-of-3 quorum of the overlays")
        for message in example_commands(tops):
            reply = engine.execute(message)
            status = "ok" if "return" in reply else f"error: {reply['error']['desc']}"
            print(
                f"   {message['execute']} {message['arguments'].get('node-name', message['arguments'].get('id', ''))}: {status}"
            )
            if "error" in reply:
                return 1
        session = engine.context.session
        print("\n== 3. The graph (edge: perm / shared perm)")
        print(render_tree(session))
        print("\n== 4. Why every node has its cache and read-only values")
        for node in sorted(session.graph.nodes.values(), key=lambda n: n.name_seq):
            print(explain_node(session, node.name))
        print("\n== 5. Steps QEMU refuses; txgraph explains them and changes nothing")
        before = session.graph.digest()
        refused = [
            {
                "execute": "blockdev-add",
                "arguments": {
                    "driver": "qcow2",
                    "node-name": "second-writer",
                    "file": "disk0-file",
                },
            },
            {"execute": "blockdev-del", "arguments": {"node-name": "disk0"}},
            {"execute": "object-del", "arguments": {"id": "tg0"}},
        ]
        for message in refused:
            reply = engine.execute(message)
            err = reply.get("error", {})
            print(f"-> {message['execute']} {message['arguments']}")
            print(f"   QEMU's answer: {err.get('desc', 'accepted (unexpected!)')}")
            extra = err.get("__io.txgraph_explanation")
            if extra:
                print(
                    f"   rule: {extra.get('rule')}  subjects: {', '.join(extra.get('subjects', []))}"
                )
                verdict = extra.get("explanation")
                for violation in (verdict or {}).get("violations", []):
                    print(
                        f"   checker ({verdict.get('engine')}): [{violation['rule']}] "
                        f"{violation['sentence']}"
                    )
        if session.graph.digest() != before:
            print("   BUG: a refused step changed the graph")
            return 1
        print("   graph digest unchanged after the refused steps:", before[:16])
        print("\n== 6. A reconfiguration plan (examples/seed-section3.json), verified on a dry run")
        from txgraph.plan.demo import demo_section

        return demo_section(str(wd))
    finally:
        engine.context.session.close()
        if cleanup:
            shutil.rmtree(wd, ignore_errors=True)
