"""The directories a run works in: its images written, and removed afterwards.

Every run gets fresh directories holding the same images
(:data:`~txgraph.fuzz.generate.IMAGES`): made once per process by ``qemu-img`` and
``qemu-io`` (:func:`~txgraph.fuzz.generate.image_commands`), then written into each
directory from their data extents, and removed by a background reaper once the
run's peers are closed.
"""

from __future__ import annotations

import atexit
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from txgraph.fuzz.generate import image_commands

__all__ = ["REAPER", "make_images"]

_TEMPLATE: Path | None = None
#: the template images as (name, size, [(offset, data)...]): only their data extents,
#: read once per process
_EXTENTS: list[tuple[str, int, list[tuple[int, bytes]]]] = []


def _extents(path: Path) -> tuple[int, list[tuple[int, bytes]]]:
    """``path``'s size and its data extents (``SEEK_DATA``/``SEEK_HOLE``): its holes stay
    holes in every copy (a 1 MiB raw image is 1 MiB of hole)."""
    out = []
    with path.open("rb") as f:
        size = os.fstat(f.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(f.fileno(), pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole is left
                break
            end = os.lseek(f.fileno(), start, os.SEEK_HOLE)
            f.seek(start)
            out.append((start, f.read(end - start)))
            pos = end
    return size, out


def make_images(workdir: Path) -> None:
    """Write the images made once per process by qemu-img (a copy of their data extents
    costs far less than a create, and than a copy that fills their holes)."""
    global _TEMPLATE
    if _TEMPLATE is None or not _TEMPLATE.is_dir():
        template = Path(tempfile.mkdtemp(prefix="txgraph-fuzz-images-"))
        for argv in image_commands():
            subprocess.run(argv, cwd=template, check=True, capture_output=True, timeout=60)
        atexit.register(shutil.rmtree, template, True)
        _TEMPLATE = template
        _EXTENTS[:] = [(p.name, *_extents(p)) for p in sorted(template.iterdir())]
    for name, size, extents in _EXTENTS:
        fd = os.open(workdir / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for offset, data in extents:
                os.pwrite(fd, data, offset)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)


class _Reaper:
    """Removes run directories in a background thread: unlinking a run's images costs
    milliseconds of disk time the next run need not wait for. Owns its queue (a
    ``queue.Queue``, thread-safe); the process waits for it at exit, so nothing stays."""

    def __init__(self) -> None:
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # guards _thread (started once, on first use)

    def remove(self, dirs: list[Path]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fuzz-reaper", daemon=True)
                self._thread.start()
                atexit.register(self.drain)
        for d in dirs:
            self._queue.put(d)

    def _run(self) -> None:
        while (d := self._queue.get()) is not None:
            shutil.rmtree(d, ignore_errors=True)
            self._queue.task_done()
        self._queue.task_done()

    def drain(self) -> None:
        """Wait until every directory handed over is removed."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()


#: the process's one reaper
REAPER = _Reaper()
