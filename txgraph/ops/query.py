"""The query commands: query-named-block-nodes and x-debug-query-block-graph.

Reproduces ``bdrv_named_nodes_list`` / ``bdrv_block_device_info`` /
``bdrv_query_image_info`` (block/qapi.c) and ``bdrv_get_xdbg_block_graph``
(block.c), including their list orders (both prepend while walking, so the
newest comes first) and which optional members appear.
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import BlockError, IOFailure
from txgraph.model.drivers import driver_spec
from txgraph.model.drivers.image_formats import HAS_GET_INFO, HAS_SPECIFIC_INFO
from txgraph.model.graph import BlockGraph
from txgraph.model.node import Edge, ParentKind
from txgraph.model.perm_bits import Role, perm_list
from txgraph.ops.filenames import full_backing_filename, refresh_filename
from txgraph.ops.session import Session

__all__ = [
    "named_block_nodes",
    "block_graph",
    "filter_or_cow_child",
    "filter_or_cow_edge",
    "supports_compressed_writes",
]


def filter_or_cow_child(graph: BlockGraph, name: str) -> str | None:
    """``bdrv_filter_or_cow_bs``: a filter's filtered child, or a node's backing."""
    found = filter_or_cow_edge(graph, name)
    return found[0] if found is not None else None


def filter_or_cow_edge(graph: BlockGraph, name: str) -> tuple[str, Edge] | None:
    """``bdrv_filter_or_cow_child``: the child and its edge."""
    spec = driver_spec(graph.nodes[name].driver)
    for child, edge in graph.children(name):
        if edge.role & Role.COW or (
            edge.role & Role.FILTERED and spec is not None and spec.is_filter
        ):
            return child, edge
    return None


def supports_compressed_writes(graph: BlockGraph, name: str) -> bool:
    """``bdrv_supports_compressed_writes``: the node's driver takes compressed writes,
    and a filter's filtered child does too (filters only forward them)."""
    spec = driver_spec(graph.nodes[name].driver)
    if spec is None or not spec.can_compress:
        return False
    if spec.is_filter:
        for child, edge in graph.children(name):
            if edge.role & Role.FILTERED:
                return supports_compressed_writes(graph, child)
    return True


def _has_get_info(graph: BlockGraph, name: str) -> bool:
    """Whether ``bdrv_get_info`` succeeds (it decides if dirty-flag is reported)."""
    node = graph.nodes[name]
    if node.driver in ("file", "host_device", "qcow2", "luks") or node.driver in HAS_GET_INFO:
        return True
    if node.driver == "raw":
        child = graph.file_child(name)
        return child is not None and _has_get_info(graph, child)
    spec = driver_spec(node.driver)
    if spec is not None and spec.is_filter:
        child = filter_or_cow_child(graph, name)
        return child is not None and _has_get_info(graph, child)
    return False


def _allocated_size(session: Session, name: str) -> int | None:
    """``bdrv_get_allocated_file_size``: a file's blocks, summed up through formats."""
    graph = session.graph
    node = graph.nodes[name]
    spec = driver_spec(node.driver)
    if node.driver in ("file", "host_device"):
        return session.runtime.info(name).actual_size
    if node.driver in ("null-co", "null-aio"):
        return 0
    if spec is None or spec.is_protocol:
        return None
    if spec.is_filter or node.driver == "raw":
        child = filter_or_cow_child(graph, name) or graph.file_child(name)
        return _allocated_size(session, child) if child else None
    total = 0
    # Summed per child edge (bdrv_sum_allocated_file_size): a node used twice counts twice.
    for child, edge in graph.children(name):
        if edge.role & (Role.DATA | Role.METADATA | Role.FILTERED):
            size = _allocated_size(session, child)
            if size is None:
                return None
            total += size
    return total


