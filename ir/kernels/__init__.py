"""Helion and Triton kernels for IR ops, one per file; importing this package registers them.

Every module in this folder is imported (a new kernel file needs no line here); shared
helpers are named in `_HELPERS`. Registration is metadata only: no kernel file imports
helion at module level, so this import stays cheap (the serve path must never import helion).
"""

import importlib
import pkgutil

_HELPERS = frozenset({"base", "helion_util"})

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module}")
