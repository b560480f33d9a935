"""Robust erasure: the GUIDE loop hardened against re-inversion (the ``robust`` preset; docs/erasing.md).

GUIDE erases a neighbourhood of the person's code; an attacker who inverts the person's photo again through the
patched generator G_u finds another code that still draws them. This loop trains ONE LoRA patch in phases:

1. ``cfg.iterations`` plain LTU steps on the request codes (as :func:`guide_unlearn.engine.run_erase`);
2. ``cfg.adversarial_rounds`` times: call ``attack(round)`` while the generator renders the CURRENT G_u (the
   training adapter active) -> codes the attackers found; add them to the erased set, each with its own UFO
   target; train ``cfg.adversarial_iterations`` more steps.

Extra terms (each optional, measured in docs/erasing.md):

- identity repulsion: ``repulsion_weight * mean(relu(cos(ID(G_u(w)), e_person) - repulsion_margin))`` over the
  rows of attacker-found, adjacency and bridge codes, with a differentiable identity network and the person's
  unit embedding ``e_person`` (from the request photos and / or G_s at the request codes);
- bridge samples: adjacency codes on the segments from the request codes to the found codes (codes that still
  rendered the person), each against the same point between their targets;
- tracked attacker: codes that follow the from-scratch projector's objective on the request photo (and its
  augmented copies) through the current G_u, a few Adam steps per training step, restarted from w_avg every
  ``tracking_restart`` steps; once they have taken ``attack_steps`` projector steps (before that they draw a
  generic face near w_avg, and erasing it damages every face: measured) they join the erased rows each step with
  their own UFO targets (the attacker is erased while it moves, not only where a between-phase attack ends);
- decoys: seeded mapped codes erased in the same patch (with their own targets), so the patch does not point
  at one person only (k-anonymity against a probe that reads the patch).

The core never sees a concrete attacker: the pipeline passes ``attack`` (see ``pipelines/robust_attacks.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F

from .config import EraseConfig
from .engine import _Trainable, check_identity, check_latents, patch_metadata, resolve_distances, step_codes
from .errors import ConfigError, TrainingDivergedError
from .fingerprint import patch_state
from .frozen import cached_constants
from .losses import ltu_loss
from .patch import ForgetPatch
from .protocols import GeneratorAdapter, IdentityModel, PerceptualDistance, module_of
from .targets import ufo_target

logger = logging.getLogger(__name__)

Attack = Callable[[int], torch.Tensor]
"""attack(round) -> codes [M, num_ws, w_dim] an attacker found for the person through the CURRENT generator."""

MAX_FOUND_PER_STEP = 4  # attacker-found codes rendered per step (a random subset once more are known)


@dataclass
class RobustOutcome:
    """What :func:`run_robust_erase` returns.

    patch:    the forget patch (not applied); w_target: [K, num_ws, w_dim] the request codes' UFO targets;
    history:  per logged step {"step", "round", losses...}; seconds: wall time of the whole run (attacks included);
    found:    number of attacker-found codes added per round; attack_seconds: time spent in ``attack``.
    """

    patch: ForgetPatch
    w_target: torch.Tensor
    history: list[dict[str, float]]
    seconds: float
    found: list[int] = field(default_factory=list)
    attack_seconds: float = 0.0


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
    """``n`` seeded mapped codes [n, num_ws, w_dim] at truncation ``psi``: the decoy identities of a k-anonymous
    patch."""
    z = torch.randn(n, generator.z_dim, generator=generator_rng, device=generator.w_avg.device)
    with torch.no_grad():
        return generator.mapping(z, None, truncation_psi=psi)


def run_robust_erase(
    generator: GeneratorAdapter,
    w_u: torch.Tensor,
    cfg: EraseConfig,
    perceptual: PerceptualDistance,
    identity: Optional[IdentityModel] = None,
    attack: Optional[Attack] = None,
    repulsion_identity: Optional[IdentityModel] = None,
    e_person: Optional[torch.Tensor] = None,
    extra_metadata: Optional[dict[str, Any]] = None,
    attack_images: Optional[torch.Tensor] = None,
    attack_cameras: Optional[torch.Tensor] = None,
) -> RobustOutcome:
    """Erase the person of codes ``w_u`` [K, num_ws, w_dim] with the robust loop (module docstring).

    identity: the ID-loss network of the LTU terms (as run_erase; None or cfg.id_weight = 0 disables it).
    attack: called between phases while ``generator`` renders the current G_u; required when
    ``cfg.adversarial_rounds > 0``. repulsion_identity: a differentiable identity network for the repulsion term
    (required when ``cfg.repulsion_weight > 0``); e_person [D]: the person's unit embedding (None = from G_s at
    ``w_u``). attack_images [V, 3, H, W] in [-1, 1] (+ attack_cameras [V, c_dim]): what the tracked attacker
    reconstructs (required when ``cfg.tracking_steps > 0``). The generator is left exactly as it was.
    -> :class:`RobustOutcome`.
    """
    w_u = check_latents(w_u, generator)
    if cfg.full_finetune:
        raise ConfigError("the robust loop trains a LoRA patch; use full_finetune=False")
    if cfg.adversarial_rounds and attack is None:
        raise ConfigError("adversarial_rounds > 0 needs an attack (the eraser builds one from its inverters; pass "
                          "photos, or set adversarial_rounds=0)")
    if cfg.repulsion_weight > 0 and (repulsion_identity is None or not getattr(repulsion_identity, "differentiable",
                                                                                False)):
        raise ConfigError("repulsion_weight > 0 needs a differentiable identity network (faceapi or ArcFace); "
                          "install the 'faces' extra or set repulsion_weight=0")
    check_identity(cfg, identity)
    if cfg.tracking_steps and (attack_images is None or attack_images.ndim != 4 or attack_images.shape[1] != 3):
        raise ConfigError("tracking_steps > 0 needs attack_images [V, 3, H, W] (the request photos; the eraser "
                          "passes them), or set tracking_steps=0")
    model = module_of(generator)
    device = generator.w_avg.device
    k_req = w_u.shape[0]
    d, (alpha_lo, alpha_hi) = resolve_distances(cfg, generator)
    w_t = ufo_target(w_u, generator.w_avg, cfg.target, d)
    rng = torch.Generator(device=device).manual_seed(cfg.seed)
    base = patch_state(model)["base_fingerprint"]
    erased, targets = w_u, w_t
    if cfg.decoys:
        dec = decoy_codes(generator, cfg.decoys, cfg.truncation_psi, rng)
        erased = torch.cat([w_u, dec])
        targets = torch.cat([w_t, ufo_target(dec, generator.w_avg, cfg.target, d)])
    found = w_u[:0]
    found_t = w_t[:0]
    if cfg.repulsion_weight > 0 and e_person is None:
        with torch.no_grad():
            src = generator.synthesis(w_u, generator.sample_cameras(k_req, rng) if generator.c_dim else None,
                                      noise_mode="const").images
        e_person = person_embedding(repulsion_identity, src)

    t0 = time.perf_counter()
    attack_seconds = 0.0
    found_per_round: list[int] = []
    history: list[dict[str, float]] = []
    trainable = _Trainable(generator, cfg, rng)
    scope = contextlib.ExitStack()
    try:
        scope.enter_context(cached_constants())  # only the LoRA trains (checked above): base weights stay as they are
        tracker = _Tracker(generator, attack_images, attack_cameras, perceptual, cfg) if cfg.tracking_steps else None
        optimizer = torch.optim.Adam(trainable.params, lr=cfg.lr, betas=cfg.adam_betas)
        phases = [cfg.iterations] + [cfg.adversarial_iterations] * cfg.adversarial_rounds
        step = 0
        for rnd, n_steps in enumerate(phases):
            if rnd > 0:
                ta = time.perf_counter()
                new = check_latents(attack(rnd).detach().to(device), generator)
                attack_seconds += time.perf_counter() - ta
                found = torch.cat([found, new])
                found_t = torch.cat([found_t, ufo_target(new, generator.w_avg, cfg.target, d)])
                found_per_round.append(int(new.shape[0]))
            for _ in range(n_steps):
                tracked = tracked_t = None
                if tracker is not None:
                    ta = time.perf_counter()
                    codes = tracker.advance(step)
                    if tracker.steps_taken >= cfg.attack_steps:  # before that it draws a generic face, not them
                        tracked = codes
                        tracked_t = ufo_target(tracked, generator.w_avg, cfg.target, d)
                    attack_seconds += time.perf_counter() - ta
                loss, parts = _robust_step(generator, trainable, erased, targets, w_u, w_t, found, found_t, cfg,
                                           perceptual, identity, repulsion_identity, e_person, rng,
                                           (alpha_lo, alpha_hi), tracked, tracked_t)
                if not torch.isfinite(loss):
                    raise TrainingDivergedError(f"the loss became {float(loss.detach())} at step {step}; lower lr "
                                                f"(now {cfg.lr})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if step % cfg.log_every == 0 or step == sum(phases) - 1:
                    history.append({"step": float(step), "round": float(rnd), **parts})
                step += 1
        seconds = time.perf_counter() - t0
        final = history[-1] if history else {}
        metadata = patch_metadata(generator, cfg, base, d, (alpha_lo, alpha_hi), final, perceptual, identity,
                                  k_req, history)
        metadata.update({
            # counts only: never a code, a target or an embedding of the person
            "robust": {"rounds": cfg.adversarial_rounds, "found_per_round": found_per_round, "decoys": cfg.decoys,
                       "repulsion_identity": getattr(repulsion_identity, "name", None)
                       if cfg.repulsion_weight > 0 else None,
                       "tracking_steps": cfg.tracking_steps,
                       "attack_seconds": round(attack_seconds, 3)},
        })
        metadata.update(extra_metadata or {})
        patch = trainable.extract(metadata)
    finally:
        scope.close()
        trainable.restore()
    return RobustOutcome(patch, w_t, history, seconds, found_per_round, attack_seconds)


class _Tracker:
    """The tracked attacker: one W+ code per attack view, moved by Adam on the from-scratch projector's objective
    (pixel MSE + perceptual, as ``OptimizationInverter``) through the generator as it renders NOW (G_u); the
    generator's weights get no gradient from it."""

    def __init__(self, generator: GeneratorAdapter, images: torch.Tensor, cameras: Optional[torch.Tensor],
                 perceptual: PerceptualDistance, cfg: EraseConfig):
        self.g, self.perceptual, self.cfg = generator, perceptual, cfg
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
        """``cfg.tracking_steps`` projector steps at training step ``step`` -> the codes [V, num_ws, w_dim]
        (detached)."""
        if self.cfg.tracking_restart and step > 0 and step % self.cfg.tracking_restart == 0:
            self._start()
        params = [p for p in module_of(self.g).parameters() if p.requires_grad]
        for p in params:
            p.requires_grad_(False)
        try:
            for _ in range(self.cfg.tracking_steps):
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


