"""Encrypted images made by the real qemu-img, with the secret options QEMU's tools take.

``qemu-img create`` benchmarks PBKDF2 to pick iteration counts and, on a busy
machine, sometimes gives up with ``Unable to get accurate CPU usage``
(``qcrypto_pbkdf2_count_iters``); :func:`create` retries exactly that failure a
bounded number of times. ``iter-time=10`` keeps the key slots fast to open.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["PW", "secret_object", "create", "image_opts", "qemu_io", "convert_raw"]

PW = "abc123"
TOOL_TIMEOUT = 120


def secret_object(pw: str = PW, sid: str = "s0") -> list[str]:
    return ["--object", f"secret,id={sid},data={pw}"]


def create(path: Path, fmt: str, size: str = "4M", opts: str = "", pw: str = PW) -> Path:
    """``qemu-img create -f luks|qcow2`` with the LUKS key secret ``s0``."""
    base = "key-secret=s0,iter-time=10" if fmt == "luks" else \
        "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10"
    argv = ["qemu-img", "create", "-q", *secret_object(pw), "-f", fmt, "-o",
            base + ("," + opts if opts else ""), str(path), size]
    for _attempt in range(8):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
        if res.returncode == 0:
            return path
        if "Unable to get accurate CPU usage" not in res.stderr:
            break
    raise AssertionError(f"{' '.join(argv)} failed: {res.stderr}")


def image_opts(path: Path, fmt: str) -> str:
    key = "key-secret=s0" if fmt == "luks" else "encrypt.key-secret=s0"
    return f"driver={fmt},{key},file.filename={path}"


def qemu_io(path: Path, fmt: str, *cmds: str, pw: str = PW) -> str:
    argv = ["qemu-io", *secret_object(pw), "--image-opts", image_opts(path, fmt)]
    for c in cmds:
        argv += ["-c", c]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if res.returncode != 0 or "failed" in res.stdout:
        raise AssertionError(f"qemu-io failed: {res.stderr}{res.stdout}")
    return res.stdout


def convert_raw(path: Path, fmt: str, out: Path, pw: str = PW) -> bytes:
    """``qemu-img convert -O raw`` of the decrypted guest view."""
    argv = ["qemu-img", "convert", *secret_object(pw), "--image-opts", image_opts(path, fmt),
            "-O", "raw", str(out)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if res.returncode != 0:
        raise AssertionError(f"qemu-img convert failed: {res.stderr}")
    return out.read_bytes()
