"""Loading user photos safely: any common format in, an RGB PIL image or a [-1, 1] tensor out."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageLoadError

logger = logging.getLogger(__name__)
MAX_PIXELS = 64_000_000  # refuse decompression bombs beyond 64 MP (about 8000 x 8000)
MIN_SIDE = 16

ImageLike = Union[str, os.PathLike, Image.Image]


def load_image(image: ImageLike) -> Image.Image:
    """A path or PIL image -> an RGB PIL image (EXIF orientation applied; grayscale, RGBA, palette, CMYK and
    16-bit converted; the first frame of an animation). Corrupt, non-image, tiny (< 16 px) or huge (> 64 MP)
    inputs raise :class:`ImageLoadError` naming the file."""
    label = str(image) if not isinstance(image, Image.Image) else "the given PIL image"
    if isinstance(image, Image.Image):
        img = image
    else:
        path = Path(image)
        if not path.is_file():
            raise ImageLoadError(f"{path} does not exist or is not a file; pass the path of a photo")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(path)
                if img.width * img.height > MAX_PIXELS:
                    raise ImageLoadError(f"{path} is {img.width}x{img.height} pixels, over the {MAX_PIXELS:,}-pixel "
                                         "limit; downscale it first")
                img.load()
        except ImageLoadError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageLoadError(f"{path} is too large to decode safely ({e}); downscale it first") from e
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise ImageLoadError(f"{path} is not a readable image ({e.__class__.__name__}: {e}); pass a JPEG or PNG "
                                 "photo") from e
    if img.width * img.height > MAX_PIXELS:
        raise ImageLoadError(f"{label} is {img.width}x{img.height} pixels, over the {MAX_PIXELS:,}-pixel limit; "
                             "downscale it first")
    if getattr(img, "is_animated", False):
        logger.warning("%s is animated; using its first frame", label)
        img.seek(0)
    img = ImageOps.exif_transpose(img)
    if min(img.size) < MIN_SIDE:
        raise ImageLoadError(f"{label} is only {img.width}x{img.height} pixels; a face photo needs at least "
                             f"{MIN_SIDE} px per side")
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited on white, 16-bit scaled by its range)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr, mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def pil_to_tensor(img: Image.Image, size: int | None = None) -> torch.Tensor:
    """RGB PIL image -> [1, 3, H, W] float in [-1, 1] (resized to size×size with antialiasing if given)."""
    arr = torch.from_numpy(np.asarray(to_rgb(img), dtype=np.uint8).copy()).permute(2, 0, 1).float()
    x = (arr / 127.5 - 1).unsqueeze(0)
    if size is not None and tuple(x.shape[-2:]) != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x


def tensor_to_pil(x: torch.Tensor) -> Image.Image:
    """[3, H, W] or [1, 3, H, W] in [-1, 1] -> PIL RGB, saved as (x * 127.5 + 128).clamp(0, 255) like GUIDE."""
    if x.ndim == 4:
        x = x[0]
    arr = (x.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr, "RGB")


def image_strip(rows: list[torch.Tensor]) -> Image.Image:
    """Rows of images ([N, 3, H, W] each, same H) -> one PIL picture, rows stacked vertically."""
    lines = []
    for r in rows:
        r = r.detach().float().cpu()
        lines.append(torch.cat(list(r), dim=-1))
    width = max(l.shape[-1] for l in lines)
    lines = [F.pad(l, (0, width - l.shape[-1]), value=1.0) for l in lines]
    return tensor_to_pil(torch.cat(lines, dim=-2))
