"""Node filenames: plain when one file describes the node, ``json:`` otherwise.

Reproduces ``bdrv_refresh_filename``, ``append_strong_runtime_options``,
``bdrv_backing_overridden``, ``bdrv_dirname`` and
``bdrv_get_full_backing_filename`` (block.c; reference/qemu-options.md §3.6,
§8.4). The generated json: text uses QEMU's QDict key order, so it matches
what qemu-storage-daemon prints byte for byte.
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import OpenError
from txgraph.model.drivers import driver_spec
from txgraph.model.graph import BlockGraph
from txgraph.model.node import OpenFlag
from txgraph.model.options import qdict_order, unflatten
from txgraph.qobject.encoder import encode as to_qjson

__all__ = [
    "refresh_filename",
    "full_open_options",
    "full_backing_filename",
    "dirname",
    "backing_overridden",
]

_PATH_MAX = 4096


def backing_overridden(graph: BlockGraph, name: str) -> bool:
    """``bdrv_backing_overridden``: the backing is not what the header alone would open."""
    node = graph.nodes[name]
    backing = graph.backing_child(name)
    if backing is not None:
        return node.auto_backing_file != graph.nodes[backing].filename
    return node.auto_backing_file != ""


def _strong_options(graph: BlockGraph, name: str) -> tuple[dict[str, Any], bool]:
    """``append_strong_runtime_options``: driver/filename always; strong ones flag json."""
    node = graph.nodes[name]
    spec = driver_spec(node.driver)
    out: dict[str, Any] = {}
    found_any = False
    for key in ("driver", "filename"):
        if key in node.options:
            out[key] = node.options[key]
    if spec is not None:
        for opt in sorted(spec.strong_opts):
            if opt.endswith("."):
                for key in qdict_order(list(node.options)):
                    if key.startswith(opt):
                        out[key] = node.options[key]
                        found_any = True
            elif opt in node.options:
                out[opt] = node.options[opt]
                found_any = True
    return out, found_any


def full_open_options(graph: BlockGraph, name: str) -> dict[str, Any]:
    """The options dict that would reopen this node (children nested by edge name).

    Cached on the node like QEMU's ``bs->full_open_options``; the graph drops
    the cache of a node and its ancestors whenever something below changes.
    """
    node = graph.nodes[name]
    if node.full_open_cache is not None:
        return node.full_open_cache
    only = graph.children(name)
    if node.implicit and len(only) == 1:
        # An implicit (job) filter is its child as far as filenames go.
        node.full_open_cache = full_open_options(graph, only[0][0])
        return node.full_open_cache
    opts, _found = _strong_options(graph, name)
    overridden = backing_overridden(graph, name)
    spec = driver_spec(node.driver)
    if spec is not None and spec.gather_child_options is not None:
        opts.update(spec.gather_child_options(graph, name, lambda c: full_open_options(graph, c)))
    else:
        for child, edge in graph.children(name):
            if edge.name == "backing" and not overridden:
                continue
            opts[edge.name] = full_open_options(graph, child)
        if overridden and graph.backing_child(name) is None:
            opts["backing"] = None
    # the spec's flat options (qcow2's ``encrypt.key-secret``, blkdebug's rule lists such as
    # ``inject-error.0.event``) stay flat keys, as in QEMU's json: names
    prefixes = tuple(spec.flat_opts) if spec is not None else ()
    flat = {k: opts.pop(k) for k in [k for k in opts if prefixes and k.startswith(prefixes)]}
    result = unflatten(opts) if any("." in k for k in opts) else opts
    result.update(flat)
    node.full_open_cache = result
    return result


def refresh_filename(graph: BlockGraph, name: str) -> None:
    """Recompute ``filename``/``exact_filename`` of a node and, first, of its children.

    Nodes whose cached open options are still valid are up to date already
    (their filenames were computed with them), so the walk stops there.
    """
    node = graph.nodes[name]
    if node.full_open_cache is not None:
        return
    for child, _edge in graph.children(name):
        refresh_filename(graph, child)
    spec = driver_spec(node.driver)
    if spec is None:
        return
    only = graph.children(name)
    if node.implicit and len(only) == 1:
        # bdrv_refresh_filename: an implicit node copies everything from its one child.
        sole = graph.nodes[only[0][0]]
        node.exact_filename, node.filename = sole.exact_filename, sole.filename
        full_open_options(graph, name)
        return
    _strong, generate_json = _strong_options(graph, name)
    opts = full_open_options(graph, name)
    overridden = backing_overridden(graph, name)
    if node.flags & OpenFlag.NO_IO:
        overridden = False
    generate_json = generate_json or overridden
    primary = _primary_child(graph, name)
    if spec.refresh_filename is not None:
        # the driver's own bdrv_refresh_filename
        node.exact_filename = spec.refresh_filename(graph, name, opts)
    elif primary is not None:
        node.exact_filename = ""
        pnode = graph.nodes[primary]
        cspec = driver_spec(pnode.driver)
        if (
            pnode.exact_filename
            and cspec is not None
            and cspec.is_protocol
            and not spec.is_filter
            and not generate_json
        ):
            node.exact_filename = pnode.exact_filename
    if node.exact_filename:
        node.filename = node.exact_filename
    else:
        text = "json:" + to_qjson(opts)
        if len(text) >= _PATH_MAX:
            text = text[: _PATH_MAX - 4] + "..."
        node.filename = text


def _primary_child(graph: BlockGraph, name: str) -> str | None:
    from txgraph.model.perm_bits import Role

    for child, edge in graph.children(name):
        if edge.role & Role.PRIMARY:
            return child
    return None


def dirname(graph: BlockGraph, name: str) -> str:
    """``bdrv_dirname``: the directory relative backing names resolve against."""
    primary = _primary_child(graph, name)
    if primary is not None:
        return dirname(graph, primary)
    node = graph.nodes[name]
    if node.exact_filename:
        return _directory_part(node.exact_filename)
    raise OpenError(f"Cannot generate a base directory for {node.driver} nodes")


def _directory_part(base: str) -> str:
    """``path_combine(base, "")``: ``base`` up to its last '/', never cutting into a
    ``protocol:`` prefix (``null-co://`` stays ``null-co://``, ``nbd:h:1`` gives ``nbd:``)."""
    start = base.index(":") + 1 if _has_protocol(base) else 0
    return base[: max(start, base.rfind("/") + 1)]


def _has_protocol(path: str) -> bool:
    """``path_has_protocol``: a ':' before any '/'."""
    for ch in path:
        if ch == "/":
            return False
        if ch == ":":
            return True
    return False


def full_backing_filename(graph: BlockGraph, name: str) -> str | None:
    """``bdrv_get_full_backing_filename``: the header's backing name made absolute."""
    node = graph.nodes[name]
    backing = node.backing_file
    if not backing:
        return None
    if _has_protocol(backing) or backing.startswith("/"):
        return backing
    return dirname(graph, name) + backing
