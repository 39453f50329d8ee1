"""txgraph.io."""
