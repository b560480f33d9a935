"""EG3D cameras: intrinsics, look-at poses, the 25-number label, GUIDE's sampling distributions."""

import math

import pytest
import torch

from guide_unlearn.adapters.eg3d import cameras as C
from guide_unlearn.errors import InputError


def test_focal_length_at_ffhq_fov_is_4_2634():
    assert C.focal_length(18.837) == pytest.approx(4.2634, abs=1e-4)
    k = C.fov_to_intrinsics(18.837)
    assert torch.allclose(k, torch.tensor([[4.2634, 0, 0.5], [0, 4.2634, 0.5], [0, 0, 1.0]]), atol=1e-4)


def test_frontal_pose_sits_on_plus_z_and_looks_back_at_the_origin():
    # (pi/2, pi/2): camera at (0, 0, 2.7); OpenCV axes: right = +x, down = -y (world up is +y), forward = -z.
    expected = torch.tensor([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 2.7], [0, 0, 0, 1]])
    for pivot in (C.EG3D_PIVOT, C.GUIDE_CODE_PIVOT):  # a pivot on the z axis does not change this camera
        pose = C.look_at_poses(math.pi / 2, math.pi / 2, pivot, 2.7)
        assert torch.allclose(pose[0], expected, atol=1e-6)


def test_yaw_moves_the_camera_to_plus_x_and_pitch_uses_eg3ds_polar_remap():
    a, pitch = 0.25, math.pi / 2 - 0.2
    pose = C.look_at_poses(math.pi / 2 + a, pitch, (0, 0, 0), 2.7)[0]
    phi = math.acos(1 - 2 * pitch / math.pi)  # EG3D's remapping: 1.4431, not 1.3708
    assert phi == pytest.approx(1.4431, abs=1e-4)
    expected = torch.tensor([2.7 * math.sin(phi) * math.sin(a), 2.7 * math.cos(phi), 2.7 * math.sin(phi) * math.cos(a)])
    assert torch.allclose(pose[:3, 3], expected, atol=1e-5)


@pytest.mark.parametrize("pivot", [C.EG3D_PIVOT, C.GUIDE_CODE_PIVOT])
def test_pose_is_a_rotation_whose_forward_axis_hits_the_pivot(pivot):
    pose = C.look_at_poses(torch.tensor([1.3, 1.6, 1.9]), torch.tensor([1.2, 1.5, 1.8]), pivot, 2.7)
    rot, origin = pose[:, :3, :3], pose[:, :3, 3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(3), atol=1e-5)
    to_pivot = torch.nn.functional.normalize(torch.tensor(pivot).float() - origin, dim=-1)
    assert torch.allclose(rot[:, :, 2], to_pivot, atol=1e-5)
    assert torch.allclose(pose[:, 3], torch.tensor([0.0, 0, 0, 1]).expand(3, 4))


def test_pivot_changes_yawed_cameras():
    eg3d = C.make_cameras(math.pi / 2 + 0.2, math.pi / 2 - 0.2, C.CameraConfig(pivot=C.EG3D_PIVOT))
    guide = C.make_cameras(math.pi / 2 + 0.2, math.pi / 2 - 0.2, C.CameraConfig(pivot=C.GUIDE_CODE_PIVOT))
    assert torch.allclose(eg3d[:, [3, 7, 11]], guide[:, [3, 7, 11]])  # same position...
    assert not torch.allclose(eg3d[:, :12], guide[:, :12])  # ...different orientation


def test_label_is_25_numbers_and_round_trips():
    c = C.make_cameras([1.4, 1.7], 1.5)
    assert c.shape == (2, 25)
    pose, k = C.decode_cameras(c)
    assert torch.equal(C.encode_cameras(pose, k), c)
    assert torch.allclose(k[0], C.fov_to_intrinsics())


def test_bad_camera_labels_raise_input_error():
    with pytest.raises(InputError, match="25"):
        C.check_cameras(torch.zeros(2, 16))
    with pytest.raises(InputError, match="finite"):
        C.check_cameras(torch.full((1, 25), float("nan")))
    with pytest.raises(InputError, match="batch of 3"):
        C.check_cameras(torch.zeros(2, 25), n=3)


def _yaw_pitch_offsets(c):
    origin = c[:, [3, 7, 11]]
    return torch.atan2(origin[:, 0], origin[:, 2]), origin[:, 1]


def test_training_cameras_follow_guides_distribution_and_the_seed():
    c1 = C.sample_training_cameras(256, torch.Generator().manual_seed(3))
    c2 = C.sample_training_cameras(256, torch.Generator().manual_seed(3))
    c3 = C.sample_training_cameras(256, torch.Generator().manual_seed(4))
    assert torch.equal(c1, c2) and not torch.equal(c1, c3)
    yaw, height = _yaw_pitch_offsets(c1)
    assert yaw.abs().max() <= math.pi / 12 + 1e-5
    assert yaw.min() < -0.2 and yaw.max() > 0.2  # spread over the range
    assert torch.allclose(height, torch.full_like(height, 2.7 * 0.4 / math.pi), atol=1e-5)  # fixed pitch


def test_evaluation_orbit_has_11_symmetric_views():
    c = C.orbit_cameras(11)
    yaw, _ = _yaw_pitch_offsets(c)
    assert c.shape == (11, 25)
    assert torch.allclose(yaw, torch.linspace(-math.pi / 12, math.pi / 12, 11), atol=1e-5)
    assert torch.allclose(c[5], C.frontal_rendering_cameras(1)[0], atol=1e-6)


def test_conditioning_camera_is_the_frontal_pose():
    c = C.conditioning_cameras(2)
    assert c.shape == (2, 25)
    assert torch.allclose(c[:, :16], C.look_at_poses(math.pi / 2, math.pi / 2).reshape(1, 16).expand(2, 16))
