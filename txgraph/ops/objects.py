"""object-add and object-del for the QOM objects the block layer uses.

Reproduces ``qmp_object_add`` / ``user_creatable_add_qapi`` and
``qmp_object_del`` / ``user_creatable_del`` for ``throttle-group`` (the only
user-creatable object type txgraph's graph depends on): ids share QOM's
``/objects`` namespace, and a group still used by a throttle node cannot go.
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import BlockError
from txgraph.model.names import id_wellformed
from txgraph.ops.session import QomObject, Session

__all__ = ["object_add", "object_del"]

SUPPORTED_TYPES = ("throttle-group",)


def object_add(session: Session, arguments: dict[str, Any]) -> None:
    qom_type = arguments["qom-type"]
    obj_id = arguments["id"]
    if not id_wellformed(obj_id):
        raise BlockError(f"Parameter 'id' expects an identifier")
    if obj_id in session.objects:
        raise BlockError(f"attempt to add duplicate property '{obj_id}' to object (type 'container')")
    props = {k: v for k, v in arguments.items() if k not in ("qom-type", "id")}
    if qom_type == "throttle-group":
        _validate_throttle_limits(props)
    session.objects[obj_id] = QomObject(obj_id, qom_type, props)
    groups = getattr(session.runtime, "throttle_groups", None)
    if groups is not None and qom_type == "throttle-group":
        groups.add(obj_id, props.get("limits", {}))


def _validate_throttle_limits(props: dict[str, Any]) -> None:
    """``throttle_group_set_limits`` + ``throttle_is_valid``: QEMU's limit checks."""
    limits = dict(props.get("limits", {}))
    for key, value in props.items():
        if key.startswith("x-"):
            limits[key[2:]] = value
    for key, value in limits.items():
        if isinstance(value, int) and not 0 <= value <= 1_000_000_000_000_000:
            raise BlockError("bps/iops/max values must be within [0, 1000000000000000]")
    for kind in ("bps", "iops"):
        total = limits.get(f"{kind}-total", 0)
        if total and (limits.get(f"{kind}-read", 0) or limits.get(f"{kind}-write", 0)):
            raise BlockError("bps/iops/max total values and read/write values cannot be used "
                             "at the same time")
    for key, value in limits.items():
        if key.endswith("-max") and value:
            base = limits.get(key[: -len("-max")], 0)
            if not base:
                raise BlockError("bps_max/iops_max require corresponding bps/iops values")
            if value < base:
                raise BlockError("bps_max/iops_max cannot be lower than bps/iops")


def object_del(session: Session, obj_id: str) -> None:
    obj = session.objects.get(obj_id)
    if obj is None:
        raise BlockError(f"object '{obj_id}' not found")
    if obj.qom_type == "throttle-group":
        for node in session.graph.nodes.values():
            if node.driver == "throttle" and node.options.get("throttle-group") == obj_id:
                raise BlockError(f"object '{obj_id}' is in use, can not be deleted")
    del session.objects[obj_id]
    groups = getattr(session.runtime, "throttle_groups", None)
    if groups is not None and obj.qom_type == "throttle-group":
        groups.remove(obj_id)
