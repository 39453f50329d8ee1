"""docs/drive-spec.md, generated from the rules (never written by hand).

``python -m txgraph.drive.docs > docs/drive-spec.md`` regenerates it; a unit
test checks that the committed file equals :func:`render_spec`'s output, so
the document and the code cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping

from txgraph.drive import spec, spec_open  # noqa: F401  (the rules register on import)
from txgraph.drive.rules import RULES

__all__ = ["render_spec"]

_STAGES = (
    ("drive_new", "1. `drive_new`: the legacy options"),
    ("blockdev_init", "2. `blockdev_init`: what belongs to the drive"),
    ("bdrv_open", "3. The open: nodes"),
    ("backend", "4. After the open: the top node and the BlockBackend"),
)


def _table(rows: Mapping[str, tuple[bool, ...]]) -> list[str]:
    out = ["| `cache=` | cache.writeback | cache.direct | cache.no-flush |", "|---|---|---|---|"]
    for mode, values in rows.items():
        out.append(f"| `{mode}` | " + " | ".join("on" if v else "off" for v in values) + " |")
    return out


def render_spec() -> str:
    """The whole document: every rule, in QEMU's order, with the QEMU function it reproduces."""
    lines = [
        "# The `-drive` specification (QEMU 7.2)",
        "",
        "Generated from `txgraph/drive/spec.py` and `txgraph/drive/spec_open.py` by",
        "`python -m txgraph.drive.docs`; do not edit by hand. Each rule below is one small",
        "function of the translator behind `txgraph drive` (docs/drive-output.md), applied in this",
        "order to each `-drive` in command-line order, and checked against qemu-system-x86_64 7.2 by",
        "tests/differential/test_drive.py. The first refusal stops QEMU with",
        "`qemu-system-x86_64: -drive OPTS: MESSAGE`.",
        "",
        "Before the rules, the option text is parsed as QemuOpts (`opts_do_parse`): `key=value`",
        "pairs, `,,` for a literal comma, a bare `key` meaning `key=on` and `nokey` meaning",
        "`key=off` (both warned about as deprecated short-form booleans), `id` kept apart and",
        "checked as an identifier. `-hda`..`-hdd FILE` are `-drive file=FILE,index=0..3,media=disk`,",
        "`-cdrom FILE` is `index=2,media=cdrom` (`drive_add`).",
        "",
    ]
    for stage, title in _STAGES:
        lines += [f"## {title}", ""]
        for r in (r for r in RULES if r.stage == stage):
            doc = " ".join(r.doc.split())
            lines += [f"### `{r.name}`", "", f"*Reproduces:* {r.qemu}", "", doc, ""]
            if r.name == "cache-mode":
                lines += [*_table(spec.CACHE_MODES), ""]
            if r.name == "legacy-renames":
                lines += ["| legacy | QMP name |", "|---|---|"]
                lines += [f"| `{a}` | `{b}` |" for a, b in spec.RENAMES] + [""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render_spec(), end="")
