"""The audit's attacks and rendering helpers: G_u as a context, rendering codes, the fresh default inverter the
re-inversion attack uses, and the patch-leakage probe. Used by :func:`guide_unlearn.pipelines.auditing.audit` (which
re-exports these names) and by the robust preset's attackers (``pipelines/robust_attacks.py``)."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch

from guide_unlearn.patch import ForgetPatch

from .audit_photos import _Photo

# ----------------------------------------------------------------------------------------------------------------
# Rendering helpers


@contextlib.contextmanager
def _patched(eraser, patch: ForgetPatch) -> Iterator[None]:
    """G_u inside the context: the audited patch applied on top of the eraser's patches, removed afterwards."""
    eraser.apply_patch(patch)
    try:
        yield
    finally:
        eraser.remove_patch(patch)


def _render(eraser, ws: torch.Tensor, cams: Optional[torch.Tensor], batch: int = 32) -> torch.Tensor:
    """ws [N, num_ws, w_dim] (+ cameras [N, c_dim]) -> renderings [N, 3, H, W] on the CPU (synthesize's
    defaults: noise 'const', seed 0)."""
    out = []
    for i in range(0, ws.shape[0], batch):
        cam = None if cams is None else cams[i:i + batch].to(eraser.device)
        out.append(eraser.synthesize(ws[i:i + batch].to(eraser.device), camera=cam).cpu())
    return torch.cat(out) if out else torch.empty(0)


def _cams(photos: Sequence[_Photo]) -> Optional[torch.Tensor]:
    if not photos or photos[0].camera is None:
        return None
    return torch.stack([p.camera for p in photos])


def _landmarks(photos: Sequence[_Photo]) -> Optional[np.ndarray]:
    if not photos or photos[0].landmarks is None:
        return None
    return np.stack([p.landmarks for p in photos])


def _fresh_default_inverter(eraser):
    """The base model's default inverter, loaded anew (never the eraser's inverter object): the registry's inverter
    for ``eraser.name`` with the model's shipped code book, else the optimisation projector with its defaults."""
    from guide_unlearn.adapters.projector import OptimizationInverter
    from guide_unlearn.pipelines.assembly import _default_inverter

    inverter = None
    if eraser.name:
        inverter = _default_inverter(eraser.name, eraser.generator, eraser.device)
    if inverter is None:  # no registry inverter: a new optimisation projector (the eraser's settings if it is one)
        own = eraser.inverter if isinstance(eraser.inverter, OptimizationInverter) else None
        settings = {} if own is None else {"steps": own.steps, "lr": own.lr, "mse_weight": own.mse_weight}
        inverter = OptimizationInverter(eraser.generator, eraser.perceptual, **settings,
                                        input_alignment=getattr(eraser.inverter, "input_alignment", "ffhq"))
    return inverter


def _inverter_record(inv) -> dict[str, Any]:
    rec = {"name": getattr(inv, "name", type(inv).__name__)}
    for k in ("steps", "lr", "refine_steps", "book_refine_steps", "starts"):
        if hasattr(inv, k):
            rec[k] = getattr(inv, k)
    book = getattr(inv, "code_book", None)
    if book is not None:
        digest = hashlib.sha256(book.codes.numpy().tobytes() + book.descriptors.tobytes()).hexdigest()
        rec["code_book"] = {"codes": len(book), "threshold": book.threshold, "digest": f"sha256:{digest}"}
    return rec


def _invert(inverter, eraser, photos: Sequence[_Photo], seed: int, batch: int = 32) -> torch.Tensor:
    """Codes [N, num_ws, w_dim] of the photos' crops through ``inverter`` (seeded)."""
    out = []
    for i in range(0, len(photos), batch):
        chunk = photos[i:i + batch]
        cams = _cams(chunk)
        g = torch.Generator(device=eraser.device).manual_seed(seed)
        out.append(inverter.invert(torch.cat([p.crop for p in chunk]).to(eraser.device),
                                   None if cams is None else cams.to(eraser.device), generator=g).detach().cpu())
    return torch.cat(out)



# ----------------------------------------------------------------------------------------------------------------
# Attacks


def _reinvert(eraser, patch, judge, inverter, person, person_desc, seed) -> dict[str, Any]:
    """The attack: invert the person's photos THROUGH G_s / G_u with ``inverter`` and render them there."""
    out = {}
    groups = [list(range(len(person)))] * len(person)
    for when in ("before", "after"):
        ctx = _patched(eraser, patch) if when == "after" else contextlib.nullcontext()
        with ctx:
            ws = _invert(inverter, eraser, person, seed)
            imgs = _render(eraser, ws, _cams(person))
        desc = judge.describe(imgs, _landmarks(person))
        face = judge.faces(imgs)
        desc[~face] = np.nan
        score, cos = judge.best(desc, person_desc, groups)
        out[when] = {"score": score, "cosine": cos, "recognised": judge.recognised(score), "face": face,
                     "images": imgs}
    return out


def leakage_probe(eraser, patch: ForgetPatch, starts: int = 16, steps: int = 100, seed: int = 0, lr: float = 0.05
                  ) -> dict[str, Any]:
    """The patch-leakage probe: with the base model and the patch only (no photo), gradient ascent on the
    pixel MSE + perceptual distance between G_u(w) and G_s(w) over the mapping input z, from ``starts`` seeded
    random codes (mapped with the erase's truncation psi, read from the patch). -> {"source_images" [S, 3, H, W]
    (G_s where G_u differs most), "patched_images", "codes" [S, num_ws, w_dim], "difference" [S], "psi"}."""
    from guide_unlearn import lora as L
    from guide_unlearn.adapters.projector.projector import frozen_weights

    gen = eraser.generator
    psi = float((patch.metadata.get("erase_config") or {}).get("truncation_psi", 1.0))
    g = torch.Generator(device=eraser.device).manual_seed(seed)
    z = torch.randn(starts, gen.z_dim, generator=g, device=eraser.device).requires_grad_(True)
    cams = gen.frontal_camera(starts) if gen.c_dim and hasattr(gen, "frontal_camera") else None
    model = gen
    eraser.apply_patch(patch)
    try:
        def both(ws, grad_source: bool):
            out_u = gen.synthesis(ws, cams, noise_mode="const").images
            if patch.kind == "lora":
                with L.suppressed(model, [patch.adapter_name]):
                    out_s = gen.synthesis(ws if grad_source else ws.detach(), cams, noise_mode="const").images
            else:  # a delta patch lives in the weights: G_s is rendered without gradient by removing it
                eraser.remove_patch(patch)
                try:
                    with torch.no_grad():
                        out_s = gen.synthesis(ws.detach(), cams, noise_mode="const").images
                finally:
                    eraser.apply_patch(patch)
            return out_u, out_s

        def difference(out_u, out_s):
            d = (out_u - out_s).square().flatten(1).mean(1)
            return d + eraser.perceptual(out_u, out_s)

        with frozen_weights(gen):
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                ws = gen.mapping(z, None, truncation_psi=psi)
                loss = -difference(*both(ws, patch.kind == "lora")).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            ws = gen.mapping(z.detach(), None, truncation_psi=psi)
            out_u, out_s = both(ws, False)
            diff = difference(out_u, out_s)
    finally:
        eraser.remove_patch(patch)
    return {"source_images": out_s.detach().cpu().clamp(-1, 1), "patched_images": out_u.detach().cpu().clamp(-1, 1),
            "codes": ws.detach().cpu(), "difference": diff.detach().cpu().numpy(), "psi": psi}
