"""The -drive specification, part 2: ``blockdev_init``'s common options, the open, the BlockBackend.

Continues :mod:`txgraph.drive.spec` (same registry). The open itself is not
re-implemented: the rule ``open`` hands the options to txgraph's own
``bdrv_open_inherit`` (:class:`txgraph.ops.open.Opener`) on a scratch session,
which probes formats, follows backing chains from headers and parses json:
filenames exactly as blockdev-add does.
"""

from __future__ import annotations

import os
import tempfile

from txgraph.drive.qapi_types import SizeError, typed_blockdev_options
from txgraph.drive.rules import DriveContext, DriveState, rule
from txgraph.drive.spec import COMMON_KEYS, THROTTLE_KEYS, _absorb
from txgraph.errors import TxgraphError
from txgraph.model.node import OpenFlag
from txgraph.model.options import Provenance, Source, flatten, parse_bool
from txgraph.model.perm_bits import Role
from txgraph.ops.inherit import OptionSet

__all__ = ["THROTTLE_VALUE_MAX", "temp_dir"]

THROTTLE_VALUE_MAX = 1_000_000_000_000_000
#: the hint QemuOpts appends to a bad size (parse_option_size)
_SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively.\n"
)
_ENTRY = Provenance(Source.ENTRY_DEFAULT, detail="blockdev_init")


@rule("common-options", "blockdev_init, qemu_common_drive_opts (blockdev.c)", "blockdev_init")
def common_options(st: DriveState, ctx: DriveContext) -> None:
    """`snapshot`, `aio`, `format`, `werror`, `rerror`, `read-only`, `copy-on-read`,
    `detect-zeroes`, `cache.writeback`, `throttling.*` and `stats-account-*` belong to the
    drive, not to a node: they are taken out (typed), the rest goes to the node."""
    st.common = _absorb(st, COMMON_KEYS)
    for key in [k for k in st.opts if k.startswith("stats-intervals.")]:
        st.backend.setdefault("stats-intervals", []).append(st.opts.pop(key))


@rule(
    "aio-and-copy-on-read",
    "extract_common_blockdev_options, bdrv_parse_aio (blockdev.c, block.c)",
    "blockdev_init",
)
def aio_and_copy_on_read(st: DriveState, ctx: DriveContext) -> None:
    """`copy-on-read=on` becomes the top node's COPY_ON_READ open flag (no filter node in
    7.2); `aio=native`/`io_uring` become NATIVE_AIO/IO_URING flags inherited by every
    protocol node, `aio=threads` is the default; anything else is `invalid aio option`."""
    if parse_bool(st.common.get("copy-on-read", "off")):
        st.flags.add("COPY_ON_READ")
        st.backend["copy-on-read"] = {
            "value": True,
            "reason": "BDRV_O_COPY_ON_READ on the top node; blockdev-add has no "
            "such flag (the equivalent there is a copy-on-read filter node)",
        }
    aio = st.common.get("aio")
    if aio is not None:
        if aio not in ("native", "threads", "io_uring"):
            raise st.fail("invalid aio option")
        if aio != "threads":
            st.flags.add("NATIVE_AIO" if aio == "native" else "IO_URING")
        st.note("aio", aio, "aio-and-copy-on-read")


