"""QEMU's QObject JSON dialect: the parser and the writer QEMU uses for QMP and json: filenames.

A stdlib-only utility layer: the QMP server, the ops layer (json: filenames in
image headers) and the model (QDict key order) all speak it.
"""