def _image_info(session: Session, name: str) -> dict[str, Any]:
    graph = session.graph
    node = graph.nodes[name]
    refresh_filename(graph, name)
    try:
        info = session.runtime.info(name)
    except IOFailure as err:
        # bdrv_query_image_info: the size comes first and its failure fails the query
        # (a job's dropped filter has no child to take a size from).
        raise BlockError(f"Can't get image size '{node.exact_filename}': {err.desc}") from err
    image: dict[str, Any] = {
        "virtual-size": info.virtual_size,
        "filename": node.filename,
        "format": node.driver,
    }
    actual = _allocated_size(session, name)
    if actual is not None and actual >= 0:
        image["actual-size"] = actual
    if _has_get_info(graph, name):
        chain = name
        while (
            graph.nodes[chain].driver not in ("file", "host_device", "qcow2")
            and graph.nodes[chain].driver not in HAS_GET_INFO
        ):
            nxt = filter_or_cow_child(graph, chain) or graph.file_child(chain)
            assert nxt is not None
            chain = nxt
        cinfo = session.runtime.info(chain)
        if cinfo.cluster_size:
            image["cluster-size"] = cinfo.cluster_size
        image["dirty-flag"] = cinfo.dirty
    if info.format_specific is not None and (
        node.driver in ("qcow2", "luks") or node.driver in HAS_SPECIFIC_INFO
    ):
        image["format-specific"] = info.format_specific
    if info.extra.get("encrypted"):  # has_encrypted = bs->encrypted
        image["encrypted"] = True
    if node.backing_file:
        image["backing-filename"] = node.backing_file
        try:
            full = full_backing_filename(graph, name)
        except Exception:  # QEMU passes errp=NULL here: no full name, no error
            full = None
        if full is not None:
            image["full-backing-filename"] = full
        if node.backing_format:
            image["backing-filename-format"] = node.backing_format
    return image


def _device_info(session: Session, name: str, flat: bool) -> dict[str, Any]:
    graph = session.graph
    node = graph.nodes[name]
    refresh_filename(graph, name)
    info: dict[str, Any] = {
        "file": node.filename,
        "ro": node.read_only,
        "drv": node.driver,
        "encrypted": bool(node.image.get("encrypted", False)),
        "cache": {"writeback": True, "direct": node.cache_direct, "no-flush": node.cache_no_flush},
        "node-name": node.name,
        "detect_zeroes": node.detect_zeroes,
        "write_threshold": 0,
        "bps": 0,
        "bps_rd": 0,
        "bps_wr": 0,
        "iops": 0,
        "iops_rd": 0,
        "iops_wr": 0,
    }
    # bdrv_cow_bs: a filter's backing child (commit_top, mirror_top) is not a backing file
    found = graph.child_edge(name, "backing")
    backing = found[0] if found is not None and found[1].role & Role.COW else None
    if backing is not None:
        refresh_filename(graph, backing)
        info["backing_file"] = graph.nodes[backing].filename
    info["image"] = image = _image_info(session, name)
    depth = 0
    cur = name
    while not flat:
        nxt = filter_or_cow_child(graph, cur)
        if nxt is None:
            break
        depth += 1
        image["backing-image"] = _image_info(session, nxt)
        image = image["backing-image"]
        cur = nxt
    info["backing_file_depth"] = depth
    return info


def named_block_nodes(session: Session, flat: bool = False) -> list[dict[str, Any]]:
    """Every named node, newest-named first (QEMU prepends while walking the name list)."""
    nodes = sorted(session.graph.nodes.values(), key=lambda n: n.name_seq, reverse=True)
    return [_device_info(session, n.name, flat) for n in nodes]


def block_graph(session: Session) -> dict[str, Any]:
    """``x-debug-query-block-graph``: backends, then jobs, then nodes; ids by first sight."""
    graph = session.graph
    ids: dict[str, int] = {}
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []

    def num(key: str) -> int:
        if key not in ids:
            ids[key] = len(ids) + 1
        return ids[key]

    def add_edges(parent: str) -> None:
        for child, edge in graph.children(parent):
            edges.insert(
                0,
                {
                    "parent": num(parent),
                    "child": num(child),
                    "name": edge.qemu_name,
                    "perm": perm_list(edge.perm),
                    "shared-perm": perm_list(edge.shared),
                },
            )

    backends = sorted(graph.backends.values(), key=lambda b: b.seq)
    for kind, node_type in ((ParentKind.ROOT, "block-backend"), (ParentKind.JOB, "block-job")):
        for backend in backends:
            if backend.kind is kind:
                nodes.insert(0, {"id": num(backend.key), "type": node_type, "name": backend.name})
                add_edges(backend.key)
    for node in sorted(graph.nodes.values(), key=lambda n: n.name_seq):
        nodes.insert(0, {"id": num(node.name), "type": "block-driver", "name": node.name})
        add_edges(node.name)
    return {"nodes": nodes, "edges": edges}


def query_block(session: Session) -> list[dict[str, Any]]:
    """``qmp_query_block``: one entry per named BlockBackend (devices); exports are anonymous."""
    out: list[dict[str, Any]] = []
    for backend in sorted(session.graph.backends.values(), key=lambda b: b.seq):
        if backend.kind is not ParentKind.ROOT or not backend.name:
            continue
        kids = session.graph.children(backend.key)
        entry: dict[str, Any] = {
            "device": backend.name,
            "locked": False,
            "removable": False,
            "type": "unknown",
        }
        if kids:
            entry["inserted"] = _device_info(session, kids[0][0], False)
        out.append(entry)
    return out
