"""Loading ordinary photos robustly: EXIF orientation, grayscale, alpha, 16-bit, palette, huge files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageLoadError, InputError

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]

# Refuse to decode anything larger (decompression bombs); 100 MP covers any camera photo.
MAX_PIXELS = 100_000_000


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


def _sixteen_bit_to_8(arr: np.ndarray) -> np.ndarray:
    """Map 16/32-bit integer or float pixel values to uint8 (scaled by their nominal range)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.floating):
        arr = np.nan_to_num(arr.astype(np.float64))
        top = 1.0 if arr.max(initial=0.0) <= 1.0 else (255.0 if arr.max(initial=0.0) <= 255.0 else 65535.0)
        return np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
    top = 255.0 if arr.max(initial=0) <= 255 else 65535.0
    return np.clip(arr.astype(np.float64) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB. Alpha is composited on white; 16-bit ("I;16", "I") is rescaled, not clipped."""
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = _sixteen_bit_to_8(np.asarray(image))
        return Image.fromarray(arr, mode="L").convert("RGB")
    return image.convert("RGB")


def array_to_image(arr: np.ndarray) -> Image.Image:
    """[H, W], [H, W, 1|3|4] array (uint8, uint16 or float in [0, 1]) -> RGB PIL image."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"expected an image array [H, W] or [H, W, 3|4], got shape {arr.shape}; "
                         "pass an RGB photo (channels last)")
    arr = _sixteen_bit_to_8(arr)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return to_rgb(Image.fromarray(arr, mode="RGBA"))
    return Image.fromarray(arr).convert("RGB")


def load_image(image: ImageLike) -> Image.Image:
    """Open a photo (path, PIL image or array) as an upright 8-bit RGB PIL image.

    Applies the EXIF orientation tag, converts grayscale / palette / RGBA (composited on white) / 16-bit to RGB.
    Raises ImageLoadError (naming the file) for missing, corrupt, non-image or oversized files.
    """
    if isinstance(image, np.ndarray):
        return array_to_image(image)
    if isinstance(image, Image.Image):
        return to_rgb(ImageOps.exif_transpose(image))
    if not isinstance(image, (str, os.PathLike)):
        raise InputError(f"expected a path, a PIL image or a numpy array, got {type(image).__name__}")
    path = Path(image)
    if not path.is_file():
        raise ImageLoadError(f"photo not found: {path}; check the path")
    try:
        with Image.open(path) as opened:
            width, height = opened.size
            if width * height > MAX_PIXELS:
                raise ImageLoadError(f"{path} is {width}x{height} pixels, more than {MAX_PIXELS:,}; "
                                     "resize it before passing it in")
            opened.load()
            upright = ImageOps.exif_transpose(opened)
            rgb = to_rgb(upright)
    except ImageLoadError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageLoadError(f"cannot read {path} as an image ({exc}); pass a JPEG/PNG/WebP photo") from exc
    rgb.filename = str(path)  # type: ignore[attr-defined]  # so later errors can name the file
    return rgb
