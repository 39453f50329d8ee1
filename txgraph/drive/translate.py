"""The translator: a QEMU command line's drives -> clean ``blockdev-add`` commands.

Runs the rules of :mod:`txgraph.drive.spec` / :mod:`txgraph.drive.spec_open`
for each drive in command-line order on a scratch :class:`Engine` (QEMU's
``configure_blockdev`` -> ``drive_init_func`` -> ``drive_new``), then reads the
resolved node trees back and writes each as one nested ``blockdev-add``: what
the user said, the entry defaults, the probed format and the protocol chosen
from the filename are spelt out; what every child inherits is left to
blockdev-add's own inheritance, and backing files named by image headers are
left to the headers, so QEMU resolves them the same way (docs/drive-output.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from typing import Any

from txgraph.drive import spec, spec_open  # noqa: F401  (the rules register on import)
from txgraph.drive.qapi_types import typed_blockdev_options
from txgraph.drive.qemuopts import DriveError, parse_command_line
from txgraph.drive.rules import RULES, DriveContext, DriveState, Explained
from txgraph.model.node import OpenFlag
from txgraph.model.options import Source

__all__ = ["Translation", "translate", "DriveError"]

_SPELT_OUT = (Source.EXPLICIT, Source.JSON, Source.ENTRY_DEFAULT)


@dataclass
class Translation:
    qmp: list[dict[str, Any]] = field(default_factory=list)
    backend: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    explained: list[Explained] = field(default_factory=list)
    #: temporary overlay files (snapshot=on) the commands refer to; the caller removes them
    temp_files: list[str] = field(default_factory=list)
    #: the warnings as QEMU prints them on stderr (with the program prefix where QEMU has one)
    stderr_lines: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"qmp": self.qmp, "backend": self.backend, "warnings": self.warnings}

    def explain_text(self) -> str:
        return "\n".join(
            f"{e.key} = {json.dumps(e.value)}  <- {e.rule}"
            if e.key.startswith(e.drive)
            else f"{e.drive}: {e.key} = {json.dumps(e.value)}  <- rule {e.rule}"
            for e in self.explained
        )


def translate(argv: list[str]) -> Translation:
    """Translate ``-drive``/``-hda``/``-cdrom``/``-snapshot``/``-object`` arguments.

    Raises :class:`DriveError` with QEMU's message; its ``warnings`` attribute
    holds what QEMU would have printed before the refusal.

    One translation at a time per process: relative file names resolve against the
    process's working directory (as QEMU's do), and the scratch engine's checker is not
    safe to run from several threads at once (two threads translating crashed the
    interpreter inside the solver). The CLI runs exactly one.
    """
    from txgraph.qmp.engine import Engine

    engine = Engine()
    ctx = DriveContext(engine=engine, session=engine.context.session)
    out = Translation()
    try:
        cl = parse_command_line(argv)
        ctx.snapshot_switch = cl.snapshot
        ctx.warnings.extend(cl.warnings)
        for text in cl.objects:
            out.qmp.append(_object_add(text, engine))
        for arg in cl.drives:
            st = DriveState(arg=arg)
            for r in RULES:
                r(st, ctx)
            ctx.drives.append(st)
        used = {n for st in ctx.drives for n in _user_names(ctx, st)}
        for st in ctx.drives:
            out.qmp.extend(_emit_drive(ctx, st, used))
            out.backend[st.id] = st.backend
            out.explained.extend(replace(e, drive=st.id) for e in st.explained)
            if st.top is not None:
                base = st.snapshot_base or st.top
                out.explained.extend(
                    _node_provenance(
                        ctx, st, base, st.id + ("/backing" if st.snapshot_base else "")
                    )
                )
    except DriveError as err:
        err.warnings = list(ctx.warnings)  # type: ignore[attr-defined]
        for path in ctx.temp_files:
            _unlink(path)
        raise
    finally:
        ctx.session.close()
    out.stderr_lines = list(ctx.warnings)
    out.warnings = [w.removeprefix("qemu-system-x86_64: ") for w in ctx.warnings]
    out.temp_files = ctx.temp_files
    return out


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _object_add(text: str, engine: Any) -> dict[str, Any]:
    """``-object qom-type=...,id=...,props``: the matching object-add (keyval, §8.1)."""
    props: dict[str, Any] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        props[key] = value
    if "qom-type" not in props and props:
        first = next(iter(props))
        if props[first] == "":
            props["qom-type"] = first
            del props[first]
    cmd = {"execute": "object-add", "arguments": _typed_object(props)}
    reply = engine.execute(cmd)
    if "error" in reply:
        raise DriveError(reply["error"]["desc"], f"-object {text}")
    return cmd


def _typed_object(props: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in props.items():
        if key not in ("qom-type", "id") and isinstance(value, str) and value.isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out


def _user_names(ctx: DriveContext, st: DriveState) -> list[str]:
    if st.top is None:
        return []
    return [n.name for n in ctx.session.graph.nodes.values() if "node-name" in n.explicit]


def _fresh_name(base: str, used: set[str]) -> str:
    name = base[:31]
    i = 1
    while name in used:
        i += 1
        name = f"{base[:28]}-{i}"
    used.add(name)
    return name


def _from_header(child: Any, parent: Any) -> bool:
    """A backing child opened from the parent's image header, not from the options."""
    if not parent.backing_file:
        return False
    for key in child.explicit:
        prov = child.provenance.get(key)
        if prov is None:
            continue
        if prov.source is Source.EXPLICIT:
            return False
        if prov.source is Source.JSON and not str(parent.backing_file).startswith("json:"):
            return False
    return True


