"""Seals for verified plans: one digest binding everything ``txgraph apply`` relies on.

A verified plan (``txgraph plan --out FILE``) is a promise: *these* steps,
applied to *that* starting graph under *this* policy, were checked by *this*
txgraph. Each of those is a member of the report (``plan``, ``source``,
``policy``, ``txgraph``, plus the per-step predictions), so the seal is a
digest over the whole report in a canonical JSON form (sorted keys, no
whitespace, UTF-8). Changing any member — a step turned into a harmful
reopen, a different starting digest, ``ok`` flipped — changes the digest,
and :func:`seal_problem` says so before anything is sent.

Without a key the seal is SHA-256: it catches every edit made without
re-sealing (the usual accident: a hand-edited file). With a key
(``--key-file``) it is HMAC-SHA256, which a person without the key cannot
forge; keep the key where only the verifier and the applier can read it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

__all__ = ["SEAL_MEMBER", "seal_report", "seal_problem", "read_key"]

#: the report member that carries the seal (never part of what is sealed)
SEAL_MEMBER = "seal"

_PLAIN = "sha256"
_KEYED = "hmac-sha256"


def _canonical(report: dict[str, Any]) -> bytes:
    body = {k: v for k, v in report.items() if k != SEAL_MEMBER}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _digest(report: dict[str, Any], key: bytes | None) -> str:
    data = _canonical(report)
    if key is None:
        return hashlib.sha256(data).hexdigest()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def seal_report(report: dict[str, Any], key: bytes | None = None) -> dict[str, Any]:
    """A copy of ``report`` with its seal (over every other member) added."""
    algorithm = _KEYED if key is not None else _PLAIN
    return {**report, SEAL_MEMBER: {"algorithm": algorithm, "digest": _digest(report, key)}}


def seal_problem(report: dict[str, Any], key: bytes | None = None) -> str | None:
    """Why ``report``'s seal does not hold (None when it does)."""
    seal = report.get(SEAL_MEMBER)
    if not isinstance(seal, dict) or not isinstance(seal.get("digest"), str):
        return "the verified plan carries no seal (verify it again with txgraph plan --out FILE)"
    algorithm = seal.get("algorithm")
    if algorithm == _KEYED and key is None:
        return "the verified plan is sealed with a key: pass the same --key-file to txgraph apply"
    if algorithm not in (_PLAIN, _KEYED):
        return f"the verified plan's seal uses an unknown algorithm {algorithm!r}"
    expected = _digest(report, key if algorithm == _KEYED else None)
    if not hmac.compare_digest(expected, seal["digest"]):
        return (
            "the verified plan was changed after it was verified (its seal does not match "
            "its contents); refusing to apply it: verify the plan again"
        )
    return None


def read_key(path: str | Path) -> bytes:
    """The key of a keyed seal: the file's bytes, surrounding whitespace removed."""
    key = Path(path).read_bytes().strip()
    if not key:
        raise ValueError(f"{path}: the key file is empty")
    return key
