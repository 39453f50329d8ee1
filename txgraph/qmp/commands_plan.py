"""txgraph extensions for plans: ``x-txgraph-query-generation``, ``-query-objects``, ``-apply-plan``.

None exists in QEMU (hence the ``x-`` names); ``x-txgraph-query-objects``
lists the user-created QOM objects as ``object-add`` arguments, so a plan
verifier can rebuild throttle groups (QEMU answers the same via ``qom-list``). ``x-txgraph-query-generation``
returns ``{"generation": N, "digest": "..."}``: the number of committed graph
transactions and the SHA-256 of the graph state. ``x-txgraph-apply-plan
{"expect-generation": N, "expect-digest": "...", "steps": [...]}`` refuses
with a GenericError when the live graph is not the one the plan was verified
against, and otherwise runs the steps in order, each exactly as the same
command sent alone would run (its own transaction; a ``{"transaction": [...]}``
group atomically through ``x-txgraph-transaction``), stopping at the first
failure. The failure's reply names the step, QEMU's text for it, and how many
steps were applied before it (they stay applied, as they would had a client
sent them one by one); ``__io.txgraph_plan`` carries the details.
"""

from __future__ import annotations

from typing import Any

from txgraph.errors import BlockError, QAPIError, QMPError, TxgraphError
from txgraph.plan.format import PlanError, parse_steps
from txgraph.qmp.command_table import COMMANDS, CommandContext, command
from txgraph.qmp.qapi import check_message, validate_arguments

__all__ = ["run_message", "PlanStepFailed"]


class PlanStepFailed(BlockError):
    """A step of ``x-txgraph-apply-plan`` failed; earlier steps stay applied."""

    def __init__(self, desc: str, detail: dict[str, Any]) -> None:
        super().__init__(desc, rule="plan-step-failed")
        self.detail = detail

    def to_qmp(self) -> dict[str, Any]:
        err = super().to_qmp()
        err["__io.txgraph_plan"] = self.detail
        return err


def run_message(ctx: CommandContext, message: dict[str, Any]) -> dict[str, Any]:
    """Run one QMP command message as the Engine would (``qmp_dispatch``), reply as a dict."""
    try:
        name, arguments = check_message(message)
        handler = COMMANDS.get(name)
        if handler is None:
            raise QMPError(f"The command {name} has not been found", "CommandNotFound")
        if name == "x-txgraph-apply-plan":
            raise BlockError("x-txgraph-apply-plan cannot be a step of a plan")
        return {"return": handler(ctx, validate_arguments(name, arguments))}
    except TxgraphError as err:
        return {"error": err.to_qmp()}


def _state(ctx: CommandContext) -> dict[str, Any]:
    graph = ctx.session.graph
    return {"generation": graph.generation, "digest": graph.digest()}


@command("x-txgraph-query-objects")
def _query_objects(ctx: CommandContext, args: dict[str, Any]) -> Any:
    """The user-created QOM objects as the ``object-add`` arguments that re-create them."""
    return [{"qom-type": o.qom_type, "id": o.id, **o.props} for o in ctx.session.objects.values()]


@command("x-txgraph-query-generation")
def _query_generation(ctx: CommandContext, args: dict[str, Any]) -> Any:
    return _state(ctx)


@command("x-txgraph-apply-plan")
def _apply_plan(ctx: CommandContext, args: dict[str, Any]) -> Any:
    gen, digest, raw_steps = args["expect-generation"], args["expect-digest"], args["steps"]
    try:
        steps = parse_steps(raw_steps)
    except PlanError as err:
        raise QAPIError(f"Invalid plan: {err}") from None
    live = _state(ctx)
    if live["generation"] != gen or live["digest"] != digest:
        raise BlockError(
            f"Stale plan: it was verified against graph generation {gen} (digest "
            f"{digest[:16]}), but the live graph is at generation {live['generation']} (digest "
            f"{live['digest'][:16]}); verify the plan again",
            rule="plan-stale",
        )
    replies: list[Any] = []
    warnings: list[dict[str, Any]] = []
    for index, step in enumerate(steps):
        ctx.session.last_warnings = []
        # A step verified with "intent": "changes-guest-data" may change the guest's data.
        ctx.session.declared_guest_change = step.intent is not None
        try:
            reply = run_message(ctx, step.message())
        finally:
            ctx.session.declared_guest_change = False
        if "error" in reply:
            error = reply["error"]
            raise PlanStepFailed(
                f"Plan step {index + 1} of {len(steps)} ({step.label()}) failed: "
                f"{error['desc']}; {index} step(s) were applied before it",
                {
                    "completed": index,
                    "failed-step": index,
                    "error": error,
                    "replies": replies,
                    **_state(ctx),
                },
            )
        replies.append(reply["return"])
        warnings.extend(ctx.session.last_warnings)
    return {"completed": len(steps), "replies": replies, "warnings": warnings, **_state(ctx)}
