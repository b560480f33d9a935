"""EG3D's neural volume renderer in pure PyTorch: tri-plane sampling, the OSG decoder, rays, importance
sampling and the ray marcher (docs/eg3d.md), written from the maths.

Shapes: N cameras/codes, M rays per image (R² at neural rendering resolution R), S samples per ray, C feature
channels per plane (32). Every random draw (stratified jitter, importance sampling) goes through the caller's
``torch.Generator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from guide_unlearn.errors import ConfigError

from ..stylegan2.layers import FullyConnectedLayer
from .cameras import uniform


@dataclass(frozen=True)
class RenderingOptions:
    """Volume-rendering settings (EG3D's ``rendering_kwargs`` for FFHQ-512 by default)."""

    ray_start: float = 2.25  # near bound of every ray (world units from the camera)
    ray_end: float = 3.3  # far bound
    depth_resolution: int = 48  # stratified (coarse) samples per ray
    depth_resolution_importance: int = 48  # importance (fine) samples per ray; 0 = coarse only
    box_warp: float = 1.0  # side of the cube the tri-planes span; points are scaled by 2 / box_warp
    clamp_mode: str = "softplus"  # density activation: softplus(sigma - 1)
    white_back: bool = False  # composite over white instead of black

    def __post_init__(self):
        if self.depth_resolution < 2:
            raise ConfigError(f"depth_resolution must be >= 2, got {self.depth_resolution}")
        if self.depth_resolution_importance < 0:
            raise ConfigError("depth_resolution_importance must be >= 0")
        if not self.ray_end > self.ray_start > 0:
            raise ConfigError(f"need 0 < ray_start < ray_end, got {self.ray_start}, {self.ray_end}")
        if self.clamp_mode != "softplus":
            raise ConfigError(f"only clamp_mode 'softplus' (EG3D's) is implemented, got {self.clamp_mode!r}")


# --------------------------------------------------------------------------------------------------------------
# Tri-planes
# --------------------------------------------------------------------------------------------------------------

def plane_axes() -> torch.Tensor:
    """EG3D's three plane bases [3, 3, 3]; projecting with their inverses gives (x, y), (x, z) and (z, x)."""
    return torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                         [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]],
                         [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])


def project_onto_planes(coordinates: torch.Tensor) -> torch.Tensor:
    """Points [N, M, 3] -> 2-D plane coordinates [N, 3, M, 2]: XY, XZ and ZX.

    The third plane is ZX, not YZ — an EG3D quirk the trained checkpoints depend on.
    """
    x, y, z = coordinates.unbind(-1)
    return torch.stack([torch.stack([x, y], -1), torch.stack([x, z], -1), torch.stack([z, x], -1)], dim=1)


