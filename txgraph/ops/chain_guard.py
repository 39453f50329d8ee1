"""Backing chains that loop back on themselves, detected by file identity.

QEMU 7.2 has no loop check in ``bdrv_open_backing_file``: a read-only
``a.qcow2`` whose header names ``./a.qcow2`` opens ``dir/./a.qcow2``, then
``dir/././a.qcow2``, … one node per level, until the name reaches PATH_MAX and
open(2) fails; the answer is ``Could not open backing file: `` repeated once per
level (about two thousand times) before ``Could not open '<name>': File name
too long``. With an absolute self-reference the names never grow and QSD 7.2
recurses until it runs out of memory (observed: no answer, >1 GiB). A
read-write top fails early on the image lock in both.

txgraph reproduces QEMU's answer without opening the repetitions: while a
chain is being opened, each header-driven backing level records the (device,
inode) of its image file. When a level's image is a file already on the chain,
the rest is determined (the same headers repeat), so the names QEMU would try
are computed as strings (``bdrv_get_full_backing_filename`` over the repeating
header names) up to the first one open(2) refuses with ENAMETOOLONG, and the
error is raised with the prefixes of the levels not opened. A loop whose names
do not grow gets a plain loop error instead of QEMU's hang. A chain deeper than
:data:`MAX_CHAIN_DEPTH` distinct images is refused, so the open never recurses
deeper than Python allows.

State: the chain stack lives on the Opener (one open, one thread); it only
holds the levels currently being opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from txgraph.errors import OpenError

__all__ = ["backing_chain", "MAX_CHAIN_DEPTH", "PATH_MAX", "NAME_MAX"]

PATH_MAX = 4096
NAME_MAX = 255
#: backing links opened in one chain (QEMU has no limit; Python's stack has: 400-500
#: levels exhaust the default recursion limit, 256 leave room for queries and reopen)
MAX_CHAIN_DEPTH = 256
_PREFIX = "Could not open backing file: "


def _identity(opener: Any, node: Any) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file holding ``node``'s header, if it is a local file."""
    found = opener.graph.child_edge(node.name, "file")
    if not found or not opener.rt.knows(found[0]):
        return None
    identity: tuple[int, int] | None = opener.rt.file_identity(found[0])
    return identity


def _too_long(path: str) -> bool:
    """open(2) would fail with ENAMETOOLONG (the whole name, or one component)."""
    raw = os.fsencode(path)
    return len(raw) >= PATH_MAX or any(len(part) > NAME_MAX for part in raw.split(b"/"))


def _has_protocol(name: str) -> bool:
    colon, slash = name.find(":"), name.find("/")
    return colon >= 0 and not 0 <= slash < colon


def _resolve(base: str, name: str) -> str:
    """``bdrv_get_full_backing_filename`` for a file node named ``base``."""
    if name.startswith("/"):
        return name
    head = os.path.dirname(base)
    return (head + "/" if head else "") + name


def _loop_error(image: str, first: str, cycle: list[str]) -> OpenError:
    """QEMU's answer for a loop entered with ``first`` as the next name to open."""
    path, steps, i = first, 0, 0
    start_len = len(path)
    while not _too_long(path):
        name = cycle[i % len(cycle)]
        if _has_protocol(name):
            break
        path = _resolve(path, name)
        steps += 1
        i += 1
        if i % len(cycle) == 0:
            if len(path) <= start_len:
                break
            start_len = len(path)
    else:
        return OpenError(_PREFIX * steps + f"Could not open '{path}': File name too long")
    return OpenError(f"Backing file '{first}' of '{image}' leads back into its own backing chain")


@contextmanager
def backing_chain(opener: Any, node: Any, backing_filename: str | None) -> Iterator[None]:
    """Guard one level of ``bdrv_open_backing_file``: ``node`` is about to open its backing.

    ``backing_filename`` is the header-derived name about to be opened (None
    when the backing comes from options or a reference).
    """
    stack: list[tuple[tuple[int, int] | None, str | None]] = opener.__dict__.setdefault(
        "_txgraph_backing_chain", []
    )
    ident = _identity(opener, node) if backing_filename is not None else None
    if ident is not None:
        for m, (other, _name) in enumerate(stack):
            if other == ident:
                names = [name for _i, name in stack[m:]]
                image = opener.graph.nodes[opener.graph.child_edge(node.name, "file")[0]].filename
                assert backing_filename is not None
                if any(name is None for name in names):
                    raise OpenError(
                        f"Backing file '{backing_filename}' of '{image}' leads back "
                        "into its own backing chain"
                    )
                # Levels k+1 … : the header names of the cycle, starting after this node's.
                cycle = [n for n in names[1:] + names[:1] if n is not None]
                raise _loop_error(image, backing_filename, cycle)
    if len(stack) >= MAX_CHAIN_DEPTH:
        raise OpenError(f"Backing chain is deeper than {MAX_CHAIN_DEPTH} images (txgraph limit)")
    stack.append((ident, node.backing_file if backing_filename is not None else None))
    try:
        yield
    finally:
        stack.pop()
