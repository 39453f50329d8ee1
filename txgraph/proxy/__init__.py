"""txgraph.proxy: a verifying QMP proxy in front of a real QEMU / qemu-storage-daemon.

``txgraph proxy --listen SOCK --upstream QEMU_SOCK [--policy safe|qemu]``:
clients talk to the proxy as to QEMU (the QMP wire protocol is txgraph's own
server, :mod:`txgraph.qmp.server`); every command that may change the block
graph is first dry-run on a mirror of the upstream graph
(:mod:`txgraph.proxy.engine`), refused under ``safe`` when txgraph's checker
refuses it, otherwise forwarded over one upstream connection
(:mod:`txgraph.proxy.upstream`); afterwards the mirror is re-captured and
compared with the prediction, and a difference is announced to every client
as the event ``X_TXGRAPH_DRIFT``.
"""