def sample_from_planes(planes: torch.Tensor, coordinates: torch.Tensor, box_warp: float = 1.0) -> torch.Tensor:
    """Bilinearly sample tri-plane features at world points.

    planes [N, 3, C, H, W], coordinates [N, M, 3] -> features [N, 3, M, C]. Points are scaled by 2 / box_warp
    so the planes span [-box_warp/2, box_warp/2]; outside that, features are 0 (zero padding).
    """
    n, n_planes, c, h, w = planes.shape
    if n_planes != 3 or coordinates.ndim != 3 or coordinates.shape[0] != n or coordinates.shape[2] != 3:
        raise ValueError(f"need planes [N, 3, C, H, W] and points [N, M, 3], got {list(planes.shape)} and "
                         f"{list(coordinates.shape)}")
    m = coordinates.shape[1]
    grid = project_onto_planes((2.0 / box_warp) * coordinates).reshape(n * 3, m, 1, 2)
    out = F.grid_sample(planes.reshape(n * 3, c, h, w), grid.to(planes.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=False)  # [N*3, C, M, 1]
    return out.reshape(n, 3, c, m).permute(0, 1, 3, 2)


class OSGDecoder(nn.Module):
    """EG3D's small MLP: mean of the 3 plane features -> (density, colour/features).

    ``net.0``: FC(C -> hidden), ``net.1``: Softplus, ``net.2``: FC(hidden -> 1 + output_dim); names match the
    official ``decoder.net.0`` / ``decoder.net.2``.
    """

    def __init__(
        self,
        n_features: int = 32,  # channels per plane
        hidden_dim: int = 64,  # hidden width
        output_dim: int = 32,  # feature channels out (the first 3 are the raw RGB)
        lr_multiplier: float = 1.0,  # equalised-lr multiplier (EG3D's decoder_lr_mul)
    ):
        super().__init__()
        self.n_features, self.output_dim = n_features, output_dim
        self.net = nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=lr_multiplier),
            nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + output_dim, lr_multiplier=lr_multiplier),
        )

    def forward(self, sampled_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sampled_features [N, 3, M, C] -> (rgb [N, M, output_dim] in (-0.001, 1.001), sigma [N, M, 1])."""
        x = sampled_features.mean(1)
        n, m, c = x.shape
        x = self.net(x.reshape(n * m, c)).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:]) * (1 + 2 * 0.001) - 0.001  # MipNeRF's widened sigmoid
        return rgb, x[..., 0:1]


# --------------------------------------------------------------------------------------------------------------
# Rays and samples
# --------------------------------------------------------------------------------------------------------------

def sample_rays(cam2world: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One ray through the centre of every pixel of an R×R image.

    cam2world [N, 4, 4], normalised intrinsics [N, 3, 3] -> (origins [N, R², 3], unit directions [N, R², 3]),
    pixels in row-major order (row = image y, column = image x).
    """
    n = cam2world.shape[0]
    dtype, device = cam2world.dtype, cam2world.device
    fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
    cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
    centres = (torch.arange(resolution, device=device, dtype=dtype) + 0.5) / resolution
    v, u = torch.meshgrid(centres, centres, indexing="ij")  # v: row (y), u: column (x)
    u = u.reshape(1, -1).expand(n, -1)
    v = v.reshape(1, -1).expand(n, -1)
    x_cam = (u - cx + cy * sk / fy - sk * v / fy) / fx
    y_cam = (v - cy) / fy
    points = torch.stack([x_cam, y_cam, torch.ones_like(x_cam), torch.ones_like(x_cam)], dim=-1)  # [N, M, 4]
    world = torch.bmm(points, cam2world.transpose(1, 2))[..., :3]
    origins = cam2world[:, None, :3, 3].expand(-1, world.shape[1], -1)
    directions = F.normalize(world - origins, dim=-1)
    return origins.contiguous(), directions


def sample_stratified(
    n: int, m: int, ray_start: float, ray_end: float, depth_resolution: int,
    generator: Optional[torch.Generator] = None, device=None, dtype=torch.float32,
) -> torch.Tensor:
    """Coarse depths [N, M, S, 1]: ``linspace(start, end, S)`` each pushed forward by U[0, 1) × the spacing.

    As in EG3D, the jitter is added to every grid point including the last, so depths reach up to
    ``end + (end - start) / (S - 1)``.
    """
    grid = torch.linspace(ray_start, ray_end, depth_resolution, device=device, dtype=dtype)
    delta = (ray_end - ray_start) / (depth_resolution - 1)
    jitter = uniform([n, m, depth_resolution, 1], generator, device=device, dtype=dtype)
    return grid.reshape(1, 1, -1, 1) + jitter * delta


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int,
               generator: Optional[torch.Generator] = None, eps: float = 1e-5) -> torch.Tensor:
    """Inverse-transform sampling of a piecewise-constant PDF.

    bins [R, B+1] edges, weights [R, B] (non-negative) -> [R, n_samples] depths, drawn with ``generator``.
    """
    r, b = weights.shape
    pdf = (weights + eps) / (weights + eps).sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)  # [R, B+1]
    u = uniform([r, n_samples], generator, device=bins.device, dtype=bins.dtype).contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp_min(0)
    above = idx.clamp_max(b)
    both = torch.stack([below, above], -1).reshape(r, 2 * n_samples)
    cdf_g = torch.gather(cdf, 1, both).reshape(r, n_samples, 2)
    bins_g = torch.gather(bins, 1, both).reshape(r, n_samples, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


@torch.no_grad()
def sample_importance(depths: torch.Tensor, weights: torch.Tensor, n_importance: int,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fine depths [N, M, n_importance, 1] drawn where the coarse pass put its weight (no gradient).

    depths [N, M, S, 1], weights [N, M, S-1, 1] (from :func:`ray_march`). The weights are smoothed first —
    max-pool (2, stride 1, pad 1), avg-pool (2, stride 1), + 0.01 — and the PDF lives on the mid-points.
    """
    n, m, s, _ = depths.shape
    z = depths.reshape(n * m, s)
    w = weights.reshape(n * m, -1).float()
    w = F.max_pool1d(w.unsqueeze(1), 2, 1, padding=1)
    w = F.avg_pool1d(w, 2, 1).squeeze(1) + 0.01  # [R, S-1]
    z_mid = 0.5 * (z[:, :-1] + z[:, 1:])  # [R, S-1]
    fine = sample_pdf(z_mid, w[:, 1:-1].to(z.dtype), n_importance, generator)
    return fine.reshape(n, m, n_importance, 1)


def ray_march(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor, white_back: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Alpha-composite samples along each ray (EG3D's MipRayMarcher2, softplus density).

    colors [N, M, S, C] in about [0, 1], densities [N, M, S, 1] (raw), depths [N, M, S, 1] sorted ->
    (colour [N, M, C] scaled to [-1, 1], depth [N, M, 1], weights [N, M, S-1, 1]). Quantities are taken at the
    S-1 interval mid-points; density is softplus(sigma - 1).
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = F.softplus((densities[:, :, :-1] + densities[:, :, 1:]) / 2 - 1)
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    alpha = 1 - torch.exp(-densities_mid * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2), -2)
    weights = alpha * transmittance[:, :, :-1]
    rgb = (weights * colors_mid).sum(-2)
    total = weights.sum(-2)
    depth = torch.nan_to_num((weights * depths_mid).sum(-2) / total, float("inf"))
    depth = torch.clamp(depth, depths.min(), depths.max())
    if white_back:
        rgb = rgb + 1 - total
    return rgb * 2 - 1, depth, weights


def render_planes(
    planes: torch.Tensor,
    decoder: OSGDecoder,
    ray_origins: torch.Tensor,
    ray_directions: torch.Tensor,
    options: RenderingOptions = RenderingOptions(),
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render tri-planes along rays: coarse pass, importance pass, merge, composite.

    planes [N, 3, C, H, W], rays [N, M, 3] -> (features [N, M, output_dim] in about [-1, 1], depth [N, M, 1],
    accumulated opacity [N, M, 1]).
    """
    n, m, _ = ray_origins.shape
    dtype, device = ray_origins.dtype, ray_origins.device

    def run(depths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = depths.shape[2]
        points = (ray_origins.unsqueeze(-2) + depths * ray_directions.unsqueeze(-2)).reshape(n, m * s, 3)
        rgb, sigma = decoder(sample_from_planes(planes, points, options.box_warp))
        return rgb.reshape(n, m, s, -1), sigma.reshape(n, m, s, 1)

    depths = sample_stratified(n, m, options.ray_start, options.ray_end, options.depth_resolution, generator,
                               device=device, dtype=dtype)
    colors, densities = run(depths)
    if options.depth_resolution_importance > 0:
        _, _, weights = ray_march(colors, densities, depths, options.white_back)
        fine = sample_importance(depths, weights, options.depth_resolution_importance, generator)
        colors_f, densities_f = run(fine)
        depths = torch.cat([depths, fine], dim=-2)
        colors = torch.cat([colors, colors_f], dim=-2)
        densities = torch.cat([densities, densities_f], dim=-2)
        order = torch.argsort(depths, dim=-2)
        depths = torch.gather(depths, -2, order)
        colors = torch.gather(colors, -2, order.expand(-1, -1, -1, colors.shape[-1]))
        densities = torch.gather(densities, -2, order)
    rgb, depth, weights = ray_march(colors, densities, depths, options.white_back)
    return rgb, depth, weights.sum(-2)
