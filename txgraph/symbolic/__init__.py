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
- :mod:`synth`: plan synthesis — the shortest sequence of QEMU 7.2 commands from one
  graph to another, with the engine as the transition function.
"""

from __future__ import annotations
