"""Each rule of the -drive specification, on real files (the oracle runs in tests/differential)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from txgraph.drive.docs import render_spec
from txgraph.drive.qemuopts import parse_command_line
from txgraph.drive.rules import RULES
from txgraph.drive.translate import DriveError, Translation, translate

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "raw.img").write_bytes(b"\0" * 65536)
    saved = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(saved)


def ok(*drives: str) -> Translation:
    args: list[str] = []
    for d in drives:
        args += d.split(" ", 1) if d.startswith("-") else ["-drive", d]
    return translate(args)


def refused(drive: str) -> str:
    with pytest.raises(DriveError) as info:
        translate(["-drive", drive])
    return info.value.message


def top(t: Translation, index: int = -1) -> dict[str, Any]:
    args: dict[str, Any] = t.qmp[index]["arguments"]
    return args


def t_snapshot_switch() -> None:
    t = translate(["-snapshot", "-drive", "file=raw.img,format=raw"])
    assert "snapshot" in t.backend["none0"]
    assert (
        translate(["-snapshot", "-drive", "file=raw.img,format=raw,snapshot=off"]).qmp[0][
            "arguments"
        ]["read-only"]
        is False
    )
    for path in t.temp_files:
        os.unlink(path)


def t_legacy_renames() -> None:
    assert ok("file=raw.img,format=raw,iops=5").backend["none0"]["throttle"]["iops"] == 5
    assert top(ok("file=raw.img,format=raw,readonly=on"))["read-only"] is True
    assert (
        refused("file=raw.img,iops=1,throttling.iops-total=2")
        == "'throttling.iops-total' and its alias 'iops' can't be used at the same time"
    )


def t_cache_mode() -> None:
    t = ok("file=raw.img,format=raw,cache=none")
    assert top(t)["cache"] == {"direct": True, "no-flush": False}
    assert ok("file=raw.img,format=raw,cache=directsync").backend["none0"]["write-cache"] is False
    assert top(ok("file=raw.img,format=raw,cache=unsafe,cache.no-flush=off"))["cache"] == {
        "direct": False,
        "no-flush": False,
    }
    assert refused("file=raw.img,cache=fast") == "invalid cache option"


def t_legacy_options() -> None:
    assert refused("bus=x") == "Parameter 'bus' expects a number"
    assert refused("copy-on-read=maybe") == "Parameter 'copy-on-read' expects 'on' or 'off'"


def t_media() -> None:
    t = ok("media=cdrom")
    assert t.backend["none0"]["node-name"] is None and t.backend["none0"]["empty"]["read-only"]
    assert refused("media=tape") == "'tape' invalid media"


def t_read_only_copy_on_read() -> None:
    t = ok("file=raw.img,format=raw,readonly=on,copy-on-read=on")
    assert t.warnings == [
        "-drive file=raw.img,format=raw,readonly=on,copy-on-read=on: warning: "
        "disabling copy-on-read on read-only drive"
    ]
    assert "copy-on-read" not in t.backend["none0"]


def t_interface() -> None:
    assert ok("if=virtio").backend["virtio0"]["device"]["driver"] == "virtio-blk"
    assert refused("if=usb") == "unsupported bus type 'usb'"


def t_address() -> None:
    assert list(ok("if=ide", "if=ide", "if=ide").backend) == ["ide0-hd0", "ide0-hd1", "ide1-hd0"]
    assert refused("if=ide,unit=2") == "unit 2 too big (max is 1)"
    assert refused("index=0,bus=1") == "index cannot be used with bus and unit"
    with pytest.raises(DriveError, match=r"drive with bus=0, unit=0 \(index=0\) exists"):
        ok("if=none,index=0", "if=none,index=0")


def t_default_id() -> None:
    assert list(ok("media=cdrom,if=scsi", "if=none", "-cdrom raw.img").backend) == [
        "scsi0-cd0",
        "none0",
        "none2",
    ]
    assert list(ok("if=none,id=mine").backend) == ["mine"]


def t_error_actions() -> None:
    b = ok("file=raw.img,format=raw,werror=stop").backend["none0"]
    assert (b["werror"]["value"], b["rerror"]["value"]) == ("stop", "report")
    assert refused("if=sd,werror=stop") == "werror is not supported by this bus type"
    assert refused("rerror=enospc") == "'enospc' invalid read error action"


def t_common_options() -> None:
    assert refused("file=raw.img,snapshot=perhaps") == "Parameter 'snapshot' expects 'on' or 'off'"
    assert "stats-account-failed" not in top(ok("file=raw.img,format=raw,stats-account-failed=off"))


def t_aio_and_copy_on_read() -> None:
    t = ok("file=raw.img,format=raw,aio=native,cache=none")
    assert top(t)["file"]["aio"] == "native"
    assert refused("file=raw.img,aio=posix") == "invalid aio option"
    assert refused("file=raw.img,format=raw,aio=native").startswith("aio=native was specified")
    assert ok("file=raw.img,format=raw,copy-on-read=on").backend["none0"]["copy-on-read"]["value"]


def t_throttling() -> None:
    q = ok("file=raw.img,format=raw,bps=10,bps_max=20,group=g").backend["none0"]["throttle"]
    assert (q["bps"], q["bps_max"], q["bps_max_length"], q["group"]) == (10, 20, 1, "g")
    assert "group" not in ok("file=raw.img,format=raw").backend["none0"]["throttle"]
    assert (
        refused("file=raw.img,bps=5,bps_max=1") == "bps_max/iops_max cannot be lower than bps/iops"
    )
    assert refused("file=raw.img,iops_size=1") == "iops size requires an iops value to be set"


def t_detect_zeroes_value() -> None:
    assert refused("file=raw.img,detect-zeroes=maybe") == "invalid parameter value: maybe"


def t_format() -> None:
    assert top(ok("file=raw.img,format=raw"))["driver"] == "raw"
    assert (
        refused("file=raw.img,format=raw,driver=raw") == "Cannot specify both 'driver' and 'format'"
    )


def t_snapshot_flag() -> None:
    t = ok("file=raw.img,format=raw,snapshot=on")
    base, overlay = top(t, 0), top(t, 1)
    assert base["read-only"] is True and base["discard"] == "unmap"
    assert overlay["driver"] == "qcow2" and overlay["backing"] == base["node-name"]
    assert overlay["cache"] == {"direct": False, "no-flush": True}
    assert t.backend["none0"]["node-name"] == overlay["node-name"]
    for path in t.temp_files:
        assert os.path.getsize(path) > 0
        os.unlink(path)


def t_write_cache() -> None:
    assert (
        ok("file=raw.img,format=raw,cache.writeback=off").backend["none0"]["write-cache"] is False
    )


def t_open() -> None:
    t = ok("file=raw.img,format=raw")
    assert top(t) == {
        "cache": {"direct": False, "no-flush": False},
        "driver": "raw",
        "read-only": False,
        "auto-read-only": True,
        "file": {"filename": "raw.img", "driver": "file"},
        "node-name": "none0-node",
    }
    assert refused("file=nope.img") == "Could not open 'nope.img': No such file or directory"
    assert (
        refused("file=raw.img,format=raw,nosuch=1")
        == "Block format 'raw' does not support the option 'nosuch'"
    )
    assert top(ok("driver=null-co,node-name=n"))["node-name"] == "n"


def t_detect_zeroes_top() -> None:
    t = ok("file=raw.img,format=raw,detect-zeroes=unmap")
    assert top(t)["detect-zeroes"] == "unmap" and top(t)["discard"] == "unmap"
    assert "translation-note" in t.backend["none0"]


def t_probed_raw() -> None:
    t = ok("file=raw.img")
    assert t.warnings[0].startswith("WARNING: Image format was not specified for 'raw.img'")
    assert top(t)["driver"] == "raw" and t.backend["none0"]["probed-raw"]["value"]
    assert ok("file=raw.img,readonly=on").warnings == []


def t_monitor_add_blk() -> None:
    assert (
        refused("file=raw.img,format=raw,id=a,node-name=a")
        == "Device name 'a' conflicts with an existing node name"
    )
    with pytest.raises(DriveError, match="node-name=a is conflicting with a device id"):
        ok("file=raw.img,format=raw,id=a,readonly=on", "driver=null-co,node-name=a")


RULE_TESTS: dict[str, Callable[[], None]] = {
    name.removeprefix("t_").replace("_", "-"): fn
    for name, fn in list(globals().items())
    if name.startswith("t_") and callable(fn)
}


@pytest.mark.parametrize("name", [r.name for r in RULES])
def test_rule(name: str) -> None:
    """Every rule of the specification has its own test."""
    assert name in RULE_TESTS, f"rule {name} has no test"
    RULE_TESTS[name]()


def test_qemuopts_parsing() -> None:
    warnings: list[str] = []
    cl = parse_command_line(["-drive", "file=a,,b,readonly,nocopy-on-read,id=x"])
    assert cl.drives[0].pairs == [("file", "a,b"), ("readonly", "on"), ("copy-on-read", "off")]
    assert cl.drives[0].id == "x"
    assert len(cl.warnings) == 2 and "short-form boolean option 'readonly'" in cl.warnings[0]
    assert not warnings
    with pytest.raises(DriveError) as info:
        parse_command_line(["-drive", "id=1a"])
    assert info.value.render().endswith(
        "Parameter 'id' expects an identifier\nIdentifiers consist of letters, digits, "
        "'-', '.', '_', starting with a letter.\n"
    )
    with pytest.raises(DriveError, match="Duplicate ID 'x' for drive"):
        parse_command_line(["-drive", "id=x", "-drive", "id=x"])


def test_docs_are_generated_from_the_rules() -> None:
    committed = (ROOT / "docs" / "drive-spec.md").read_text()
    assert committed == render_spec(), (
        "regenerate: python -m txgraph.drive.docs > docs/drive-spec.md"
    )
    for r in RULES:
        assert f"### `{r.name}`" in committed and r.qemu in committed


def test_every_rule_cites_qemu() -> None:
    for r in RULES:
        assert r.doc and "(" in r.qemu, r.name


def test_cli_refusal_and_success(capsys: pytest.CaptureFixture[str]) -> None:
    from txgraph.drive.command import run_drive_command

    assert run_drive_command(["-drive", "cache=x"], False) == 1
    err = capsys.readouterr().err
    assert err == "qemu-system-x86_64: -drive cache=x: invalid cache option\n"
    assert run_drive_command(["-drive", "file=raw.img,format=raw"], True) == 0
    out = capsys.readouterr().out
    assert '"qmp"' in out and "<- rule cache-mode" not in out and "<- rule format" in out
    assert 'none0/file: filename = "raw.img"  <- open: explicit (legacy filename)' in out
    assert "none0/file: read-only = false  <- open: inherited from none0" in out
