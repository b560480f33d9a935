"""UFO — Un-identifying Face On latent space: choose the code the person's code should render like."""

from __future__ import annotations

from typing import Optional

import torch

from .errors import ConfigError


def ufo_target(w_u: torch.Tensor, w_avg: torch.Tensor, kind: str = "extrapolate", distance: float = 30.0) -> torch.Tensor:
    """The UFO target code(s) for the person's code(s).

    w_u:   [N, num_ws, w_dim] inverted codes of the person (one row per photo).
    w_avg: [w_dim] or [num_ws, w_dim] mean code.
    kind:  'extrapolate': w_t = w_avg - d * w_id / ||w_id||_F with w_id = w_u - w_avg (norm over the whole
           [num_ws, w_dim] code, per photo), as in GUIDE; 'average': w_t = w_avg (the baseline).
    -> w_t [N, num_ws, w_dim].
    """
    if w_u.ndim != 3:
        raise ConfigError(f"w_u must be [N, num_ws, w_dim], got {list(w_u.shape)}")
    avg = w_avg.to(w_u.dtype).to(w_u.device)
    avg = avg.expand_as(w_u[0]) if avg.ndim == 1 else avg
    if kind == "average":
        return avg.unsqueeze(0).expand_as(w_u).clone()
    if kind != "extrapolate":
        raise ConfigError(f"unknown UFO target kind {kind!r}; use 'extrapolate' or 'average'")
    w_id = w_u - avg
    norm = w_id.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return avg - distance * w_id / norm


@torch.no_grad()
def typical_distance(mapping, w_avg: torch.Tensor, z_dim: int, n: int = 256, seed: int = 1234,
                     device: Optional[torch.device] = None, truncation_psi: float = 1.0) -> float:
    """Mean Frobenius norm ||w - w_avg|| over ``n`` mapped samples [num_ws, w_dim] (a seeded estimate).

    mapping: callable z [n, z_dim] -> ws [n, num_ws, w_dim]. Used to express the UFO distance and the
    adjacency range relative to a model's own W space (d = 30 is absolute in EG3D's).
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g).to(device or w_avg.device)
    ws = mapping(z, truncation_psi=truncation_psi)
    avg = w_avg.to(ws.dtype)
    return float((ws - avg).flatten(1).norm(dim=1).mean())
