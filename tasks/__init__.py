"""Built-in tasks. Importing this package registers every module/subpackage in it."""

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_info.name}")
