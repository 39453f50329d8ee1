"""``qom-list`` and ``qom-get`` over the QOM tree qemu-storage-daemon 7.2 shows for objects.

Reproduces ``qmp_qom_list`` (the properties of ``object_resolve_path``'s
object, built by prepending while ``object_property_iter`` walks the
instance's property table and then each class's up to ``object`` - so the
answer is that walk reversed) and ``qmp_qom_get`` for the containers ``/`` and
``/objects`` and the object types txgraph creates. Property tables are
GLib hash tables whose walk order follows the key hashes:
:class:`GHashOrder` reproduces GLib 2.74's (``g_str_hash``, the index
``hash * 11 % prime``, quadratic probing, tombstones, the resize rule and
``resize_map``'s in-place rehash), which decides where each object id sits
in ``/objects``; the class property lists (fixed per type) are QSD 7.2's
answers, learnt from the daemon like the QAPI data in ``txgraph/qmp/data``.

Lock discipline: a session's :class:`GHashOrder` is owned by that session and
only touched by object-add/object-del and these queries, which run under the
QMP dispatch of that session (one command at a time).
"""

from __future__ import annotations

import weakref
from typing import Any

from txgraph.errors import BlockError
from txgraph.ops.session import Session

__all__ = ["GHashOrder", "objects_table", "qom_list", "qom_get"]

_PRIMES = (1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521)
_UNUSED, _TOMBSTONE = 0, 1


def _str_hash(key: str) -> int:
    """``g_str_hash`` (djb2 over the bytes as signed chars)."""
    h = 5381
    for c in key.encode("utf-8"):
        h = (h * 33 + (c - 256 if c > 127 else c)) & 0xFFFFFFFF
    return h if h >= 2 else 2


class GHashOrder:
    """The slot layout of a GLib string-keyed hash table (keys only)."""

    def __init__(self) -> None:
        #: ``object_get_objects_root`` creates ``/objects`` on first use (container_get)
        self.created = False
        self._set_shift(3)
        self.keys: list[str | None] = [None] * self.size
        self.hashes = [_UNUSED] * self.size
        self.nnodes = self.noccupied = 0

    def _set_shift(self, shift: int) -> None:
        self.size, self.mod, self.mask = 1 << shift, _PRIMES[shift], (1 << shift) - 1

    def _index(self, h: int) -> int:
        return (h * 11 & 0xFFFFFFFF) % self.mod

    def _lookup(self, key: str, h: int) -> tuple[int, bool]:
        idx, step, tomb = self._index(h), 0, -1
        while self.hashes[idx] != _UNUSED:
            if self.hashes[idx] == h and self.keys[idx] == key:
                return idx, True
            if self.hashes[idx] == _TOMBSTONE and tomb < 0:
                tomb = idx
            step += 1
            idx = (idx + step) & self.mask
        return (tomb if tomb >= 0 else idx), False

    def insert(self, key: str) -> None:
        h = _str_hash(key)
        idx, found = self._lookup(key, h)
        if found:
            return
        fresh = self.hashes[idx] == _UNUSED
        self.keys[idx], self.hashes[idx] = key, h
        self.nnodes += 1
        if fresh:
            self.noccupied += 1
            self._maybe_resize()

    def remove(self, key: str) -> None:
        idx, found = self._lookup(key, _str_hash(key))
        if not found:
            return
        self.keys[idx], self.hashes[idx] = None, _TOMBSTONE
        self.nnodes -= 1
        self._maybe_resize()

    def _maybe_resize(self) -> None:
        if (self.size > self.nnodes * 4 and self.size > 8) or (
            self.size <= self.noccupied + self.noccupied // 16
        ):
            self._resize()

    def _resize(self) -> None:
        """``g_hash_table_resize`` with ``resize_map``: entries moved in place, by eviction."""
        old_size = self.size
        self._set_shift(max(3, int(self.nnodes * 1.333).bit_length()))
        if self.size > old_size:
            self.keys += [None] * (self.size - old_size)
            self.hashes += [_UNUSED] * (self.size - old_size)
        moved = [False] * max(self.size, old_size)
        for i in range(old_size):
            h = self.hashes[i]
            if h < 2:
                self.hashes[i] = _UNUSED
                continue
            if moved[i]:
                continue
            self.hashes[i] = _UNUSED
            key = self.keys[i]
            self.keys[i] = None
            while True:
                idx, step = self._index(h), 0
                while moved[idx]:
                    step += 1
                    idx = (idx + step) & self.mask
                moved[idx] = True
                replaced, rkey = self.hashes[idx], self.keys[idx]
                self.hashes[idx], self.keys[idx] = h, key
                if replaced < 2:
                    break
                h, key = replaced, rkey
        del self.keys[self.size :], self.hashes[self.size :]
        self.noccupied = self.nnodes

    def order(self) -> list[str]:
        return [k for k, h in zip(self.keys, self.hashes, strict=True) if h >= 2 and k]