def _node_provenance(ctx: DriveContext, st: DriveState, name: str, label: str) -> list[Explained]:
    """Every resolved option of every node of the drive, with where it came from (§3.2).

    Nodes are named by their place under the drive (``d0/file``, ``d0/backing/file``), as
    the scratch session's automatic names mean nothing outside it."""
    graph = ctx.session.graph
    node = graph.nodes[name]
    out = []
    for key, value in sorted(node.options.items()):
        prov = node.provenance.get(key)
        why = "open: " + (prov.source.value if prov else "explicit")
        if prov is not None and prov.parent:
            why += " from " + (label.rsplit("/", 1)[0] if "/" in label else prov.parent)
        if prov is not None and prov.detail:
            why += f" ({prov.detail})"
        out.append(Explained(st.id, f"{label}: {key}", value, why))
    for child, edge in graph.children(name):
        if graph.nodes[child].inherits_from == name:
            out.extend(_node_provenance(ctx, st, child, f"{label}/{edge.name}"))
    return out


def _aio(st: DriveState) -> str | None:
    for flag, mode in (("NATIVE_AIO", "native"), ("IO_URING", "io_uring")):
        if flag in st.flags:
            return mode
    return None


def _flat_tree(ctx: DriveContext, name: str, aio: str | None = None) -> dict[str, Any]:
    """One node and its option-created children, flattened (``a.b`` keys)."""
    graph = ctx.session.graph
    node = graph.nodes[name]
    flat: dict[str, Any] = {}
    for key, value in node.options.items():
        prov = node.provenance.get(key)
        if key == "driver" or (prov is not None and prov.source in _SPELT_OUT):
            flat[key] = value
    flat.pop("node-name", None)
    if node.flags & OpenFlag.NO_BACKING and graph.child_edge(name, "backing") is None:
        flat["backing"] = None
    for key in [k for k in flat if k == "discard" or k.endswith(".discard")]:
        # bdrv_parse_discard_flags accepts on/off; the QAPI enum only unmap/ignore
        flat[key] = {"on": "unmap", "off": "ignore"}.get(flat[key], flat[key])
    if aio is not None and node.driver in ("file", "host_device", "host_cdrom"):
        flat.setdefault("aio", aio)
    if "node-name" in node.explicit:
        flat["node-name"] = node.name
    for child, edge in graph.children(name):
        cnode = graph.nodes[child]
        if cnode.inherits_from != name:
            flat[edge.name] = child
            continue
        if edge.name == "backing" and _from_header(cnode, node):
            continue
        for key, value in _flat_tree(ctx, child, aio).items():
            flat[f"{edge.name}.{key}"] = value
    return flat


def _emit_drive(ctx: DriveContext, st: DriveState, used: set[str]) -> list[dict[str, Any]]:
    if st.top is None:
        return []
    graph = ctx.session.graph
    flat = _flat_tree(ctx, st.top, _aio(st))
    if "node-name" not in flat:
        flat["node-name"] = _fresh_name(
            f"{st.id}-img" if st.snapshot_base else st.id + "-node", used
        )
    cmds: list[dict[str, Any]] = []
    top_flat = flat
    detect = st.backend.get("detect-zeroes", "off")
    top_unmap = bool(graph.nodes[st.top].flags & OpenFlag.UNMAP)
    if st.snapshot_base:
        cmds.append({"execute": "blockdev-add", "arguments": typed_blockdev_options(flat)})
        snap = st.backend["snapshot"]
        top_flat = {
            **snap["options"],
            "file.driver": "file",
            "file.filename": snap["overlay"],
            "backing": flat["node-name"],
            "node-name": _fresh_name(st.id + "-snapshot", used),
        }
        top_unmap = top_flat.get("discard", "ignore") in ("on", "unmap")
        if "discard" in top_flat:
            top_flat["discard"] = {"on": "unmap", "off": "ignore"}.get(
                top_flat["discard"], top_flat["discard"]
            )
    st.backend["node-name"] = top_flat["node-name"]
    if detect != "off":
        top_flat["detect-zeroes"] = detect
        if detect == "unmap" and not top_unmap:
            top_flat["discard"] = "unmap"
            st.backend["translation-note"] = (
                "-drive sets detect-zeroes=unmap after the open without checking discard; "
                "blockdev-add refuses it without discard=unmap, so discard=unmap is added"
            )
    cmds.append({"execute": "blockdev-add", "arguments": typed_blockdev_options(top_flat)})
    return cmds
