"""Live-data differential tests: QMP steps interleaved with guest I/O through NBD exports,
run on qemu-storage-daemon 7.2 and on ``txgraph serve``, compared step by step."""
