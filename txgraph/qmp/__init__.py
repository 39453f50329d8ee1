"""txgraph.qmp."""
