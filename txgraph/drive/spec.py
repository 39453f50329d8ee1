"""The -drive specification, part 1: what ``drive_new`` and ``blockdev_init`` do to the options.

Each rule is one step of QEMU 7.2's blockdev.c (reference/qemu-options.md §7),
in QEMU's order; the first refusal stops the drive with QEMU's message. The
node-level rules (the open, snapshot=on, detect-zeroes, the BlockBackend) are
in :mod:`txgraph.drive.spec_open`; both register into :data:`RULES`.
"""

from __future__ import annotations

from txgraph.drive.rules import RULES, DriveContext, DriveState, rule
from txgraph.model.options import parse_bool

__all__ = [
    "RULES",
    "CACHE_MODES",
    "RENAMES",
    "LEGACY_KEYS",
    "COMMON_KEYS",
    "THROTTLE_KEYS",
    "INTERFACES",
]

#: drive_new's opt_renames: legacy name -> QMP name
RENAMES = (
    ("iops", "throttling.iops-total"),
    ("iops_rd", "throttling.iops-read"),
    ("iops_wr", "throttling.iops-write"),
    ("bps", "throttling.bps-total"),
    ("bps_rd", "throttling.bps-read"),
    ("bps_wr", "throttling.bps-write"),
    ("iops_max", "throttling.iops-total-max"),
    ("iops_rd_max", "throttling.iops-read-max"),
    ("iops_wr_max", "throttling.iops-write-max"),
    ("bps_max", "throttling.bps-total-max"),
    ("bps_rd_max", "throttling.bps-read-max"),
    ("bps_wr_max", "throttling.bps-write-max"),
    ("iops_size", "throttling.iops-size"),
    ("group", "throttling.group"),
    ("readonly", "read-only"),
)

#: bdrv_parse_cache_mode: mode -> (cache.writeback, cache.direct, cache.no-flush)
CACHE_MODES = {
    "none": (True, True, False),
    "off": (True, True, False),
    "writeback": (True, False, False),
    "unsafe": (True, False, True),
    "directsync": (False, True, False),
    "writethrough": (False, False, False),
}

#: qemu_legacy_drive_opts: key -> QemuOpts type
LEGACY_KEYS = {
    "bus": "number",
    "unit": "number",
    "index": "number",
    "media": "string",
    "if": "string",
    "file": "string",
    "werror": "string",
    "rerror": "string",
    "read-only": "bool",
    "copy-on-read": "bool",
}

_BUCKETS = ("bps-total", "bps-read", "bps-write", "iops-total", "iops-read", "iops-write")
THROTTLE_KEYS = tuple(f"throttling.{b}{s}" for b in _BUCKETS for s in ("", "-max", "-max-length"))

#: qemu_common_drive_opts: key -> QemuOpts type
COMMON_KEYS = {
    "snapshot": "bool",
    "aio": "string",
    "format": "string",
    "rerror": "string",
    "werror": "string",
    "read-only": "bool",
    "copy-on-read": "bool",
    "detect-zeroes": "string",
    "stats-account-invalid": "bool",
    "stats-account-failed": "bool",
    "cache.writeback": "bool",
    "throttling.group": "string",
    "throttling.iops-size": "number",
    **dict.fromkeys(THROTTLE_KEYS, "number"),
}

#: if_name[] and if_max_devs[] (blockdev.c): 0 means no per-bus limit
INTERFACES = {
    "none": 0,
    "ide": 2,
    "scsi": 7,
    "floppy": 0,
    "pflash": 0,
    "mtd": 0,
    "sd": 0,
    "virtio": 0,
    "xen": 0,
}


def _typed(st: DriveState, key: str, value: str, kind: str) -> None:
    """``qemu_opts_absorb_qdict``'s per-type check (``parse_option_bool``/``_number``)."""
    if kind == "bool" and parse_bool(value) is None:
        raise st.fail(f"Parameter '{key}' expects 'on' or 'off'")
    if kind == "number":
        try:
            number = int(value, 0)
        except ValueError:
            number = -1
        if number < 0:
            raise st.fail(f"Parameter '{key}' expects a number")


