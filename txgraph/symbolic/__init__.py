"""txgraph.symbolic: reasoning about graphs nobody has built yet.

- :mod:`graphsmt`: the checker's own rule encoding (:class:`txgraph.checker.encode.Encoder`)
  with edge permissions left symbolic, in a private z3 context — the bounded model
  proofs (proofs/) and the symbolic plan search use it;
- :mod:`smtplan`: a parameterised plan as one z3 problem — the unknown starting graph
  (presence literals over the plan's parameters), the steps as transitions, the
  checker's permission formulas and rules on every state;
- :mod:`search`: ``txgraph verify --symbolic`` — z3's smallest counterexample, decoded
  into QMP commands and confirmed on the engine (and on QSD by the caller);
- :mod:`params`: the parameterised plan format, the decoding into QMP commands, and the
  enumerating cross-check of the z3 search;
- :mod:`guestsmt`: the guest-view rule (V1) in that encoding — each export's read path
  over the unknown graph, the layers' data as literals;
- :mod:`observe`: a guest-view counterexample read through the NBD export on QSD;
- :mod:`bmc`: plan synthesis by bounded model checking in z3 (``txgraph plan --from
  --to``), its sequences confirmed on the engine; its candidate commands (snapshots and
  flag changes included) in :mod:`bmccands`;
- :mod:`synth`: plan synthesis breadth first, the engine as the transition function —
  the cross-check and fallback of :mod:`bmc`;
- :mod:`txsynth`: plan synthesis as one atomic ``x-txgraph-transaction``
  (``--transaction``).
"""

from __future__ import annotations
