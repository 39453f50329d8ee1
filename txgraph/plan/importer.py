"""Importing a live graph: a BlockGraph rebuilt from QEMU's own query answers.

The input is what any QEMU 7.2 process (or ``txgraph serve``) answers to
``x-debug-query-block-graph`` (nodes, edges with names, ``perm``,
``shared-perm``; block.c ``bdrv_get_xdbg_block_graph``) and
``query-named-block-nodes`` (``drv``, ``ro``, ``cache``, ``detect_zeroes``,
``file``, ``image``; block/qapi.c ``bdrv_block_device_info``), optionally
``query-block-exports`` to name the anonymous export BlockBackends and the
QOM objects (throttle groups: ``qom-list /objects`` + ``qom-get limits`` on
QEMU, ``x-txgraph-query-objects`` on txgraph), re-created with ``object-add``.

Images cannot in general be re-opened by replaying ``blockdev-add`` (the
commands are not known, and the live process holds the image locks), so the
graph is rebuilt directly:

* orders: QEMU builds both graph lists by prepending, so reading them in
  reverse gives the naming order (``graph_bdrv_states``) and, per parent, the
  children newest first (``bs->children``); the rebuilt graph answers
  ``x-debug-query-block-graph`` exactly as the live process did;
* roles come from the parent's driver and the edge name
  (reference/qemu-graph.md §1.3): ``file`` of a format is IMAGE (METADATA
  when a ``data-file`` edge exists), ``file``/``image`` of filters and raw are
  FILTERED|PRIMARY, ``backing`` is COW (FILTERED|PRIMARY under a filter),
  ``children.N`` of quorum is DATA, ``root`` of a BlockBackend is
  FILTERED|PRIMARY, job edges have no role;
* ``perm``/``shared-perm`` are taken verbatim from the import;
* options are those the queries reveal (driver, node-name, filename of
  protocol nodes, ``read-only``, ``cache.*``, ``detect-zeroes``).

What the queries do not reveal is inferred and documented here: an auto-named
node (``#block...``) was created inline for its first node parent (it inherits
from it and is not monitor-owned). Monitor ownership of a user-named node with
a driver parent is asked of QEMU (``owned``, :func:`txgraph.plan.client.
probe_ownership`): a name given inline in a parent's blockdev-add is not
monitor-owned and inherits from that parent (its ``read-only``/``cache``
follow the parent's, as in ``bdrv_reopen_queue_child``); without a probe a
user-named node is taken as monitor-owned. Frozen links of running jobs are
rebuilt from the job vertex's edges (:func:`txgraph.plan.inferred.freeze_job_chains`), a job
filter without a name of its own is implicit (it carries its child's
filename), and a job's type comes from ``query-block-jobs``. Not rebuilt: a
plain mirror's protected chain (its base is not shown), a user's
copy-on-read ``bottom`` freeze, named BlockBackends' devices beyond their
root edge (``query-block``). A raw node's ``offset``/``size`` window comes back
from its json: filename (its file edge is then DATA, as ``raw_open`` makes it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from txgraph.io.runtime import OpenBackend, SetChild
from txgraph.model.drivers import driver_spec
from txgraph.model.node import Backend, BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.options import Provenance, Source, flatten
from txgraph.model.perm_bits import Perm, Role, perm_from_names
from txgraph.ops.exports import Export, export_backend_key
from txgraph.ops.objects import object_add
from txgraph.ops.session import Session
from txgraph.oracle.canon import canon_graph, canon_nodes, canon_value
from txgraph.plan.dryrun import DryRunNbdServer, DryRunRuntime, ImportedNode
from txgraph.plan.inferred import AUTO_NAME, freeze_job_chains, infer_role, windowed

__all__ = [
    "ImportError_",
    "GraphImport",
    "parse_state_import",
    "state_of_import",
    "import_digest",
    "import_into",
    "infer_role",
]

_AUTO = AUTO_NAME
_IMPORTED = Provenance(Source.EXPLICIT, detail="imported from the live graph")


class ImportError_(ValueError):
    """The captured queries are inconsistent or not in QEMU's shape."""


