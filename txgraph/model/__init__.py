"""The block-graph model: pure data and rules, no files and no sockets.

Nodes, edges and non-node parents over a networkx MultiDiGraph; driver
specifications; option values with their provenance; permission bits, the
per-edge formulas and the refresh that enforces them; node-name rules.
"""

from __future__ import annotations

from txgraph.model.child_perms import child_perm
from txgraph.model.drivers import DRIVER_SPECS, ChildSpec, DriverSpec, driver_spec
from txgraph.model.graph import BlockGraph
from txgraph.model.names import MAX_NODE_NAME, AutoNamer, id_wellformed
from txgraph.model.node import Backend, BlockNode, Edge, OpenFlag, ParentKind
from txgraph.model.options import Provenance, Source, flatten, unflatten
from txgraph.model.perm_bits import PERM_ALL, Perm, Role, perm_names
from txgraph.model.perm_refresh import EdgePermChange, compute_refresh

__all__ = [
    "BlockGraph",
    "BlockNode",
    "Backend",
    "Edge",
    "OpenFlag",
    "ParentKind",
    "Perm",
    "Role",
    "PERM_ALL",
    "child_perm",
    "perm_names",
    "DriverSpec",
    "ChildSpec",
    "DRIVER_SPECS",
    "driver_spec",
    "Provenance",
    "Source",
    "flatten",
    "unflatten",
    "AutoNamer",
    "id_wellformed",
    "MAX_NODE_NAME",
    "EdgePermChange",
    "compute_refresh",
]
