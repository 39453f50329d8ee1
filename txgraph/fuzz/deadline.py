"""A deadline on every txgraph step: an engine that does not answer is a ``hang`` finding.

txgraph runs in the fuzzer's own process (:class:`~txgraph.oracle.peers.EnginePeer`),
so a deadlock in the engine — a command blocked on a lock a job thread holds, a
wait that never ends — would stop the campaign instead of being found. Every
command sent to the engine therefore runs under a deadline
(:class:`TimedEnginePeer`): a real-time ``SIGALRM`` that interrupts the blocked
call and unwinds it with :class:`StepHang`, a ``BaseException`` so that no
``except Exception`` of the engine turns it into a reply. The runner reports it
as a divergence of kind ``hang`` whose lines name the command and where the
engine was stuck (its innermost txgraph frames), so one deadlock reached by many
paths is one entry, shrunk and written as reproducers like any other.

QEMU's side has its own deadline (``QMPProcess.reply_timeout``): a daemon that
stops answering is a ``crash`` with its last words.

Signals are delivered to the main thread only, so the deadline is armed when the
runner runs in the main thread (a campaign worker process, the CLI, pytest); a
runner in another thread goes without it. An alarm already set (pytest-timeout's)
is restored after each step, less the step's time.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from txgraph.oracle.peers import EnginePeer

__all__ = ["ENGINE_DEADLINE", "StepHang", "TimedEnginePeer", "deadline"]

#: seconds a txgraph step may take: commands take milliseconds, the longest wait the
#: generator asks for (``x-txgraph-wait-job``, a job wait step) 10 s; the rest is for a
#: loaded machine. Tests lower it.
ENGINE_DEADLINE = 30.0


class StepHang(BaseException):
    """txgraph did not answer a step in time; ``where``: its innermost txgraph frames."""

    def __init__(self, seconds: float, where: list[str]) -> None:
        super().__init__(f"no answer within {seconds:g} s")
        self.seconds = seconds
        self.where = where


def _where(frame: FrameType | None) -> list[str]:
    """``file:function`` of the txgraph frames the main thread was in, innermost first
    (the fuzzer's own frames left out: they only say a step was running)."""
    out = []
    for summary in reversed(traceback.extract_stack(frame)):
        path = summary.filename.replace("\\", "/")
        if "/txgraph/" in path and "/txgraph/fuzz/" not in path:
            out.append(f"{path.rsplit('/txgraph/', 1)[1]}:{summary.name}")
    return out[:4]


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise :class:`StepHang` in the block if it runs longer than ``seconds`` (main
    thread only; elsewhere, and with ``seconds`` <= 0, no deadline)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = [True]

    def expired(signum: int, frame: FrameType | None) -> None:
        if armed[0]:  # not once the block is over (a signal already on its way)
            armed[0] = False
            raise StepHang(seconds, _where(frame))

    previous: Any = signal.signal(signal.SIGALRM, expired)
    # someone else's alarm (pytest-timeout's, for one) is put back afterwards, less the
    # time the block took; one due sooner than this deadline stays as it is
    before, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    if before and before <= seconds:
        signal.signal(signal.SIGALRM, previous)
        signal.setitimer(signal.ITIMER_REAL, before, interval)
        yield
        return
    start = time.monotonic()
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if before:
            left = max(before - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


class TimedEnginePeer(EnginePeer):
    """:class:`~txgraph.oracle.peers.EnginePeer` whose every command runs under
    :data:`ENGINE_DEADLINE` (:class:`StepHang` when it passes)."""

    def execute(self, message: dict[str, Any]) -> dict[str, Any]:
        with deadline(ENGINE_DEADLINE):
            return super().execute(message)

    def close(self) -> None:
        """Close the session; an engine that cannot close in time either (a job thread
        holding its lock) is left behind: the campaign goes on with fresh peers."""
        try:
            with deadline(ENGINE_DEADLINE):
                super().close()
        except StepHang:
            pass
