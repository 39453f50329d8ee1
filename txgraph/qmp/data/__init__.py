"""QAPI interface data captured from qemu-storage-daemon (see README)."""
