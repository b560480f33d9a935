"""Rendering and inverting through the generator as it is when called: G_s, or G_u inside
``guide_unlearn.patching.applied_temporarily(eraser.generator, patch)`` (the one way the audit applies the
audited patch)."""

from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence

import torch

from .photos import Photo, cameras_of


def render(eraser, ws: torch.Tensor, cameras: Optional[torch.Tensor], batch: int = 32) -> torch.Tensor:
    """ws [N, num_ws, w_dim] (+ cameras [N, c_dim]) -> renderings [N, 3, H, W] on the CPU (synthesize's
    defaults: noise 'const', seed 0), ``batch`` codes at a time."""
    out = []
    for i in range(0, ws.shape[0], batch):
        cam = None if cameras is None else cameras[i:i + batch].to(eraser.device)
        out.append(eraser.synthesize(ws[i:i + batch].to(eraser.device), camera=cam).cpu())
    return torch.cat(out) if out else torch.empty(0)


def render_views(eraser, ws: torch.Tensor, views: Optional[torch.Tensor], photos: Sequence[Photo]) -> torch.Tensor:
    """Each code over the evaluation views (camera models: views [V, c_dim]) or with its photo's camera
    (views None) -> [N, V, 3, H, W] (V = 1 without views)."""
    if views is None:
        return render(eraser, ws, cameras_of(photos)).unsqueeze(1)
    v = views.shape[0]
    imgs = render(eraser, ws.repeat_interleave(v, 0), views.cpu().repeat(ws.shape[0], 1))
    return imgs.view(ws.shape[0], v, *imgs.shape[1:])


def invert_photos(inverter, eraser, photos: Sequence[Photo], seed: int, batch: int = 32) -> torch.Tensor:
    """Codes [N, num_ws, w_dim] (CPU) of the photos' aligned crops through ``inverter``, ``batch`` photos at a
    time, each batch with a torch.Generator seeded with ``seed``."""
    out = []
    for i in range(0, len(photos), batch):
        chunk = photos[i:i + batch]
        cams = cameras_of(chunk)
        g = torch.Generator(device=eraser.device).manual_seed(seed)
        out.append(inverter.invert(torch.cat([p.crop for p in chunk]).to(eraser.device),
                                   None if cams is None else cams.to(eraser.device), generator=g).detach().cpu())
    return torch.cat(out)


def source_codes(eraser, photos: Sequence[Photo], codes: Optional[Mapping[str, torch.Tensor]], seed: int
                 ) -> torch.Tensor:
    """G_s codes [N, num_ws, w_dim] (CPU) of the photos: from ``codes`` where given (keyed by path, compared as
    absolute paths), else through the eraser's own inverter (what erase does)."""
    from guide_unlearn.engine import check_latents

    cache = {os.path.abspath(str(k)): v for k, v in (codes or {}).items()}
    out: list[Optional[torch.Tensor]] = [cache.get(p.key) if p.key else None for p in photos]
    todo = [i for i, w in enumerate(out) if w is None]
    if todo:
        fresh = invert_photos(eraser.inverter, eraser, [photos[i] for i in todo], seed)
        for i, w in zip(todo, fresh):
            out[i] = w
    ws = torch.stack([torch.as_tensor(w).float().cpu() for w in out])
    return check_latents(ws, eraser.generator).cpu()
