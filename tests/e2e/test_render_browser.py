"""Pictures as users get them: ``txgraph show`` and ``txgraph plan --html``, checked in a real
browser (Debian's chromium, headless) and against a live qemu-storage-daemon."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.unit.plan.plankit import EXAMPLES, make_images
from txgraph.peers import QSD
from txgraph.plan.format import load_json

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "txgraph.cli", *args], capture_output=True, text=True, timeout=120
    )


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    """Headless chromium with the flags this closed network needs, a fresh profile each time."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )


def _loaded_check(page: Path) -> str:
    """What the page's own load check wrote into ``body[data-check]`` after the scripts ran."""
    res = _chromium("--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr
    found = re.search(r'data-check="([^"]*)"', res.stdout)
    assert found, res.stdout[:2000]
    return found.group(1)


def test_plan_html_report_loads_and_shows_every_step(images: Path, tmp_path: Path) -> None:
    make_images(images)
    page = tmp_path / "report.html"
    res = _cli(
        "plan",
        str(EXAMPLES / "seed-section3.json"),
        "--graph",
        str(EXAMPLES / "seed-section3-state.json"),
        "--dir",
        str(images),
        "--html",
        str(page),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    text = page.read_text()
    for n, label in enumerate(
        [
            "blockdev-add snap",
            "blockdev-snapshot disk",
            "x-txgraph-insert-filter",
            "blockdev-reopen snap",
        ],
        start=1,
    ):
        assert f'id="step-{n}"' in text and label in text
    assert _loaded_check(page) == "ok: 4 steps, 8 pictures"
    shot = tmp_path / "report.png"
    res = _chromium("--window-size=1400,2000", f"--screenshot={shot}", page.as_uri())
    assert res.returncode == 0, res.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def test_a_broken_page_is_reported_by_its_load_check(tmp_path: Path) -> None:
    # the check must be able to fail: a report whose pictures are missing
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><script>"
        + _script_of_a_real_page(tmp_path)
        + "</script></head>"
        '<body data-steps="2"><section class="step"><figure></figure></section>'
        "</body></html>"
    )
    assert _loaded_check(page) == "incomplete: 1 of 2 steps, 1 pictures missing"


def _script_of_a_real_page(tmp_path: Path) -> str:
    script = tmp_path / "s.json"
    script.write_text(
        '[{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n0"}}]'
    )
    page = tmp_path / "real.html"
    res = _cli("show", str(script), "--format", "html", "--out", str(page))
    assert res.returncode == 0, res.stderr
    text = page.read_text()
    return text[text.index("<script>") + len("<script>") : text.index("</script>")]


def test_show_draws_a_live_qemu_storage_daemon(images: Path, tmp_path: Path) -> None:
    make_images(images)
    # a QEMU monitor serves one client at a time: txgraph show gets a second monitor
    second = str(tmp_path / "show.sock")
    with QSD(
        [
            "--chardev",
            f"socket,id=show,path={second},server=on,wait=off",
            "--monitor",
            "chardev=show",
        ],
        workdir=str(tmp_path),
    ) as qsd:
        for msg in load_json(EXAMPLES / "seed-section3-state.json", str(images)):
            assert "return" in qsd.execute(msg["execute"], msg.get("arguments")), msg
        res = _cli("show", "--graph-from-qmp", second, "--format", "dot")
        assert res.returncode == 0, res.stderr
        dot = res.stdout
        assert '"bb:export:vm0" -> "disk"' in dot and "export vm0" in dot
        assert '"disk" -> "disk-file"' in dot and "qcow2 · rw" in dot
        page = tmp_path / "live.html"
        res = _cli("show", "--graph-from-qmp", second, "--format", "html", "--out", str(page))
        assert res.returncode == 0, res.stderr
    assert _loaded_check(page) == "ok: 0 steps, 1 pictures"


def test_show_usage_errors_are_one_line(tmp_path: Path) -> None:
    res = _cli("show", "--format", "svg")
    assert res.returncode == 2 and "give either STATE_FILE or --graph-from-qmp" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("[")
    res = _cli("show", str(bad))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith(f"Error: {bad}: not valid JSON")
    # the example plan's steps need images nobody made here: the failing step, in one line
    res = _cli("show", str(EXAMPLES / "seed-section3.json"), "--format", "html")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.startswith("Error: state command 0 (blockdev-add snap): ")
    assert len(res.stderr.strip().splitlines()) == 1