_TABLES: weakref.WeakKeyDictionary[Session, GHashOrder] = weakref.WeakKeyDictionary()


def objects_table(session: Session) -> GHashOrder:
    """The property table of the session's ``/objects`` container (which now exists: every
    caller is a place where QEMU calls ``object_get_objects_root``)."""
    table = _TABLES.get(session)
    if table is None:
        table = _TABLES[session] = GHashOrder()
    table.created = True
    return table


def _objects_exist(session: Session) -> bool:
    table = _TABLES.get(session)
    return table is not None and table.created


#: ``qom-list`` of each type's instance as QSD 7.2 answers it (after ``type``)
_CLASS_PROPS: dict[str, list[tuple[str, str]]] = {
    "secret": [
        ("iv", "string"),
        ("keyid", "string"),
        ("loaded", "bool"),
        ("format", "QCryptoSecretFormat"),
        ("file", "string"),
        ("data", "string"),
    ],
    "iothread": [
        ("thread-pool-min", "int"),
        ("aio-max-batch", "int"),
        ("thread-pool-max", "int"),
        ("poll-max-ns", "int"),
        ("poll-grow", "int"),
        ("poll-shrink", "int"),
    ],
    "pr-manager-helper": [("path", "string")],
}
_TG_LIMITS = [
    "bps-write-max-length",
    "iops-total-max-length",
    "iops-size",
    "limits",
    "bps-total",
    "iops-read-max-length",
    "bps-write",
    "iops-write-max-length",
    "bps-read-max",
    "iops-read-max",
    "bps-total-max",
    "bps-read-max-length",
    "iops-read",
    "bps-read",
    "bps-write-max",
    "iops-total-max",
    "iops-total",
    "iops-write",
    "bps-total-max-length",
    "iops-write-max",
]
_CLASS_PROPS["throttle-group"] = [
    (n, "ThrottleLimits") if n == "limits" else (f"x-{n}", "int") for n in _TG_LIMITS
]
_IOTHREAD_DEFAULTS = {"thread-pool-max": 64, "poll-max-ns": 32768}


#: ``qom-list`` of a ``chardev-socket`` as QSD 7.2 answers it (after ``type``)
_CHARDEV_SOCKET_PROPS = [("connected", "bool"), ("addr", "SocketAddress")]


def _chardev_order(session: Session) -> list[str]:
    """``/chardevs``' children in ``qmp_qom_list``'s order (GLib hash order, reversed)."""
    table = GHashOrder()
    for cid in session.chardevs:
        table.insert(cid)
    return list(reversed(table.order()))


def _chardev_get(session: Session, cid: str, prop: str) -> Any:
    """``qom-get`` on a socket chardev of the command line (``char_socket_class_init``'s
    properties): ``connected`` is true for a monitor's chardev, the one this client uses,
    and for another while a client is attached to it."""
    chardev = session.chardevs[cid]
    if prop == "type":
        return "chardev-socket"
    if prop == "connected":
        return chardev.monitor or chardev.connected
    if prop == "addr":
        return {"path": chardev.path, "type": "unix"}
    raise BlockError(f"Property 'chardev-socket.{prop}' not found")


