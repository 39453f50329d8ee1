"""Built-in data-plane drivers; importing this package registers them all."""

from __future__ import annotations

import importlib
import pkgutil

# Every module in this package registers its classes at import time.
for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
