"""What the loss is: a list of registered objectives (the task's cross-entropy, conservative regularisers, ...).

Each objective is one module that registers itself (``hftransfer.registry.register_objective``); importing this
package imports all of its modules, so adding one is adding its file. The protocol is in ``base.py``.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
