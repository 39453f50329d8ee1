"""txgraph bench: txgraph against the QEMU peers, measured in the same run.

``qmp`` (blockdev-add chains and series vs qemu-storage-daemon), ``txn`` (a
20-step transaction vs the same steps on QSD), ``io`` (data-plane reads vs
``qemu-img bench``), ``nbd`` (export throughput vs QSD's export). Each row is
one JSON line ``{name, txgraph, peer, unit, ratio, ...}``. Benchmarks are never
timed tests; ``tests/bench`` only checks that they run.
"""
