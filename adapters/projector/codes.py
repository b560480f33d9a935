"""Code-space inverter: find the mapping input z whose rendering matches a photo, then refine it a little in W+.

For generators whose mapping network was trained on the codes of real photos (the GLO-trained ``demo-faces``
model), z is the space the faces live in: starting there puts the code on the model's own face distribution,
which is what the erase's adjacency and preservation losses assume. A short W+ refinement (one w per layer,
small learning rate) then recovers what z cannot express, which matters for photos the model never saw.
``refine_steps=0`` keeps the pure mapping output.

With a :class:`~.code_book.CodeBook` (the training codes of a GLO model, keyed by a face descriptor), a photo
whose descriptor matches a known one starts from that training code, skips the z search and gets a shorter
refinement (``book_refine_steps``), so different photos of one known person end up near each other; photos
that match nothing are inverted as above. Measured on ``demo-faces`` (codes ~39 from w_avg, Frobenius in W+):
the 50-step refinement moves a training photo's code by 1.3 on average; the held-out aligned_5.jpg starts from
aligned_2's code and moves 7.0, reaching dlib distance 0.55 from its photo; the five photos of that person end
8-17 apart, while any of them is at least 36 from another person's code.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
import torch.nn.functional as F

from guide_unlearn.errors import InputError
from guide_unlearn.images import GROSS_RANGE_TOLERANCE, check_image_range
from guide_unlearn.protocols import GeneratorAdapter, PerceptualDistance

from .code_book import CodeBook
from .projector import frozen_weights, step_bar

logger = logging.getLogger(__name__)


class CodeInverter:
    """Best of ``starts`` seeded random codes, then Adam on z, then Adam on W+ (or one shared w) against a photo.

    input_alignment: the crop style the images must have ("ffhq" for StyleGAN2 backends). The loss is
    ``distance(render, photo) + mse_weight * MSE``; ``distance`` defaults to the multi-scale L1 + gradient L1
    the demo model was trained with.
    """

    def __init__(
        self,
        generator: GeneratorAdapter,  # an unconditional generator with a z -> ws mapping
        distance: Optional[PerceptualDistance] = None,  # a, b [N, 3, H, W] -> [N]; None = MultiScaleGradL1
        starts: int = 64,  # random codes rendered to pick each photo's starting point
        steps: int = 150,  # Adam steps on z
        lr: float = 0.05,  # Adam learning rate on z
        refine_steps: int = 100,  # Adam steps on the codes after z (0 = stay in the mapping's range)
        refine_lr: float = 0.01,  # Adam learning rate of the refinement
        refine_space: str = "w+",  # "w+": one w per layer; "w": one w shared by all layers
        mse_weight: float = 1.0,
        input_alignment: str = "ffhq",
        noise_mode: str = "const",
        code_book: Optional[CodeBook] = None,  # known codes: matched photos start from their training code
        book_refine_steps: int = 50,  # refinement steps of a photo that matched the code book
        progress: bool = True,  # a progress bar over the optimisation steps (stderr)
    ):
        if steps < 0 or refine_steps < 0 or book_refine_steps < 0 or starts < 1:
            raise InputError("steps, refine_steps and book_refine_steps must be >= 0 and starts >= 1")
        if code_book is not None and code_book.z_dim != generator.z_dim:
            raise InputError(f"the code book holds {code_book.z_dim}-d codes, the generator takes "
                             f"z_dim={generator.z_dim}; use the code book written with this model")
        if refine_space not in ("w", "w+"):
            raise InputError(f"refine_space must be 'w' or 'w+', got {refine_space!r}")
        if getattr(generator, "c_dim", 0):
            raise InputError("CodeInverter handles unconditional generators only; use OptimizationInverter")
        if distance is None:
            from guide_unlearn.adapters.perceptual import MultiScaleGradL1

            distance = MultiScaleGradL1()
        self.generator = generator
        self.distance = distance
        self.starts, self.steps, self.lr = starts, steps, lr
        self.refine_steps, self.refine_lr, self.refine_space = refine_steps, refine_lr, refine_space
        self.mse_weight = mse_weight
        self.code_book, self.book_refine_steps = code_book, book_refine_steps
        self.last_matches: Optional[torch.Tensor] = None  # [N] code-book index per photo of the last call, -1 = none
        self.input_alignment = input_alignment
        self.noise_mode = noise_mode
        self.progress = progress
        self.name = "code-projector"

    def _render(self, ws: torch.Tensor) -> torch.Tensor:
        return self.generator.synthesis(ws, None, noise_mode=self.noise_mode).images

    def _loss(self, out: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.distance(out, images) + self.mse_weight * (out - images).square().flatten(1).mean(1)

    def invert(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] -> ws [N, num_ws, w_dim] (detached). ``generator`` seeds the random
        starting codes (the same seed gives the same codes)."""
        g = self.generator
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputError(f"images must be [N, 3, H, W], got {list(images.shape)}")
        check_image_range(images, tolerance=GROSS_RANGE_TOLERANCE)
        device = g.w_avg.device
        images = images.to(device, torch.float32)
        res = getattr(g, "img_resolution", images.shape[-1])
        if images.shape[-2:] != (res, res):
            images = F.interpolate(images, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        matched = self._match(images)  # [N] code-book index or -1
        known = matched >= 0
        # Photos are independent (per-photo losses, elementwise Adam), so each group runs only its own steps:
        # the z search and the long refinement on the unmatched photos, the short refinement on the matched ones.
        # A batch of mostly matched photos no longer pays the unmatched photos' steps for every row.
        out = torch.empty(images.shape[0], 1 if self.refine_space == "w" else g.num_ws, g.w_dim, device=device)
        free, booked = (~known).nonzero().flatten(), known.nonzero().flatten()
        total = (self.steps + self.refine_steps if len(free) else 0) + (self.book_refine_steps if len(booked) else 0)
        with frozen_weights(g), step_bar(self.progress, total, "inverting") as bar:
            if len(free):
                z = self._starting_codes(images[free], generator)
                z.requires_grad_(True)
                opt = torch.optim.Adam([z], lr=self.lr)
                for _ in range(self.steps):
                    bar.update()
                    loss = self._loss(self._render(g.mapping(z, None)), images[free])
                    opt.zero_grad(set_to_none=True)
                    loss.sum().backward()
                    opt.step()
                out[free.to(device)] = self._refine(z.detach(), images[free], self.refine_steps, bar)
            if len(booked):
                z = self.code_book.codes.to(device)[matched[known].to(device)]
                out[booked.to(device)] = self._refine(z, images[booked], self.book_refine_steps, bar)
        return out.expand(-1, g.num_ws, -1).contiguous()

    def _refine(self, z: torch.Tensor, images: torch.Tensor, steps: int, bar) -> torch.Tensor:
        """Adam on the codes mapped from z [n, z_dim] for ``steps`` steps against images [n, 3, res, res].
        -> [n, 1 or num_ws, w_dim] (one w when refine_space is "w")."""
        g = self.generator
        ws = g.mapping(z, None)
        w = (ws if self.refine_space == "w+" else ws[:, :1]).clone().requires_grad_(True)
        if steps:
            opt = torch.optim.Adam([w], lr=self.refine_lr)
            for _ in range(steps):
                bar.update()
                loss = self._loss(self._render(w.expand(-1, g.num_ws, -1)), images)  # per photo: independent
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
        return w.detach()

    def _match(self, images: torch.Tensor) -> torch.Tensor:
        """Code-book index [N] of each image (-1: no book, or no known descriptor within its threshold)."""
        if self.code_book is None:
            matched = torch.full((images.shape[0],), -1, dtype=torch.long)
        else:
            matched, dist = self.code_book.match(images)
            for i, (j, d) in enumerate(zip(matched.tolist(), dist)):
                if j >= 0:
                    logger.info("photo %d matches training code %d (descriptor distance %.3f): starting there", i, j, d)
        self.last_matches = matched
        return matched

    @torch.no_grad()
    def _starting_codes(self, images: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """For each image, the best of ``starts`` random codes. -> z [N, z_dim]."""
        g = self.generator
        device = images.device
        bank = torch.randn(self.starts, g.z_dim, generator=generator, device=device if generator is not None else None)
        bank = bank.to(device)
        renders = torch.cat([self._render(g.mapping(chunk, None)) for chunk in bank.split(32)])
        best = []
        for img in images:
            scores = self._loss(renders, img.unsqueeze(0).expand_as(renders))
            best.append(int(scores.argmin()))
        return bank[best].clone()
