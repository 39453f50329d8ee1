"""Encrypted images made by the real qemu-img, with the secret options QEMU's tools take.

``qemu-img create`` benchmarks PBKDF2 to pick iteration counts and, on a busy
machine, sometimes gives up with ``Unable to get accurate CPU usage``
(``qcrypto_pbkdf2_count_iters``); :func:`create` retries exactly that failure a
bounded number of times. ``iter-time=10`` keeps the key slots fast to open, but
the benchmark itself costs qemu-img seconds per image, so :func:`template`
makes each variant once per test process (copy it with :func:`copy_template`);
the copies also share salts and UUIDs, which the differential tests need.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

__all__ = [
    "PW",
    "AES",
    "CBC_ESSIV",
    "secret_object",
    "create",
    "template",
    "copy_template",
    "image_opts",
    "qemu_io",
    "convert_raw",
]

PW = "abc123"
#: a non-default LUKS variant: AES-128-CBC with ESSIV IVs and SHA-1 key slots
#: legacy qcow2 AES encryption (qemu-img still creates it; QSD 7.2 still opens it)
AES = "encrypt.format=aes"
CBC_ESSIV = "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1"
TOOL_TIMEOUT = 120


def secret_object(pw: str = PW, sid: str = "s0") -> list[str]:
    return ["--object", f"secret,id={sid},data={pw}"]


def create(path: Path, fmt: str, size: str = "4M", opts: str = "", pw: str = PW) -> Path:
    """``qemu-img create -f luks|qcow2`` with the LUKS key secret ``s0``."""
    if fmt == "luks":
        base = "key-secret=s0,iter-time=10"
    elif "encrypt.format=aes" in opts:  # legacy AES: the password is the key, no KDF
        base = "encrypt.key-secret=s0"
    else:
        base = "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10"
    argv = [
        "qemu-img",
        "create",
        "-q",
        *secret_object(pw),
        "-f",
        fmt,
        "-o",
        base + ("," + opts if opts else ""),
        str(path),
        size,
    ]
    for attempt in range(40):
        res = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
        if res.returncode == 0:
            return path
        if "Unable to get accurate CPU usage" not in res.stderr:
            break
        # qemu-img's PBKDF2 benchmark measures CPU time; on a loaded machine it can read 0
        # many times in a row. Back off a little and measure again.
        time.sleep(min(0.05 * (attempt + 1), 0.5))
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
    argv = [
        "qemu-img",
        "convert",
        *secret_object(pw),
        "--image-opts",
        image_opts(path, fmt),
        "-O",
        "raw",
        str(out),
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    if res.returncode != 0:
        raise AssertionError(f"qemu-img convert failed: {res.stderr}")
    return out.read_bytes()


_TEMPLATES: dict[tuple[str, str, str], Path] = {}
#: guards _TEMPLATES (pytest-xdist is not used, but the cache must not race anyway)
_LOCK = threading.Lock()
_DIR: list[Path] = []


def template(fmt: str, opts: str = "", size: str = "4M") -> Path:
    """A pristine image of this variant, made once per process and removed at exit."""
    with _LOCK:
        if not _DIR:
            d = Path(tempfile.mkdtemp(prefix="txgraph-crypto-"))
            atexit.register(shutil.rmtree, d, True)
            _DIR.append(d)
        key = (fmt, opts, size)
        if key not in _TEMPLATES:
            _TEMPLATES[key] = create(_DIR[0] / f"t{len(_TEMPLATES)}.{fmt}", fmt, size, opts)
        return _TEMPLATES[key]


def copy_template(dest: Path, fmt: str, opts: str = "", size: str = "4M") -> Path:
    shutil.copyfile(template(fmt, opts, size), dest)
    return dest