TRACKING_LR = 0.03  # the audit's from-scratch projector's learning rate


def _robust_step(generator, trainable, erased, targets, w_u, w_t, found, found_t, cfg: EraseConfig, perceptual,
                 identity, rep_id, e_person, rng, alphas, tracked=None, tracked_t=None
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """One step: rows [erased + a subset of found + tracked (local) | adjacency | bridge | global] through G_s and
    G_u."""
    device = w_u.device
    alpha_lo, alpha_hi = alphas
    if found.shape[0] > MAX_FOUND_PER_STEP:
        pick = torch.randperm(found.shape[0], generator=rng, device=device)[:MAX_FOUND_PER_STEP]
        f, ft = found[pick], found_t[pick]
    else:
        f, ft = found, found_t
    if tracked is not None:
        f, ft = torch.cat([f, tracked]), torch.cat([ft, tracked_t])
    local_u, local_t = torch.cat([erased, f]), torch.cat([targets, ft])
    k = local_u.shape[0]
    n_adj, n_glob = cfg.adjacency_samples, cfg.global_samples
    z = torch.randn(n_adj + n_glob, generator.z_dim, generator=rng, device=device)
    with torch.no_grad():
        w_r = generator.mapping(z, None, truncation_psi=cfg.truncation_psi) if n_adj + n_glob else None
    idx = torch.randint(0, k, (n_adj,), generator=rng, device=device)
    alpha = torch.rand(n_adj, generator=rng, device=device) * (alpha_hi - alpha_lo) + alpha_lo
    ws_u, ws_s = step_codes(local_u, local_t, w_r, idx, alpha, n_adj)
    if tracked is not None:  # bridges reach the tracked codes too
        found, found_t = torch.cat([found, tracked]), torch.cat([found_t, tracked_t])
    n_bridge = cfg.bridge_samples if found.shape[0] else 0
    if n_bridge:
        i = torch.randint(0, w_u.shape[0], (n_bridge,), generator=rng, device=device)
        j = torch.randint(0, found.shape[0], (n_bridge,), generator=rng, device=device)
        a = torch.rand(n_bridge, generator=rng, device=device).view(-1, 1, 1)
        b_u = w_u[i] + a * (found[j] - w_u[i])
        b_t = w_t[i] + a * (found_t[j] - w_t[i])
        cut = k + n_adj
        ws_u = torch.cat([ws_u[:cut], b_u, ws_u[cut:]])
        ws_s = torch.cat([ws_s[:cut], b_t, ws_s[cut:]])
    cam = generator.sample_cameras(1, rng)
    c = cam.expand(ws_u.shape[0], -1) if cam is not None else None
    need_features = cfg.feature_mse_weight > 0
    with trainable.source():
        out_s = generator.synthesis(ws_s, c, noise_mode=cfg.noise_mode, generator=rng, return_features=need_features)
    out_u = generator.synthesis(ws_u, c, noise_mode=cfg.noise_mode, generator=rng, return_features=need_features)
    loss = ltu_loss(out_u, out_s, k, n_adj + n_bridge, n_glob, cfg, perceptual, identity)
    total, parts = loss.total, dict(loss.parts)
    if cfg.repulsion_weight > 0:
        # the person's rows: request codes, found codes, adjacency and bridge samples (decoys excluded)
        n_req = w_u.shape[0]
        rows = torch.cat([out_u.images[:n_req], out_u.images[erased.shape[0]:k + n_adj + n_bridge]])
        rep = repulsion_term(rep_id, rows, e_person, cfg.repulsion_margin)
        total = total + cfg.repulsion_weight * rep
        parts["repulsion"] = float(rep.detach())
    parts["loss"] = float(total.detach())
    return total, parts
