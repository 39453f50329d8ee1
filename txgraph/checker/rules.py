"""The invariant catalogue: rule ids, meanings, policies and sentence templates.

Each rule restates one of QEMU 7.2's graph invariants (reference/qemu-graph.md
§1.2, §2.2, §8) or one of txgraph's own safety rules (§7 #14, §9). The ids are
stable: errors, verdicts and plan files refer to them.

Policies: ``qemu`` accepts exactly what QEMU accepts; ``safe`` adds the rules
that refuse what QEMU accepts but loses data. Every ``qemu`` rule is also in
``safe``.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Rule", "RULES", "POLICIES", "rules_for"]

POLICIES: tuple[str, ...] = ("qemu", "safe")

_BOTH = frozenset({"qemu", "safe"})
_SAFE = frozenset({"safe"})


@dataclass(frozen=True)
class Rule:
    """One invariant: ``template`` is formatted with the violation's details."""

    id: str
    title: str
    policies: frozenset[str]
    template: str
    #: the QEMU function (or txgraph reasoning) the rule reflects
    source: str


def _r(id: str, title: str, policies: frozenset[str], template: str, source: str) -> Rule:
    return Rule(id, title, policies, template, source)


RULES: dict[str, Rule] = {
    rule.id: rule
    for rule in (
        _r(
            "G1-acyclic",
            "the node-level child graph has no cycle",
            _BOTH,
            "Nodes {cycle} form a cycle of child links ({edges}).",
            "block.c bdrv_attach_child_common / should_update_child / reopen loop checks",
        ),
        _r(
            "G2-role-cardinality",
            "per parent: at most one FILTERED, COW and PRIMARY child; FILTERED and COW are exclusive "
            "with the other data roles",
            _BOTH,
            "Node '{node}' {problem}.",
            "block.c bdrv_child_cb_attach asserts; include/block/block-common.h BdrvChildRoleBits",
        ),
        _r(
            "G3-filter-shape",
            "filters have exactly one FILTERED|PRIMARY child and no COW child; only filters and raw "
            "have a FILTERED child; a COW child needs backing support",
            _BOTH,
            "Node '{node}' ({driver}) {problem}.",
            "block.c bdrv_child_cb_attach, bdrv_filter_child, bdrv_set_backing_noperm",
        ),
        _r(
            "G4-edge-name-unique",
            "child names are unique per parent",
            _BOTH,
            "{owner} has two children named '{name}' ('{a}' and '{b}').",
            "block.c bdrv_find_child (lookup by name), blockdev.c x-blockdev-change",
        ),
        _r(
            "G5-required-children",
            "each driver's mandatory children are attached",
            _BOTH,
            "Node '{node}' ({driver}) {problem}.",
            "bdrv_open_file_child (required file/image child), quorum_open (at least one child)",
        ),
        _r(
            "N1-namespace",
            "node names and BlockBackend names are disjoint",
            _BOTH,
            "node-name={node} is conflicting with a device id",
            "block.c bdrv_assign_node_name",
        ),
        _r(
            "N2-name-valid",
            "node names are well formed and at most 31 characters, or auto names",
            _BOTH,
            "{problem}",
            "block.c bdrv_assign_node_name, util/id.c id_wellformed / id_generate",
        ),
        _r(
            "P1-edge-perm-formula",
            "every edge's perm/shared is its parent's formula applied to the parent's cumulative "
            "permissions (force-share of the child: shared = all)",
            _BOTH,
            "Edge '{edge}' has permissions {have} but its parent requires {want}.",
            "block.c bdrv_child_perm, bdrv_node_refresh_perm, bdrv_get_cumulative_perm",
        ),
        _r(
            "P3-perm-conflict",
            "for every node and ordered pair of distinct parent edges, what one needs the other shares",
            _BOTH,
            "Permission conflict on node '{node}': permissions '{perms}' are both required by {b_desc} "
            "(uses node '{node}' as '{b_name}' child) and unshared by {a_desc} (uses node '{node}' as "
            "'{a_name}' child).",
            "block.c bdrv_parent_perms_conflict, bdrv_a_allow_b",
        ),
        _r(
            "P4-read-only-writer",
            "write or write-unchanged on a node implies the node is writable",
            _BOTH,
            "Block node '{node}' is read-only but its users need '{perms}'.",
            "block.c bdrv_node_refresh_perm",
        ),
        _r(
            "FS1-force-share-ro",
            "force-share implies read-only",
            _BOTH,
            "Node '{node}': force-share=on can only be used with read-only images",
            "block.c bdrv_open_common",
        ),
        _r(
            "F1-frozen-link",
            "a frozen link keeps its child across a transaction",
            _BOTH,
            "Cannot change frozen '{name}' link from '{parent}' to '{old}' ({what}).",
            "block.c bdrv_replace_child_noperm assert, bdrv_set_backing_noperm frozen checks",
        ),
        _r(
            "S1-backing-chain-cut",
            "a change must not drop the backing link of a used node whose header names a backing "
            "file",
            _SAFE,
            "Node '{node}' lost its backing link to '{old}' although its image names backing file "
            "'{file}' and it has users: unallocated clusters would read as zeros.",
            "txgraph safety (reference/qemu-graph.md §7 #14, §9 #2)",
        ),
        _r(
            "S2-orphaned-writer",
            "a writable root user must not sit above a chain that lost data",
            _SAFE,
            "{user} writes to '{top}' whose backing chain lost '{old}' below '{node}'.",
            "txgraph safety (reference/qemu-graph.md §7 #14)",
        ),
        _r(
            "J1-job-chain-cut",
            "a change must not move a link that a running block job still copies through",
            _SAFE,
            "{job} still needs the link '{parent}' -> '{child}' ('{name}'; {what}): the job would "
            "finish without the data of '{child}' and below, and the guest would read other data "
            "(zeros where no layer is left) in every range only they held.",
            "txgraph safety (reference/qemu-jobs.md §4: QEMU 7.2 has no op blocker for reopen)",
        ),
        _r(
            "V1-guest-view",
            "a change must not alter what a guest reads through an export or device, unless the "
            'plan declares it ("intent": "changes-guest-data")',
            _SAFE,
            "Guest reads through {who} (on '{top}') of {detail}.",
            "txgraph safety over block status (bdrv_co_common_block_status_above); decided with "
            "the data plane's allocation by txgraph.ops.guest_view, not by the engines",
        ),
        _r(
            "Z1-solver-unknown",
            "the solver must decide every check within its budget",
            _BOTH,
            "The invariant check could not be decided ({reason}); refusing to commit.",
            "txgraph: z3 `unknown` is never treated as success",
        ),
    )
}


def rules_for(policy: str) -> frozenset[str]:
    """The rule ids a policy enforces."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {POLICIES}")
    # Built once per policy: ``check`` asks on every transaction and RULES never changes.
    got = _BY_POLICY.get(policy)
    if got is None:
        got = _BY_POLICY[policy] = frozenset(
            rid for rid, rule in RULES.items() if policy in rule.policies
        )
    return got


_BY_POLICY: dict[str, frozenset[str]] = {}
