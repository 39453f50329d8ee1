"""The GLib hash-table emulation behind qom-list's /objects order (txgraph.ops.qom).

Differential scenarios (tests/differential/scenarios/qom.py) pin the order
against QSD 7.2; here a long random insert/remove workload checks the table
itself: it always holds exactly the live keys, each once, through many
resizes, and an emptied table shrinks back to its minimum size.
"""

from __future__ import annotations

import random

from txgraph.ops.qom import GHashOrder


def test_random_workload_keeps_exactly_the_live_keys() -> None:
    rng = random.Random(7)
    table = GHashOrder()
    live: set[str] = set()
    sizes = set()
    for step in range(5000):
        key = f"obj{rng.randrange(400)}"
        if key in live and rng.random() < 0.5:
            table.remove(key)
            live.discard(key)
        else:
            table.insert(key)
            live.add(key)
        sizes.add(table.size)
        if step % 97 == 0:
            order = table.order()
            assert sorted(order) == sorted(live)
    assert len(sizes) > 3  # grew and shrank several times
    for key in list(live):
        table.remove(key)
    assert table.order() == [] and table.size == 8


def test_known_glib_layouts() -> None:
    """Orders read off qemu-storage-daemon 7.2 (qom-list lists them reversed)."""
    table = GHashOrder()
    for key in ("s0", "tg", "io0"):
        table.insert(key)
    assert table.order() == ["s0", "tg", "io0"]
    secret = GHashOrder()
    for key in ("loaded", "format", "keyid", "iv"):  # secret_common's class_init order
        secret.insert(key)
    assert secret.order() == ["format", "loaded", "keyid", "iv"]
