"""Photo inputs for the face tools: the core loader (guide_unlearn.images) plus naming for error messages."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..images import MAX_PIXELS, ImageLike, array_to_image, load_image, to_rgb

__all__ = ["ImageLike", "MAX_PIXELS", "array_to_image", "describe", "load_image", "to_rgb"]


def describe(image: Any) -> str:
    """A short name of an image input for error messages (the file name for paths)."""
    if isinstance(image, (str, os.PathLike)):
        return str(image)
    filename = getattr(image, "filename", "")
    if filename:
        return str(filename)
    if isinstance(image, np.ndarray):
        return f"array of shape {tuple(image.shape)}"
    return f"{type(image).__name__} image"
