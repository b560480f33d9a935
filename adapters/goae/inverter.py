"""GOAE as a GUIDE inverter: aligned face images -> EG3D ws = w_avg + encoder offset."""

from __future__ import annotations

import os
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from guide_unlearn.errors import InputError

from .encoder import GOAEConfig, GOAEncoder


class GOAEInverter(nn.Module):
    """Implements :class:`guide_unlearn.protocols.Inverter` for EG3D: ``ws = w_avg + E(x)``, [N, 14, 512].

    The encoder runs in eval mode, so the same image always gives the same code. The official GUIDE code never
    calls ``eval()`` on GOAE, so its inversions go through active dropout and stochastic depth; pass
    ``official_train_mode=True`` to reproduce that (the randomness is then drawn from a seed taken from the
    ``generator`` given to :meth:`invert`, so it is still reproducible).
    """

    input_alignment = "eg3d"

    def __init__(
        self,
        encoder: GOAEncoder,  # the GOAE network
        w_avg: torch.Tensor,  # [w_dim] or [num_ws, w_dim]: the generator's mean latent
        official_train_mode: bool = False,  # compat: invert with dropout/DropPath active, as the official code
    ):
        super().__init__()
        self.encoder = encoder.eval()
        num_ws, w_dim = encoder.num_ws, encoder.config.w_dim
        w_avg = torch.as_tensor(w_avg, dtype=torch.float32)
        if w_avg.shape == (w_dim,):
            w_avg = w_avg.unsqueeze(0).repeat(num_ws, 1)
        if w_avg.shape != (num_ws, w_dim):
            raise InputError(f"w_avg must be [{w_dim}] or [{num_ws}, {w_dim}], got {list(w_avg.shape)}")
        self.register_buffer("w_avg", w_avg.clone())
        self.official_train_mode = official_train_mode

    @classmethod
    def for_generator(cls, encoder: GOAEncoder, generator, official_train_mode: bool = False) -> "GOAEInverter":
        """An inverter for an EG3D generator adapter (uses its ``w_avg``, repeated over the ws)."""
        return cls(encoder, generator.w_avg.detach(), official_train_mode)

    def train(self, mode: bool = True) -> "GOAEInverter":
        """The encoder stays in eval mode (see ``official_train_mode``); only the flag on this wrapper changes."""
        super().train(mode)
        self.encoder.eval()
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] -> [N, 3, S, S] at the encoder's input size (bicubic, antialiased)."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"GOAE inverts image tensors [N, 3, H, W] in [-1, 1], got {shape}")
        if images.device.type != "meta" and not torch.isfinite(images).all():
            raise InputError("images contain NaN or Inf")
        s = self.encoder.config.img_size
        x = images.to(device=self.w_avg.device, dtype=torch.float32)
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
        return x

    def invert(self, images: torch.Tensor, cameras: Optional[torch.Tensor] = None,
               generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """images [N, 3, H, W] in [-1, 1] (EG3D-aligned crops; ``cameras`` unused) -> ws [N, num_ws, w_dim]."""
        from guide_unlearn.images import GROSS_RANGE_TOLERANCE, check_image_range

        check_image_range(images, tolerance=GROSS_RANGE_TOLERANCE)
        x = self.preprocess(images)
        if not self.official_train_mode:
            return self.encoder(x) + self.w_avg
        seed = (int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
                if generator is not None else None)
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            self.encoder.train()
            try:
                return self.encoder(x) + self.w_avg
            finally:
                self.encoder.eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`invert`."""
        return self.invert(images)


def build_goae_ffhq(device="meta", w_avg: Optional[torch.Tensor] = None) -> GOAEInverter:
    """The full-size GOAE FFHQ inverter without weights (on ``device``; "meta" allocates nothing)."""
    with torch.device(device):
        encoder = GOAEncoder(GOAEConfig())
        return GOAEInverter(encoder, torch.zeros(512) if w_avg is None else w_avg)


def load_goae_ffhq(path: Union[str, os.PathLike], w_avg: torch.Tensor, device="cpu",
                   official_train_mode: bool = False) -> GOAEInverter:
    """GOAE with the official ``encoder_FFHQ.pt`` weights; ``w_avg`` [512] or [14, 512] from the generator."""
    from .convert import load_goae_checkpoint

    encoder = load_goae_checkpoint(path, GOAEncoder(GOAEConfig()))
    return GOAEInverter(encoder, w_avg, official_train_mode).to(device)
