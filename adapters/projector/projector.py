"""Optimisation inverter: find W+ codes whose rendering matches an image (works with any generator adapter).

The fallback when no encoder exists, and the re-inversion attack of later robustness checks: it inverts
through the generator *as currently patched*.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from guide_unlearn.errors import InputError
from guide_unlearn.frozen import cached_constants
from guide_unlearn.images import GROSS_RANGE_TOLERANCE, check_image_range
from guide_unlearn.protocols import GeneratorAdapter, PerceptualDistance


@contextmanager
def frozen_weights(generator: object) -> Iterator[None]:
    """Turn off gradients of the generator's weights (an ``nn.Module``; anything else is left alone) while codes
    are optimised, and restore each parameter's ``requires_grad`` afterwards, also on error (an applied LoRA
    patch keeps its trainable flags). Nothing writes a weight meanwhile, so constants derived from the weights
    (demodulation sums and the like, :mod:`guide_unlearn.frozen`) are computed once for the whole optimisation."""
    module = generator if isinstance(generator, nn.Module) else None
    grads = {n: p.requires_grad for n, p in module.named_parameters()} if module is not None else {}
    if module is not None:
        module.requires_grad_(False)
    try:
        with cached_constants():
            yield
    finally:
        if module is not None:
            for n, p in module.named_parameters():
                p.requires_grad_(grads.get(n, False))


def step_bar(show: bool, total: int, desc: str):
    """A tqdm progress bar over ``total`` optimisation steps on stderr (disabled when ``show`` is False or there
    is nothing to do). Use ``.update()`` per step and ``.close()`` (or ``with``) at the end."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, disable=not show or total <= 0)


class OptimizationInverter:
    """Optimise W+ codes from w_avg with Adam on perceptual distance + pixel MSE.

    input_alignment: the face crop its images must have ("ffhq" for StyleGAN2 backends).
    """

    def __init__(
        self,
        generator: GeneratorAdapter,  # the generator to invert through
        perceptual: Optional[PerceptualDistance] = None,  # None = pixel MSE only
        steps: int = 200,  # Adam steps
        lr: float = 0.03,  # Adam learning rate on the codes
        mse_weight: float = 1.0,  # weight of pixel MSE beside the perceptual term
        input_alignment: str = "ffhq",  # crop style the images must have
        noise_mode: str = "const",  # deterministic synthesis while optimising
        progress: bool = True,  # a progress bar over the optimisation steps (stderr)
    ):
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        self.generator = generator
        self.perceptual = perceptual
        self.steps, self.lr, self.mse_weight = steps, lr, mse_weight
        self.input_alignment = input_alignment
        self.noise_mode = noise_mode
        self.progress = progress
        self.name = "optimisation-projector"

    def invert(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] (+ cameras [N, c_dim]) -> ws [N, num_ws, w_dim] (detached)."""
        g = self.generator
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must be [N, 3, H, W], got {list(images.shape)}")
        check_image_range(images, tolerance=GROSS_RANGE_TOLERANCE)
        device = g.w_avg.device
        images = images.to(device, torch.float32)
        probe = g.synthesis(g.w_avg.view(1, 1, -1).expand(1, g.num_ws, -1), None if cameras is None else cameras[:1],
                            noise_mode=self.noise_mode).images
        size = probe.shape[-2:]
        if images.shape[-2:] != size:
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True)
        ws = g.w_avg.detach().view(1, 1, -1).repeat(images.shape[0], g.num_ws, 1).clone().requires_grad_(True)
        opt = torch.optim.Adam([ws], lr=self.lr)
        with frozen_weights(g), step_bar(self.progress, self.steps, "inverting") as bar:
            for _ in range(self.steps):
                bar.update()
                out = g.synthesis(ws, cameras, noise_mode=self.noise_mode, generator=generator).images
                loss = self.mse_weight * (out - images).square().flatten(1).mean(1)
                if self.perceptual is not None:
                    loss = loss + self.perceptual(out, images)
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
        return ws.detach()