@dataclass
class GraphImport:
    """The captured query answers (``{"block-graph":..., "named-nodes":..., ...}``)."""

    block_graph: dict[str, Any]
    named_nodes: list[dict[str, Any]]
    exports: list[dict[str, Any]] = field(default_factory=list)
    #: QOM objects as ``object-add`` arguments (throttle groups the graph refers to)
    objects: list[dict[str, Any]] = field(default_factory=list)
    #: generation and digest of a txgraph server at capture time (None for QEMU)
    generation: int | None = None
    digest: str | None = None
    #: node-name -> monitor-owned, as probed on the live process (:func:`txgraph.plan.
    #: client.probe_ownership`); a node not listed falls back to the name rule
    owned: dict[str, bool] = field(default_factory=dict)
    #: running block jobs (``query-block-jobs``): their frozen links are rebuilt
    jobs: list[dict[str, Any]] = field(default_factory=list)


def parse_state_import(data: dict[str, Any]) -> GraphImport:
    if not isinstance(data, dict):
        raise ImportError_("a graph import must be a JSON object")
    try:
        bg, nn = data["block-graph"], data["named-nodes"]
    except KeyError as err:
        raise ImportError_(f"a graph import needs the member {err}") from None
    if not isinstance(bg, dict) or not isinstance(nn, list):
        raise ImportError_("'block-graph' must be an object and 'named-nodes' an array")
    gen = data.get("generation")
    return GraphImport(
        bg,
        nn,
        list(data.get("block-exports", [])),
        list(data.get("objects", [])),
        generation=gen if isinstance(gen, int) else None,
        digest=data.get("digest"),
        owned={str(k): bool(v) for k, v in dict(data.get("monitor-owned", {})).items()},
        jobs=list(data.get("block-jobs", [])),
    )


def state_of_import(imp: GraphImport) -> dict[str, Any]:
    """The JSON shape of a capture (what ``parse_state_import`` reads back)."""
    out: dict[str, Any] = {
        "block-graph": imp.block_graph,
        "named-nodes": imp.named_nodes,
        "block-exports": imp.exports,
        "objects": imp.objects,
        "monitor-owned": imp.owned,
        "block-jobs": imp.jobs,
    }
    if imp.generation is not None:
        out.update({"generation": imp.generation, "digest": imp.digest})
    return out


