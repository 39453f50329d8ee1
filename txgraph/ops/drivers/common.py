"""Driver open steps: what each driver's ``bdrv_open`` does to the graph.

Each function consumes the driver's options from the working set, opens and
attaches the driver's children in QEMU's order, and prepares the node's
driver object through the transaction's RuntimeStage (so open errors come from
real files and real headers, while no request can reach the new node before
the commit). The order matters: it decides which error wins and which
auto-name counter value each node receives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from txgraph.errors import IOFailure, OpenError, TxgraphError
from txgraph.model.drivers import DriverSpec
from txgraph.model.node import BlockNode, OpenFlag
from txgraph.model.options import array_entries, parse_bool
from txgraph.model.perm import Role
from txgraph.ops.crypto_open import crypto_openers, qcow2_crypto_options
from txgraph.ops.freeze import freeze_backing_chain
from txgraph.ops.inherit import OptionSet
from txgraph.ops.perms import refresh_perms
from txgraph.ops.pr_manager import pr_manager_lookup

if TYPE_CHECKING:
    # open.py dispatches to this module; the Opener type is only needed for annotations.
    from txgraph.ops.open import Opener

__all__ = ["open_driver"]

OpenFn = Callable[["Opener", BlockNode, DriverSpec, "OptionSet"], None]


def open_driver(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    _OPENERS.get(spec.name, _open_protocol)(opener, node, spec, work)


def _consume(work: OptionSet, spec: DriverSpec) -> dict[str, Any]:
    """Take every option the driver understands out of the working set."""
    taken = {k: v for k, v in work.values.items() if spec.accepts_option(k)}
    for key in taken:
        work.discard(key)
    return taken


def _runtime_open(
    opener: Opener,
    node: BlockNode,
    children: dict[str, str],
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Prepare the node's driver object and record what it reports about the image.

    The driver gets the resolved common settings typed (flags, detect-zeroes), not
    the strings blockdev-add stored in the options; ``probed`` is typed too: the
    data plane enforces the probed-raw rule (raw_co_pwritev, CVE-2008-2004) from it.
    ``extra`` carries what only the driver sees (a secret reference), never the model.
    """
    options = {**node.options, **node.runtime_options(), **(extra or {})}
    try:
        info = opener.rt.open(
            node.name, node.driver, options, children, node.read_only, probed=node.probed
        )
    except IOFailure as err:
        # The node opened but its size could not be determined (bdrv_open_driver).
        raise OpenError(f"Could not refresh total sector count: {err.desc}") from err
    except TxgraphError:
        raise
    except OSError as err:  # a driver that let an OS error escape: still QEMU-shaped text
        raise OpenError(f"Could not open '{node.filename}': {err.strerror}") from err
    if opener.rt.read_only(node.name) and not node.read_only:
        # auto-read-only: the driver fell back to a read-only open (bdrv_apply_auto_read_only)
        node.flags &= ~OpenFlag.RDWR
    node.image = _image_dict(info)
    if info.backing_file:
        node.backing_file = info.backing_file
        node.auto_backing_file = info.backing_file
    if info.backing_format:
        node.backing_format = info.backing_format


def image_dict(info: Any) -> dict[str, Any]:
    """The ``image`` member the model keeps from what the data plane reported at open."""
    return _image_dict(info)


def _image_dict(info: Any) -> dict[str, Any]:
    image: dict[str, Any] = {"virtual-size": info.virtual_size, "format": info.format}
    if info.actual_size is not None:
        image["actual-size"] = info.actual_size
    if info.cluster_size:
        image["cluster-size"] = info.cluster_size
    if info.format_specific is not None:
        image["format-specific"] = info.format_specific
    image["dirty-flag"] = info.dirty
    image.update(info.extra)
    return image


