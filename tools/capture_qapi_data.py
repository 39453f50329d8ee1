"""Capture the QAPI interface data of a qemu-storage-daemon into JSON files.

Run as ``.venv/bin/python tools/capture_qapi_data.py`` with ``qemu-storage-daemon`` on
``PATH``. It writes two files into ``txgraph/qmp/data/``:

``qsd-<major>.<minor>-schema.json``
    the verbatim ``return`` of ``query-qmp-schema`` (names and types only:
    introspection carries no documentation).
``qsd-<major>.<minor>-types.json``
    what introspection hides and the QObject input visitor prints: the real
    name of each alternate type (used in "expected: BlockdevRef") and the
    width of every integer member (introspection reports every integer type as
    ``int``; QEMU reports ``expects int32_t`` etc.). Both are learnt by
    experiment: a value of the wrong type or out of range is sent to the
    daemon and its error text is read back. QAPI validation happens before a
    command has any effect, so the probes are harmless.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from txgraph.peers import QSD

HERE = Path(__file__).resolve().parents[1] / "txgraph" / "qmp" / "data"
# Commands whose success would end or disturb the probing daemon.
SKIP_COMMANDS = {"quit", "qmp_capabilities"}

Wrap = Callable[[Any], dict[str, Any]]


class _Prober:
    def __init__(self, schema: list[dict[str, Any]]) -> None:
        self.by = {e["name"]: e for e in schema}
        self.seen: set[str] = set()

    def minimal(self, tname: str, depth: int = 0) -> Any:
        """A smallest value QAPI accepts for type ``tname``."""
        t = self.by[tname]
        meta = t["meta-type"]
        if meta == "builtin":
            return {"str": "x", "int": 0, "bool": False, "number": 0, "null": None, "any": {}}[
                t["name"]
            ]
        if meta == "enum":
            return t["values"][0]
        if meta == "array":
            return []
        if meta == "alternate":
            kinds = [self.by[m["type"]] for m in t["members"]]
            for k in kinds:
                if k["meta-type"] == "builtin" and k["name"] == "str":
                    return "x"
            return self.minimal(t["members"][0]["type"], depth + 1)
        return self.minimal_object(tname, None, depth)

    def members_of(self, tname: str, case: str | None) -> list[tuple[str, dict[str, Any]]]:
        t = self.by[tname]
        out = [(tname, m) for m in t.get("members", [])]
        for v in t.get("variants", []):
            if v["case"] == case:
                out += [(v["type"], m) for m in self.by[v["type"]].get("members", [])]
        return out

    def minimal_object(self, tname: str, case: str | None, depth: int = 0) -> dict[str, Any]:
        t = self.by[tname]
        if case is None and t.get("variants"):
            case = t["variants"][0]["case"]
        d: dict[str, Any] = {}
        for _, m in self.members_of(tname, case):
            if m["name"] == t.get("tag"):
                d[m["name"]] = case if case is not None else self.minimal(m["type"])
            elif "default" not in m:
                d[m["name"]] = self.minimal(m["type"], depth + 1)
        return d

    def sites(
        self, tname: str, wrap: Wrap, key: tuple[str, str]
    ) -> Iterator[tuple[str, Any, Wrap]]:
        """Yield (kind, key, wrap) for every integer member and alternate below ``tname``."""
        t = self.by[tname]
        meta = t["meta-type"]
        if meta == "builtin" and t["name"] == "int":
            yield "int", key, wrap
        elif meta == "array":
            yield from self.sites(t["element-type"], lambda v: wrap([v]), key)
        elif meta == "alternate":
            yield "alt", tname, wrap
            for m in t["members"]:
                if self.by[m["type"]]["meta-type"] == "object":
                    yield from self.sites(m["type"], wrap, key)
        elif meta == "object" and tname not in self.seen:
            # Mark on entry: BlockdevOptions reaches itself through BlockdevRef.
            self.seen.add(tname)
            cases: list[str | None] = [v["case"] for v in t.get("variants", [])] or [None]
            for case in cases:
                base = self.minimal_object(tname, case)
                for owner, m in self.members_of(tname, case):
                    if owner != tname and owner in self.seen:
                        continue

                    def w(
                        v: Any, m: dict[str, Any] = m, base: dict[str, Any] = base
                    ) -> dict[str, Any]:
                        return wrap({**base, m["name"]: v})

                    if m["name"] == t.get("tag"):
                        continue
                    yield from self.sites(m["type"], w, (owner, m["name"]))
                if case is not None:
                    self.seen.add(next(v["type"] for v in t["variants"] if v["case"] == case))


def capture(qsd: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Return (schema, types) learnt from the negotiated QSD connection ``qsd``."""
    schema: list[dict[str, Any]] = qsd.cmd("query-qmp-schema")
    prober = _Prober(schema)
    ints: dict[str, dict[str, str]] = {}
    alts: dict[str, str] = {}
    for cmd in schema:
        if cmd["meta-type"] != "command" or cmd["name"] in SKIP_COMMANDS:
            continue
        name = cmd["name"]
        for kind, key, wrap in list(prober.sites(cmd["arg-type"], lambda v: v, ("", ""))):
            if kind == "alt":
                if key in alts:
                    continue
                desc = _error(qsd, name, wrap(1.5))
                found = re.search(r"expected: (\w+)$", desc or "")
                if found:
                    alts[key] = found.group(1)
                continue
            owner, member = key
            if member in ints.get(owner, {}):
                continue
            ints.setdefault(owner, {})[member] = _int_kind(qsd, name, wrap)
    return schema, {"alternates": alts, "integers": ints}


def _error(qsd: Any, name: str, arguments: dict[str, Any]) -> str | None:
    reply = qsd.execute(name, arguments)
    return reply["error"]["desc"] if "error" in reply else None


def _int_kind(qsd: Any, name: str, wrap: Wrap) -> str:
    """Classify one integer member: int64/uint64/size, then the narrower width."""
    desc = _error(qsd, name, wrap("x")) or ""
    if desc.endswith("expects uint64"):
        family, probe = "uint", 2**32
    elif desc.endswith("expects size"):
        return "size"
    elif desc.endswith("expected: integer"):
        family, probe = "int", 2**31
    else:
        raise RuntimeError(f"{name}: unexpected answer {desc!r}")
    found = re.search(r"expects u?int(\d+)_t$", _error(qsd, name, wrap(probe)) or "")
    return f"{family}{found.group(1) if found else '64'}"


def main() -> None:
    with QSD() as qsd:
        ver = qsd.cmd("query-version")["qemu"]
        schema, types = capture(qsd)
    stem = f"qsd-{ver['major']}.{ver['minor']}"
    (HERE / f"{stem}-schema.json").write_text(json.dumps(schema, indent=None) + "\n")
    (HERE / f"{stem}-types.json").write_text(json.dumps(types, indent=1, sort_keys=True) + "\n")
    print(
        f"{stem}: {len(schema)} schema entries, {len(types['alternates'])} alternates, "
        f"{sum(map(len, types['integers'].values()))} integer members"
    )


if __name__ == "__main__":
    main()
