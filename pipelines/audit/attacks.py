"""The attacks on an erasure, shared by the audit and by the robust erase method.

Inversion attacks invert images through the generator AS IT RENDERS WHEN CALLED (the current G_u inside an
erase; G_s, or G_u inside ``patching.applied_temporarily``, in the audit):

- :class:`DefaultInverterAttack`: the base model's default inverter, loaded anew with its shipped code book
  (:func:`fresh_default_inverter`, the one place that decides it; never the eraser's own inverter object);
- :class:`ScratchProjectorAttack`: the from-scratch optimisation projector (pixel MSE + perceptual from w_avg).

:func:`leakage_probe` needs no photo at all: it searches where the patch changes the base model most.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional, Sequence

import torch

from guide_unlearn import patching
from guide_unlearn.errors import ConfigError
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.sampling import random_draw

from .photos import Photo, input_alignment
from .rendering import invert_photos


def fresh_default_inverter(eraser):
    """The base model's default inverter, built anew (never the eraser's inverter object): the registry's inverter
    for ``eraser.name`` with the model's shipped code book, else an optimisation projector (with the eraser's
    settings when its own inverter is one)."""
    from guide_unlearn.adapters.projector import OptimizationInverter
    from guide_unlearn.pipelines.assembly import model_default_inverter

    inverter = model_default_inverter(eraser.name, eraser.generator, eraser.device) if eraser.name else None
    if inverter is None:
        own = eraser.inverter if isinstance(eraser.inverter, OptimizationInverter) else None
        settings = {} if own is None else {"steps": own.steps, "lr": own.lr, "mse_weight": own.mse_weight}
        inverter = OptimizationInverter(eraser.generator, eraser.perceptual, **settings,
                                        input_alignment=input_alignment(eraser))
    return inverter


def inverter_record(inverter) -> dict[str, Any]:
    """What a report records of an inverter: its name, step settings and code book digest."""
    rec = {"name": getattr(inverter, "name", type(inverter).__name__)}
    for k in ("steps", "lr", "refine_steps", "book_refine_steps", "starts"):
        if hasattr(inverter, k):
            rec[k] = getattr(inverter, k)
    book = getattr(inverter, "code_book", None)
    if book is not None:
        digest = hashlib.sha256(book.codes.numpy().tobytes() + book.descriptors.tobytes()).hexdigest()
        rec["code_book"] = {"codes": len(book), "threshold": book.threshold, "digest": f"sha256:{digest}"}
    return rec


class InversionAttack:
    """An attacker that inverts images through the eraser's generator as it renders when called.

    eraser:   the IdentityEraser whose generator is attacked.
    inverter: photo -> codes (``invert(images, cameras, generator=)``).
    """

    name = ""

    def __init__(self, eraser, inverter):
        self.eraser = eraser
        self.inverter = inverter

    def invert(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] (+ cameras [N, c_dim]) -> codes [N, num_ws, w_dim] (detached, on the
        generator's device), drawing any randomness from ``generator``."""
        return self.inverter.invert(images, cameras, generator=generator).detach()

    def invert_photos(self, photos: Sequence[Photo], seed: int) -> torch.Tensor:
        """The audit's photos -> codes [N, num_ws, w_dim] on the CPU (batches of 32, each seeded with ``seed``)."""
        return invert_photos(self.inverter, self.eraser, photos, seed)

    @property
    def progress(self) -> bool:
        """Whether the inverter shows a progress bar (stderr)."""
        return bool(getattr(self.inverter, "progress", False))

    @progress.setter
    def progress(self, show: bool) -> None:
        if hasattr(self.inverter, "progress"):
            self.inverter.progress = show

    def record(self) -> dict[str, Any]:
        """The report's record of this attacker (:func:`inverter_record`)."""
        return inverter_record(self.inverter)


class DefaultInverterAttack(InversionAttack):
    """Re-inversion with the base model's default inverter, loaded fresh (:func:`fresh_default_inverter`)."""

    name = "default"

    def __init__(self, eraser):
        super().__init__(eraser, fresh_default_inverter(eraser))


