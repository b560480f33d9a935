"""Head pose and the EG3D camera label of a face, from its 5 landmarks (replaces the 3D reconstruction step).

The BFM mean face's 5 points (``templates.BFM_LM3D``) are fitted to the landmarks with a weak-perspective
camera (rotation, scale, 2-D shift; Gauss-Newton from Deep3DFaceRecon's affine "POS" solution). The face frame
is EG3D's world frame (x to the image's right in the frontal view, y up, z towards the frontal camera), and the camera
looks along -d (d: the unit direction from the face to the camera) from EG3D's sphere of cameras.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from .align import pos_fit
from .photo import ImageLike, load_image
from .templates import BFM_LM3D
from .types import CameraEstimate, Face

FOV_DEG = 18.837  # EG3D FFHQ field of view
RADIUS = 2.7
PIVOT = (0.0, 0.0, 0.2)


def focal_from_fov(fov_deg: float = FOV_DEG) -> float:
    """Normalised focal length of EG3D's intrinsics: 1 / (tan(fov / 2) * 1.414)  (4.2634 at 18.837°)."""
    return 1.0 / (math.tan(math.radians(fov_deg) / 2) * 1.414)


def _rotation(rvec: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle [3] -> rotation [3, 3]."""
    theta = float(np.linalg.norm(rvec))
    if theta < 1e-12:
        return np.eye(3)
    k = rvec / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(theta) * kx + (1 - math.cos(theta)) * kx @ kx


def _log_rotation(rot: np.ndarray) -> np.ndarray:
    """Rotation [3, 3] -> axis-angle [3]."""
    cos = np.clip((np.trace(rot) - 1) / 2, -1.0, 1.0)
    theta = math.acos(cos)
    if theta < 1e-9:
        return np.zeros(3)
    w = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    return w * theta / (2 * math.sin(theta))


# Mouth corners move with expression (smiles, open mouths) while eyes and nose tip do not, so they count half
# in the pose fit. Measured on shared/faces/goae_eg3d_real_person (the only photos here with true cameras):
# weight 1 gave 2.2° / 5.2° mean |azimuth| / |elevation| error, weight 0.5 gives 2.1° / 4.0°.
MOUTH_WEIGHT = 0.5


def fit_head_rotation(landmarks: np.ndarray, image_height: int, iterations: int = 20,
                      mouth_weight: float = MOUTH_WEIGHT) -> tuple[np.ndarray, float]:
    """Rotation R [3, 3] (face frame -> camera frame, x right, y up, z towards the viewer) of the BFM mean face
    best matching the 5 landmarks [5, 2] under weak perspective; also the weighted RMS residual in units of
    the fitted inter-ocular distance."""
    _, s, p = pos_fit(landmarks, image_height)
    u, _, vt = np.linalg.svd(p / s, full_matrices=False)
    r12 = u @ vt  # nearest orthonormal pair of rows
    rot0 = np.vstack([r12, np.cross(r12[0], r12[1])])
    lm = np.asarray(landmarks, dtype=np.float64).copy()
    lm[:, 1] = image_height - 1 - lm[:, 1]
    target = lm.reshape(-1)
    weights = np.repeat([1.0, 1.0, 1.0, mouth_weight, mouth_weight], 2)

    def residual(params: np.ndarray) -> np.ndarray:
        rot = _rotation(params[:3]) @ rot0
        proj = params[3] * (BFM_LM3D @ rot[:2].T) + params[4:6]
        return weights * (proj.reshape(-1) - target)

    params = np.concatenate([np.zeros(3), [s], lm.mean(0) - s * (BFM_LM3D @ rot0[:2].T).mean(0)])
    for _ in range(iterations):  # Gauss-Newton, numerical Jacobian: 6 unknowns, 10 residuals
        r0 = residual(params)
        jac = np.empty((10, 6))
        for j in range(6):
            step = 1e-6 * max(1.0, abs(params[j]))
            shifted = params.copy()
            shifted[j] += step
            jac[:, j] = (residual(shifted) - r0) / step
        delta = np.linalg.lstsq(jac, -r0, rcond=None)[0]
        params = params + delta
        if np.abs(delta).max() < 1e-9:
            break
    rot = _rotation(params[:3]) @ rot0
    rms = float(np.sqrt((residual(params) ** 2).mean()))
    eye_dist = params[3] * float(np.linalg.norm(BFM_LM3D[1] - BFM_LM3D[0]))
    return rot, rms / max(eye_dist, 1e-9)


def camera_label(rotation: np.ndarray, radius: float = RADIUS, pivot=PIVOT, fov_deg: float = FOV_DEG
                 ) -> np.ndarray:
    """EG3D's 25-number camera from a head rotation [3, 3] (face -> camera, y up, z to the viewer).

    As EG3D's LookAtPoseSampler: the camera sits on the sphere of ``radius`` around the world origin and looks
    at ``pivot`` (its position ignores the pivot, only its direction aims at it). cam2world (OpenCV axes: x
    right, y down, z forward) = R^T diag(1, -1, -1), so the estimated roll is kept; intrinsics
    [[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]. Returns [25] float32.
    """
    rot = np.asarray(rotation, dtype=np.float64)
    forward = -rot.T[:, 2]  # from the camera towards the face
    p = np.asarray(pivot, dtype=np.float64)
    # the point of the sphere |o| = radius from which the ray along ``forward`` passes through the pivot
    pf = float(p @ forward)
    t = pf + math.sqrt(max(pf * pf - float(p @ p) + radius * radius, 0.0))
    cam2world = np.eye(4)
    cam2world[:3, :3] = rot.T @ np.diag([1.0, -1.0, -1.0])
    cam2world[:3, 3] = p - t * forward
    f = focal_from_fov(fov_deg)
    intrinsics = np.array([[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]])
    return np.concatenate([cam2world.reshape(-1), intrinsics.reshape(-1)]).astype(np.float32)


def angles_from_cam2world(cam2world: np.ndarray) -> tuple[float, float, float]:
    """(azimuth, elevation, roll) in radians of an EG3D cam2world [4, 4] (or its 16 numbers).

    azimuth = atan2(d_x, d_z) and elevation = asin(d_y) of the direction d = -forward from the scene to the
    camera; roll = rotation of the camera about its forward axis (0 when its x axis is horizontal).
    """
    c2w = np.asarray(cam2world, dtype=np.float64).reshape(4, 4)
    d = -c2w[:3, 2]
    d = d / np.linalg.norm(d)
    azimuth = math.atan2(d[0], d[2])
    elevation = math.asin(np.clip(d[1], -1.0, 1.0))
    right = c2w[:3, 0]
    level = np.cross(np.array([0.0, 1.0, 0.0]), -d)  # EG3D's roll-free right vector: -(up x forward)
    level = -level / max(np.linalg.norm(level), 1e-12)
    roll = math.atan2(float(np.dot(np.cross(level, right), -d)), float(np.dot(level, right)))
    return azimuth, elevation, roll


def eg3d_sampler_angles(cam2world: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) for EG3D's LookAtPoseSampler that put a camera at this cam2world's position [4, 4]:
    yaw = pi/2 + atan2(o_x, o_z), pitch = pi/2 * (1 - o_y / |o|) (the sampler's polar parameter v, not a
    geometric angle). The sampler then looks at the pivot, reproducing the direction when roll is 0."""
    origin = np.asarray(cam2world, dtype=np.float64).reshape(4, 4)[:3, 3]
    norm = max(float(np.linalg.norm(origin)), 1e-12)
    return math.pi / 2 + math.atan2(origin[0], origin[2]), math.pi / 2 * (1 - origin[1] / norm)


def estimate_camera(image: Optional[ImageLike], face: Face, image_height: Optional[int] = None,
                    radius: float = RADIUS, pivot=PIVOT, fov_deg: float = FOV_DEG) -> CameraEstimate:
    """Estimate the EG3D camera of a face from its 5 landmarks.

    image: the photo the landmarks refer to (only its height is used; pass None with image_height instead).
    Returns a CameraEstimate: ``yaw`` / ``pitch`` in EG3D's sampler convention ((pi/2, pi/2) = frontal; the
    angles of the camera position, which the sampler turns back into this camera), geometric ``azimuth`` /
    ``elevation`` / ``roll`` of the viewing direction in radians, and the 25-number ``label`` (camera at
    ``radius`` from the world origin, looking at ``pivot``, as EG3D's sampler; focal from ``fov_deg``). The crop does not change these angles,
    so the face may be given in the photo or in its "eg3d" crop.
    """
    if image_height is None:
        if image is None:
            raise ValueError("estimate_camera needs the image or image_height")
        image_height = load_image(image).height if not hasattr(image, "height") else int(image.height)
    rot, residual = fit_head_rotation(face.landmarks, int(image_height))
    label = camera_label(rot, radius, pivot, fov_deg)
    azimuth, elevation, roll = angles_from_cam2world(label[:16])
    yaw, pitch = eg3d_sampler_angles(label[:16])
    return CameraEstimate(yaw=yaw, pitch=pitch, azimuth=azimuth, elevation=elevation, roll=roll, label=label,
                          residual=residual)
