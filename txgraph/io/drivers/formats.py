"""Registers the image format drivers of :mod:`txgraph.io.formats` (vdi, vpc, qcow, qed...)."""

from __future__ import annotations

from txgraph.io.formats import qcow, vdi

__all__ = ["qcow", "vdi"]
