"""Loading user photos safely: any common format in, an RGB PIL image or a [-1, 1] tensor out."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .errors import ImageLoadError, InputError

logger = logging.getLogger(__name__)
from .gate.tensors import MAX_PIXELS  # refuse decompression bombs beyond 64 MP (about 8000 x 8000)
MIN_SIDE = 16

ImageLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_image(image: ImageLike) -> Image.Image:
    """A path, PIL image or array ([H, W] / [H, W, 3|4], uint8 / uint16 / float) -> an upright 8-bit RGB PIL image
    (EXIF orientation applied; grayscale, RGBA, palette, CMYK and 16-bit converted; the first frame of an
    animation). Corrupt, non-image, tiny (< 16 px) or huge (> 64 MP) inputs raise :class:`ImageLoadError` naming
    the file; the returned image carries ``.filename`` so later errors can name it too."""
    if isinstance(image, np.ndarray):
        return array_to_image(image)
    label = str(image) if not isinstance(image, Image.Image) else (getattr(image, "filename", "") or "the given PIL image")
    if isinstance(image, Image.Image):
        img = image
    else:
        path = Path(image)
        if not path.is_file():
            raise ImageLoadError(f"{path} does not exist or is not a file; pass the path of a photo")
        from .gate import open_image

        img = open_image(path, "photo")  # the reading gate: a regular file, size and pixel caps, typed errors
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
    out = to_rgb(img)
    if not isinstance(image, Image.Image):
        out.filename = str(image)  # type: ignore[attr-defined]
    return out


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
        raise ImageLoadError(f"expected an image array [H, W] or [H, W, 3|4], got shape {arr.shape}; "
                         "pass an RGB photo (channels last)")
    arr = _sixteen_bit_to_8(arr)
    if arr.ndim == 3 and arr.shape[2] == 4:
        return to_rgb(Image.fromarray(arr, mode="RGBA"))
    return Image.fromarray(arr).convert("RGB")


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


# Inverters called directly also take raw generator renders, which may overshoot [-1, 1] (a random tiny model's by
# ~3): they refuse only what is clearly another scale (0..255 pixels). The eraser's own check is strict.
GROSS_RANGE_TOLERANCE = 9.0


def check_image_range(x: torch.Tensor, what: str = "image tensor", tolerance: float = 1e-3) -> None:
    """Refuse an image tensor whose values leave [-1, 1] (beyond ``tolerance``, for resampling overshoot) with an
    :class:`InputError` that names the expected range and the usual conversions. ``x``: any shape, e.g.
    [N, 3, H, W]."""
    if x.numel() == 0 or x.device.type == "meta":  # nothing to look at (shape-only runs on the meta device)
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.0 - tolerance or hi > 1.0 + tolerance:
        hint = ("it looks like 0..255 pixels: use x / 127.5 - 1" if hi > 2.0 else
                "it looks like [0, 1] pixels: use x * 2 - 1" if lo >= 0.0 else "rescale it")
        raise InputError(f"{what} values span [{lo:.4g}, {hi:.4g}], outside the expected range [-1, 1]; {hint}")


def image_strip(rows: list[torch.Tensor], labels: Optional[Sequence[str]] = None) -> Image.Image:
    """Rows of images ([N, 3, H, W] each in [-1, 1], same H) -> one PIL picture, rows stacked vertically. With
    ``labels`` (one per row, e.g. photo / before / after / target), each row is named in a white column on the
    left."""
    if labels is not None and len(labels) != len(rows):
        raise InputError(f"got {len(labels)} labels for {len(rows)} rows")
    lines = []
    for r in rows:
        r = r.detach().float().cpu()
        lines.append(torch.cat(list(r), dim=-1))
    width = max(l.shape[-1] for l in lines)
    lines = [F.pad(l, (0, width - l.shape[-1]), value=1.0) for l in lines]
    picture = tensor_to_pil(torch.cat(lines, dim=-2))
    if not labels:
        return picture
    return _label_rows(picture, [l.shape[-2] for l in lines], list(labels))


def _label_rows(picture: Image.Image, heights: list[int], labels: list[str]) -> Image.Image:
    """``picture`` with a white column on its left holding each row's label, centred on the row."""
    from PIL import ImageDraw, ImageFont

    size = max(10, min(32, min(heights) // 5))
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    boxes = [probe.textbbox((0, 0), text, font=font) for text in labels]
    pad = max(4, size // 2)
    column = max(b[2] - b[0] for b in boxes) + 2 * pad
    out = Image.new("RGB", (picture.width + column, picture.height), (255, 255, 255))
    out.paste(picture, (column, 0))
    draw = ImageDraw.Draw(out)
    top = 0
    for text, box, h in zip(labels, boxes, heights):
        draw.text((pad, top + (h - (box[3] - box[1])) // 2 - box[1]), text, fill=(0, 0, 0), font=font)
        top += h
    return out


PICTURE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def picture_format(path: Union[str, os.PathLike]) -> str:
    """The PIL format of a picture file name by its extension (.png, .jpg / .jpeg, .webp); an
    :class:`InputError` naming the accepted extensions for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in PICTURE_FORMATS:
        raise InputError(f"{path}: cannot write a picture with extension {suffix or '(none)'!r}; use one of "
                         f"{', '.join(sorted(PICTURE_FORMATS))}")
    return PICTURE_FORMATS[suffix]


def encode_picture(image: Image.Image, path: Union[str, os.PathLike]) -> bytes:
    """``image`` encoded in the format its destination ``path`` names (see :func:`picture_format`; JPEG at
    quality 95). -> the file's bytes (write them with ``guide_unlearn.io.atomic_write_bytes``)."""
    import io

    fmt = picture_format(path)
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format=fmt, **({"quality": 95} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()
