"""MTCNN detection on the real photos of shared/faces, and the cases ordinary photos bring."""

import numpy as np
import pytest
from PIL import Image

from guide_unlearn.errors import ConfigError, NoFaceError
from guide_unlearn.faces import align_face, alignment_matrix, detect_faces, detect_faces_batch, prepare_photo
from guide_unlearn.faces.geometry import apply_transform
from guide_unlearn.faces.templates import ARCFACE_112

# Photos that really show more than one face (a blurred onlooker behind the subject).
SEVERAL = {"deepface_train/img38.jpg": 2}


def _photos(root):
    return sorted(p for p in (root / "faces").glob("*/*") if p.suffix in (".jpg", ".png"))


@pytest.mark.slow
def test_exactly_one_face_in_every_shared_photo_except_crowds(shared_dir):
    photos = _photos(shared_dir)
    found = detect_faces_batch(photos)
    counts = {str(p.relative_to(shared_dir / "faces")): len(f) for p, f in zip(photos, found)}
    print(f"\n{len(photos)} photos; counts other than 1: { {k: v for k, v in counts.items() if v != 1} }")
    assert len(photos) >= 100
    assert {k: v for k, v in counts.items() if v != 1} == SEVERAL


def test_landmarks_of_ffhq_aligned_photos_fall_on_the_ffhq_template(shared_dir):
    # facexlib's 5-point template of FFHQ-aligned faces at 512, scaled to 256.
    template = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                         [201.26117, 371.41043], [313.08905, 371.15118]]) / 2
    errors, redo, warps = [], [], []
    photos = sorted((shared_dir / "faces" / "ilvr_ffhq").glob("*.png")) + \
        sorted((shared_dir / "faces" / "dps_ffhq256").glob("*.png"))
    for path in photos:
        img = Image.open(path).convert("RGB").resize((256, 256), Image.Resampling.LANCZOS)
        face = detect_faces(img)[0]
        errors.append(np.linalg.norm(face.landmarks - template, axis=1).mean())
        again = np.asarray(align_face(img, face, "ffhq", 256), dtype=float)
        redo.append(np.abs(again - np.asarray(img, dtype=float)).mean())
        m = alignment_matrix(face, "ffhq", 256)  # re-aligning an aligned photo: ideally the identity
        warps.append([np.sqrt(np.linalg.det(m[:, :2])), np.degrees(np.arctan2(m[1, 0], m[0, 0])),
                      np.abs(m[:, :2] @ [127.5, 127.5] + m[:, 2] - 127.5).max()])
    warps = np.array(warps)
    print(f"\nFFHQ landmark error at 256²: mean {np.mean(errors):.2f} px, max {np.max(errors):.2f} px; "
          f"re-alignment: scale {warps[:, 0].min():.3f}-{warps[:, 0].max():.3f}, rotation max "
          f"{np.abs(warps[:, 1]).max():.2f}°, centre shift max {warps[:, 2].max():.1f} px, "
          f"crop mean |diff| {np.mean(redo):.1f} / 255")
    assert np.mean(errors) < 6.0  # measured 4.4 px: faces differ from the mean template
    assert np.abs(warps[:, 0] - 1).max() < 0.08 and np.abs(warps[:, 1]).max() < 2.5 and warps[:, 2].max() < 4.0
    assert np.mean(redo) < 20.0


def test_arcface_crop_puts_the_landmarks_on_the_insightface_template(shared_dir):
    path = shared_dir / "faces" / "e4e_notebook" / "input_img.jpg"
    crop, face, camera = prepare_photo(path, "arcface")
    assert crop.size == (112, 112) and camera is None
    expected = apply_transform(alignment_matrix(face, "arcface"), face.landmarks)
    again = detect_faces(crop.resize((224, 224), Image.Resampling.BICUBIC))[0].landmarks / 2
    warp_error = np.linalg.norm(again - expected, axis=1).mean()
    template_error = np.linalg.norm(again - ARCFACE_112, axis=1).mean()
    print(f"\narcface crop: re-detected landmarks {warp_error:.2f} px from where the warp sent them, "
          f"{template_error:.2f} px from the template (a similarity cannot fit a face exactly)")
    assert warp_error < 1.5
    assert template_error < 4.0


def test_blank_photo_raises_no_face_error_naming_the_file(tmp_path):
    path = tmp_path / "wall.png"
    Image.new("RGB", (200, 150), (120, 130, 140)).save(path)
    assert detect_faces(path) == []
    with pytest.raises(NoFaceError, match="wall.png"):
        prepare_photo(path, "ffhq")


def test_two_faces_largest_first_and_index_picks_the_other(shared_dir):
    a = Image.open(shared_dir / "faces" / "guide_celebahq512" / "aligned_1.jpg").convert("RGB").resize((240, 240))
    b = Image.open(shared_dir / "faces" / "facenet_pytorch_test" / "paul_rudd_aligned.png").convert("RGB")
    canvas = Image.new("RGB", (520, 300), (255, 255, 255))
    canvas.paste(a, (10, 30))
    canvas.paste(b.resize((120, 120)), (360, 90))
    faces = detect_faces(canvas)
    assert len(faces) == 2 and faces[0].box[0] < 250 < faces[1].box[0]
    _, first, _ = prepare_photo(canvas, "arcface")
    _, second, _ = prepare_photo(canvas, "arcface", face_index=1)
    assert first.area > 1.3 * second.area and first.box[0] < 250 < second.box[0]
    with pytest.raises(ConfigError):
        prepare_photo(canvas, "arcface", face_index=5)


def test_a_tiny_face_in_a_large_grayscale_photo_is_found(shared_dir):
    face = Image.open(shared_dir / "faces" / "guide_celebahq512" / "aligned_2.jpg").convert("L").resize((48, 48))
    canvas = Image.new("L", (640, 480), 90)
    canvas.paste(face, (500, 60))
    found = detect_faces(canvas)
    assert len(found) == 1
    cx = (found[0].box[0] + found[0].box[2]) / 2
    assert 500 < cx < 548


def test_dlib_detector_landmarks_agree_with_mtcnn(shared_dir):
    pytest.importorskip("dlib")
    path = shared_dir / "faces" / "skimage" / "astronaut.png"
    mtcnn = detect_faces(path)[0]
    dlib_faces = detect_faces(path, detector="dlib", weights=str(shared_dir / "weights" / "dlib"))
    best = max(dlib_faces, key=lambda f: f.score)
    eye_dist = np.linalg.norm(mtcnn.landmarks[1] - mtcnn.landmarks[0])
    err = np.linalg.norm(best.landmarks - mtcnn.landmarks, axis=1) / eye_dist
    print(f"\ndlib vs MTCNN landmarks (fraction of eye distance): eyes {err[:2].mean():.3f}, nose {err[2]:.3f}, "
          f"mouth {err[3:].mean():.3f}")
    assert err[:2].mean() < 0.1 and err.mean() < 0.2
