"""The QEMU peers for tests: re-exported from :mod:`txgraph.peers`."""

from txgraph.peers import QSD, QSD_BINARY, qemu_img, qsd_available

__all__ = ["QSD", "QSD_BINARY", "qemu_img", "qsd_available"]
