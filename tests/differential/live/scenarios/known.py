"""Scenarios txgraph is known to fail today, each with its root cause (strict xfail).

The coordinator removes an entry once the fix is merged; a fixed scenario shows as
XPASS(strict), i.e. a failure, until then.
"""

from __future__ import annotations

__all__ = ["KNOWN"]


KNOWN: dict[str, str] = {}
