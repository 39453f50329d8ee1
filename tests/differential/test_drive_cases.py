"""The case table of the -drive differential suite (tests/differential/test_drive.py).

Each case is a QEMU command line's drive arguments, run in a directory holding
the images of :data:`IMAGES`. The oracle is qemu-system-x86_64 7.2 itself; the
table holds no expected results. ``divergence`` names a known, explained
difference (the test then expects the comparison to fail, strictly).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["Case", "CASES", "IMAGES"]

#: qemu-img arguments run once in the template directory, in order; ``strip-backing-format``
#: turns an image's backing-format header extension into an unknown (ignored) one, as
#: qemu-img 7.2 no longer writes a backing file without a format
IMAGES: tuple[tuple[str, ...], ...] = (
    ("create", "-f", "qcow2", "base.qcow2", "1M"),
    ("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2"),
    ("create", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", "chain.qcow2"),
    ("create", "-f", "qcow2", "-u", "-b", "base.qcow2", "-F", "qcow2", "nofmt.qcow2", "1M"),
    ("strip-backing-format", "nofmt.qcow2"),
    (
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        'json:{"driver": "qcow2", "file": {"driver": "file", "filename": "base.qcow2"}}',
        "-F",
        "qcow2",
        "jsonback.qcow2",
        "1M",
    ),
    ("create", "-f", "raw", "raw.img", "1M"),
    ("create", "-f", "raw", "empty.img", "0"),
    ("create", "-f", "raw", "cd.iso", "2M"),
)


def j(obj: object) -> str:
    """A json: filename for -drive: QemuOpts needs every comma doubled."""
    return "json:" + json.dumps(obj).replace(",", ",,")


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    divergence: str = ""
    #: ``(node label, field)`` pairs left out of the comparison, each for the reason in
    #: ``masked_because`` (a divergence narrowed to the one value that differs)
    masked: tuple[tuple[str, str], ...] = ()
    masked_because: str = ""


def d(
    name: str,
    *drives: str,
    divergence: str = "",
    masked: tuple[tuple[str, str], ...] = (),
    masked_because: str = "",
) -> Case:
    args: list[str] = []
    for item in drives:
        if item.startswith("-"):
            flag, _, value = item.partition(" ")
            args.extend([flag] + ([value] if value else []))
        else:
            args.extend(["-drive", item])
    return Case(name, tuple(args), divergence, masked, masked_because)


_TOPJ = {"driver": "qcow2", "file": {"driver": "file", "filename": "top.qcow2"}}

_SNAP = (
    "the temporary overlay is created by blockdev-snapshot-sync, whose header names "
    "the image as backing; QEMU's overlay header has none, so QEMU's overlay filename is "
    "a json: with the backing and txgraph's is the plain file name"
)
_STRINGS = (
    '-drive values stay strings: QEMU\'s json: filename shows "512" where the '
    "typed blockdev-add shows 512"
)

CASES: tuple[Case, ...] = (
    # probing and chains from headers
    d("probe-qcow2", "file=top.qcow2"),
    d("format-qcow2", "file=top.qcow2,format=qcow2"),
    d("probe-raw-warns", "file=raw.img"),
    d("format-raw", "file=raw.img,format=raw"),
    d("probe-raw-readonly", "file=raw.img,readonly=on"),
    d("qcow2-as-raw", "file=base.qcow2,format=raw"),
    d("backing-probed", "file=nofmt.qcow2"),
    d("chain-of-three", "file=chain.qcow2"),
    d("zero-length-raw", "file=empty.img"),
    d("format-qcow2-on-raw", "file=raw.img,format=qcow2"),
    # json: filenames and backing strings
    d("json-qcow2", f"file={j(_TOPJ)}"),
    d(
        "json-dotted",
        f"file={j({'driver': 'raw', 'file.driver': 'file', 'file.filename': 'raw.img'})}",
    ),
    d("json-header-backing", "file=jsonback.qcow2"),
    d(
        "json-raw-offset",
        f"file={j({'driver': 'raw', 'offset': 512, 'file': {'driver': 'file', 'filename': 'raw.img'}})}",
    ),
    d("json-not-object", "file=json:[1]"),
    d("json-syntax-error", 'file=json:{"driver"'),
    d("json-backing-null", f"file={j({**_TOPJ, 'backing': None})}"),
    d(
        "json-explicit-backing",
        f"file={j({**_TOPJ, 'backing': {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': 'base.qcow2'}}})}",
    ),
    d("json-under-explicit", f"file={j(_TOPJ)},cache.direct=on"),
    # cache modes and cache.* options
    *(
        d(f"cache-{m}", f"file=top.qcow2,cache={m}")
        for m in ("none", "off", "writeback", "unsafe", "directsync", "writethrough")
    ),
    d("cache-direct", "file=top.qcow2,cache.direct=on"),
    d("cache-no-flush", "file=top.qcow2,cache.no-flush=on"),
    d("cache-writeback-off", "file=top.qcow2,cache.writeback=off"),
    d("cache-mode-and-key", "file=top.qcow2,cache=none,cache.direct=off"),
    d("cache-bogus", "file=top.qcow2,cache=bogus"),
    d("cache-direct-bad", "file=top.qcow2,cache.direct=maybe"),
    d("cache-file-child", "file=top.qcow2,file.cache.direct=on"),
    # read-only
    d("readonly", "file=top.qcow2,readonly=on"),
    d("read-only", "file=top.qcow2,read-only=on"),
    d("readonly-alias-clash", "file=top.qcow2,readonly=on,read-only=on"),
    d("read-only-bad", "file=top.qcow2,read-only=maybe"),
    d("readonly-short-form", "file=top.qcow2,readonly"),
    # snapshot=on
    d(
        "snapshot-qcow2",
        "file=top.qcow2,snapshot=on",
        masked=(("none0", "file"),),
        masked_because=_SNAP,
    ),
    d(
        "snapshot-raw",
        "file=raw.img,format=raw,snapshot=on",
        masked=(("none0", "file"),),
        masked_because=_SNAP,
    ),
    d(
        "snapshot-switch",
        "-snapshot",
        "file=top.qcow2",
        masked=(("none0", "file"),),
        masked_because=_SNAP,
    ),
    d("snapshot-switch-off", "-snapshot", "file=top.qcow2,snapshot=off"),
    d(
        "snapshot-readonly",
        "file=top.qcow2,snapshot=on,readonly=on",
        masked=(("none0", "file"),),
        masked_because=_SNAP,
    ),
    d("snapshot-bad", "file=top.qcow2,snapshot=maybe"),
    d(
        "snapshot-discard",
        "file=raw.img,format=raw,snapshot=on,discard=unmap",
        masked=(("none0", "file"),),
        masked_because=_SNAP,
    ),
    # copy-on-read
    d("copy-on-read", "file=top.qcow2,copy-on-read=on"),
    d("copy-on-read-readonly", "file=top.qcow2,copy-on-read=on,readonly=on"),
    d("copy-on-read-bad", "file=top.qcow2,copy-on-read=maybe"),
    # throttling
    d("iops", "file=raw.img,format=raw,iops=100"),
    d("bps-and-max", "file=raw.img,format=raw,bps=1000,bps_max=2000"),
    d("iops-rd-wr", "file=raw.img,format=raw,throttling.iops-read=10,throttling.iops-write=20"),
    d("iops-total-and-rd", "file=raw.img,format=raw,iops=1,iops_rd=1"),
    d("iops-size", "file=raw.img,format=raw,iops_size=4096,iops=100"),
    d("iops-size-alone", "file=raw.img,format=raw,iops_size=4096"),
    d("bps-max-alone", "file=raw.img,format=raw,bps_max=10"),
    d("iops-not-a-number", "file=raw.img,format=raw,iops=abc"),
    d("throttle-group", "file=raw.img,format=raw,group=g1,iops=10"),
    d("iops-alias-clash", "file=raw.img,format=raw,iops=10,throttling.iops-total=20"),
    d("bps-max-lower", "file=raw.img,format=raw,bps=10,bps_max=5"),
    d("burst-without-max", "file=raw.img,format=raw,bps=10,throttling.bps-total-max-length=5"),
    d(
        "burst-length",
        "file=raw.img,format=raw,bps=10,bps_max=20,throttling.bps-total-max-length=5",
    ),
    # discard and detect-zeroes
    d("discard-unmap", "file=top.qcow2,discard=unmap"),
    d("discard-on", "file=top.qcow2,discard=on"),
    d("discard-ignore", "file=top.qcow2,discard=ignore"),
    d("discard-bogus", "file=top.qcow2,discard=bogus"),
    d("detect-zeroes-on", "file=top.qcow2,detect-zeroes=on"),
    d("detect-zeroes-unmap-discard", "file=top.qcow2,detect-zeroes=unmap,discard=unmap"),
    d("detect-zeroes-unmap-alone", "file=top.qcow2,detect-zeroes=unmap"),
    d("detect-zeroes-bogus", "file=top.qcow2,detect-zeroes=bogus"),
    d(
        "detect-zeroes-snapshot",
        "file=top.qcow2,detect-zeroes=on,snapshot=on",
        masked=(("none0", "file"),),
        masked_because=_SNAP,
    ),
    # aio
    d("aio-threads", "file=raw.img,format=raw,aio=threads"),
    d("aio-native", "file=raw.img,format=raw,aio=native,cache=none"),
    d("aio-native-cached", "file=raw.img,format=raw,aio=native"),
    d("aio-bogus", "file=raw.img,format=raw,aio=bogus"),
    d("aio-io-uring", "file=raw.img,format=raw,aio=io_uring"),
    d("aio-native-chain", "file=top.qcow2,aio=native,cache=none"),
    # file.* and driver options
    d("file-locking-off", "file=raw.img,format=raw,file.locking=off"),
    d("file-driver-no-file", "format=raw,file.driver=file,file.filename=raw.img"),
    d("file-and-filename", "file=raw.img,format=raw,file.filename=raw.img"),
    d("qcow2-lazy-refcounts", "file=top.qcow2,format=qcow2,lazy-refcounts=on"),
    d(
        "raw-offset-size",
        "file=raw.img,format=raw,offset=512,size=4096",
        masked=(("none0", "file"),),
        masked_because=_STRINGS,
    ),
    d("raw-size-bad", "file=raw.img,format=raw,size=abc"),
    d("unknown-option", "file=raw.img,format=raw,bogus=1"),
    d("unknown-file-option", "file=raw.img,format=raw,file.bogus=1"),
    d("unknown-format", "file=raw.img,format=nosuch"),
    d("null-co-driver", "driver=null-co"),
    d("null-co-filename", "file=null-co://,format=raw"),
    # node-name and id rules
    d("node-name", "file=top.qcow2,node-name=n0"),
    d("node-names-both", "file=top.qcow2,node-name=n0,file.node-name=n0f"),
    d("id-equals-node-name", "file=raw.img,format=raw,id=x,node-name=x"),
    d("node-name-default-id", "file=raw.img,format=raw,node-name=none0"),
    d(
        "node-name-duplicate",
        "file=raw.img,format=raw,node-name=n,id=a",
        "file=top.qcow2,node-name=n,id=b",
    ),
    d("node-name-is-device", "file=raw.img,format=raw,id=d0", "file=top.qcow2,node-name=d0,id=d1"),
    d("node-name-invalid", "file=raw.img,format=raw,node-name=#x"),
    d("id-invalid", "file=raw.img,format=raw,id=1x"),
    d("id-duplicate", "file=raw.img,format=raw,id=d0,readonly=on", "file=top.qcow2,id=d0"),
    d("two-drives-default-ids", "file=raw.img,format=raw,readonly=on", "file=top.qcow2"),
    # media, if=, addresses, error actions
    d("cdrom-empty", "media=cdrom"),
    d("cdrom-with-medium", "media=cdrom,file=cd.iso,format=raw"),
    d("media-bogus", "media=floppy"),
    d("empty-drive", "if=none"),
    d("cdrom-shorthand", "-cdrom cd.iso"),
    d("hda-shorthand", "-hda top.qcow2"),
    # a bare argument is a disk image like -hda (it was refused as an invalid option)
    Case("bare-image", ("top.qcow2",)),
    Case("bare-image-missing", ("missing.img",)),
    Case("bare-image-and-hda", ("top.qcow2", "-hda", "raw.img")),
    d("missing-file", "file=missing.img"),
    d("missing-file-qcow2", "file=missing.qcow2,format=qcow2"),
    d("if-bogus", "if=x"),
    d("index-and-unit", "index=1,unit=1"),
    d("index-none", "file=raw.img,format=raw,index=3"),
    d("error-actions", "file=raw.img,format=raw,werror=stop,rerror=stop"),
    d("werror-bogus", "file=raw.img,format=raw,werror=bogus"),
    d("rerror-enospc", "file=raw.img,format=raw,rerror=enospc"),
    d("werror-floppy", "if=floppy,werror=stop"),
    d("bus-not-a-number", "bus=x"),
    d("format-and-driver", "file=top.qcow2,format=qcow2,driver=raw"),
    d(
        "stats-account",
        "file=raw.img,format=raw,stats-account-invalid=off,stats-account-failed=off",
    ),
    d("backing-options", "file=top.qcow2,backing.node-name=b0,backing.cache.no-flush=on"),
    d("backing-none", "file=top.qcow2,backing="),
    d(
        "backing-reference",
        "file=base.qcow2,format=qcow2,node-name=b,readonly=on,id=a",
        "file=top.qcow2,backing=b,id=c",
    ),
    d(
        "null-co-size",
        "driver=null-co,size=4096,read-zeroes=on",
        masked=(("none0", "file"),),
        masked_because=_STRINGS,
    ),
    d(
        "file-null-co",
        "format=raw,file.driver=null-co,file.size=8192",
        masked=(("none0", "file"), ("none0/file", "file")),
        masked_because=_STRINGS,
    ),
    d(
        "json-node-names",
        f"file={j({**_TOPJ, 'node-name': 'jt', 'file': {'driver': 'file', 'filename': 'top.qcow2', 'node-name': 'jf'}})}",
    ),
    d("auto-read-only-off", "file=raw.img,format=raw,auto-read-only=off"),
    d("force-share-rw", "file=raw.img,format=raw,force-share=on"),
    d("force-share-ro", "file=raw.img,format=raw,force-share=on,readonly=on"),
    d(
        "same-image-twice-ro",
        "file=raw.img,format=raw,readonly=on,id=a",
        "file=raw.img,format=raw,readonly=on,id=b",
    ),
    d(
        "ide-on-machine-none",
        "file=raw.img,format=raw,if=ide",
        divergence="the machine refuses drives it has no bus for (drive_check_orphaned on -M "
        "none); txgraph drive translates the drive itself, for any machine",
    ),
    d(
        "qemu-aborts-on-child-size",
        "file=null-co://,format=raw,file.size=abc",
        divergence="qemu-system-x86_64 7.2 aborts here (error_abort in parse_option_size); "
        "txgraph refuses the line with qemu_opt_get_size's message instead (pinned: the "
        "oracle cannot answer it)",
    ),
    # -drive lines management software writes
    d(
        "libvirt-virtio-disk",
        "file=top.qcow2,format=qcow2,if=none,id=drive-virtio-disk0,cache=none,aio=native",
    ),
    d("libvirt-cdrom-empty", "if=none,id=drive-ide0-1-0,readonly=on"),
    d("libvirt-cdrom", "file=cd.iso,format=raw,if=none,id=drive-ide0-1-0,readonly=on"),
    d(
        "libvirt-scsi",
        "file=top.qcow2,format=qcow2,if=none,id=drive-scsi0-0-0-0,cache=writeback,"
        "discard=unmap,werror=stop,rerror=stop",
    ),
    d(
        "nova-throttled",
        "file=top.qcow2,if=none,id=drive-virtio-disk0,format=qcow2,cache=none,"
        "throttling.iops-total=1000,throttling.bps-total=10485760",
    ),
    d(
        "proxmox-style",
        "file=raw.img,if=none,id=drive-scsi0,format=raw,cache=none,aio=io_uring,detect-zeroes=on",
    ),
    d(
        "libvirt-legacy-iotune",
        "file=top.qcow2,format=qcow2,if=none,id=drive-virtio-disk1,"
        "bps_rd=1000,bps_wr=2000,iops_rd=10,iops_wr=20",
    ),
    d(
        "object-throttle-group",
        "-object throttle-group,id=tg0,x-iops-total=100",
        "driver=throttle,throttle-group=tg0,file.driver=raw,file.file.filename=raw.img,if=none,id=t0",
    ),
    d(
        "ovirt-raw-readonly-shared",
        "file=raw.img,format=raw,if=none,id=drive-ua-1,readonly=on,file.locking=off",
    ),
)
