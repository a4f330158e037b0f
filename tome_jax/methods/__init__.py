"""Token-reduction methods, one file each, registered by name (the seam: `tome_jax/methods/base.py`).

Importing this package imports every module in it, so a method's file registers itself: adding a
method is one new file here with `@register_method(name, options=...)`, nothing else.
"""

import importlib
import pkgutil

from tome_jax.methods.base import (METHODS, LayerInputs, NoOptions, ReductionMethod, method_entry,
                                   register_method, resolve_options)

# ToMe's file first (its methods lead METHODS, "bipartite" the default), then the rest by file name.
for _module in sorted((m.name for m in pkgutil.iter_modules(__path__)), key=lambda name: (name != "tome", name)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["METHODS", "LayerInputs", "NoOptions", "ReductionMethod", "method_entry", "register_method",
           "resolve_options"]