def _not_found(path: str) -> BlockError:
    err = BlockError(f"Device '{path}' not found")
    err.error_class = "DeviceNotFound"
    return err


def _tree(session: Session) -> list[tuple[list[str], str, Any]]:
    """Every path of the QOM tree below ``/`` with its kind and object, as QSD 7.2 has it:
    ``/objects`` (once created) and its objects, ``/chardevs`` and the command line's chardevs."""
    out: list[tuple[list[str], str, Any]] = []
    if _objects_exist(session):
        out.append((["objects"], "objects", None))
        out += [(["objects", oid], "object", obj) for oid, obj in session.objects.items()]
    out.append((["chardevs"], "chardevs", None))
    out += [(["chardevs", cid], "chardev", cid) for cid in session.chardevs]
    return out


def _resolve(session: Session, path: str) -> tuple[str, Any]:
    """``object_resolve_path``: (kind, the object) for ``path``; a path without a leading
    '/' is partial (``object_resolve_partial_path``: it must end exactly one path)."""
    parts = [p for p in path.split("/") if p]
    if path.startswith("/"):
        if not parts:
            return "root", None
        for comps, kind, obj in _tree(session):
            if comps == parts:
                return kind, obj
        raise _not_found(path)
    if not parts:
        raise BlockError(f"Path '{path}' is ambiguous")
    found = [(k, o) for comps, k, o in _tree(session) if comps[-len(parts) :] == parts]
    if len(found) > 1:
        raise BlockError(f"Path '{path}' is ambiguous")
    if not found:
        raise _not_found(path)
    return found[0]


def qom_list(session: Session, path: str) -> list[dict[str, str]]:
    """``qmp_qom_list``."""
    kind, obj = _resolve(session, path)
    out = [{"name": "type", "type": "string"}]
    if kind == "root":
        objects = (
            [{"name": "objects", "type": "child<container>"}] if _objects_exist(session) else []
        )
        return [*out, *objects, {"name": "chardevs", "type": "child<container>"}]
    if kind == "objects":
        order = objects_table(session).order()
        return out + [
            {"name": oid, "type": f"child<{session.objects[oid].qom_type}>"}
            for oid in reversed(order)
            if oid in session.objects
        ]
    if kind == "chardevs":
        return out + [
            {"name": cid, "type": "child<chardev-socket>"} for cid in _chardev_order(session)
        ]
    if kind == "chardev":
        return out + [{"name": n, "type": t} for n, t in _CHARDEV_SOCKET_PROPS]
    return out + [{"name": n, "type": t} for n, t in _CLASS_PROPS.get(obj.qom_type, [])]


def qom_get(session: Session, path: str, prop: str) -> Any:
    """``qmp_qom_get`` for the properties txgraph models."""
    kind, obj = _resolve(session, path)
    if kind == "chardev":
        return _chardev_get(session, obj, prop)
    if prop == "type":
        return "container" if kind != "object" else obj.qom_type
    if kind == "objects" and prop in session.objects:
        return f"/objects/{prop}"
    if kind == "chardevs" and prop in session.chardevs:
        return f"/chardevs/{prop}"
    if (
        kind == "root"
        and prop in ("objects", "chardevs")
        and (prop != "objects" or _objects_exist(session))
    ):
        return f"/{prop}"
    qom_type = "container" if kind != "object" else obj.qom_type
    names = {n for n, _t in _CLASS_PROPS.get(qom_type, [])}
    if prop not in names:
        raise BlockError(f"Property '{qom_type}.{prop}' not found")
    props = obj.props
    if qom_type == "secret":
        if prop == "loaded":
            return True
        if prop == "format":
            return props.get("format", "raw")
        return props.get(prop) or ""
    if qom_type == "iothread":
        return props.get(prop, _IOTHREAD_DEFAULTS.get(prop, 0))
    if qom_type == "throttle-group":
        group = session.runtime.throttle_groups.get(obj.id)
        limits = group.limits.to_qmp() if group is not None else {}
        if prop == "limits":
            return limits
        return limits.get(prop[2:], 0)
    return props.get(prop) or ""
