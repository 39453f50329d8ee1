"""txgraph.model."""
