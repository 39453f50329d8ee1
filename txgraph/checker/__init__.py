"""txgraph.checker."""
