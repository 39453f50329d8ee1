"""Opening a tree of nodes: QEMU's ``bdrv_open_inherit`` as a transaction.

The algorithm follows reference/qemu-options.md §2 step by step: resolve a
reference or create a node, merge json: options, inherit from the parent,
fill options, pre-open ``file`` as a protocol child, probe the format, absorb
the common options, assign the node name (consuming an auto-name counter value
exactly where QEMU does), run the driver's open (which opens and attaches its
other children, each attach refreshing permissions), open the backing from
the options or the image header, strip child keys, and refuse leftovers.

Every graph change goes through the transaction and every driver object is
only *prepared* (:mod:`txgraph.ops.stage`), so a failure anywhere in the tree
leaves nothing behind and the data plane sees the tree only when the
transaction commits (QEMU: "every node created during a failed open is
released"), while the auto-name counter keeps advancing as QEMU's does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from txgraph.errors import BlockError, OpenError, TxgraphError
from txgraph.io.probe import probe_format
from txgraph.model.drivers import COMMON_OPTIONS, DriverSpec, driver_spec
from txgraph.model.names import MAX_NODE_NAME, id_wellformed
from txgraph.model.node import BlockNode, Edge, OpenFlag
from txgraph.model.options import Provenance, Source, flatten, parse_bool, qdict_first
from txgraph.model.perm_bits import Role
from txgraph.ops import drivers as driver_open
from txgraph.ops.chain_guard import backing_chain
from txgraph.ops.confine import guard_child_filename
from txgraph.ops.filenames import full_backing_filename, refresh_filename
from txgraph.ops.inherit import (
    OptionSet,
    fill_options,
    flags_from_options,
    inherit_options,
)
from txgraph.ops.perm_apply import refresh_perms
from txgraph.ops.undo_log import Transaction
from txgraph.qobject.decoder import parse_json_text

__all__ = ["Opener", "lookup_bs"]

#: stands for a parent that gets its node name only after its ``file`` was pre-opened
_UNNAMED = "\0unnamed-parent"


def lookup_bs(session: Any, device: str | None, node_name: str | None) -> str:
    """``bdrv_lookup_bs``: a device id first (its root node), then a node name."""
    graph = session.graph
    if device:
        for backend in graph.backends.values():
            if backend.name == device and backend.kind.value == "root":
                kids = graph.children(backend.key)
                if not kids:
                    raise BlockError(f"Device '{device}' has no medium")
                return str(kids[0][0])
    if node_name and node_name in graph.nodes:
        return node_name
    raise BlockError(f"Cannot find device='{device or ''}' nor node-name='{node_name or ''}'")


class Opener:
    """Opens node trees inside one transaction of one session."""

    def __init__(self, session: Any, tx: Transaction) -> None:
        self.session = session
        self.graph = session.graph
        self.tx = tx
        #: the data plane as this transaction sees it (prepare steps, reads)
        self.rt = tx.rt
        # Children opened for a parent that has no name yet (pre-opened ``file``):
        # their inherits_from is filled in when the parent is named.
        self._pending_inherit: dict[int, list[BlockNode]] = {}

    # -- entry points --------------------------------------------------------------------
    def open_child_bs(
        self,
        filename: str | None,
        options: OptionSet,
        key: str,
        parent: BlockNode,
        role: Role,
        allow_none: bool,
        parse_filename: bool = False,
    ) -> str | None:
        """``bdrv_open_child_bs``: open (or look up) the child under ``key`` of ``options``."""
        image = options.extract(key + ".")
        ref = options.values.get(key)
        reference = ref if isinstance(ref, str) else None
        if filename is None and reference is None and not len(image):
            if not allow_none:
                raise OpenError(f'A block device must be specified for "{key}"')
            options.discard(key)
            return None
        name = self.open_inherit(
            filename, reference, image, OpenFlag.NONE, parent, role, key, parse_filename
        )
        options.discard(key)
        return name

    def open_child(
        self,
        filename: str | None,
        options: OptionSet,
        key: str,
        parent: BlockNode,
        role: Role,
        allow_none: bool,
    ) -> str | None:
        """``bdrv_open_child``: open the child and attach it to ``parent`` under ``key``."""
        child = self.open_child_bs(filename, options, key, parent, role, allow_none)
        if child is not None:
            self.attach_child(parent, child, key, role)
        return child

    def attach_child(self, parent: BlockNode, child: str, name: str, role: Role) -> None:
        """``bdrv_attach_child``: cycle check, new edge, then refresh the parent's subtree.

        The data plane gets the edge with the rest of the delta at commit.
        """
        if self.graph.has_descendant(child, parent.name):
            raise BlockError(
                f"Making '{child}' a {name} child of '{parent.name}' would create a cycle"
            )
        self.tx.attach(parent.name, child, Edge(name=name, role=role))
        refresh_perms(self.session, self.tx, [parent.name])

    # -- bdrv_open_inherit ---------------------------------------------------------------
    def open_inherit(
        self,
        filename: str | None,
        reference: str | None,
        options: OptionSet | None,
        flags: OpenFlag,
        parent: BlockNode | None,
        role: Role,
        child_key: str | None,
        parse_filename: bool,
    ) -> str:
        if reference is not None:
            if filename is not None or (options is not None and len(options)):
                raise OpenError(
                    "Cannot reference an existing block device with additional "
                    "options or a new filename"
                )
            return lookup_bs(self.session, reference, reference)

        if filename is not None and parent is not None:
            guard_child_filename(self.session, parent, child_key or "", filename)
        opts = options if options is not None else OptionSet()
        if parse_filename and filename is not None and filename.startswith("json:"):
            _merge_json_filename(opts, filename)
            filename = None
        explicit = dict(opts.values)
        node = BlockNode(name="", driver="")
        if parent is not None:
            parent_is_format = True
            pspec = driver_spec(parent.driver) if parent.driver else None
            if pspec is not None:
                parent_is_format = pspec.is_format
            if parent.name:
                node.inherits_from = parent.name
            else:
                self._pending_inherit.setdefault(id(parent), []).append(node)
            flags = inherit_options(
                role,
                parent_is_format,
                opts,
                parent.flags,
                parent.options,
                parent.name or _UNNAMED,
                child_key or "",
            )
        flags = fill_options(opts, filename, flags)

        ro = opts.values.get("read-only")
        if ro != "on" and ro is not True:
            flags |= OpenFlag.RDWR | OpenFlag.ALLOW_RDWR
        else:
            flags &= ~OpenFlag.RDWR
        node.flags = flags
        node.options = opts.values
        node.provenance = dict(opts.prov)
        node.explicit = explicit
        work = opts.copy()

        drvname = work.values.get("driver")
        spec = driver_spec(drvname) if isinstance(drvname, str) else None

        backing = work.values.get("backing", ...)
        if "backing" in work and (backing is None or backing == ""):
            node.flags |= OpenFlag.NO_BACKING
            for d in (node.explicit, node.options):
                d.pop("backing", None)
            work.discard("backing")

        file_node: str | None = None
        if not node.flags & OpenFlag.PROTOCOL:
            file_node = self.open_child_bs(filename, work, "file", node, Role.IMAGE, True, True)
            if file_node is not None:
                work.put("file", file_node, Provenance(Source.EXPLICIT))
                # bdrv_open_inherit probes through a BlockBackend (perm 0, shares all) that
                # blk_insert_bs attaches to the file node: a permission refresh of its subtree
                # that changes nothing but re-runs every node's checks, so a node whose
                # alignment rose since (rule P5) refuses here, before any conflict the
                # format's own edge would cause.
                refresh_perms(self.session, self.tx, [file_node])

        node.probed = spec is None
        if spec is None and file_node is not None:
            probed = self._probe(file_node)
            node.options["driver"] = probed
            node.provenance["driver"] = Provenance(Source.DEFAULT, detail="probed from the content")
            work.put("driver", probed, node.provenance["driver"])
            spec = driver_spec(probed)
            if spec is None:  # a format QEMU knows and txgraph does not serve (yet)
                raise OpenError(f"Unknown driver '{probed}'")
        elif spec is None:
            raise OpenError("Must specify either driver or file")
        assert spec is not None
        node.driver = spec.name

        self._open_common(node, spec, file_node, work)
        for child in self._pending_inherit.pop(id(node), []):
            child.inherits_from = node.name
            child.provenance = {
                k: replace(v, parent=node.name) if v.parent == _UNNAMED else v
                for k, v in child.provenance.items()
            }

        if not node.flags & OpenFlag.NO_BACKING:
            self._open_backing_file(node, spec, work)

        for _child, edge in self.graph.children(node.name):
            for d in (node.explicit, node.options, node.provenance):
                for stale in [k for k in d if k == edge.name or k.startswith(edge.name + ".")]:
                    del d[stale]
        if len(work):
            key = qdict_first(work.values)
            if node.flags & OpenFlag.PROTOCOL:
                raise OpenError(f"Block protocol '{spec.name}' doesn't support the option '{key}'")
            raise OpenError(f"Block format '{spec.name}' does not support the option '{key}'")
        refresh_filename(self.graph, node.name)
        return node.name

    # -- pieces --------------------------------------------------------------------------
    def _probe(self, file_node: str) -> str:
        """``find_image_format``: score the first 512 bytes; raw wins when nothing matches."""
        try:
            if self.rt.size(file_node) == 0:
                return "raw"
            head = self.rt.read_head(file_node, 512)
        except TxgraphError as err:
            raise OpenError(f"Could not read image for determining its format: {err.desc}") from err
        # bdrv_probe_all sees the file's name too (dmg_probe scores a ".dmg" suffix)
        return probe_format(head, self.graph.nodes[file_node].filename)

    def _open_common(
        self, node: BlockNode, spec: DriverSpec, file_node: str | None, work: OptionSet
    ) -> None:
        """``bdrv_open_common``: absorb the common options, name the node, open the driver."""
        common = {k: work.values[k] for k in COMMON_OPTIONS if k in work}
        for key in COMMON_OPTIONS:
            work.discard(key)
        for key in ("cache.direct", "cache.no-flush", "read-only", "auto-read-only", "force-share"):
            if key in common and parse_bool(common[key]) is None:
                raise OpenError(f"Parameter '{key}' expects 'on' or 'off'")
        node.flags = flags_from_options(node.flags, common)
        node.force_share = bool(parse_bool(common.get("force-share", False)))
        if node.force_share and node.flags & OpenFlag.RDWR:
            raise OpenError("force-share=on can only be used with read-only images")
        if file_node is not None:
            filename = self.graph.nodes[file_node].filename
        else:
            fname = work.values.get("filename")
            filename = fname if isinstance(fname, str) else ""
        if spec.needs_filename and not filename:
            raise OpenError(f"The '{spec.name}' block driver requires a file name")
        if node.flags & OpenFlag.COPY_ON_READ and node.read_only:
            raise OpenError("Can't use copy-on-read on read-only device")
        discard = common.get("discard")
        if discard is not None:
            if discard in ("off", "ignore"):
                node.flags &= ~OpenFlag.UNMAP
            elif discard in ("on", "unmap"):
                node.flags |= OpenFlag.UNMAP
            else:
                raise OpenError("Invalid discard option")
        detect = common.get("detect-zeroes")
        if detect is None:
            node.detect_zeroes = "off"
        elif detect not in ("off", "on", "unmap"):
            raise OpenError(f"Parameter 'detect-zeroes' does not accept value '{detect}'")
        else:
            if detect == "unmap" and not node.flags & OpenFlag.UNMAP:
                raise OpenError(
                    "setting detect-zeroes to unmap is not allowed without "
                    "setting discard operation to unmap"
                )
            node.detect_zeroes = detect
        node.filename = node.exact_filename = filename
        self._assign_node_name(node, common.get("node-name"))
        driver_open.open_driver(self, node, spec, work)

    def assign_node_name(self, node: BlockNode, requested: Any) -> None:
        """Name ``node`` (auto-named if ``requested`` is None) and add it to the graph."""
        self._assign_node_name(node, requested)

    def _assign_node_name(self, node: BlockNode, requested: Any) -> None:
        """``bdrv_assign_node_name``: validity, namespace clash, duplicate, length — in that order."""
        if requested is None:
            name = self.session.namer.next()
        else:
            name = str(requested)
            if not id_wellformed(name):
                raise OpenError(f"Invalid node-name: '{name}'")
        if any(b.name == name and b.kind.value == "root" for b in self.graph.backends.values()):
            raise OpenError(f"node-name={name} is conflicting with a device id")
        if name in self.graph.nodes:
            raise OpenError(f"Duplicate nodes with node-name='{name}'")
        if len(name) > MAX_NODE_NAME:
            raise OpenError("Node name too long")
        node.name = name
        node.name_seq = self.session.next_name_seq()
        self.tx.add_node(node)

    def _open_backing_file(
        self, node: BlockNode, spec: DriverSpec, parent_options: OptionSet
    ) -> None:
        """``bdrv_open_backing_file``: the backing from options, a reference, or the header."""
        if self.graph.child_edge(node.name, "backing") is not None:
            return
        node.flags &= ~OpenFlag.NO_BACKING
        options = parent_options.extract("backing.")
        ref = parent_options.values.get("backing")
        reference = ref if isinstance(ref, str) else None
        backing_filename: str | None = None
        implicit_backing = False
        if reference is not None or "file.filename" in options:
            pass
        elif not node.backing_file and not len(options):
            return
        else:
            if not len(options):
                implicit_backing = node.auto_backing_file == node.backing_file
            backing_filename = full_backing_filename(self.graph, node.name)
        if not spec.supports_backing:
            raise OpenError("Driver doesn't support backing files")
        if reference is None and node.backing_format and "driver" not in options:
            options.put(
                "driver",
                node.backing_format,
                Provenance(Source.DEFAULT, detail="backing format from the image header"),
            )
        role = Role.FILTERED | Role.PRIMARY if spec.is_filter else Role.COW
        try:
            with backing_chain(self, node, backing_filename if implicit_backing else None):
                backing = self.open_inherit(
                    backing_filename, reference, options, OpenFlag.NONE, node, role, "backing", True
                )
        except TxgraphError as err:
            node.flags |= OpenFlag.NO_BACKING
            raise OpenError(f"Could not open backing file: {err.desc}") from err
        if implicit_backing:
            refresh_filename(self.graph, backing)
            node.auto_backing_file = self.graph.nodes[backing].filename
        set_backing(self, node, backing, role)
        parent_options.discard("backing")


def set_backing(opener: Opener, node: BlockNode, backing: str, role: Role) -> None:
    """``bdrv_set_backing_hd`` for a fresh link: attach, refresh perms, tell the data plane."""
    opener.attach_child(node, backing, "backing", role)


def _merge_json_filename(opts: OptionSet, filename: str) -> None:
    """``parse_json_protocol``: a json: filename's options, merged under the explicit ones."""
    text = filename[len("json:") :]
    try:
        value = parse_json_text(text)
    except ValueError as err:
        raise OpenError(f"Could not parse the JSON options: {err}") from err
    if not isinstance(value, dict):
        raise OpenError("Invalid JSON object given")
    prov = Provenance(Source.JSON, detail=filename if len(filename) < 80 else filename[:77] + "...")
    for key, item in flatten(value).items():
        opts.set_default(key, item, prov)
