"""The concrete attackers of the ``robust`` preset: what ``IdentityEraser.erase`` wires into
:func:`guide_unlearn.robust.run_robust_erase` (the core takes only a callable and protocols).

The attackers are the audit's (docs/audit.md, attack (a) and (b)): the base model's default inverter loaded
fresh from the registry with its shipped code book, and the from-scratch optimisation projector — here with
``cfg.attack_steps`` steps (the audit runs 400). Both invert the request photos and ``cfg.attack_augmentations``
augmented copies through the generator as it is when called (the current G_u during the erase).
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import torch

from guide_unlearn.config import EraseConfig
from guide_unlearn.robust import Attack, augment_views, person_embedding, run_robust_erase

logger = logging.getLogger(__name__)


def attack_views(eraser, images: torch.Tensor, cameras: Optional[torch.Tensor], cfg: EraseConfig
                 ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The images the attackers invert: the request images [N, 3, H, W] then ``cfg.attack_augmentations``
    augmented copies of each -> (views [N * (1 + augmentations), 3, H, W], their cameras or None). Seeded by
    ``cfg.seed``."""
    g = torch.Generator().manual_seed(cfg.seed + 7919)
    views = torch.cat([images.cpu(), augment_views(images.cpu(), cfg.attack_augmentations, g)]).to(eraser.device)
    cams = None
    if cameras is not None:
        cams = cameras.repeat(1 + cfg.attack_augmentations, 1).to(eraser.device)
    return views, cams


def build_attack(eraser, images: torch.Tensor, cameras: Optional[torch.Tensor], cfg: EraseConfig) -> Attack:
    """attack(round) -> codes [A * N * (1 + augmentations), num_ws, w_dim]: the request images [N, 3, H, W] and
    their augmented copies inverted by each of the A attackers of ``cfg.round_attackers`` (the fresh default
    inverter, the from-scratch projector), in that order, through the generator as it renders when called.
    Seeded by ``cfg.seed`` and the round."""
    from guide_unlearn.pipelines.audit.attacks import inversion_attack

    attackers = [inversion_attack(name, eraser, steps=cfg.attack_steps) for name in cfg.round_attackers]
    views, cams = attack_views(eraser, images, cameras, cfg)

    def attack(round_: int) -> torch.Tensor:
        out = []
        for attacker in attackers:
            gen = torch.Generator(device=eraser.device).manual_seed(cfg.seed * 1000 + round_)
            out.append(attacker.invert(views, cams, generator=gen))
        return torch.cat(out)

    return attack


def repulsion_network(eraser):
    """The differentiable identity network of the repulsion term: the eraser's when differentiable (ArcFace where
    present), else faceapi (dlib's weights; the offline-v1 audit judges with the same weights: docs/erasing.md)."""
    own = eraser.identity_model
    if own is not None and getattr(own, "differentiable", False):
        return own
    from guide_unlearn.adapters.identity import load_identity_model

    return load_identity_model("faceapi", device=str(eraser.device))


def robust_erase(eraser, w_u: torch.Tensor, cfg: EraseConfig, photos: Optional[torch.Tensor],
                 cams: Optional[torch.Tensor]) -> tuple[Any, torch.Tensor, list, float]:
    """Run the robust loop for ``eraser`` on codes ``w_u`` [K, num_ws, w_dim]. ``photos`` [K, 3, H, W] (the
    aligned request crops) are what the attackers invert; without photos (codes given directly) G_s's renderings
    of ``w_u`` stand in for them. -> (patch, w_target, history, seconds) like run_erase."""
    if photos is None:
        with torch.no_grad():
            photos = eraser.synthesize(w_u)
            cams = None if eraser.generator.c_dim == 0 else cams
    attack = build_attack(eraser, photos, cams, cfg) if cfg.adversarial_rounds else None
    rep_id, e_person = None, None
    if cfg.repulsion_weight > 0:
        rep_id = repulsion_network(eraser)
        with torch.no_grad():
            renders = eraser.synthesize(w_u, camera=cams)
        e_person = person_embedding(rep_id, torch.cat([photos.to(renders.device), renders]))
    views, view_cams = attack_views(eraser, photos, cams, cfg) if cfg.tracking_steps else (None, None)
    out = run_robust_erase(eraser.generator, w_u, cfg, eraser.perceptual, eraser.identity_model, attack=attack,
                           repulsion_identity=rep_id, e_person=e_person, extra_metadata=eraser._provenance(),
                           attack_images=views, attack_cameras=view_cams)
    return out.patch, out.w_target, out.history, out.seconds
