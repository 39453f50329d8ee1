"""Confinement of references found in untrusted image headers (txgraph's own rule).

QEMU opens whatever an image header names: a qcow2 whose backing string is
``/etc/passwd``, ``nbd+unix:///x?socket=/run/…``, ``json:{"driver":"nbd",…}``
or ``../../elsewhere`` makes the block layer read (or, for a ``json:`` asking
for ``read-only: false``, write) that target. QEMU itself offers no policy for
this; ``qemu-img`` users are told to pass ``-o backing_fmt`` and inspect images
first. txgraph adds one:

* **when it applies**: always under the ``safe`` policy; under the ``qemu``
  policy only if allowed directories were configured (``txgraph serve
  --confine-dir DIR``, :func:`configure`). Without it, behaviour is exactly
  QEMU 7.2's.
* **what it checks**: the legacy filename strings the open path takes from an
  image header, i.e. the ``backing`` string (``bdrv_open_backing_file``) and
  the external ``data-file`` name (``qcow2_do_open``). References given by the
  user in blockdev-add options are the user's business and are not checked.
* **the rule**: the reference must be a plain path or ``file:`` path (no other
  protocol prefix, no ``json:``), and its real path (symlinks resolved) must lie
  inside an allowed directory. The allowed directories are the configured ones,
  or, when none were configured (``safe`` default), the directory of the image
  whose header holds the reference.
* **the answer**: an OpenError naming the image and the reference; the open
  path prefixes it as QEMU prefixes any backing error
  (``Could not open backing file: …``), and nothing is left behind.

State: the allowed directories live on the Session (attribute
``confine_dirs``), set once at start-up before any command runs and only read
afterwards, so no lock is needed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from txgraph.errors import OpenError

__all__ = ["configure", "active", "allowed_dirs", "check_header_reference", "HEADER_CHILDREN"]

#: children whose legacy filename string comes from the parent's image header
HEADER_CHILDREN = ("backing", "data-file")


def configure(session: Any, dirs: Iterable[str], *, enabled: bool | None = None) -> None:
    """Set the allowed directories (made absolute, symlinks resolved) on ``session``.

    ``enabled`` overrides the policy-derived default (plan verification runs a
    qemu-policy scratch session but confines under ``--policy safe``).
    """
    session.confine_dirs = tuple(os.path.realpath(d) for d in dirs)
    if enabled is not None:
        session.confine_enabled = enabled


def active(session: Any) -> bool:
    """Confinement is on under ``safe``, or when directories were configured."""
    forced = getattr(session, "confine_enabled", None)
    if isinstance(forced, bool):
        return forced
    return session.policy == "safe" or bool(getattr(session, "confine_dirs", ()))


def allowed_dirs(session: Any, image: str) -> tuple[str, ...]:
    dirs: tuple[str, ...] = getattr(session, "confine_dirs", ())
    if dirs:
        return dirs
    return (os.path.realpath(os.path.dirname(image) or "."),)


def _protocol(reference: str) -> str | None:
    """``path_has_protocol``: the prefix before a ':' that comes before any '/'."""
    colon, slash = reference.find(":"), reference.find("/")
    if colon < 0 or 0 <= slash < colon:
        return None
    return reference[:colon]


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_header_reference(session: Any, image: str, kind: str, reference: str) -> None:
    """Refuse a header ``reference`` (the ``kind`` child of ``image``) that escapes.

    ``reference`` is the string the open path is about to open: for a backing
    it is already made absolute against the image's directory
    (``bdrv_get_full_backing_filename``), a data-file name is used as given.
    """
    if not active(session):
        return
    dirs = allowed_dirs(session, image)

    def refuse(why: str) -> None:
        raise OpenError(
            f"Image '{image}' refers to {kind} '{reference}', which {why} "
            f"(txgraph confinement: allowed directories {', '.join(dirs)}; "
            f"use --confine-dir to allow more, or --policy qemu)"
        )

    if reference.startswith("json:"):
        refuse("is a json: description")
    path = reference
    proto = _protocol(reference)
    if proto is not None:
        if proto != "file":
            refuse(f"uses the '{proto}' protocol")
        path = reference[len("file:") :]
    real = os.path.realpath(path)
    if not any(_inside(real, d) for d in dirs):
        refuse("is outside the allowed directories")


def guard_child_filename(session: Any, parent: Any, kind: str, filename: str) -> None:
    """The open path's hook: a legacy ``filename`` for the ``kind`` child of ``parent``.

    Only ``backing`` and ``data-file`` filenames come from an image header; the
    image is named by the parent's ``file`` child (the file holding the header).
    """
    if kind not in HEADER_CHILDREN or not active(session):
        return
    graph = session.graph
    found = graph.child_edge(parent.name, "file") if parent.name in graph.nodes else None
    image = graph.nodes[found[0]].filename if found else parent.filename
    check_header_reference(session, image, kind, filename)