@rule(
    "throttling",
    "extract_common_blockdev_options, throttle_is_valid (blockdev.c, util/throttle.c)",
    "blockdev_init",
)
def throttling(st: DriveState, ctx: DriveContext) -> None:
    """`throttling.*` is checked as one configuration: totals and read/write values exclude
    each other, `iops-size` needs an iops value, `*-max` needs its average and may not be
    lower, burst lengths must be >= 1 and need a max; values at most 1e15."""
    num = {
        k: int(st.common[k], 0) for k in (*THROTTLE_KEYS, "throttling.iops-size") if k in st.common
    }
    bucket = {}
    for kind in ("bps", "iops"):
        for d in ("total", "read", "write"):
            b = f"throttling.{kind}-{d}"
            bucket[(kind, d)] = (
                num.get(b, 0),
                num.get(b + "-max", 0),
                num.get(b + "-max-length", 1),
            )
    for kind in ("bps", "iops"):
        for field in (0, 1):
            if bucket[(kind, "total")][field] and (
                bucket[(kind, "read")][field] or bucket[(kind, "write")][field]
            ):
                raise st.fail(
                    "bps/iops/max total values and read/write values cannot be used "
                    "at the same time"
                )
    if num.get("throttling.iops-size", 0) and not any(
        bucket[("iops", d)][0] for d in ("total", "read", "write")
    ):
        raise st.fail("iops size requires an iops value to be set")
    for avg, mx, length in bucket.values():
        if avg > THROTTLE_VALUE_MAX or mx > THROTTLE_VALUE_MAX:
            raise st.fail(f"bps/iops/max values must be within [0, {THROTTLE_VALUE_MAX}]")
        if not length:
            raise st.fail("the burst length cannot be 0")
        if length > 1 and not mx:
            raise st.fail("burst length set without burst rate")
        if mx and not avg:
            raise st.fail("bps_max/iops_max require corresponding bps/iops values")
        if mx and mx < avg:
            raise st.fail("bps_max/iops_max cannot be lower than bps/iops")
    enabled = any(avg or mx for avg, mx, _ in bucket.values())
    # qmp_query_block's shape: the averages always; a *_max (and its length) only when
    # set, iops_size only when non-zero, the group whenever throttling is on
    q: dict[str, object] = {}
    for short, (kind, d) in (
        ("bps", ("bps", "total")),
        ("bps_rd", ("bps", "read")),
        ("bps_wr", ("bps", "write")),
        ("iops", ("iops", "total")),
        ("iops_rd", ("iops", "read")),
        ("iops_wr", ("iops", "write")),
    ):
        avg, mx, length = bucket[(kind, d)]
        q[short] = avg
        if enabled and mx:
            q[short + "_max"] = mx
            q[short + "_max_length"] = length
    if enabled and num.get("throttling.iops-size", 0):
        q["iops_size"] = num["throttling.iops-size"]
    if enabled:
        q["group"] = st.common.get("throttling.group") or st.id
    st.backend["throttle"] = q
    st.backend["throttle-reason"] = (
        "legacy throttling stays on the BlockBackend in 7.2 "
        "(blk_io_limits_enable), not a throttle node"
    )


@rule(
    "detect-zeroes-value",
    "extract_common_blockdev_options, qapi_enum_parse (blockdev.c, qapi/qapi-util.c)",
    "blockdev_init",
)
def detect_zeroes_value(st: DriveState, ctx: DriveContext) -> None:
    """`detect-zeroes` is off, on or unmap (`invalid parameter value: <x>`); it is set on
    the top node only after the open, without the blockdev-add check against `discard`."""
    value = st.common.get("detect-zeroes")
    if value is not None and value not in ("off", "on", "unmap"):
        raise st.fail(f"invalid parameter value: {value}")


@rule("format", "blockdev_init (blockdev.c)", "blockdev_init")
def format_option(st: DriveState, ctx: DriveContext) -> None:
    """`format=X` becomes the node option `driver=X`; `driver` and `format` together is
    `Cannot specify both 'driver' and 'format'`."""
    fmt = st.common.get("format")
    if fmt is not None:
        if "driver" in st.opts:
            raise st.fail("Cannot specify both 'driver' and 'format'")
        st.opts["driver"] = fmt
        st.note("driver", fmt, "format")


@rule("snapshot-flag", "blockdev_init (blockdev.c)", "blockdev_init")
def snapshot_flag(st: DriveState, ctx: DriveContext) -> None:
    """`snapshot=on` becomes the SNAPSHOT open flag: a temporary qcow2 overlay on top."""
    if parse_bool(st.common.get("snapshot", "off")):
        st.flags.add("SNAPSHOT")


@rule("write-cache", "blockdev_init, blk_set_enable_write_cache (blockdev.c)", "blockdev_init")
def write_cache(st: DriveState, ctx: DriveContext) -> None:
    """`cache.writeback` (default on) is the BlockBackend's write cache, not a node option."""
    wb = bool(parse_bool(st.common.get("cache.writeback", "on")))
    st.backend["write-cache"] = wb
    st.note("write-cache", wb, "write-cache")


