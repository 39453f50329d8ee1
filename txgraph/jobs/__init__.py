"""Block jobs: QEMU's generic job state machine and the block jobs that drive the data plane.

* :mod:`txgraph.jobs.status` — ``JobSTT`` and ``JobVerbTable``;
* :mod:`txgraph.jobs.job` — one job's lifecycle on its own thread;
* :mod:`txgraph.jobs.manager` — the session's jobs, the verbs, completion and finalisation;
* :mod:`txgraph.jobs.blockjob` — a block job's vertex, children and BlockBackend in the graph;
* :mod:`txgraph.jobs.stream` — ``block-stream``.

The package sits above :mod:`txgraph.ops` (graph changes go through session
transactions) and reaches the data plane only through
:mod:`txgraph.io.jobio` and the Runtime's request interface.
"""