def _absorb(st: DriveState, keys: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in [k for k in st.opts if k in keys]:
        value = st.opts.pop(key)
        _typed(st, key, value, keys[key])
        out[key] = value
    return out


@rule("snapshot-switch", "drive_enable_snapshot (softmmu/vl.c)", "drive_new")
def snapshot_switch(st: DriveState, ctx: DriveContext) -> None:
    """`-snapshot` adds `snapshot=on` to every drive that does not say `snapshot=` itself."""
    if ctx.snapshot_switch and not st.arg.has("snapshot"):
        st.arg.set("snapshot", "on")
        st.note("snapshot", "on", "snapshot-switch")


@rule("legacy-renames", "drive_new, qemu_opt_rename (blockdev.c)", "drive_new")
def legacy_renames(st: DriveState, ctx: DriveContext) -> None:
    """The old names `iops`, `bps_rd`, `iops_max`, `group`, `readonly`, ... become their QMP
    names (`throttling.iops-total`, ..., `read-only`); giving both forms is refused with
    `'<new>' and its alias '<old>' can't be used at the same time`."""
    for old, new in RENAMES:
        if st.arg.has(old):
            if st.arg.has(new):
                raise st.fail(f"'{new}' and its alias '{old}' can't be used at the same time")
            st.arg.pairs = [(new if k == old else k, v) for k, v in st.arg.pairs]
            st.note(new, st.arg.get(new), "legacy-renames")


@rule("cache-mode", "drive_new, bdrv_parse_cache_mode (block.c)", "drive_new")
def cache_mode(st: DriveState, ctx: DriveContext) -> None:
    """`cache=<mode>` expands into `cache.writeback`, `cache.direct`, `cache.no-flush`
    (none/off: wb+direct; writeback: wb; unsafe: wb+no-flush; directsync: direct;
    writethrough: nothing); an explicit `cache.*` key wins over the mode. An unknown mode
    is `invalid cache option`."""
    mode = st.arg.get("cache")
    if mode is None:
        return
    if mode not in CACHE_MODES:
        raise st.fail("invalid cache option")
    for key, value in zip(("cache.writeback", "cache.direct", "cache.no-flush"), CACHE_MODES[mode]):
        if not st.arg.has(key):
            st.arg.set(key, "on" if value else "off")
            st.note(key, "on" if value else "off", "cache-mode")
    st.arg.unset("cache")
    st.opts = st.arg.to_dict()


@rule("legacy-options", "drive_new, qemu_legacy_drive_opts (blockdev.c)", "drive_new")
def legacy_options(st: DriveState, ctx: DriveContext) -> None:
    """`bus`, `unit`, `index`, `media`, `if`, `file`, `werror`, `rerror`, `read-only` and
    `copy-on-read` are taken out of the options (typed: numbers, booleans)."""
    st.opts = st.arg.to_dict()
    st.legacy = _absorb(st, LEGACY_KEYS)


@rule("media", "drive_new (blockdev.c)", "drive_new")
def media(st: DriveState, ctx: DriveContext) -> None:
    """`media=disk` (default) or `media=cdrom`, which makes the drive read-only; anything
    else is `'<x>' invalid media`."""
    value = st.legacy.get("media")
    if value is None:
        return
    if value not in ("disk", "cdrom"):
        raise st.fail(f"'{value}' invalid media")
    st.media = value
    if value == "cdrom":
        st.read_only = True
        st.note("read-only", "on", "media")
    st.backend["media"] = {"value": value, "reason": "a property of the device (drive_new)"}


@rule("read-only-copy-on-read", "drive_new (blockdev.c)", "drive_new")
def read_only_copy_on_read(st: DriveState, ctx: DriveContext) -> None:
    """`read-only` (or cdrom) with `copy-on-read=on` drops copy-on-read with the warning
    `disabling copy-on-read on read-only drive`; both are put back as `on`/`off`."""
    st.read_only |= bool(parse_bool(st.legacy.get("read-only", "off")))
    cor = bool(parse_bool(st.legacy.get("copy-on-read", "off")))
    if st.read_only and cor:
        ctx.warn(st.arg.location, "disabling copy-on-read on read-only drive")
        cor = False
    st.opts["read-only"] = "on" if st.read_only else "off"
    st.opts["copy-on-read"] = "on" if cor else "off"
    st.note("read-only", st.opts["read-only"], "read-only-copy-on-read")


@rule("interface", "drive_new (blockdev.c)", "drive_new")
def interface(st: DriveState, ctx: DriveContext) -> None:
    """`if=` picks the bus type among ide, scsi, floppy, pflash, mtd, sd, virtio, xen, none
    (`unsupported bus type '<x>'` otherwise); without it, the machine's default type
    (`none` for `-M none`)."""
    value = st.legacy.get("if")
    if value is not None and value not in INTERFACES:
        raise st.fail(f"unsupported bus type '{value}'")
    st.interface = value if value is not None else ctx.block_default_type
    st.backend["if"] = {"value": st.interface, "reason": "the device's bus type (drive_new)"}


@rule(
    "address", "drive_new, drive_index_to_bus_id, drive_index_to_unit_id (blockdev.c)", "drive_new"
)
def address(st: DriveState, ctx: DriveContext) -> None:
    """`index` or `bus`+`unit` place the drive; `index` maps to bus = index / max_devs,
    unit = index % max_devs (ide: 2 per bus, scsi: 7); a missing unit takes the first free
    one. Errors: `index cannot be used with bus and unit`, `unit N too big (max is M)`,
    `drive with bus=B, unit=U (index=I) exists`."""
    max_devs = INTERFACES[st.interface]
    bus = int(st.legacy.get("bus", "0"), 0)
    unit = int(st.legacy.get("unit", "-1"), 0)
    index = int(st.legacy.get("index", "-1"), 0)
    if index != -1:
        if bus != 0 or unit != -1:
            raise st.fail("index cannot be used with bus and unit")
        bus, unit = (index // max_devs, index % max_devs) if max_devs else (0, index)
    taken = {(d.interface, d.bus, d.unit) for d in ctx.drives}
    if unit == -1:
        unit = 0
        while (st.interface, bus, unit) in taken:
            unit += 1
            if max_devs and unit >= max_devs:
                unit -= max_devs
                bus += 1
    if max_devs and unit >= max_devs:
        raise st.fail(f"unit {unit} too big (max is {max_devs - 1})")
    if (st.interface, bus, unit) in taken:
        raise st.fail(f"drive with bus={bus}, unit={unit} (index={index}) exists")
    st.bus, st.unit, st.index = bus, unit, index
    st.backend["address"] = {
        "bus": bus,
        "unit": unit,
        "reason": "where the device sits on its bus (drive_new)",
    }


@rule("default-id", "drive_new (blockdev.c)", "drive_new")
def default_id(st: DriveState, ctx: DriveContext) -> None:
    """Without `id`, the drive is named `<if><bus>-<hd|cd><unit>` on ide/scsi (e.g.
    `ide0-hd0`), `<if><bus><unit>` on other buses with a per-bus limit, else `<if><unit>`
    (`none0`, `virtio1`). `if=virtio` also queues a `virtio-blk` device for it."""
    if st.arg.id is not None:
        st.id = st.arg.id
        return
    max_devs = INTERFACES[st.interface]
    media_str = ""
    if st.interface in ("ide", "scsi"):
        media_str = "-cd" if st.media == "cdrom" else "-hd"
    if max_devs:
        st.id = f"{st.interface}{st.bus}{media_str}{st.unit}"
    else:
        st.id = f"{st.interface}{media_str}{st.unit}"
    st.note("id", st.id, "default-id")
    if st.interface == "virtio":
        st.backend["device"] = {
            "driver": "virtio-blk",
            "drive": st.id,
            "reason": "if=virtio queues -device virtio-blk (drive_new)",
        }


@rule("error-actions", "drive_new, parse_block_error_action (blockdev.c)", "drive_new")
def error_actions(st: DriveState, ctx: DriveContext) -> None:
    """`werror` (ignore|stop|report|enospc, default enospc) and `rerror` (ignore|stop|report,
    default report) are BlockBackend settings, accepted only on ide, scsi, virtio and none
    (`werror is not supported by this bus type`); a bad value is `'<x>' invalid write error
    action` / `'<x>' invalid read error action`."""
    st.file = st.legacy.get("file")
    for key in ("werror", "rerror"):
        value = st.legacy.get(key)
        if value is not None:
            if st.interface not in ("ide", "scsi", "virtio", "none"):
                raise st.fail(f"{key} is not supported by this bus type")
            st.opts[key] = value
    for key, what, allowed, default in (
        ("werror", "write", ("ignore", "stop", "report", "enospc"), "enospc"),
        ("rerror", "read", ("ignore", "stop", "report"), "report"),
    ):
        value = st.opts.get(key)
        if value is not None and value not in allowed:
            raise st.fail(f"'{value}' invalid {what} error action")
        st.backend[key] = {
            "value": value or default,
            "reason": "the BlockBackend's error policy (blockdev_init)",
        }
