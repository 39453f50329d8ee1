"""txgraph.symbolic: reasoning about graphs nobody has built yet.

- :mod:`graphsmt`: the checker's own rule encoding (:class:`txgraph.checker.encode.Encoder`)
  with edge permissions left symbolic, in a private z3 context — the bounded model
  proofs (proofs/) and the symbolic plan search use it;
- :mod:`synth`: plan synthesis — the shortest sequence of QEMU 7.2 commands from one
  graph to another, with the engine as the transition function;
- :mod:`params`: parameterised plans — search for a starting graph within stated
  constraints on which a plan step fails.
"""

from __future__ import annotations
