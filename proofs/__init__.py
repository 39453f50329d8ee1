"""z3 proofs of properties of txgraph's transaction model (collected by pytest as prove_*.py)."""
