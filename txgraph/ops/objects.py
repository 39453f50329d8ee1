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
from txgraph.ops.pr_manager import PR_TYPES, PrManagerObject, pr_helper_connect
from txgraph.ops.qom import objects_table
from txgraph.ops.secrets import SECRET_TYPES, check_secret_properties, load_secret
from txgraph.ops.session import QomObject, Session

__all__ = ["object_add", "object_del"]


def object_add(session: Session, arguments: dict[str, Any]) -> None:
    """``user_creatable_add_qapi``: properties are validated before the id is claimed."""
    qom_type = arguments["qom-type"]
    obj_id = arguments["id"]
    if not id_wellformed(obj_id):
        raise BlockError("Parameter 'id' expects an identifier")
    props = {k: v for k, v in arguments.items() if k not in ("qom-type", "id")}
    groups = session.runtime.throttle_groups
    limits: dict[str, Any] = {}
    if qom_type == "throttle-group":
        limits = dict(props.get("limits", {}))
        # The legacy x-<limit> properties set the same limits; their setter
        # (throttle_group_set) refuses a negative value before any range check.
        if any(k.startswith("x-") and isinstance(v, int) and v < 0 for k, v in props.items()):
            raise BlockError("Property values cannot be negative")
        limits.update({k[2:]: v for k, v in props.items() if k.startswith("x-")})
        try:
            groups.validate(limits)
        except BlockError:
            if obj_id not in session.objects:  # QEMU checks in complete, after the child add
                objects_table(session).insert(obj_id)
                objects_table(session).remove(obj_id)
            raise
    if qom_type in SECRET_TYPES:
        check_secret_properties(props)
    if obj_id in session.objects:
        raise BlockError(
            f"attempt to add duplicate property '{obj_id}' to object (type 'container')"
        )
    # object_property_try_add_child: the id enters /objects' table before the object is
    # completed, and leaves it again when completion fails (qom-list order depends on it)
    table = objects_table(session)
    table.insert(obj_id)
    try:
        if qom_type == "throttle-group":
            groups.add(obj_id, limits)
        if qom_type in SECRET_TYPES:
            session.objects[obj_id] = load_secret(session, obj_id, props, qom_type)
            return
        if qom_type in PR_TYPES:
            session.objects[obj_id] = pr_helper_connect(session, obj_id, props)
            return
    except BaseException:
        table.remove(obj_id)
        raise
    session.objects[obj_id] = QomObject(obj_id, qom_type, props)


def object_del(session: Session, obj_id: str) -> None:
    objects_table(session)  # user_creatable_del looks the id up under object_get_objects_root
    obj = session.objects.get(obj_id)
    if obj is None:
        raise BlockError(f"object '{obj_id}' not found")
    if obj.qom_type == "throttle-group":
        for node in session.graph.nodes.values():
            if node.driver == "throttle" and node.options.get("throttle-group") == obj_id:
                raise BlockError(f"object '{obj_id}' is in use, can not be deleted")
    del session.objects[obj_id]
    objects_table(session).remove(obj_id)
    if isinstance(obj, PrManagerObject):
        obj.close()
    if obj.qom_type == "throttle-group":
        session.runtime.throttle_groups.remove(obj_id)