def import_digest(imp: GraphImport) -> str:
    """SHA-256 over what a dry run depends on in a capture (graph, options, exports,
    objects, ownership; not the images' allocation), to tell whether a live graph
    is still the one a plan was verified against."""
    body = {
        "graph": canon_graph(imp.block_graph, None),
        "nodes": canon_nodes(imp.named_nodes, None, writes=True),
        "exports": canon_value(sorted(imp.exports, key=lambda e: str(e.get("id"))), None),
        "objects": imp.objects,
        "owned": imp.owned,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _onoff(value: bool) -> str:
    return "on" if value else "off"


def _json_options(filename: str, children: Iterable[str]) -> tuple[dict[str, Any], bool]:
    """The node's own options recovered from its ``json:`` filename, and ``backing: null``.

    ``bdrv_refresh_filename`` writes a node's strong options (vote-threshold,
    throttle-group, size...) into its json: filename, children nested under
    their edge names; what is not under a child is the node's own.
    """
    if not filename.startswith("json:"):
        return {}, False
    try:
        value = json.loads(filename[len("json:") :])
    except ValueError:
        return {}, False
    if not isinstance(value, dict):
        return {}, False
    kids = set(children) | {"backing", "file"}
    own = {
        k: v
        for k, v in flatten(value).items()
        if k.split(".")[0] not in kids and not k.startswith("children.") and k != "driver"
    }
    return own, "backing" in value and value["backing"] is None


def _build_node(
    info: dict[str, Any],
    name_seq: int,
    has_parent: bool,
    children: Iterable[str] = (),
    owned: bool | None = None,
) -> BlockNode:
    name = str(info["node-name"])
    driver = str(info["drv"])
    spec = driver_spec(driver)
    ro = bool(info.get("ro", False))
    cache = info.get("cache", {})
    direct, no_flush = bool(cache.get("direct", False)), bool(cache.get("no-flush", False))
    detect = str(info.get("detect_zeroes", "off"))
    auto = _AUTO.match(name) is not None
    # Probed ownership decides (a user-named child given inline in its parent's
    # blockdev-add is not monitor-owned and inherits); without a probe, the name rule.
    monitor = owned if owned is not None else not auto
    top_level = monitor if owned is not None else not has_parent
    flags = OpenFlag.ALLOW_RDWR | (OpenFlag.NONE if ro else OpenFlag.RDWR)
    flags |= OpenFlag.NOCACHE if direct else OpenFlag.NONE
    flags |= OpenFlag.NO_FLUSH if no_flush else OpenFlag.NONE
    flags |= OpenFlag.UNMAP if detect == "unmap" else OpenFlag.NONE
    explicit: dict[str, Any] = {"driver": driver}
    if not auto:
        explicit["node-name"] = name
    if spec is not None and spec.is_protocol and spec.needs_filename:
        flags |= OpenFlag.PROTOCOL
        explicit["filename"] = str(info.get("file", ""))
    if top_level:
        # Top-level nodes: what the user must have said for these values to hold.
        explicit.update(
            {
                "read-only": _onoff(ro),
                "cache.direct": _onoff(direct),
                "cache.no-flush": _onoff(no_flush),
            }
        )
        if detect != "off":
            explicit["detect-zeroes"] = detect
    own, no_backing = _json_options(str(info.get("file", "")), children)
    explicit.update(own)
    flags |= OpenFlag.NO_BACKING if no_backing else OpenFlag.NONE
    options = {
        **explicit,
        "cache.direct": _onoff(direct),
        "cache.no-flush": _onoff(no_flush),
        "read-only": _onoff(ro),
        "auto-read-only": False,
    }
    if detect != "off":
        options["detect-zeroes"] = detect
    image = dict(info.get("image", {}))
    image.pop("backing-image", None)
    # bs->auto_backing_file: the backing's filename when the header chose it
    # (then the node's own filename is plain), else whatever the header says.
    plain = not str(info.get("file", "")).startswith("json:")
    auto_backing = (
        str(info.get("backing_file", ""))
        if plain and "backing_file" in info
        else str(image.get("backing-filename", ""))
    )
    node = BlockNode(
        name=name,
        driver=driver,
        options=options,
        explicit=explicit,
        provenance=dict.fromkeys(options, _IMPORTED),
        flags=flags,
        detect_zeroes=detect,
        monitor_owned=monitor,
        image=image,
        filename=str(info.get("file", "")),
        exact_filename=str(info.get("file", "")),
        backing_file=str(image.get("backing-filename", "")),
        backing_format=str(image.get("backing-filename-format", "")),
        auto_backing_file=auto_backing,
        name_seq=name_seq,
        seq=name_seq,
    )
    return node


def import_into(session: Session, imp: GraphImport) -> None:
    """Rebuild the imported graph in an empty ``session`` whose runtime is a DryRunRuntime."""
    runtime = session.runtime
    if not isinstance(runtime, DryRunRuntime):
        raise TypeError(
            "an imported graph needs a DryRunRuntime (its images belong to another process)"
        )
    if session.graph.nodes or session.graph.backends:
        raise ValueError("import_into needs an empty session")
    graph = session.graph
    if not isinstance(session.nbd, DryRunNbdServer):
        session.nbd = DryRunNbdServer(runtime)  # never listen on the live process's address
    for obj in imp.objects:
        object_add(session, dict(obj))
    infos = {str(n.get("node-name")): n for n in imp.named_nodes if isinstance(n, dict)}
    try:
        gnodes = list(reversed(imp.block_graph["nodes"]))
        gedges = list(reversed(imp.block_graph["edges"]))
    except (KeyError, TypeError) as err:
        raise ImportError_(
            f"'block-graph' is not x-debug-query-block-graph output: {err}"
        ) from None
    key_of: dict[int, str] = {}
    types: dict[int, str] = {}
    driver_of: dict[str, str] = {}
    children_of: dict[int, list[str]] = {}
    for e in gedges:
        children_of.setdefault(int(e["parent"]), []).append(str(e["name"]))
    child_ids = {
        int(e["child"])
        for e in gedges
        if next((n["type"] for n in gnodes if n["id"] == e["parent"]), "") == "block-driver"
    }
    # Exports name the anonymous BlockBackends whose root edge reaches their node.
    pending_exports = list(reversed(imp.exports))
    seq = 0
    for gn in gnodes:
        seq += 1
        gid, kind, name = int(gn["id"]), str(gn["type"]), str(gn.get("name", ""))
        types[gid] = kind
        if kind == "block-driver":
            info = infos.get(name)
            if info is None:
                raise ImportError_(f"node '{name}' is in the block graph but not in named-nodes")
            node = _build_node(
                info, seq, gid in child_ids, children_of.get(gid, []), imp.owned.get(name)
            )
            graph.add_node(node)
            driver_of[name] = node.driver
            key_of[gid] = name
            spec = driver_spec(node.driver)
            if spec is not None and spec.name == "quorum":
                node.next_child_index = 1 + max(
                    (
                        int(n.split(".")[1])
                        for n in children_of.get(gid, [])
                        if n.startswith("children.")
                    ),
                    default=-1,
                )
            continue
        if kind == "block-backend":
            root_child = next((int(e["child"]) for e in gedges if int(e["parent"]) == gid), None)
            root_name = next((str(n["name"]) for n in gnodes if n["id"] == root_child), "")
            export = next((x for x in pending_exports if x.get("node-name") == root_name), None)
            if not name and export is not None:
                pending_exports.remove(export)
                key = export_backend_key(str(export["id"]))
                session.exports[str(export["id"])] = Export(
                    str(export["id"]), str(export.get("type", "nbd")), str(export["id"]), False
                )
            else:
                key = f"bb:{name}" if name else f"bb:import:{gid}"
            backend = Backend(key=key, kind=ParentKind.ROOT, name=name, seq=seq)
        elif kind == "block-job":
            # query-block-jobs names the type (the op blockers' and errors' wording)
            jtype = next((str(j.get("type")) for j in imp.jobs if j.get("device") == name), "")
            backend = Backend(
                key=f"job:{name}",
                kind=ParentKind.JOB,
                name=name,
                description=f"{jtype} job '{name}'" if jtype else f"block job '{name}'",
                seq=seq,
                job_type=jtype,
            )
        else:
            raise ImportError_(f"unknown graph node type '{kind}'")
        graph.add_backend(backend)
        key_of[gid] = backend.key
    # Reversed edge list: per parent, newest child first, so earlier gets a higher seq.
    top = seq + len(gedges)
    for i, e in enumerate(gedges):
        pid, cid = int(e["parent"]), int(e["child"])
        parent, child = key_of[pid], key_of[cid]
        pkind = {
            "block-driver": ParentKind.NODE,
            "block-backend": ParentKind.ROOT,
            "block-job": ParentKind.JOB,
        }[types[pid]]
        perm, shared = perm_from_names(e["perm"]), perm_from_names(e["shared-perm"])
        role = infer_role(driver_of.get(parent), pkind, str(e["name"]), children_of.get(pid, []))
        if driver_of.get(parent) == "raw" and e["name"] == "file" and windowed(graph, parent):
            role = Role.DATA | Role.PRIMARY  # raw_open: a window is data, not a filter
        edge = Edge(
            name=str(e["name"]),
            role=role,
            parent_kind=pkind,
            perm=perm,
            shared=shared,
            seq=top - i,
            parent_seq=top - i,
        )
        graph.g.add_edge(parent, child, key=edge.name, obj=edge)
        if pkind is not ParentKind.NODE:
            backend = graph.backends[parent]
            backend.perm, backend.shared = perm, shared
    graph._seq = top
    _import_runtime(session, runtime, infos)
    for node in graph.nodes.values():
        if node.name.startswith("#") or imp.owned.get(node.name) is False:
            # bdrv_open_inherit: opened for its first (oldest) node parent
            parents = graph.node_parents(node.name)
            node.inherits_from = parents[-1][0] if parents else None
            if node.inherits_from is not None:
                node.monitor_owned = False
    freeze_job_chains(session)
    counters = [int(m.group(1)) for n in graph.nodes if (m := _AUTO.match(n))]
    session.namer.counter = max(counters, default=-1) + 1
    if session.exports:
        session.nbd.start({"type": "imported"})
        for export in session.exports.values():
            key = export_backend_key(export.id)
            session.nbd.add_export(export.name, None, export.writable, backend=key)


def _import_runtime(session: Session, runtime: DryRunRuntime, infos: dict[str, Any]) -> None:
    """One ImportedNode per node, children wired, and the file nodes' locks as held live."""
    graph = session.graph
    for node in graph.nodes.values():
        runtime.add_imported(
            ImportedNode(
                node.name,
                node.driver,
                node.image,
                node.read_only,
                node.options | {"filename": node.filename}
                if "filename" in node.explicit
                else node.options,
            )
        )
    delta: list[OpenBackend | SetChild] = [
        OpenBackend(export_backend_key(eid)) for eid in session.exports
    ]
    for parent, child, edge in graph.edges():
        if parent in graph.nodes or parent in {export_backend_key(e) for e in session.exports}:
            delta.append(SetChild(parent, edge.name, child))
    runtime.apply(delta)
    for node in graph.nodes.values():
        perm, shared = Perm.NONE, Perm(0xF)
        for _parent, edge in graph.parents(node.name):
            perm |= edge.perm
            shared &= edge.shared
        runtime.check_perm(node.name, int(perm), int(shared))
