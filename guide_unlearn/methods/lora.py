"""``lora``: GUIDE (Seo et al., CVPR 2024) with a LoRA forget patch, for one person — the default method.

Every step: the person's codes (all photos of them) against their UFO targets in L_local, adjacency samples
starting from those codes, and L_global on random mapped codes (:mod:`guide_unlearn.losses`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..targets import ufo_target
from .base import EraseMethod, LoraSettings, StepRows, need
from .registry import register_method


@dataclass(frozen=True)
class LoraConfig(LoraSettings):
    """Settings of the ``lora`` method: the LoRA patch's (rank 4, alpha 4, the backend's synthesis convs); the
    rest of the recipe is the shared :class:`~guide_unlearn.config.EraseConfig`."""


class LoraMethod(EraseMethod):
    """GUIDE on the codes of ONE person (several photos of them are erased together), training a LoRA patch."""

    def setup(self) -> None:
        ctx = self.ctx
        need(ctx.erasure.people == 1, f"method {ctx.cfg.method!r} erases one person; give the codes of one person, "
                                      "or use a method that erases several people (method='joint')")
        self.w_u = ctx.erasure.codes
        self.w_t = self.checked(self.person_targets(self.w_u, ctx.erasure.person_of))

    def person_targets(self, codes: torch.Tensor, person_of: torch.Tensor) -> torch.Tensor:
        """Where the erased codes [K, num_ws, w_dim] (of people ``person_of`` [K]) are sent: their UFO targets
        [K, num_ws, w_dim] (GUIDE: w_avg - d * w_id / ||w_id||, or w_avg for ``target='average'``)."""
        return ufo_target(codes, self.ctx.generator.w_avg, self.ctx.cfg.target, self.ctx.distance)

    def targets(self) -> torch.Tensor:
        return self.w_t

    def rows(self, step: int) -> StepRows:
        n_adj = self.ctx.cfg.adjacency_samples
        idx = torch.randint(0, self.w_u.shape[0], (n_adj,), generator=self.ctx.rng, device=self.ctx.device)
        return StepRows(self.w_u, self.w_t, idx)


register_method("lora", LoraMethod, LoraConfig)
