"""``robust``: GUIDE hardened against re-inversion (docs/erasing.md), one person, a LoRA patch.

GUIDE erases a neighbourhood of the person's code; an attacker who inverts the person's photo again through the
patched generator G_u finds another code that still draws them. This method trains in phases of the one loop:

1. ``cfg.iterations`` GUIDE steps on the request codes (as ``lora``);
2. ``adversarial_rounds`` times: the attackers re-invert the request photos through the CURRENT G_u
   (:attr:`RobustServices.attack`); the codes they find join the erased set, each with its own UFO target; then
   ``adversarial_iterations`` more steps.

Extra terms (each optional, measured in docs/erasing.md):

- identity repulsion: ``repulsion_weight * mean(relu(cos(ID(G_u(w)), e_person) - repulsion_margin))`` over the
  rows of attacker-found, adjacency and bridge codes, with a differentiable identity network and the person's
  unit embedding ``e_person``;
- bridge samples: adjacency codes on the segments from the request codes to the found codes, each against the
  same point between their targets;
- tracked attacker: codes that follow the from-scratch projector's objective on the request photo (and its
  augmented copies) through the current G_u, a few Adam steps per training step; once they have taken
  ``attack_steps`` projector steps (before that they draw a generic face near w_avg, and erasing it damages every
  face: measured) they join the erased rows each step with their own UFO targets;
- decoys: seeded mapped codes erased in the same patch, so the patch does not point at one person only.

The core never sees a concrete attacker: the pipelines build :class:`RobustServices` (``pipelines/robust_attacks.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from ..latents import check_latents
from ..protocols import GeneratorAdapter, IdentityModel, PerceptualDistance, module_of
from .base import LoraSettings, LossTerm, StepRows, count, finite, need
from .lora import LoraMethod
from .registry import register_method

logger = logging.getLogger(__name__)

ROUND_ATTACKERS = ("default", "scratch")  # the attackers of an adversarial round (pipelines/robust_attacks.py)
MAX_FOUND_PER_STEP = 4  # attacker-found codes rendered per step (a random subset once more are known)
TRACKING_LR = 0.03  # the audit's from-scratch projector's learning rate


@dataclass(frozen=True)
class RobustConfig(LoraSettings):
    """Settings of the ``robust`` method. The defaults are the measured preset: two attack rounds with both
    attackers, repulsion and bridges; the tracked attacker is off (on demo-faces it cost others_kept 1.00 -> 0.14,
    docs/erasing.md)."""

    adversarial_rounds: int = 2
    """Attack-and-erase rounds after the first ``iterations`` steps: re-invert the request (and augmented copies)
    through the current G_u with the attackers, add the codes they find to the erased set with their own UFO
    targets, train ``adversarial_iterations`` more steps."""
    adversarial_iterations: int = 40
    """Training steps after each adversarial round."""
    attack_augmentations: int = 3
    """Augmented copies of each request photo the attackers invert too (flip, crop, colour; in turn)."""
    attack_steps: int = 100
    """Steps of the from-scratch projector attacker inside the erase (the audit's attacker runs 400); for the
    tracked attacker, the projector steps a code takes before it is erased."""
    round_attackers: tuple[str, ...] = ("default", "scratch")
    """Which attackers re-invert the request in each round: ``"default"`` (the base model's default inverter,
    loaded fresh with its shipped code book) and / or ``"scratch"`` (the from-scratch projector, ``attack_steps``
    steps from w_avg). A scratch-found code is a W+ code about as far from the request code as another person's
    (docs/erasing.md): erasing it costs preservation."""
    repulsion_weight: float = 1.0
    """Weight of the identity-repulsion term on the attacker-found, adjacency and bridge rows (needs a
    differentiable identity network; 0 disables it)."""
    repulsion_margin: float = 0.0
    """Cosine below which the repulsion term is zero."""
    bridge_samples: int = 2
    """Adjacency samples drawn on the segments between the request codes and the attacker-found codes, each
    against the same point between their targets."""
    tracking_steps: int = 0
    """Tracked attacker: each step, one code per attack view takes this many Adam steps of the from-scratch
    projector's objective (pixel MSE + perceptual, lr 0.03) through the CURRENT G_u; once a code has taken
    ``attack_steps`` such steps it joins L_local every step with its own UFO target. 0 disables it."""
    tracking_restart: int = 0
    """Restart the tracked codes from w_avg every this many steps (0 = never)."""
    decoys: int = 0
    """Decoy identities (seeded mapped codes at the erase's truncation psi) erased in the same patch, so a probe
    reading the patch finds decoys + 1 candidates instead of one person."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("adversarial_rounds", "adversarial_iterations", "attack_augmentations", "attack_steps",
                     "bridge_samples", "decoys", "tracking_steps", "tracking_restart"):
            need(count(getattr(self, name)), f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        need(self.attack_steps >= 1, f"attack_steps must be >= 1, got {self.attack_steps!r}")
        if isinstance(self.round_attackers, list):
            object.__setattr__(self, "round_attackers", tuple(self.round_attackers))
        need(isinstance(self.round_attackers, tuple) and len(self.round_attackers) > 0
             and all(isinstance(a, str) and a in ROUND_ATTACKERS for a in self.round_attackers)
             and len(set(self.round_attackers)) == len(self.round_attackers),
             f"round_attackers must be a non-empty tuple of distinct names from {ROUND_ATTACKERS}, "
             f"got {self.round_attackers!r}")
        for name in ("repulsion_weight", "repulsion_margin"):
            need(finite(getattr(self, name)), f"{name} must be a finite number, got {getattr(self, name)!r}")
        need(self.repulsion_weight >= 0, f"repulsion_weight must be >= 0, got {self.repulsion_weight!r}")


Attack = Callable[[int], torch.Tensor]
"""attack(round) -> codes [M, num_ws, w_dim] an attacker found for the person through the CURRENT generator."""


@dataclass
class RobustServices:
    """What the robust method needs from outside the core — the declared, injected interface the pipelines fill in
    from the eraser's inverters and identity networks (``pipelines/robust_attacks.py``). Each part is needed only
    when the settings use it.

    attack:             attack(round) -> codes [M, num_ws, w_dim] found by re-inverting the person's photos through
                        the generator as it renders when called (the current G_u); for adversarial_rounds > 0.
    repulsion_identity: a differentiable identity network (``differentiable = True``); for repulsion_weight > 0.
    person_embedding:   e_person [D], the person's unit identity vector (None = from G_s at the request codes).
    attack_images:      [V, 3, H, W] in [-1, 1] what the tracked attacker reconstructs (+ attack_cameras
                        [V, c_dim]); for tracking_steps > 0.
    """

    attack: Optional[Attack] = None
    repulsion_identity: Optional[IdentityModel] = None
    person_embedding: Optional[torch.Tensor] = None
    attack_images: Optional[torch.Tensor] = None
    attack_cameras: Optional[torch.Tensor] = None


def person_embedding(identity: IdentityModel, images: torch.Tensor) -> torch.Tensor:
    """The person's unit identity vector: images [N, 3, H, W] in [-1, 1] -> [D] (normalised mean embedding)."""
    with torch.no_grad():
        e = identity.embed(images).float().mean(0)
    return F.normalize(e, dim=0)


def repulsion_term(identity: IdentityModel, images: torch.Tensor, e_person: torch.Tensor, margin: float
                   ) -> torch.Tensor:
    """relu(cos(ID(images), e_person) - margin), mean over rows: images [N, 3, H, W] (with grad) -> scalar."""
    emb = F.normalize(identity.embed(images).float(), dim=1)
    return F.relu(emb @ e_person.to(emb) - margin).mean()


def augment_views(images: torch.Tensor, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """``n`` augmented copies of each image, in turn a horizontal flip, a random crop (90 % of the side, resized
    back) and a colour change (brightness / contrast / per-channel gain): images [N, 3, H, W] in [-1, 1] ->
    [N * n, 3, H, W] (copy j of every image, then copy j + 1, ...)."""
    if n == 0:
        return images[:0]
    h, w = images.shape[-2:]
    out = []
    for j in range(n):
        kind = j % 3
        if kind == 0:
            x = images.flip(-1)
        elif kind == 1:
            ch, cw = max(1, round(0.9 * h)), max(1, round(0.9 * w))
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            x = F.interpolate(images[..., top:top + ch, left:left + cw], size=(h, w), mode="bilinear",
                              align_corners=False, antialias=True)
        else:
            r = torch.rand(4, generator=generator)
            gain = (0.85 + 0.3 * r[:3]).view(1, 3, 1, 1).to(images)
            x = ((images * (0.8 + 0.4 * float(r[3]))) * gain + 0.1 * (float(r[0]) - 0.5))
        out.append(x.clamp(-1, 1))
    return torch.cat(out)


def decoy_codes(generator: GeneratorAdapter, n: int, psi: float, generator_rng: torch.Generator) -> torch.Tensor:
    """``n`` seeded mapped codes [n, num_ws, w_dim] at truncation ``psi``: the decoy identities of a patch."""
    z = torch.randn(n, generator.z_dim, generator=generator_rng, device=generator.w_avg.device)
    with torch.no_grad():
        return generator.mapping(z, None, truncation_psi=psi)


class RobustMethod(LoraMethod):
    """GUIDE on one person in attack-and-erase phases, with repulsion, bridges, decoys and the tracked attacker."""

    services = RobustServices

    @classmethod
    def check(cls, cfg, services: Any, identity: Optional[IdentityModel]) -> None:
        mc = cfg.method_config
        if services is not None and not isinstance(services, RobustServices):
            raise ConfigError(f"the robust method takes RobustServices, got {type(services).__name__}")
        s = services or RobustServices()
        need(not mc.adversarial_rounds or s.attack is not None,
             "adversarial_rounds > 0 needs an attack (the eraser builds one from its inverters; pass photos or "
             "codes to eraser.erase, or RobustServices(attack=...) to run_erase), or set adversarial_rounds=0")
        need(mc.repulsion_weight == 0 or getattr(s.repulsion_identity, "differentiable", False),
             "repulsion_weight > 0 needs a differentiable identity network (faceapi or ArcFace); install the "
             "'faces' extra or set repulsion_weight=0")
        images = s.attack_images
        need(not mc.tracking_steps or (torch.is_tensor(images) and images.ndim == 4 and images.shape[1] == 3),
             "tracking_steps > 0 needs attack_images [V, 3, H, W] (the request photos; the eraser passes them), or "
             "set tracking_steps=0")

    def setup(self) -> None:
        super().setup()
        ctx, mc = self.ctx, self.config
        s = ctx.services or RobustServices()
        self.erased, self.erased_t = self.w_u, self.w_t
        if mc.decoys:
            dec = decoy_codes(ctx.generator, mc.decoys, ctx.cfg.truncation_psi, ctx.rng)
            self.erased = torch.cat([self.w_u, dec])
            self.erased_t = torch.cat([self.w_t, self._target(dec)])
        self.found, self.found_t = self.w_u[:0], self.w_t[:0]
        self.found_per_round: list[int] = []
        self.attack_seconds = 0.0
        self.rep_id, self.e_person = s.repulsion_identity, s.person_embedding
        if mc.repulsion_weight > 0 and self.e_person is None:  # G_s at the request codes (before the patch exists)
            g = ctx.generator
            with torch.no_grad():
                src = g.synthesis(self.w_u, g.sample_cameras(self.w_u.shape[0], ctx.rng) if g.c_dim else None,
                                  noise_mode="const").images
            self.e_person = person_embedding(self.rep_id, src)
        self.tracker = (_Tracker(ctx.generator, s.attack_images, s.attack_cameras, ctx.perceptual, mc)
                        if mc.tracking_steps else None)
        self.tracked = self.tracked_t = None

    def _target(self, codes: torch.Tensor) -> torch.Tensor:
        """The targets of codes that show the person (found by an attacker) or a decoy: one person each."""
        return self.person_targets(codes, torch.zeros(codes.shape[0], dtype=torch.long, device=codes.device))

    def phases(self) -> list[int]:
        return [self.ctx.cfg.iterations] + [self.config.adversarial_iterations] * self.config.adversarial_rounds

    def begin_phase(self, phase: int) -> None:
        t0 = time.perf_counter()
        new = check_latents(self.ctx.services.attack(phase).detach().to(self.ctx.device), self.ctx.generator)
        self.attack_seconds += time.perf_counter() - t0
        self.found = torch.cat([self.found, new])
        self.found_t = torch.cat([self.found_t, self._target(new)])
        self.found_per_round.append(int(new.shape[0]))
        logger.info("robust round %d: %d codes found (%.1f s attacking so far)", phase, new.shape[0],
                    self.attack_seconds)

    def before_step(self, step: int) -> None:
        self.tracked = self.tracked_t = None
        if self.tracker is not None:
            codes = self.tracker.advance(step)
            if self.tracker.steps_taken >= self.config.attack_steps:  # before that it draws a generic face
                self.tracked, self.tracked_t = codes, self._target(codes)

    def _found(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every attacker code of this step (found in rounds, then tracked) and their targets."""
        if self.tracked is None:
            return self.found, self.found_t
        return torch.cat([self.found, self.tracked]), torch.cat([self.found_t, self.tracked_t])

    def rows(self, step: int) -> StepRows:
        ctx = self.ctx
        f, ft = self.found, self.found_t
        if f.shape[0] > MAX_FOUND_PER_STEP:
            pick = torch.randperm(f.shape[0], generator=ctx.rng, device=ctx.device)[:MAX_FOUND_PER_STEP]
            f, ft = f[pick], ft[pick]
        if self.tracked is not None:
            f, ft = torch.cat([f, self.tracked]), torch.cat([ft, self.tracked_t])
        local_u, local_t = torch.cat([self.erased, f]), torch.cat([self.erased_t, ft])
        idx = torch.randint(0, local_u.shape[0], (ctx.cfg.adjacency_samples,), generator=ctx.rng, device=ctx.device)
        return StepRows(local_u, local_t, idx)

    def extra_rows(self, step: int, rows: StepRows) -> None:
        found, found_t = self._found()
        n = self.config.bridge_samples if found.shape[0] else 0
        if not n:
            return
        rng, device, w_u, w_t = self.ctx.rng, self.ctx.device, self.w_u, self.w_t
        i = torch.randint(0, w_u.shape[0], (n,), generator=rng, device=device)
        j = torch.randint(0, found.shape[0], (n,), generator=rng, device=device)
        a = torch.rand(n, generator=rng, device=device).view(-1, 1, 1)
        rows.extra_u = w_u[i] + a * (found[j] - w_u[i])
        rows.extra_t = w_t[i] + a * (found_t[j] - w_t[i])

    def extra_loss(self, step: int, rows: StepRows, out_u: Any, out_s: Any) -> list[LossTerm]:
        mc = self.config
        if mc.repulsion_weight <= 0:
            return []
        # the person's rows: request codes, found codes, adjacency and bridge samples (decoys excluded)
        end = rows.k + self.ctx.cfg.adjacency_samples + rows.extra
        images = torch.cat([out_u.images[:self.w_u.shape[0]], out_u.images[self.erased.shape[0]:end]])
        return [LossTerm("repulsion", repulsion_term(self.rep_id, images, self.e_person, mc.repulsion_margin),
                         mc.repulsion_weight)]

    def metadata(self, final: Mapping[str, float]) -> dict[str, Any]:
        mc = self.config
        return {"robust": {  # counts only: never a code, a target or an embedding of the person
            "rounds": mc.adversarial_rounds, "found_per_round": list(self.found_per_round), "decoys": mc.decoys,
            "repulsion_identity": getattr(self.rep_id, "name", None) if mc.repulsion_weight > 0 else None,
            "tracking_steps": mc.tracking_steps}}

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"found": self.found.cpu(), "found_per_round": list(self.found_per_round)}
        if self.tracker is not None:
            state["tracker"] = self.tracker.state_dict()
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        found = state["found"].to(self.ctx.device)
        self.found = check_latents(found, self.ctx.generator) if found.shape[0] else self.w_u[:0]
        self.found_t = self._target(self.found) if found.shape[0] else self.w_t[:0]
        self.found_per_round = [int(n) for n in state["found_per_round"]]
        if self.tracker is not None:
            self.tracker.load_state_dict(state["tracker"])


class _Tracker:
    """The tracked attacker: one W+ code per attack view, moved by Adam on the from-scratch projector's objective
    (pixel MSE + perceptual) through the generator as it renders NOW (G_u); the generator's weights get no gradient
    from it."""

    def __init__(self, generator: GeneratorAdapter, images: torch.Tensor, cameras: Optional[torch.Tensor],
                 perceptual: PerceptualDistance, mc: RobustConfig):
        self.g, self.perceptual, self.mc = generator, perceptual, mc
        device = generator.w_avg.device
        self.cams = None if cameras is None else cameras.to(device)
        with torch.no_grad():
            probe = generator.synthesis(generator.w_avg.view(1, 1, -1).expand(1, generator.num_ws, -1),
                                        None if self.cams is None else self.cams[:1], noise_mode="const").images
        images = images.to(device, torch.float32)
        if images.shape[-2:] != probe.shape[-2:]:
            images = F.interpolate(images, size=probe.shape[-2:], mode="bilinear", align_corners=False,
                                   antialias=True)
        self.images = images
        self._start()

    def _start(self) -> None:
        g = self.g
        self.ws = g.w_avg.detach().view(1, 1, -1).repeat(self.images.shape[0], g.num_ws, 1).clone()
        self.ws.requires_grad_(True)
        self.opt = torch.optim.Adam([self.ws], lr=TRACKING_LR)
        self.steps_taken = 0  # projector steps since the (re)start

    def advance(self, step: int) -> torch.Tensor:
        """``tracking_steps`` projector steps at training step ``step`` -> the codes [V, num_ws, w_dim] (detached)."""
        if self.mc.tracking_restart and step > 0 and step % self.mc.tracking_restart == 0:
            self._start()
        params = [p for p in module_of(self.g).parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            for _ in range(self.mc.tracking_steps):
                out = self.g.synthesis(self.ws, self.cams, noise_mode="const").images
                loss = (out - self.images).square().flatten(1).mean(1) + self.perceptual(out, self.images)
                self.opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                self.opt.step()
                self.steps_taken += 1
        finally:
            for p in params:
                p.requires_grad_(True)
        return self.ws.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"ws": self.ws.detach().cpu(), "optimizer": self.opt.state_dict(), "steps_taken": self.steps_taken}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            self.ws.copy_(state["ws"].to(self.ws))
        self.opt.load_state_dict(state["optimizer"])
        self.steps_taken = int(state["steps_taken"])


register_method("robust", RobustMethod, RobustConfig)
