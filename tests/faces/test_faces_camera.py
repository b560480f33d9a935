"""Camera estimation from 5 landmarks against GOAE's EG3D crops and their true cameras."""

import json
import math

import numpy as np
import pytest

from guide_unlearn.faces import align_face, alignment_matrix, detect_faces, estimate_camera, load_image
from guide_unlearn.faces.camera import angles_from_cam2world, camera_label, focal_from_fov


def test_frontal_camera_label_follows_eg3d_conventions():
    label = camera_label(np.eye(3))
    c2w = label[:16].reshape(4, 4)
    np.testing.assert_allclose(c2w[:3, :3], np.diag([1.0, -1.0, -1.0]), atol=1e-7)
    np.testing.assert_allclose(c2w[:3, 3], [0.0, 0.0, 2.7], atol=1e-6)  # on the sphere around the origin
    np.testing.assert_allclose(label[16:], [4.2634, 0, 0.5, 0, 4.2634, 0.5, 0, 0, 1], atol=2e-4)
    assert abs(focal_from_fov(18.837) - 4.2634) < 1e-3


@pytest.mark.slow
def test_yaw_and_pitch_match_goae_cameras(shared_dir):
    folder = shared_dir / "faces" / "goae_eg3d_real_person"
    labels = dict(json.loads((folder / "label.json").read_text())["labels"])
    errors = []
    for name, label in sorted(labels.items()):
        image = load_image(folder / name)
        face = detect_faces(image)[0]
        est = estimate_camera(image, face)
        az, el, _ = angles_from_cam2world(np.array(label[:16]))
        errors.append([est.azimuth - az, est.elevation - el])
        # the sampler-convention yaw is near the viewing azimuth (they differ by the pivot offset)
        assert abs(est.yaw - (math.pi / 2 + est.azimuth)) < math.radians(5)
    err = np.degrees(np.abs(np.array(errors)))
    print(f"\nGOAE cameras, {len(errors)} photos: mean |yaw| error {err[:, 0].mean():.2f}°, "
          f"mean |pitch| error {err[:, 1].mean():.2f}° (max {err[:, 0].max():.1f}° / {err[:, 1].max():.1f}°)")
    assert err[:, 0].mean() < 8.0 and err[:, 1].mean() < 8.0


def test_eg3d_crop_of_an_eg3d_crop_is_nearly_the_identity(shared_dir):
    folder = shared_dir / "faces" / "goae_eg3d_real_person"
    scales, shifts = [], []
    for name in ("1.jpg", "3.jpg", "5.jpg", "7.jpg"):
        image = load_image(folder / name)
        matrix = alignment_matrix(detect_faces(image)[0], "eg3d", 512, image_height=512)
        scales.append(matrix[0, 0])
        shifts.append(np.abs(matrix[:, 2] + (matrix[0, 0] - 1) * 255.5).max())
    print(f"\nre-cropping EG3D crops: scale {np.round(scales, 3).tolist()}, shift {np.round(shifts, 1).tolist()} px")
    assert np.allclose(scales, 1.0, atol=0.05)
    assert max(shifts) < 12.0


def test_eg3d_crop_and_camera_of_a_raw_photo(shared_dir):
    from guide_unlearn.faces import prepare_photo

    crop, face, camera = prepare_photo(shared_dir / "faces" / "e4e_notebook" / "input_img.jpg", "eg3d")
    assert crop.size == (512, 512)
    assert camera.label.shape == (25,) and np.isfinite(camera.label).all()
    assert abs(camera.azimuth) < math.radians(30) and abs(camera.elevation) < math.radians(30)
    assert np.linalg.norm(camera.cam2world[:3, 3]) == pytest.approx(2.7, abs=1e-5)
    # it looks at the pivot [0, 0, 0.2]
    to_pivot = np.array([0, 0, 0.2]) - camera.cam2world[:3, 3]
    np.testing.assert_allclose(to_pivot / np.linalg.norm(to_pivot), camera.cam2world[:3, 2], atol=1e-5)
    # the camera estimated on the crop matches the one estimated on the photo
    again = estimate_camera(crop, detect_faces(crop)[0])
    assert abs(again.azimuth - camera.azimuth) < math.radians(3)
    assert abs(again.elevation - camera.elevation) < math.radians(3)
    assert align_face(crop, detect_faces(crop)[0], "eg3d").size == (512, 512)


def test_sampler_angles_rebuild_the_same_camera_with_the_eg3d_adapter():
    cameras = pytest.importorskip("guide_unlearn.adapters.eg3d.cameras")
    from guide_unlearn.faces.camera import _rotation

    # a head turned 20° and tilted 8°, no roll: EG3D's look-at camera must be the estimated one
    rot = _rotation(np.array([math.radians(8), 0, 0])) @ _rotation(np.array([0, math.radians(-20), 0]))
    label = camera_label(rot)
    az, el, roll = angles_from_cam2world(label[:16])
    from guide_unlearn.faces.camera import eg3d_sampler_angles

    yaw, pitch = eg3d_sampler_angles(label[:16])
    pose = cameras.look_at_poses(yaw, pitch).reshape(-1, 4, 4)[0].double().numpy()
    print(f"\nazimuth {math.degrees(az):.1f}°, elevation {math.degrees(el):.1f}°, roll {math.degrees(roll):.2f}°")
    np.testing.assert_allclose(pose[:3, 3], label[:16].reshape(4, 4)[:3, 3], atol=1e-4)
    np.testing.assert_allclose(pose[:3, :3], label[:16].reshape(4, 4)[:3, :3], atol=2e-3)
