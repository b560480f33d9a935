"""Model backends (generators, inverters, identity and perceptual networks, face detectors) behind the core's
protocols.

Installed as ``guide_unlearn.adapters``; import it only under that name. Importing it imports every
sub-package, and each registers what it provides with :mod:`guide_unlearn.families` (generator families,
checkpoint formats) or :mod:`guide_unlearn.faces` (detectors) in its own ``__init__.py``. So a new generator
family is one sub-package here and nothing else. A sub-package that fails to import fails this import loudly.
"""

import pkgutil
from importlib import import_module

if __name__ != "guide_unlearn.adapters":  # pragma: no cover - guards against a second import name
    raise ImportError("import the backends as `guide_unlearn.adapters`, not as a top-level `adapters` package")

#: The backend sub-packages, in the order they registered (alphabetical).
BACKENDS: tuple[str, ...] = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if m.ispkg))

for _name in BACKENDS:
    import_module(f"{__name__}.{_name}")
del _name