def _open_protocol(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """file, host_device, null-co, null-aio, nbd: no children, options only."""
    opts = _consume(work, spec)
    if spec.name in ("file", "host_device"):
        if "pr-manager" in opts:  # raw_open_common looks it up before opening the file
            pr_manager_lookup(opener.session, opts["pr-manager"])
        aio = opts.get("aio", "threads")
        if aio == "native" and not node.cache_direct:
            raise OpenError(
                "aio=native was specified, but it requires cache.direct=on, "
                "which was not specified."
            )
    _runtime_open(opener, node, {})


def _open_raw(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``raw_open``: an offset/size window makes the file edge DATA instead of FILTERED."""
    opts = _consume(work, spec)
    for key in ("offset", "size"):
        if key in opts and (not isinstance(opts[key], int) or opts[key] < 0):
            raise OpenError(f"Parameter '{key}' expects a non-negative number below 2^64")
    windowed = "size" in opts or bool(opts.get("offset", 0))
    role = Role.DATA | Role.PRIMARY if windowed else Role.FILTERED | Role.PRIMARY
    child = opener.open_child(None, work, "file", node, role, False)
    assert child is not None
    _runtime_open(opener, node, {"file": child})


def _open_filter(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """throttle, copy-on-read, preallocate, compress: one filtered ``file`` child."""
    child = opener.open_child(None, work, "file", node, Role.FILTERED | Role.PRIMARY, False)
    assert child is not None
    opts = _consume(work, spec)
    if spec.name == "throttle":
        group = opts.get("throttle-group")
        if group is None:
            raise OpenError("Parameter 'throttle-group' is missing")
        obj = opener.session.objects.get(group)
        if obj is None or obj.qom_type != "throttle-group":
            raise OpenError(f"Throttle group '{group}' does not exist")
    bottom = opts.get("bottom") if spec.name == "copy-on-read" else None
    if bottom is not None:
        if bottom not in opener.graph.nodes:
            raise OpenError(f"Bottom node '{bottom}' not found")
    _runtime_open(opener, node, {"file": child})
    if bottom is not None:
        # cor_open holds the chain it copies from still, down to the bottom.
        freeze_backing_chain(opener.session, opener.tx, node.name, bottom)


def _open_blkdebug(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``blkdebug_open``: options and config first, then the ``image`` child."""
    opts = _consume(work, spec)
    image_filename = opts.pop("x-image", None)
    config = opts.get("config")
    if isinstance(config, str) and config:
        try:
            # QEMU reads the config before opening the image child; the data plane
            # does the file access.
            opener.rt.check_readable(config)
        except OSError as err:
            raise OpenError(f"Could not read blkdebug config file: {err.strerror}") from err
    child = opener.open_child(
        image_filename, work, "image", node, Role.FILTERED | Role.PRIMARY, False
    )
    assert child is not None
    _check_blkdebug_limits(opts)
    _runtime_open(opener, node, {"image": child})


def _check_blkdebug_limits(opts: dict[str, Any]) -> None:
    """``blkdebug_open``'s alignment overrides: powers of two and multiples of each other."""

    def size(key: str) -> int:
        value = opts.get(key, 0)
        return int(value) if isinstance(value, int) else 0

    def pow2(v: int) -> bool:
        return v > 0 and not v & (v - 1)

    int_max = 2**31 - 1
    align = size("align")
    if align and (align >= int_max or not pow2(align)):
        raise OpenError(f"Cannot meet constraints with align {align}")
    base = max(align, 1)
    max_transfer = size("max-transfer")
    if max_transfer and (max_transfer >= int_max or max_transfer % base):
        raise OpenError(f"Cannot meet constraints with max-transfer {max_transfer}")
    opt_wz = size("opt-write-zero")
    if opt_wz and (opt_wz >= int_max or opt_wz % base):
        raise OpenError(f"Cannot meet constraints with opt-write-zero {opt_wz}")
    max_wz = size("max-write-zero")
    if max_wz and (max_wz >= int_max or max_wz % max(opt_wz, base)):
        raise OpenError(f"Cannot meet constraints with max-write-zero {max_wz}")
    opt_d = size("opt-discard")
    if opt_d and (opt_d >= int_max or opt_d % base):
        raise OpenError(f"Cannot meet constraints with opt-discard {opt_d}")
    max_d = size("max-discard")
    if max_d and (max_d >= int_max or max_d % max(opt_d, base)):
        raise OpenError(f"Cannot meet constraints with max-discard {max_d}")


def _open_blkverify(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``blkverify_open``: ``raw`` (the reference, filtered) first, then ``test``."""
    opts = _consume(work, spec)
    raw = opener.open_child(
        opts.get("x-raw"), work, "raw", node, Role.FILTERED | Role.PRIMARY, False
    )
    test = opener.open_child(opts.get("x-image"), work, "test", node, Role.DATA, False)
    assert raw is not None and test is not None
    _runtime_open(opener, node, {"raw": raw, "test": test})


def _open_qcow2(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``qcow2_open``: ``file`` (IMAGE), the header, then the external data file rules."""
    child = opener.open_child(None, work, "file", node, Role.IMAGE, False)
    assert child is not None
    data_file_given = "data-file" in work or any(k.startswith("data-file.") for k in work.values)
    opts = {k: work.values[k] for k in work.values if spec.accepts_option(k)}
    _consume_qcow2_options(work, spec)
    _runtime_open(opener, node, {"file": child}, qcow2_crypto_options(opener, opts))
    info = opener.rt.info(node.name)
    check_qcow2_cache_options(opts, info.cluster_size or 65536)
    data_child = (
        opener.open_child(None, work, "data-file", node, Role.DATA, True)
        if data_file_given
        else None
    )
    if info.has_external_data_file:
        if data_child is None and info.data_file:
            data_child = opener.open_child(
                info.data_file, work, "data-file", node, Role.DATA, False
            )
        if data_child is None:
            raise OpenError("'data-file' is required for this image")
        # The metadata file holds no guest data once a data file exists.
        file_edge = opener.graph.child_edge(node.name, "file")
        assert file_edge is not None
        opener.tx.set(file_edge[1], "role", Role.METADATA | Role.PRIMARY)
        refresh_perms(opener.session, opener.tx, [node.name])
    elif data_child is not None:
        raise OpenError("'data-file' can only be set for images with an external data file")


def check_qcow2_cache_options(opts: dict[str, Any], cluster_size: int) -> None:
    """``read_cache_sizes`` and ``qcow2_update_options_prepare``'s cache checks."""
    combined = opts.get("cache-size")
    l2 = opts.get("l2-cache-size")
    refcount = opts.get("refcount-cache-size")
    if combined is not None:
        if l2 is not None and refcount is not None:
            raise OpenError(
                "l2-cache-size, refcount-cache-size, and cache-size may not be set at the same time"
            )
        if l2 is not None and l2 > combined:
            raise OpenError("l2-cache-size may not exceed cache-size")
        if refcount is not None and refcount > combined:
            raise OpenError("refcount-cache-size may not exceed cache-size")
    entry = opts.get("l2-cache-entry-size")
    if entry is not None and (entry < 512 or entry > cluster_size or entry & (entry - 1)):
        raise OpenError(
            "L2 cache entry size must be a power of two between 512 and the "
            f"cluster size ({cluster_size})"
        )
    interval = opts.get("cache-clean-interval")
    if interval is not None and interval > 0xFFFFFFFF:
        raise OpenError("Cache clean interval too big")


def _consume_qcow2_options(work: OptionSet, spec: DriverSpec) -> None:
    for key in [
        k
        for k in work.values
        if spec.accepts_option(k) and k != "data-file" and not k.startswith("data-file.")
    ]:
        work.discard(key)


def _open_quorum(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``quorum_open``: validate the children array and threshold, then open each child."""
    count = array_entries(work.values, "children.")
    if count < 0:
        raise OpenError("Option children is not a valid array")
    if count < 1:
        raise OpenError("Number of provided children must be 1 or more")
    opts = _consume(work, spec)
    threshold = opts.get("vote-threshold", 0)
    if not isinstance(threshold, int) or threshold < 1:
        raise OpenError("Parameter 'vote-threshold' expects a value >= 1")
    if threshold > count:
        raise OpenError("threshold may not exceed children count")
    pattern = opts.get("read-pattern", "quorum")
    if pattern not in ("quorum", "fifo"):
        raise OpenError("Please set read-pattern as fifo or quorum")
    if pattern == "quorum":
        # blkverify and rewrite-corrupted only mean something when reads vote.
        blkverify = bool(parse_bool(opts.get("blkverify", False)))
        if blkverify and (count != 2 or threshold != 2):
            raise OpenError(
                "blkverify=on can only be set if there are exactly two files and "
                "vote-threshold is 2"
            )
        rewrite = bool(parse_bool(opts.get("rewrite-corrupted", False)))
        if rewrite and blkverify:
            raise OpenError("rewrite-corrupted=on cannot be used with blkverify=on")
    children: dict[str, str] = {}
    for index in range(count):
        key = f"children.{index}"
        child = opener.open_child(None, work, key, node, Role.DATA, False)
        assert child is not None
        children[key] = child
    node.next_child_index = count
    _runtime_open(opener, node, children)


def _open_cbw(opener: Opener, node: BlockNode, spec: DriverSpec, work: OptionSet) -> None:
    """``cbw_open``: the filtered ``file``, then the ``target`` written before each guest write."""
    child = opener.open_child(None, work, "file", node, Role.FILTERED | Role.PRIMARY, False)
    target = opener.open_child(None, work, "target", node, Role.DATA, False)
    assert child is not None and target is not None
    opts = _consume(work, spec)
    if "bitmap" in opts:
        raise OpenError("Bitmaps for copy-before-write are not supported by txgraph")
    _runtime_open(opener, node, {"file": child, "target": target})


_OPENERS: dict[str, OpenFn] = {
    "copy-before-write": _open_cbw,
    "raw": _open_raw,
    "qcow2": _open_qcow2,
    "throttle": _open_filter,
    "copy-on-read": _open_filter,
    "preallocate": _open_filter,
    "compress": _open_filter,
    "blkdebug": _open_blkdebug,
    "blkverify": _open_blkverify,
    "quorum": _open_quorum,
}
_OPENERS.update(crypto_openers(_runtime_open, _consume))
