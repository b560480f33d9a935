"""EG3D cameras: look-at poses, normalised intrinsics and the 25-number camera label.

Written from EG3D's conventions (docs/eg3d.md), not from its code:

- A camera label is 25 numbers: the 4×4 cam2world matrix (OpenCV convention: +x right, +y down, +z forward in
  camera space) flattened row-major, then the 3×3 intrinsics normalised by the image size, flattened.
- Poses are sampled on a sphere of ``radius`` around the world origin: ``yaw`` is the azimuth about +y and
  ``pitch`` the polar angle from +y, both in radians, EG3D style: (pi/2, pi/2) puts the camera on the +z axis at
  (0, 0, radius), looking back at the pivot, i.e. at the face's front. Larger yaw moves the camera towards +x.
  As in EG3D, the polar angle goes through ``phi = arccos(1 - 2 * pitch / pi)`` (so pitch pi/2 - 0.2 gives
  phi ≈ 1.443, not 1.371) and the camera *position* ignores the pivot; only its viewing direction aims at it.
- The focal length for a field of view uses EG3D's rounded constants (pi ≈ 3.14159, sqrt(2) ≈ 1.414):
  ``f = 1 / (tan(fov/2) * 1.414)``, 4.2634 at 18.837°.

Every random draw goes through a caller-supplied ``torch.Generator``; draws happen on that generator's device
and are moved to the requested one, so a CPU generator can drive a CUDA model reproducibly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from guide_unlearn.errors import InputError

#: EG3D's own look-at pivot for FFHQ (``rendering_kwargs['avg_camera_pivot']``).
EG3D_PIVOT = (0.0, 0.0, 0.2)
#: The pivot the official GUIDE code ends up using (it reads a key that does not exist and falls back to 0).
GUIDE_CODE_PIVOT = (0.0, 0.0, 0.0)
#: FFHQ camera radius and field of view (degrees).
EG3D_RADIUS = 2.7
EG3D_FOV_DEGREES = 18.837
#: Angles of the frontal camera: on the +z axis, looking back at the pivot.
FRONTAL_YAW = math.pi / 2
FRONTAL_PITCH = math.pi / 2

_Angle = Union[float, Sequence[float], torch.Tensor]


@dataclass(frozen=True)
class CameraConfig:
    """Where the cameras of an EG3D model sit and how GUIDE samples them."""

    fov_degrees: float = EG3D_FOV_DEGREES  # vertical field of view of every camera
    radius: float = EG3D_RADIUS  # distance of the camera from the world origin
    pivot: tuple[float, float, float] = EG3D_PIVOT  # point the cameras look at
    yaw_range: float = math.pi / 12  # training / evaluation yaws lie in pi/2 ± yaw_range
    pitch_offset: float = -0.2  # training / evaluation pitch = pi/2 + pitch_offset


def focal_length(fov_degrees: float) -> float:
    """Normalised focal length for a vertical FOV in degrees, with EG3D's rounded constants (4.2634 at 18.837°)."""
    if not 0.0 < fov_degrees < 180.0:
        raise InputError(f"fov_degrees must be in (0, 180), got {fov_degrees}; EG3D FFHQ uses 18.837")
    return float(1.0 / (math.tan(fov_degrees * 3.14159 / 360.0) * 1.414))


def fov_to_intrinsics(fov_degrees: float = EG3D_FOV_DEGREES, device=None, dtype=torch.float32) -> torch.Tensor:
    """Intrinsics [3, 3] normalised by the image size, principal point at the centre (0.5, 0.5)."""
    f = focal_length(fov_degrees)
    return torch.tensor([[f, 0.0, 0.5], [0.0, f, 0.5], [0.0, 0.0, 1.0]], device=device, dtype=dtype)


def _as_angles(x: _Angle, device, dtype) -> torch.Tensor:
    t = torch.as_tensor(x, dtype=dtype, device=device)
    return t.reshape(-1)


