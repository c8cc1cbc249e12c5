"""Built-in IR ops. Importing this package registers them all as `torch.ops.kiln.*`.

Every module in this folder is imported, so a new op file needs no line here.
"""

import importlib
import pkgutil

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")