def temp_dir() -> str:
    """``get_tmp_filename``: $TMPDIR, where the default /tmp is replaced by /var/tmp."""
    tmp = os.environ.get("TMPDIR") or "/tmp"
    return "/var/tmp" if tmp == "/tmp" else tmp


@rule(
    "open",
    "blockdev_init, blk_new_open, bdrv_open_inherit, bdrv_fill_options (block.c)",
    "bdrv_open",
)
def open_drive(st: DriveState, ctx: DriveContext) -> None:
    """No `file` and no node option: an empty drive (no node; its flags and detect-zeroes
    wait for a medium). Otherwise the defaults `cache.direct=off`, `cache.no-flush=off`,
    `read-only=<drive>` and `auto-read-only=on` are added and the image is opened as
    `bdrv_open(file, options, flags)`: json: parsed, protocol from the filename, the format
    probed when missing, the backing chain from the headers. With snapshot=on
    (`bdrv_temp_snapshot_options`) the image is opened as a backing file would be:
    read-only, `discard=unmap`, without the top-only flags."""
    node_keys = {k: v for k, v in st.opts.items() if k not in ("read-only", "copy-on-read")}
    if not st.file and not node_keys:
        st.backend["node-name"] = None
        st.backend["empty"] = {
            "read-only": st.read_only,
            "detect-zeroes": st.common.get("detect-zeroes", "off"),
            "reason": "no medium: the BlockBackend keeps the open flags for "
            "a later change (blockdev_init root state)",
        }
        return
    for key, value in node_keys.items():
        if (key == "node-name" or key.endswith(".node-name")) and any(
            d.id == value for d in ctx.drives
        ):
            raise st.fail(f"node-name={value} is conflicting with a device id")
    for key, value in node_keys.items():
        if (key == "backing" or key.endswith(".backing")) and value == "":
            # bdrv_open_inherit: the empty string is the old spelling of null
            ctx.warn(
                st.arg.location, 'Use of "backing": "" is deprecated; use "backing": null instead'
            )
    opts = dict(node_keys)
    opts["read-only"] = "on" if st.read_only else "off"
    for key, value in (
        ("cache.direct", "off"),
        ("cache.no-flush", "off"),
        ("auto-read-only", "on"),
    ):
        opts.setdefault(key, value)
    flags = OpenFlag.NONE
    for flag in st.flags - {"SNAPSHOT"}:
        flags |= OpenFlag[flag]
    if "SNAPSHOT" in st.flags:
        # bdrv_open_inherit: the image is opened with the backing-file rules applied to itself
        st.backend["snapshot-request"] = {k: opts[k] for k in ("read-only",) if k in opts}
        if "discard" in opts:
            st.backend["snapshot-request"]["discard"] = opts["discard"]
        opts["read-only"] = "on"
        opts.setdefault("auto-read-only", "off")
        opts.setdefault("discard", "unmap")
        flags &= ~OpenFlag.COPY_ON_READ
    try:
        typed = flatten(typed_blockdev_options(opts))
    except SizeError as err:
        failure = st.fail(str(err))
        failure.hint = _SIZE_HINT
        raise failure from err
    options = OptionSet.explicit(typed)
    for key in ("cache.direct", "cache.no-flush", "auto-read-only"):
        if key not in node_keys and key in options.values:
            options.prov[key] = _ENTRY
    from txgraph.ops.open import Opener

    session = ctx.session
    try:
        with session.transaction() as tx:
            st.top = Opener(session, tx).open_inherit(
                st.file or None, None, options, flags, None, Role.NONE, None, True
            )
            tx.set(session.graph.nodes[st.top], "monitor_owned", True)
    except TxgraphError as err:
        failure = st.fail(err.desc)
        if err.desc.endswith("expects a non-negative number below 2^64"):
            # parse_option_size (QemuOpts): -drive values are strings parsed as sizes
            failure.hint = _SIZE_HINT
        raise failure from err
    _check_native_aio(st, ctx, st.top)
    if "SNAPSHOT" in st.flags:
        _temp_snapshot(st, ctx)
    st.backend["node-name"] = st.top


