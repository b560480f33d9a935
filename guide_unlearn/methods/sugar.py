"""``sugar``: people erased into learned, distinct surrogate faces with Fisher-weighted preservation, after SUGAR
(Nguyen et al., WACV 2026; official code judydnguyen/SUGAR-Generative-Unlearn). One person, several people in one
LoRA patch, and continual erases that keep earlier people erased: it is the ``joint`` method with two changes.

- Targets (:meth:`SugarMethod.person_targets`): a surrogate network trained at the start of the run
  (:mod:`guide_unlearn.surrogates`) sends each erased person's codes to a face the run's identity model calls
  someone else, and different people to different faces, where UFO sends people whose identity directions are alike
  to faces a recogniser calls the same person. It needs a differentiable identity model; without one the targets
  are the ``joint`` method's (UFO, kept apart) and the patch metadata says so.
- Preservation (:meth:`SugarMethod.start`, :meth:`SugarMethod.extra_loss`): an EWC penalty
  ``ewc_weight * sum F * (delta W)^2`` on the effective LoRA delta of every wrapped layer, F the diagonal Fisher of
  the retain objective estimated from ``fisher_samples`` mapped codes when the patch is created
  (:mod:`guide_unlearn.fisher`; why the effective delta and not the factors: see there).

The surrogate network, its targets and the Fisher are derived from the people's codes and the generator with
generators seeded from the recipe's seed, and stay in memory: never in a patch, never in the resumable state (a
resumed run derives them again, identically). docs/queue.md describes every setting and the measurements.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Mapping, Optional

import torch

from ..fisher import diagonal_fisher, ewc_penalty, layer_weights, lora_deltas
from ..protocols import module_of
from ..surrogates import SurrogateNetwork, face_directions, train_surrogates
from .base import LossTerm, StepRows, count, finite, need
from .joint import JointConfig, JointMethod, PersonProgress, record_people
from .registry import register_method

logger = logging.getLogger(__name__)
FISHER_OUTPUTS = ("image", "identity")
SEED_OFFSET = 0x5C6A  # the surrogate network's and the Fisher's generators: the recipe's seed plus this


@dataclass(frozen=True)
class SugarConfig(JointConfig):
    """Settings of the ``sugar`` method: the ``joint`` method's (LoRA, schedule, balance, early stop; rank 16 here)
    and those of the surrogate targets and of the Fisher-weighted preservation."""

    lora_rank: int = 16
    """LoRA rank r (16: with the EWC penalty, rank 4 left fewer people erased on demo-faces; docs/queue.md)."""
    lora_alpha: float = 16.0
    """LoRA alpha; the delta is scaled by alpha / r."""
    surrogate_steps: int = 40
    """Adam steps of the surrogate network before the erase (0 = the ``joint`` method's UFO targets)."""
    surrogate_lr: float = 3e-3
    """Learning rate of the surrogate network."""
    surrogate_hidden: int = 256
    """Width of the surrogate network's correction layer."""
    surrogate_rank: int = 64
    """The surrogate's correction stays in the span of this many principal directions of mapped codes, where the
    generator renders faces (0 = any direction: free directions of the same length render no face)."""
    self_margin: float = 0.5
    """Identity cosine between a person's rendering and their surrogate's above which the surrogate is pushed away."""
    pair_margin: float = 0.5
    """Identity cosine between two people's surrogates above which they are pushed apart."""
    near_weight: float = 0.0
    """Weight of the pixel MSE between a surrogate's rendering and the person's (keeps pose, light, background)."""
    ewc_weight: float = 3000.0
    """Weight of the EWC penalty sum F (delta W)^2 (0 = off). F is per output element, so the penalty estimates
    the mean squared change of the retain renders: 3000 makes a change of 1e-4 weigh about as much as a person's
    L_local on demo-faces (docs/queue.md)."""
    fisher_samples: int = 32
    """Mapped codes (at the recipe's truncation_psi) the diagonal Fisher is estimated from, one projection each."""
    fisher_output: str = "image"
    """What the retain objective compares: 'image' (every pixel) or 'identity' (the identity model's embedding;
    needs one)."""
    done_cosine: float = 0.0
    """Per-person early stop by identity (0 = off; needs an identity model): a person whose rendering under the
    patch being trained has an identity cosine to their rendering before the run at or below this counts as erased
    and leaves the loss until a later visit finds them above it again; the run ends when every person is erased.
    Replaces ``joint_done_ratio``'s L_local gauge by the identity model's own verdict."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("surrogate_steps", "surrogate_rank"):
            need(count(getattr(self, name)), f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        need(count(self.surrogate_hidden) and self.surrogate_hidden >= 1,
             f"surrogate_hidden must be an integer >= 1, got {self.surrogate_hidden!r}")
        need(count(self.fisher_samples) and self.fisher_samples >= 1,
             f"fisher_samples must be an integer >= 1, got {self.fisher_samples!r}")
        need(finite(self.surrogate_lr) and self.surrogate_lr > 0,
             f"surrogate_lr must be a number > 0, got {self.surrogate_lr!r}")
        for name in ("self_margin", "pair_margin"):
            v = getattr(self, name)
            need(finite(v) and -1 <= v <= 1, f"{name} must be a cosine in [-1, 1], got {v!r}")
        for name in ("near_weight", "ewc_weight"):
            v = getattr(self, name)
            need(finite(v) and v >= 0, f"{name} must be a finite number >= 0, got {v!r}")
        need(self.fisher_output in FISHER_OUTPUTS,
             f"fisher_output must be one of {FISHER_OUTPUTS}, got {self.fisher_output!r}")
        need(finite(self.done_cosine) and -1 < self.done_cosine < 1,
             f"done_cosine must be a cosine in (-1, 1) (0 = off), got {self.done_cosine!r}")
        need(not (self.done_cosine and self.joint_done_ratio),
             "give one early stop: done_cosine (by identity) or joint_done_ratio (by L_local), not both")


class SugarMethod(JointMethod):
    """``joint`` with learned surrogate targets and an EWC penalty on the effective LoRA delta."""

    @classmethod
    def check(cls, cfg, services: Any, identity) -> None:
        mc = cfg.method_config
        need(not (mc.fisher_output == "identity" and mc.ewc_weight > 0 and identity is None),
             "fisher_output='identity' needs an identity model; pass identity_model= to the eraser (e.g. "
             "load_identity_model('faceapi')) or use fisher_output='image'")
        need(not (mc.done_cosine and identity is None),
             "done_cosine needs an identity model; pass identity_model= to the eraser (e.g. "
             "load_identity_model('faceapi')) or set done_cosine=0")

    def setup(self) -> None:
        self.seeded = torch.Generator(device=self.ctx.device).manual_seed(self.ctx.cfg.seed + SEED_OFFSET)
        self.surrogates: dict[str, Any] = {"steps": 0}
        self.fisher: Optional[dict[str, torch.Tensor]] = None
        super().setup()  # calls person_targets
        self.source_identity: Optional[torch.Tensor] = None
        if self.config.done_cosine:
            self._track_identity()

    def _track_identity(self) -> None:
        """Per-person early stop by identity: each erased code's identity before the run [K, D] and the progress."""
        ctx, k = self.ctx, self.erased_codes
        with torch.no_grad():
            view = torch.Generator(device=ctx.device).manual_seed(ctx.cfg.seed + SEED_OFFSET + 1)
            self.source_identity = ctx.identity.embed(self.render(self.w_u[:k], view)).float()
        self.progress = IdentityProgress(self.config.done_cosine, self.erased_people, self.people)
        self.cosines: list[float] = []

    def render(self, ws: torch.Tensor, view: torch.Generator) -> torch.Tensor:
        """The generator renders codes [N, num_ws, w_dim] from one view drawn from ``view`` (which also draws any
        sampling the renderer does), noise 'const' -> images [N, 3, H, W] (differentiable in codes and weights)."""
        g = self.ctx.generator
        cam = g.sample_cameras(1, view)
        cam = None if cam is None else cam.expand(ws.shape[0], -1)
        return g.synthesis(ws, cam, noise_mode="const", generator=view).images

    def person_targets(self, codes: torch.Tensor, person_of: torch.Tensor) -> torch.Tensor:
        """The trained surrogates of the erased codes [K, num_ws, w_dim]; the ``joint`` method's targets when
        ``surrogate_steps`` is 0 or no differentiable identity model is given."""
        ctx, mc = self.ctx, self.config
        identity = ctx.identity
        if mc.surrogate_steps == 0 or identity is None or not getattr(identity, "differentiable", False):
            if mc.surrogate_steps:
                logger.warning("sugar: no differentiable identity model, so the targets are UFO's (kept apart); "
                               "pass identity_model= to the eraser for learned surrogates")
                self.surrogates["reason"] = "no differentiable identity model"
            return super().person_targets(codes, person_of)
        g = ctx.generator
        basis = (face_directions(g.mapping, g.w_avg, g.z_dim, mc.surrogate_rank, self.seeded,
                                 truncation_psi=ctx.cfg.truncation_psi) if mc.surrogate_rank else None)
        net = SurrogateNetwork(g.num_ws, g.w_dim, mc.surrogate_hidden, self.seeded, basis=basis).to(ctx.device)
        trained = train_surrogates(net, codes, person_of, g.w_avg, ctx.distance, self.render, identity.embed,
                                   self.seeded, steps=mc.surrogate_steps, lr=mc.surrogate_lr,
                                   self_margin=mc.self_margin, pair_margin=mc.pair_margin, near_weight=mc.near_weight,
                                   people_per_step=mc.persons_per_step)
        self.surrogates = {"steps": mc.surrogate_steps, "identity_model": getattr(identity, "name", None),
                           **{k: round(v, 4) for k, v in trained.final.items()}}
        return trained.targets

    def start(self, parameters: Mapping[str, torch.nn.Parameter], source: Callable[[], ContextManager[None]]
              ) -> None:
        """Estimate the diagonal Fisher of the weights the LoRA wraps (its B = 0: G_u is still G_s)."""
        mc, ctx = self.config, self.ctx
        self.wrapped = _wrapped_modules(parameters)
        if mc.ewc_weight == 0 or not self.wrapped:
            return
        g = ctx.generator
        z = torch.randn(mc.fisher_samples, g.z_dim, generator=self.seeded, device=ctx.device)
        with torch.no_grad():
            ws = g.mapping(z, None, truncation_psi=ctx.cfg.truncation_psi)
        view = self.seeded
        if mc.fisher_output == "identity":
            outputs = lambda w: ctx.identity.embed(self.render(w, view))  # noqa: E731
        else:
            outputs = lambda w: self.render(w, view).flatten(1)  # noqa: E731
        weights = layer_weights(module_of(g), list(self.wrapped))
        self.fisher = diagonal_fisher(outputs, ws, weights, self.seeded)

    def extra_loss(self, step: int, rows: StepRows, out_u: Any, out_s: Any) -> list[LossTerm]:
        if self.source_identity is not None:
            self._judge(rows, out_u.images[:rows.k])
        if self.fisher is None:
            return []
        model = module_of(self.ctx.generator)
        deltas = {}
        for adapter in set(self.wrapped.values()):
            deltas.update(lora_deltas(model, adapter, [m for m, a in self.wrapped.items() if a == adapter]))
        return [LossTerm("ewc", ewc_penalty(self.fisher, deltas), self.config.ewc_weight)]

    def _judge(self, rows: StepRows, images: torch.Tensor) -> None:
        """Identity cosine of each local row's G_u rendering to the code's rendering before the run (kept people's
        rows: 1, never done)."""
        index = rows.info if rows.info is not None else torch.arange(rows.k, device=images.device)
        with torch.no_grad():
            now = self.ctx.identity.embed(images.detach()).float()
        known = index < self.erased_codes
        cos = torch.ones(rows.k, device=now.device)
        cos[known] = (now[known] * self.source_identity[index[known]]).sum(1)
        self.cosines = cos.tolist()

    def observe(self, step: int, rows: StepRows, loss: Any) -> bool:
        if self.source_identity is None:
            return super().observe(step, rows, loss)
        if self.schedule is not None:
            record_people(self.per_person, self.person_of[rows.info], loss.local_rows, step)
            person_rows = self.schedule.person_rows(step)
        else:
            person_rows = [0] * rows.k
        self.progress.update(person_rows, self.cosines, step)
        if self.progress.finished:  # every person erased by the identity model's verdict
            self.stopped_at = step
            return True
        return False

    def metadata(self, final: Mapping[str, float]) -> dict[str, Any]:
        out = super().metadata(final)
        out["surrogates"] = dict(self.surrogates)
        if self.fisher is not None:
            out["fisher"] = {"samples": self.config.fisher_samples, "output": self.config.fisher_output,
                             "layers": len(self.fisher)}
        return out


class IdentityProgress(PersonProgress):
    """:class:`~guide_unlearn.methods.joint.PersonProgress` judged by identity: ``update`` takes each visited row's
    identity cosine to its rendering before the run, and a person is done while the mean over their codes is <=
    ``threshold`` (every person's reference value is 1, so ``ratio`` times it is the threshold itself)."""

    def __init__(self, threshold: float, erased_people: int, people: int):
        super().__init__(threshold, erased_people, people)
        self.start = [1.0] * people


def _wrapped_modules(parameters: Mapping[str, torch.nn.Parameter]) -> dict[str, str]:
    """{module name: adapter name} of the LoRA factors among the trained ``parameters`` (names like
    ``synthesis.b8.conv0.lora_A.<adapter>.weight``)."""
    out = {}
    for name in parameters:
        if ".lora_A." in name:
            module, rest = name.split(".lora_A.", 1)
            out[module] = rest.split(".", 1)[0]
    return out


register_method("sugar", SugarMethod, SugarConfig)
