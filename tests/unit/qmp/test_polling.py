"""The QMP loop's adaptive polling (txgraph/qmp/polling.py): QEMU's poll-max-ns rules.

The window's adaptation is checked step by step (no clocks involved); the
selector is checked on real sockets: input already there is found by polling,
a loop that must not poll never does, a timer due before the end of the
window still fires (with a window of 1,000 s, a selector that ignored the
loop's timeout would hang until the suite's timeout), and ``txgraph serve``
answers with polling on and off and refuses a negative window in one line.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import subprocess
import sys

import pytest

from txgraph.peers import TxgraphDaemon
from txgraph.qmp.polling import POLL_START_NS, PollingSelector, polling_loop


def test_the_window_grows_from_4us_doubling_up_to_the_maximum() -> None:
    sel = PollingSelector(poll_max_ns=20_000)
    try:
        seen = []
        for _ in range(5):
            sel._adapt(19_000)  # longer than the window (until it reaches 20 us), below the maximum
            seen.append(sel.poll_ns)
        assert seen == [POLL_START_NS, 8_000, 16_000, 20_000, 20_000]
    finally:
        sel.close()


def test_a_wait_inside_the_window_leaves_it_and_a_long_one_resets_it() -> None:
    sel = PollingSelector(poll_max_ns=100_000)
    try:
        sel.poll_ns = 32_000
        sel._adapt(31_000)
        assert sel.poll_ns == 32_000
        sel._adapt(100_001)
        assert sel.poll_ns == 0
        sel._adapt(200_000)  # a server whose client pauses never starts polling
        assert sel.poll_ns == 0
    finally:
        sel.close()


def test_a_negative_maximum_is_refused() -> None:
    with pytest.raises(ValueError):
        PollingSelector(poll_max_ns=-1)


def _pair_with_input() -> tuple[socket.socket, socket.socket]:
    a, b = socket.socketpair()
    a.sendall(b"x")
    return a, b


def test_input_already_there_is_found_by_polling() -> None:
    sel = PollingSelector(poll_max_ns=1_000_000)
    a, b = _pair_with_input()
    try:
        sel.register(b, selectors.EVENT_READ)
        sel.poll_ns = 1_000_000
        ready = sel.select(None)
        assert [key.fileobj for key, _ in ready] == [b]
        assert (sel.polled, sel.blocked) == (1, 0)
    finally:
        sel.close()
        a.close()
        b.close()


def test_a_zero_maximum_never_polls() -> None:
    sel = PollingSelector(poll_max_ns=0)
    a, b = _pair_with_input()
    try:
        sel.register(b, selectors.EVENT_READ)
        for _ in range(3):
            assert sel.select(None)
        assert (sel.polled, sel.poll_ns) == (0, 0)
    finally:
        sel.close()
        a.close()
        b.close()


def test_a_timer_due_inside_the_window_still_fires() -> None:
    loop = polling_loop(poll_max_ns=10**12)
    try:
        selector = loop._selector  # type: ignore[attr-defined]
        assert isinstance(selector, PollingSelector)
        selector.poll_ns = 10**12  # 1,000 s: only the loop's timeout can end the wait
        fired: list[bool] = []
        loop.call_later(0.01, fired.append, True)
        loop.run_until_complete(asyncio.sleep(0.02))
        assert fired == [True]
    finally:
        loop.close()


@pytest.mark.parametrize("window", ["0", "100000"])
def test_serve_answers_with_polling_on_and_off(window: str) -> None:
    with TxgraphDaemon(["--poll-max-ns", window]) as peer:
        for i in range(50):
            reply = peer.execute("blockdev-add", {"driver": "null-co", "node-name": f"n{i}"})
            assert reply == {"return": {}}
        names = [n["node-name"] for n in peer.cmd("query-named-block-nodes")]
        assert sorted(names) == sorted(f"n{i}" for i in range(50))


def test_serve_refuses_a_negative_window_in_one_line() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "txgraph.cli", "serve", "--poll-max-ns", "-5", "--qmp", "/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2
    assert "Invalid value for '--poll-max-ns'" in res.stderr
    assert "Traceback" not in res.stderr