def _check_native_aio(st: DriveState, ctx: DriveContext, name: str) -> None:
    """``raw_open_common`` (file-posix): the NATIVE_AIO flag reaches every protocol node it
    inherits to, and there it needs ``cache.direct=on``."""
    if "NATIVE_AIO" not in st.flags:
        return
    graph = ctx.session.graph
    node = graph.nodes[name]
    if node.driver in ("file", "host_device", "host_cdrom") and not node.cache_direct:
        if st.top is not None:
            ctx.engine.execute({"execute": "blockdev-del", "arguments": {"node-name": st.top}})
        st.top = None
        raise st.fail(
            "aio=native was specified, but it requires cache.direct=on, which was not specified."
        )
    for child, _edge in graph.children(name):
        if graph.nodes[child].inherits_from == name:
            _check_native_aio(st, ctx, child)


def _temp_snapshot(st: DriveState, ctx: DriveContext) -> None:
    """``bdrv_append_temp_snapshot``: a qcow2 file of the image's size in the temp dir."""
    fd, path = tempfile.mkstemp(prefix="vl.", dir=temp_dir())
    os.close(fd)
    ctx.temp_files.append(path)
    assert st.top is not None
    reply = ctx.engine.execute(
        {
            "execute": "blockdev-snapshot-sync",
            "arguments": {
                "node-name": st.top,
                "snapshot-file": path,
                "format": "qcow2",
                "mode": "absolute-paths",
                "snapshot-node-name": f"txg-temp-snapshot-{len(ctx.temp_files)}",
            },
        }
    )
    if "error" in reply:
        raise st.fail(f"Could not create temporary overlay '{path}': {reply['error']['desc']}")
    st.snapshot_base = st.top
    request = st.backend.pop("snapshot-request")
    st.backend["snapshot"] = {
        "overlay": path,
        "options": {"driver": "qcow2", "cache.direct": "off", "cache.no-flush": "on", **request},
        "reason": "snapshot=on: a temporary qcow2 overlay (cache=unsafe) above the image; "
        "QEMU unlinks the file right after opening it (bdrv_temp_snapshot_options, "
        "bdrv_append_temp_snapshot); txgraph drive creates it so that the commands "
        "can open it: remove it once they have",
    }


@rule("detect-zeroes-top", "blockdev_init (blockdev.c)", "backend")
def detect_zeroes_top(st: DriveState, ctx: DriveContext) -> None:
    """The drive's `detect-zeroes` lands on the resulting top node (the overlay with
    snapshot=on), set after the open and so never checked against `discard`."""
    value = st.common.get("detect-zeroes", "off")
    st.backend["detect-zeroes"] = value
    if st.top is not None:
        st.note("detect-zeroes", value, "detect-zeroes-top")


@rule("probed-raw", "raw_open (block/raw-format.c)", "backend")
def probed_raw(st: DriveState, ctx: DriveContext) -> None:
    """A writable image whose format was probed as raw prints QEMU's warning; writes to its
    first sector that would make it probe as something else fail with EPERM."""
    if st.top is None:
        return
    graph = ctx.session.graph
    base = graph.nodes[st.snapshot_base or st.top]
    if base.probed and base.driver == "raw" and not base.read_only:
        kids = [c for c, e in graph.children(base.name) if e.name == "file"]
        fname = graph.nodes[kids[0]].filename if kids else base.filename
        ctx.warnings.append(
            f"WARNING: Image format was not specified for '{fname}' and probing guessed raw.\n"
            "         Automatically detecting the format is dangerous for raw images, write "
            "operations on block 0 will be restricted.\n"
            "         Specify the 'raw' format explicitly to remove the restrictions."
        )
        st.backend["probed-raw"] = {
            "value": True,
            "reason": "the format was probed: QEMU restricts writes to block 0 "
            "(raw_co_pwritev); a blockdev-add with driver=raw has no such restriction",
        }


@rule("monitor-add-blk", "monitor_add_blk (block/block-backend.c)", "backend")
def monitor_add_blk(st: DriveState, ctx: DriveContext) -> None:
    """The drive id names the BlockBackend; it may not equal any node name (`Device name
    '<id>' conflicts with an existing node name`). On this refusal the nodes just opened
    are closed again."""
    if st.id in ctx.session.graph.nodes:
        if st.top is not None:
            ctx.engine.execute({"execute": "blockdev-del", "arguments": {"node-name": st.top}})
        raise st.fail(f"Device name '{st.id}' conflicts with an existing node name")
