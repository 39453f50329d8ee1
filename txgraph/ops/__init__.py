"""txgraph.ops."""
