"""The concrete attackers of the ``robust`` method: the :class:`~guide_unlearn.methods.robust.RobustServices` that
``IdentityEraser.erase`` builds for it (the core declares that interface and never sees a concrete attacker).

The attackers are the audit's (docs/audit.md, attack (a) and (b)): the base model's default inverter loaded
fresh from the registry with its shipped code book, and the from-scratch optimisation projector — here with
``attack_steps`` steps (the audit runs 400). Both invert the request photos and ``attack_augmentations``
augmented copies through the generator as it is when called (the current G_u during the erase).
"""

from __future__ import annotations

import logging
from typing import Optional

import torch

from guide_unlearn.config import EraseConfig
from guide_unlearn.methods.robust import Attack, RobustServices, augment_views, person_embedding
from guide_unlearn.pipelines.photos import synthesize

logger = logging.getLogger(__name__)


def attack_views(eraser, images: torch.Tensor, cameras: Optional[torch.Tensor], cfg: EraseConfig
                 ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The images the attackers invert: the request images [N, 3, H, W] then ``attack_augmentations``
    augmented copies of each -> (views [N * (1 + augmentations), 3, H, W], their cameras or None). Seeded by
    ``cfg.seed``."""
    n = cfg.method_config.attack_augmentations
    g = torch.Generator().manual_seed(cfg.seed + 7919)
    views = torch.cat([images.cpu(), augment_views(images.cpu(), n, g)]).to(eraser.device)
    cams = None
    if cameras is not None:
        cams = cameras.repeat(1 + n, 1).to(eraser.device)
    return views, cams


def build_attack(eraser, images: torch.Tensor, cameras: Optional[torch.Tensor], cfg: EraseConfig) -> Attack:
    """attack(round) -> codes [A * N * (1 + augmentations), num_ws, w_dim]: the request images [N, 3, H, W] and
    their augmented copies inverted by each of the A attackers of ``round_attackers`` (the fresh default
    inverter, the from-scratch projector), in that order, through the generator as it renders when called.
    Seeded by ``cfg.seed`` and the round."""
    from guide_unlearn.pipelines.audit.attacks import inversion_attack

    mc = cfg.method_config
    attackers = [inversion_attack(name, eraser, steps=mc.attack_steps) for name in mc.round_attackers]
    for attacker in attackers:  # the erase shows its own progress; an attack inside it shows none
        attacker.progress = False
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


def build_services(eraser, cfg: EraseConfig, w_u: torch.Tensor, photos: Optional[torch.Tensor],
                   cams: Optional[torch.Tensor]) -> RobustServices:
    """The robust method's services for ``eraser`` and the person's codes ``w_u`` [K, num_ws, w_dim]: the attack
    of each round, the repulsion network with the person's embedding and the tracked attacker's views, each only
    when ``cfg.method_config`` uses it. ``photos`` [K, 3, H, W] (the aligned request crops, with cameras ``cams``)
    are what the attackers invert; without photos (codes given directly) G_s's renderings of ``w_u`` stand in."""
    mc = cfg.method_config
    if photos is None:
        photos = synthesize(eraser.generator, w_u)
    services = RobustServices()
    if mc.adversarial_rounds:
        services.attack = build_attack(eraser, photos, cams, cfg)
    if mc.repulsion_weight > 0:
        services.repulsion_identity = repulsion_network(eraser)
        renders = synthesize(eraser.generator, w_u, camera=cams)
        services.person_embedding = person_embedding(services.repulsion_identity,
                                                     torch.cat([photos.to(renders.device), renders]))
    if mc.tracking_steps:
        services.attack_images, services.attack_cameras = attack_views(eraser, photos, cams, cfg)
    return services