class ScratchProjectorAttack(InversionAttack):
    """Re-inversion with the from-scratch optimisation projector: ``steps`` Adam steps on pixel MSE + the eraser's
    perceptual distance from w_avg, photos aligned as the eraser's inverter expects."""

    name = "scratch"

    def __init__(self, eraser, steps: int = 400, progress: bool = True):
        from guide_unlearn.adapters.projector import OptimizationInverter

        super().__init__(eraser, OptimizationInverter(eraser.generator, eraser.perceptual, steps=steps,
                                                      input_alignment=input_alignment(eraser), progress=progress))


def inversion_attack(name: str, eraser, steps: int = 400) -> InversionAttack:
    """The inversion attacker called ``name`` ("default" or "scratch"; ``steps``: the scratch projector's)."""
    if name == "default":
        return DefaultInverterAttack(eraser)
    if name == "scratch":
        return ScratchProjectorAttack(eraser, steps=steps)
    raise ConfigError(f"unknown inversion attack {name!r}; choose 'default' or 'scratch'")


def leakage_probe(eraser, patch: ForgetPatch, starts: int = 16, steps: int = 100, seed: int = 0, lr: float = 0.05
                  ) -> dict[str, Any]:
    """The patch-leakage probe: with the base model and the patch only (no photo), gradient ascent on the
    pixel MSE + perceptual distance between G_u(w) and G_s(w) over the mapping input z, from ``starts`` seeded
    random codes (mapped with the erase's truncation psi, read from the patch). -> {"source_images" [S, 3, H, W]
    (G_s where G_u differs most), "patched_images", "codes" [S, num_ws, w_dim], "difference" [S], "psi"}."""
    from guide_unlearn.adapters.projector.projector import frozen_weights

    gen = eraser.generator
    psi = float((patch.metadata.get("erase_config") or {}).get("truncation_psi", 1.0))
    z = random_draw(gen, starts, seed, psi).z.requires_grad_(True)
    cams = gen.frontal_camera(starts) if gen.c_dim and hasattr(gen, "frontal_camera") else None
    difference = lambda out_u, out_s: (out_u - out_s).square().flatten(1).mean(1) + eraser.perceptual(out_u, out_s)
    with patching.applied_temporarily(gen, patch):
        with frozen_weights(gen):
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                ws = gen.mapping(z, None, truncation_psi=psi)
                loss = -difference(*_both(gen, patch, ws, cams, patch.kind == "lora", seed)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        with torch.no_grad():
            ws = gen.mapping(z.detach(), None, truncation_psi=psi)
            out_u, out_s = _both(gen, patch, ws, cams, False, seed)
            diff = difference(out_u, out_s)
    return {"source_images": out_s.detach().cpu().clamp(-1, 1), "patched_images": out_u.detach().cpu().clamp(-1, 1),
            "codes": ws.detach().cpu(), "difference": diff.detach().cpu().numpy(), "psi": psi}


def _both(gen, patch: ForgetPatch, ws: torch.Tensor, cams, grad_source: bool, seed: int
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(G_u(ws), G_s(ws)) with ``patch`` applied: a LoRA patch is switched off for G_s (with gradient through G_s
    when ``grad_source``); a delta patch lives in the weights, so G_s is rendered without gradient with it removed.
    Both renderings draw any randomness (a volume renderer's ray jitter) from the same seed."""
    from guide_unlearn import lora as L

    def synthesis(w: torch.Tensor) -> torch.Tensor:
        rng = torch.Generator(device=w.device).manual_seed(seed)
        return gen.synthesis(w, cams, noise_mode="const", generator=rng).images

    out_u = synthesis(ws)
    if patch.kind == "lora":
        with L.suppressed(gen, [patch.adapter_name]):
            out_s = synthesis(ws if grad_source else ws.detach())
        return out_u, out_s
    patching.remove(gen, patch)
    try:
        with torch.no_grad():
            out_s = synthesis(ws.detach())
    finally:
        patching.apply(gen, patch)
    return out_u, out_s
