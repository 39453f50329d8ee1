"""txgraph.oracle: comparing txgraph with a live qemu-storage-daemon 7.2.

``canon`` reduces replies and graph state to what must match, ``peers`` wraps
both sides behind one interface, ``compare`` runs a step on several peers and
says how they differ. The differential tests and ``txgraph fuzz`` share them.
"""
