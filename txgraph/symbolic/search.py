"""``txgraph verify PLAN --symbolic``: z3 searches, the engine confirms.

:func:`search` encodes the parameterised plan (:mod:`txgraph.symbolic.smtplan`), asks
z3 for the smallest starting graph on which a step breaks a rule, decodes the model
into the QMP commands that build it (:func:`txgraph.symbolic.params.build`) and runs
the plan on that graph on a scratch engine. The engine's run is the counterexample
reported (QEMU's error text, the rules), and it must agree with z3's prediction (same
failing step, same rules); a disagreement is reported as such (``engine-agrees``:
false), never dropped. ``unsat`` is "none up to N nodes".

:func:`all_predictions` lists every failing assignment z3 finds (each model blocked
in turn), which the tests compare with the enumeration's
(:func:`txgraph.symbolic.space.failing_assignments`).

When the engine refuses a step on the maximal graph itself (:class:`SkeletonError`),
the structure after it is unknown to the encoding, and the search falls back to the
enumeration, saying so (``method: enumeration`` and the reason in ``encoding``).
"""

from __future__ import annotations

import time
from pathlib import Path

from txgraph.plan.verify import StateError
from txgraph.symbolic.params import (
    Assignment,
    Counterexample,
    ParamPlan,
    SearchResult,
    build,
    make_images,
    rule_numbers,
    run_plan,
)
from txgraph.symbolic.smtplan import Prediction, SkeletonError, encode, solve
from txgraph.symbolic.space import enumerate_search

__all__ = ["search", "all_predictions"]


def search(
    plan: ParamPlan, workdir: Path, *, max_nodes: int = 8, policy: str = "safe", sock: str = ""
) -> SearchResult:
    """The smallest counterexample within ``max_nodes`` block nodes (z3), or none."""
    start = time.monotonic()
    sock = sock or str(workdir / "nbd.sock")
    try:
        enc = encode(plan, workdir, max_nodes=max_nodes, policy=policy, sock=sock)
    except SkeletonError as exc:
        res = enumerate_search(plan, workdir, max_nodes=max_nodes, policy=policy, sock=sock)
        res.encoding = {"not-encoded": str(exc)}
        return res
    pred = solve(enc)
    stats: dict[str, object] = {**enc.stats, "solve-seconds": round(time.monotonic() - start, 3)}
    if pred is None:
        return SearchResult(
            max_nodes, 0, 0, time.monotonic() - start, method="z3", agrees=True, encoding=stats
        )
    cex, agrees = confirm_on_engine(plan, pred, workdir, sock, policy)
    return SearchResult(
        max_nodes,
        1,
        0,
        time.monotonic() - start,
        cex,
        method="z3",
        prediction={"assignment": pred.assignment, "failing-step": pred.step, "rules": pred.rules},
        agrees=agrees,
        encoding=stats,
    )


def confirm_on_engine(
    plan: ParamPlan, pred: Prediction, workdir: Path, sock: str, policy: str
) -> tuple[Counterexample | None, bool]:
    """Build z3's graph on a scratch engine and run the plan: (the engine's
    counterexample, whether it is the predicted one)."""
    make_images(plan.images)
    cmds, images = build(plan, pred.assignment, workdir, sock)
    make_images(images)
    try:
        found = run_plan(plan, cmds, policy)
    except StateError:
        return None, False  # z3 thought QEMU builds this start; the engine does not
    if found is None:
        return None, False
    step, cmd, err, rules = found
    cex = Counterexample(pred.assignment, cmds, images, step, cmd, err, rules)
    return cex, step == pred.step and rule_numbers(rules) == rule_numbers(pred.rules)


def all_predictions(
    plan: ParamPlan, workdir: Path, *, max_nodes: int = 8, policy: str = "safe", sock: str = ""
) -> list[Prediction]:
    """Every assignment z3 predicts a failure on, smallest first."""
    enc = encode(
        plan, workdir, max_nodes=max_nodes, policy=policy, sock=sock or str(workdir / "nbd.sock")
    )
    out: list[Prediction] = []
    seen: list[Assignment] = []
    while (pred := solve(enc, exclude=seen)) is not None:
        out.append(pred)
        seen.append(pred.assignment)
    return out