def look_at_poses(
    yaw: _Angle,
    pitch: _Angle,
    pivot: Sequence[float] = EG3D_PIVOT,
    radius: float = EG3D_RADIUS,
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """EG3D look-at cam2world matrices [N, 4, 4] for yaws [N] and pitches [N] (radians; scalars broadcast).

    Columns of the rotation are (right, up, forward) with forward pointing from the camera to ``pivot``; "up"
    is the camera's +y, which points down in the world (OpenCV convention).
    """
    yaw_t = _as_angles(yaw, device, dtype)
    pitch_t = _as_angles(pitch, device, dtype)
    yaw_t, pitch_t = torch.broadcast_tensors(yaw_t, pitch_t)
    v = pitch_t.clamp(1e-5, math.pi - 1e-5) / math.pi
    phi = torch.arccos(1 - 2 * v)  # EG3D's polar remapping
    theta = yaw_t
    origin = torch.stack(
        [radius * torch.sin(phi) * torch.cos(math.pi - theta),
         radius * torch.cos(phi),
         radius * torch.sin(phi) * torch.sin(math.pi - theta)], dim=-1)  # [N, 3]
    target = torch.as_tensor(pivot, dtype=dtype, device=origin.device).reshape(1, 3)
    forward = torch.nn.functional.normalize(target - origin, dim=-1)
    world_up = torch.tensor([0.0, 1.0, 0.0], dtype=dtype, device=origin.device).expand_as(forward)
    right = -torch.nn.functional.normalize(torch.cross(world_up, forward, dim=-1), dim=-1)
    up = torch.nn.functional.normalize(torch.cross(forward, right, dim=-1), dim=-1)
    pose = torch.eye(4, dtype=dtype, device=origin.device).repeat(origin.shape[0], 1, 1)
    pose[:, :3, :3] = torch.stack([right, up, forward], dim=-1)
    pose[:, :3, 3] = origin
    return pose


def encode_cameras(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """cam2world [N, 4, 4] + intrinsics [3, 3] or [N, 3, 3] -> camera labels [N, 25]."""
    if cam2world.ndim != 3 or cam2world.shape[1:] != (4, 4):
        raise InputError(f"cam2world must be [N, 4, 4], got {list(cam2world.shape)}")
    n = cam2world.shape[0]
    if intrinsics.shape == (3, 3):
        intrinsics = intrinsics.unsqueeze(0).expand(n, 3, 3)
    if intrinsics.shape != (n, 3, 3):
        raise InputError(f"intrinsics must be [3, 3] or [{n}, 3, 3], got {list(intrinsics.shape)}")
    return torch.cat([cam2world.reshape(n, 16), intrinsics.to(cam2world).reshape(n, 9)], dim=1)


def decode_cameras(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera labels [N, 25] -> (cam2world [N, 4, 4], intrinsics [N, 3, 3])."""
    check_cameras(c)
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)


def check_cameras(c: torch.Tensor, n: Optional[int] = None) -> None:
    """Raise :class:`InputError` unless ``c`` is a finite float tensor [N, 25] (N = ``n`` when given)."""
    if not isinstance(c, torch.Tensor) or c.ndim != 2 or c.shape[1] != 25:
        shape = list(c.shape) if isinstance(c, torch.Tensor) else type(c).__name__
        raise InputError(f"EG3D cameras must be a float tensor [N, 25] (cam2world 4x4 + intrinsics 3x3), got "
                         f"{shape}; build one with guide_unlearn.adapters.eg3d.cameras.make_cameras(yaw, pitch)")
    if n is not None and c.shape[0] not in (1, n):
        raise InputError(f"got {c.shape[0]} cameras for a batch of {n}; pass one camera or one per sample")
    if not torch.is_floating_point(c) or (c.device.type != "meta" and not torch.isfinite(c).all()):
        raise InputError("EG3D cameras must be finite floating-point numbers")


def make_cameras(
    yaw: _Angle,
    pitch: _Angle,
    config: CameraConfig = CameraConfig(),
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """Camera labels [N, 25] for absolute EG3D angles (radians; (pi/2, pi/2) = frontal) under ``config``."""
    pose = look_at_poses(yaw, pitch, config.pivot, config.radius, device=device, dtype=dtype)
    return encode_cameras(pose, fov_to_intrinsics(config.fov_degrees, device=pose.device, dtype=dtype))


def conditioning_cameras(n: int = 1, config: CameraConfig = CameraConfig(), device=None,
                         dtype=torch.float32) -> torch.Tensor:
    """The frontal conditioning camera (yaw pi/2, pitch pi/2) GUIDE feeds the mapping network, [n, 25]."""
    return make_cameras(FRONTAL_YAW, FRONTAL_PITCH, config, device=device, dtype=dtype).expand(n, 25).clone()


def frontal_rendering_cameras(n: int = 1, config: CameraConfig = CameraConfig(), device=None,
                              dtype=torch.float32) -> torch.Tensor:
    """The training/evaluation orbit's centre view (yaw pi/2, pitch pi/2 + pitch_offset), [n, 25]."""
    return make_cameras(FRONTAL_YAW, FRONTAL_PITCH + config.pitch_offset, config, device=device,
                        dtype=dtype).expand(n, 25).clone()


def uniform(shape: Sequence[int], generator: Optional[torch.Generator], device=None,
            dtype=torch.float32) -> torch.Tensor:
    """U[0, 1) draws of ``shape`` from ``generator`` (on its device), moved to ``device``."""
    gen_device = generator.device if generator is not None else (device if device is not None else "cpu")
    u = torch.rand(tuple(shape), generator=generator, device=gen_device, dtype=dtype)
    return u.to(device) if device is not None else u


def sample_training_cameras(
    n: int,
    generator: Optional[torch.Generator] = None,
    config: CameraConfig = CameraConfig(),
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """GUIDE's training cameras [n, 25]: yaw = pi/2 + U(-yaw_range, yaw_range), pitch = pi/2 + pitch_offset."""
    if n < 1:
        raise InputError(f"n must be >= 1, got {n}")
    u = uniform([n], generator, device=device, dtype=dtype)
    yaw = FRONTAL_YAW + (2 * u - 1) * config.yaw_range
    return make_cameras(yaw, FRONTAL_PITCH + config.pitch_offset, config, device=device, dtype=dtype)


def orbit_cameras(
    n_views: int = 11,
    config: CameraConfig = CameraConfig(),
    device=None,
    dtype=torch.float32,
) -> torch.Tensor:
    """The evaluation orbit [n_views, 25]: yaws pi/2 + linspace(-yaw_range, yaw_range, n_views), fixed pitch."""
    if n_views < 1:
        raise InputError(f"n_views must be >= 1, got {n_views}")
    if n_views == 1:
        yaws = torch.tensor([FRONTAL_YAW], dtype=torch.float64)
    else:
        yaws = FRONTAL_YAW + torch.linspace(-config.yaw_range, config.yaw_range, n_views, dtype=torch.float64)
    return make_cameras(yaws.to(dtype), FRONTAL_PITCH + config.pitch_offset, config, device=device, dtype=dtype)
