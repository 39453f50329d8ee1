"""txgraph.plan: reconfiguration plans — verify them on a dry run, then apply them.

Plan file format (JSON)
-----------------------
Either a list of steps, or an object ``{"steps": [...], "graph": STATE}``
(``graph`` is optional and has the same shapes as ``txgraph plan --graph``).
A step is

* a QMP command object, exactly what a QMP client sends to qemu-storage-daemon::

      {"execute": "blockdev-snapshot", "arguments": {"node": "disk", "overlay": "snap"}}

* or an atomic group ``{"transaction": [ACTION, ...]}`` whose actions use the
  ``transaction`` action shape (``{"type": ..., "data": {...}}``) with QEMU's
  action types and txgraph's extension types (``x-txgraph-blockdev-add``,
  ``x-txgraph-blockdev-reopen``, ``x-txgraph-insert-filter``...); it runs as
  ``x-txgraph-transaction``: all actions or none.

Every string may contain ``{dir}``, replaced by ``txgraph plan --dir DIR``.

Starting state (``--graph STATE``)
----------------------------------
* a JSON list of QMP commands (same step shapes), run on the scratch engine
  first (images are opened read-only, never written, never locked); or
* a graph import ``{"block-graph": <x-debug-query-block-graph>,
  "named-nodes": <query-named-block-nodes>, "block-exports": <optional>}``,
  as captured from any QEMU 7.2 / qemu-storage-daemon / txgraph process
  (``--graph-from-qmp SOCKET`` captures it live; from a txgraph server it also
  records ``generation`` and ``digest``).

Verified file (``txgraph plan --out FILE``, also the ``--json`` output)
---------------------------------------------------------------------
``{"format": "txgraph-plan-report/1", "txgraph": VERSION, "ok": bool, "policy": ...,
"source": {"kind", "generation"?, "digest"?}, "plan": [steps], "steps": [per-step
result: index, label, step, extension, accepted, ok, reply, error, explanation,
diff, verdict, warnings, not-simulated], "seal": {"algorithm", "digest"}}``. The
seal (:mod:`txgraph.plan.seal`) is a digest over every other member, keyed with
``--key-file``: ``txgraph apply`` refuses a file edited after verification or
verified by another txgraph version. ``txgraph apply VERIFIED --qmp SOCKET`` sends
``x-txgraph-apply-plan`` with ``expect-generation`` and
``expect-digest`` from ``source``: the server refuses it when the live graph
changed since the plan was verified. Verified against QEMU / qemu-storage-daemon,
``source`` holds ``graph-digest`` instead, and ``apply`` runs :mod:`live`: the
live graph is re-imported and compared with it, extension steps are compiled
into QEMU 7.2 commands (:mod:`compile`) and every command's reply and graph are
checked against the dry run's prediction.

Modules: ``format`` (plan files), ``verify`` (the dry run and its report),
``seal`` (verified-plan seals), ``diff``, ``render`` (text report), ``importer``
(graphs captured from a live QEMU; ``inferred``: what the queries do not show),
``compile`` and ``live`` (apply to QEMU),
``dryrun``, ``client``, ``demo``. The
package imports none of them itself, so the QMP layer can use ``format``
without pulling in the dry run (which needs the QMP engine).
"""
