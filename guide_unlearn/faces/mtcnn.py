"""Moved to :mod:`guide_unlearn.adapters.faces.mtcnn` (face detector backends are adapters). Names stay importable
from here for existing code; the backend is imported only when one of them is used (core imports no backend)."""

from importlib import import_module
from typing import Any

_TARGET = "guide_unlearn.adapters.faces.mtcnn"


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(import_module(_TARGET), name)


def __dir__() -> list[str]:
    return sorted(vars(import_module(_TARGET)))
