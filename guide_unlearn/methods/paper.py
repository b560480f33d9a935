"""``paper``: the official GUIDE recipe (Seo et al., CVPR 2024, and its official code) — a full fine-tune
of every synthesis parameter with Adam at lr 1e-4 for 1000 steps, extrapolated UFO target at d = 30 (absolute, in
EG3D's W space), 2 adjacency and 2 global samples per step, random noise. The patch stores weight differences."""

from __future__ import annotations

from dataclasses import dataclass

from .base import MethodConfig
from .lora import LoraMethod
from .registry import register_method


@dataclass(frozen=True)
class PaperConfig(MethodConfig):
    """Settings of the ``paper`` method: none beyond the shared recipe (its preset sets the paper's numbers there,
    :attr:`PaperMethod.recipe_defaults`); the model's recommended settings do not apply to it."""


class PaperMethod(LoraMethod):
    """GUIDE on one person, training every synthesis parameter (``generator.full_finetune_parameters()``)."""

    trains = "full"
    recipe_defaults = dict(iterations=1000, lr=1e-4, target="extrapolate", target_distance=30.0,
                           target_distance_relative=False, noise_mode="random")
    model_defaults = False


register_method("paper", PaperMethod, PaperConfig)
