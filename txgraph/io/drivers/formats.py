"""Registers the image format drivers of :mod:`txgraph.io.formats` (vdi, vpc, qcow, qed...)."""

from __future__ import annotations

from txgraph.io.formats import bochs, cloop, dmg, parallels, qcow, qed, vdi, vhdx, vmdk, vpc

__all__ = ["bochs", "cloop", "dmg", "parallels", "qcow", "qed", "vdi", "vhdx", "vmdk", "vpc"]
