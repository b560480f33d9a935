"""Rendering, and turning what a user gives an eraser (photos, PIL images, aligned tensors or codes) into codes: loading, face
alignment for the inverter, cameras, and the inversion itself."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from PIL import Image

from guide_unlearn.errors import InputError
from guide_unlearn.images import check_image_range, load_image, pil_to_tensor
from guide_unlearn.latents import check_latents
from guide_unlearn.pipelines.components import EraserParts

logger = logging.getLogger(__name__)
Inputs = Union[torch.Tensor, Image.Image, str, os.PathLike, Sequence[Any]]
Faces = Union[None, int, Sequence[Optional[int]]]


@torch.no_grad()
def synthesize(generator, ws: torch.Tensor, seed: int = 0, camera: Optional[torch.Tensor] = None,
               noise_mode: str = "const") -> torch.Tensor:
    """ws [N, num_ws, w_dim] (+ camera [N or 1, c_dim]) -> images [N, 3, H, W] in [-1, 1] from ``generator`` as it
    is now (applied patches included); ``seed`` drives any randomness (random noise, ray jitter)."""
    ws = check_latents(ws, generator)
    g = torch.Generator(device=generator.w_avg.device).manual_seed(seed)
    if camera is not None and camera.shape[0] == 1 and ws.shape[0] > 1:
        camera = camera.expand(ws.shape[0], -1)
    return generator.synthesis(ws, camera, noise_mode=noise_mode, generator=g).images.clamp(-1, 1)


@torch.no_grad()
def sample(generator, n: int = 1, seed: int = 0, truncation_psi: float = 1.0, noise_mode: str = "random",
           camera: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``n`` random faces -> images [n, 3, H, W] in [-1, 1] (see :meth:`IdentityEraser.sample`)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive number of samples, got {n!r}")
    if noise_mode not in ("random", "const", "none"):
        raise InputError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
    device = generator.w_avg.device
    z = torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(device)
    cams = None
    if camera is not None and generator.c_dim:
        from guide_unlearn.pipelines.assembly import camera_from_user

        cams = camera_from_user(generator, camera, n).to(device)
    ws = generator.mapping(z, cams, truncation_psi=truncation_psi)
    return synthesize(generator, ws, seed=seed, camera=cams, noise_mode=noise_mode)


def invert(eraser: EraserParts, inputs: Inputs, camera: Optional[torch.Tensor] = None, align: bool = True,
           seed: int = 0, face: Faces = None, progress: bool = True) -> torch.Tensor:
    """Photos -> codes [N, num_ws, w_dim] with ``eraser.inverter`` (see :meth:`IdentityEraser.invert`)."""
    images, cams = prepare_images(eraser, inputs, camera, align, face)
    g = torch.Generator(device=eraser.device).manual_seed(seed)
    with inverter_progress(eraser.inverter, progress):
        return eraser.inverter.invert(images, cams, generator=g)


def codes(eraser: EraserParts, inputs: Inputs, camera, face: Faces = None, progress: bool = True):
    """Photos or codes -> (codes [K, num_ws, w_dim], the prepared photos [K, 3, H, W] or None, their cameras or
    None). Code tensors [K, num_ws, w_dim] (or [num_ws, w_dim]) pass through :func:`check_latents`."""
    gen = eraser.generator
    if torch.is_tensor(inputs) and inputs.ndim in (2, 3) and tuple(inputs.shape[-2:]) == (gen.num_ws, gen.w_dim):
        return check_latents(inputs, gen), None, None
    if torch.is_tensor(inputs) and inputs.ndim in (2, 3) and inputs.shape[0] != 3:
        return check_latents(inputs, gen), None, None  # raises a LatentError with the shape
    images, cams = prepare_images(eraser, inputs, camera, align=True, face=face)
    g = torch.Generator(device=eraser.device).manual_seed(0)
    with inverter_progress(eraser.inverter, progress):
        return eraser.inverter.invert(images, cams, generator=g), images, cams


def prepare_images(eraser: EraserParts, inputs: Inputs, camera: Optional[torch.Tensor], align: bool,
                   face: Faces = None):
    """Photos -> (images [N, 3, H, W] in [-1, 1] on the eraser's device, cameras [N, c_dim] or None), aligned
    for the eraser's inverter when ``align`` (paths and PIL images; tensors are taken as aligned crops)."""
    items = as_list(inputs)
    tensors, cams = [], []
    size = getattr(eraser.generator, "img_resolution", None)
    choices = face_choices(face, len(items))
    for item, choice in zip(items, choices):
        if torch.is_tensor(item):
            x = item.unsqueeze(0) if item.ndim == 3 else item
            if x.ndim != 4 or x.shape[1] != 3:
                raise InputError(f"image tensors must be [N, 3, H, W] in [-1, 1], got {list(item.shape)}")
            if not torch.isfinite(x).all():
                raise InputError("image tensor contains NaN or Inf")
            check_image_range(x)
            tensors.append(x.float())
            cams.append(None)
            continue
        img = load_image(item)
        cam = None
        if align:
            from guide_unlearn.pipelines.assembly import align_photo

            img, cam = align_photo(img, eraser.inverter.input_alignment, item, face=choice,
                                   min_face=min_face_size(eraser.inverter, size))
        tensors.append(pil_to_tensor(img, size))
        cams.append(cam)
    shapes = {tuple(t.shape[-2:]) for t in tensors}
    if len(shapes) > 1:
        target = max(shapes)
        tensors = [torch.nn.functional.interpolate(t, size=target, mode="bilinear", antialias=True) for t in tensors]
    images = torch.cat(tensors).to(eraser.device)
    return images, cameras(eraser, camera, cams, images.shape[0])


def cameras(eraser: EraserParts, camera, estimated, n: int) -> Optional[torch.Tensor]:
    """The cameras [n, c_dim] to invert with: the user's, else the estimated ones, else the frontal one (with a
    warning); None for generators without cameras."""
    gen = eraser.generator
    if gen.c_dim == 0:
        return None
    from guide_unlearn.pipelines.assembly import camera_from_user

    if camera is not None:
        return camera_from_user(gen, camera, n).to(eraser.device)
    if all(c is not None for c in estimated):
        return torch.stack([torch.as_tensor(c, dtype=torch.float32) for c in estimated]).to(eraser.device)
    logger.warning("no camera given or estimated; using the frontal camera (for accuracy pass camera=(yaw, pitch) "
                   "in Python, --camera YAW,PITCH on the command line)")
    frontal = getattr(gen, "frontal_camera", None)
    if frontal is None:
        return None  # the generator's own default rendering camera
    return frontal(n).to(eraser.device)


@contextlib.contextmanager
def inverter_progress(inverter: Any, progress: bool) -> Iterator[None]:
    """Switch an optimising inverter's progress bar (its ``progress`` attribute, where it has one) for a call."""
    if not hasattr(inverter, "progress"):
        yield
        return
    saved = inverter.progress
    inverter.progress = bool(progress)
    try:
        yield
    finally:
        inverter.progress = saved


def face_choices(face: Faces, n: int) -> list[Optional[int]]:
    """``face`` (None, one index for every photo, or one per photo) -> one choice per photo."""
    if face is None or isinstance(face, int):
        if isinstance(face, bool):
            raise InputError("face must be an integer index (largest face first) or one index per photo")
        return [face] * n
    choices = list(face)
    if len(choices) != n or not all(c is None or (isinstance(c, int) and not isinstance(c, bool)) for c in choices):
        raise InputError(f"face must be one index for every photo or a list of {n} indices (one per photo), "
                         f"got {face!r}")
    return choices


def min_face_size(inverter: Any, resolution: Optional[int]) -> int:
    """Smallest face box side (pixels) the inverter can use without inventing detail: its ``min_face_size`` if it
    declares one, else 1/8 of the generator's resolution (a crop enlarged more than ~4x), at least 16."""
    declared = getattr(inverter, "min_face_size", None)
    if declared is not None:
        return int(declared)
    return max(16, int(resolution or 0) // 8)


def as_list(inputs: Inputs) -> list[Any]:
    """One photo or several -> a non-empty list of photos."""
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InputError("no images given; pass at least one photo (path, PIL image or tensor)")
        return list(inputs)
    if torch.is_tensor(inputs) and inputs.numel() == 0:
        raise InputError("the image tensor is empty; pass at least one photo")
    return [inputs]


def check_not_empty(inputs: Inputs) -> None:
    """InputError for an empty request (None, [], an empty tensor)."""
    if inputs is None or (isinstance(inputs, (list, tuple)) and not inputs) or (
            torch.is_tensor(inputs) and inputs.numel() == 0):
        raise InputError("the request is empty; give at least one photo or code of the person")


def keep_codes(eraser: EraserParts, keep_erased: Optional[Inputs], camera) -> Optional[torch.Tensor]:
    """``keep_erased`` (photos or codes of people erased before, or None) -> their codes [M, num_ws, w_dim]."""
    if keep_erased is None:
        return None
    try:
        check_not_empty(keep_erased)
        return codes(eraser, keep_erased, camera)[0]
    except InputError as e:
        raise type(e)(f"keep_erased: {e}") from e
