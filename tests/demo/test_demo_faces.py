"""The embedded demo face model, measured with dlib on the real photos of shared/faces.

Figures are printed (run with -s to see them); benchmarks/bench_demo_faces.py prints the same ones as JSON.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from guide_unlearn.errors import ImageLoadError, InputError, NoFaceError
from guide_unlearn.recipes.demo_faces import evaluate as E

pytestmark = [pytest.mark.shared, pytest.mark.slow]  # the demo model on shared/ photos: minutes on a CPU


def _ws(codes, names):
    return torch.stack([codes[n] for n in names])


# -- the model folder ------------------------------------------------------------------------------------------


def test_bundled_folder_is_small_fp16_with_its_own_licence():
    from safetensors import safe_open

    from guide_unlearn.models import bundled_model_dir

    folder = bundled_model_dir("demo_faces")
    weights = folder / "diffusion_pytorch_model.safetensors"
    assert weights.stat().st_size < 8_000_000
    with safe_open(str(weights), framework="pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.float16}
    licence = (folder / "LICENSE").read_text()
    for needed in ("non-commercial", "CelebA-HQ", "FFHQ", "CodeFormer", "CC BY-NC 4.0"):
        assert needed in licence, needed
    card = (folder / "README.md").read_text()
    for needed in ("Training data", "Intended use", "Measured quality", "Limitations"):
        assert needed in card, needed


def test_from_pretrained_builds_the_demo_model(demo_eraser):
    g = demo_eraser.generator
    assert (g.img_resolution, g.z_dim, g.w_dim, g.num_ws) == (64, 64, 256, 10)
    assert sum(p.numel() for p in g.parameters()) == 3_130_872
    assert demo_eraser.inverter.name == "code-projector" and demo_eraser.inverter.input_alignment == "ffhq"
    assert demo_eraser.name == "demo-faces"


def test_cached_codes_are_what_the_inverter_computes(demo_eraser, demo_faces, demo_codes):
    """Three photos inverted now match the cache (so the figures below measure this code and this model). The
    cache was computed in batches of 32, and float rounding through 200 optimisation steps differs a little with
    the batch (measured: 0.2-0.7 apart, Frobenius): each code must lie within 3 % of its distance from w_avg
    (about 34) and render within 0.01 mean |pixel| of the cached one; codes of different photos are ~50 apart."""
    idx = [0, 50, 100]
    now = E.invert_faces(demo_eraser, demo_faces.subset(idx))
    cached = _ws(demo_codes, [demo_faces.names[i] for i in idx])
    w_avg = demo_eraser.generator.w_avg.cpu()
    scale = (cached - w_avg).flatten(1).norm(dim=1)
    assert ((now - cached).flatten(1).norm(dim=1) < 0.03 * scale).all()
    pixel = (E.render(demo_eraser, now) - E.render(demo_eraser, cached)).abs().mean(dim=(1, 2, 3))
    assert (pixel < 0.01).all(), pixel


def test_invert_aligns_a_photo_like_the_training_data(demo_eraser, demo_faces, shared_dir):
    """``eraser.invert(path)`` detects and aligns by itself: the same codes as inverting the training crop."""
    name = demo_faces.names[3]
    from_path = demo_eraser.invert(shared_dir / "faces" / name)
    from_crop = demo_eraser.invert(demo_faces.images[3:4])
    assert torch.allclose(from_path, from_crop, atol=1e-3)


# -- quality ---------------------------------------------------------------------------------------------------


def test_training_photos_are_reconstructed(demo_eraser, demo_faces, demo_codes, demo_metric):
    rec = E.reconstruction(demo_eraser, demo_faces, _ws(demo_codes, demo_faces.names), demo_metric)
    print(json.dumps({"reconstruction_fraction": rec["fraction_recognised"],
                      "mean_distance": rec["mean_distance"], "pixel_l1": rec["mean_pixel_l1"], "n": rec["n"]}))
    assert rec["n"] == 127
    assert rec["fraction_recognised"] >= 0.60


def test_held_out_photo_of_a_known_person(demo_eraser, guide_person, demo_codes, demo_metric):
    """aligned_5 was never trained on; its person was (aligned_1..4). Reported, and it must render as them."""
    held = guide_person.subset([4])
    rec = E.reconstruction(demo_eraser, held, _ws(demo_codes, held.names), demo_metric)
    print(json.dumps({"held_out_distance": float(rec["distances"][0])}))
    assert rec["distances"][0] < E.THRESHOLD


def test_random_samples_are_faces(demo_eraser):
    rate = E.sample_face_rate(demo_eraser, n=60, seed=0)
    print(json.dumps(rate))
    assert rate["fraction_with_face"] >= 0.80


# -- erasure from one unseen photo -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def erasure_off(demo_eraser, demo_faces, guide_person, demo_codes, demo_metric):
    """Erase GUIDE's person from aligned_5 alone, ID term off, with the model's registry settings."""
    _, others = E.split_people(demo_faces)
    report, result = E.erasure_report(
        demo_eraser, guide_person.images[4:5], guide_person, _ws(demo_codes, guide_person.names),
        demo_faces.subset(others), _ws(demo_codes, [demo_faces.names[i] for i in others]), demo_metric)
    print(json.dumps(report.figures()))
    return report, result


def test_erase_uses_the_registry_settings(erasure_off):
    _, result = erasure_off
    cfg = result.patch.metadata["erase_config"]
    assert (cfg["truncation_psi"], cfg["global_samples"], cfg["global_weight"], cfg["target_distance"]) == (
        1.6, 8, 2.0, 1.5)


def test_request_photo_erased_into_another_face(erasure_off):
    """The deletion request itself: recognised before, someone else after, and still a face."""
    report, _ = erasure_off
    assert report.person_names[4].endswith("aligned_5.jpg")
    assert report.person_before[4] < E.THRESHOLD < report.person_after[4]
    assert report.person_faces_after.all()


def test_person_other_photos_move_away(erasure_off):
    """aligned_1..4 (never shown to the erase) all render farther from their photos after the patch."""
    report, _ = erasure_off
    assert (report.person_before < E.THRESHOLD).all(), report.person_before
    assert (report.person_after[:4] - report.person_before[:4] > 0.02).all(), report.person_after
    assert (report.person_mean_after - report.person_mean_before).mean() > 0.05


def test_whole_identity_erased_from_one_photo(erasure_off):
    """The issue's criterion: every photo of the person renders as someone else after the patch, and as a face
    (erasure by destruction would not count)."""
    report, _ = erasure_off
    assert (report.person_after > E.THRESHOLD).all(), report.person_after
    assert report.person_faces_after.all()


def test_unseen_photo_finds_its_person_in_the_code_book(demo_eraser, guide_person):
    """The inverter starts aligned_5 (never trained on) from the training code of one of aligned_1..4: the
    descriptor lookup is what puts the five photos near each other."""
    book = demo_eraser.inverter.code_book
    assert book is not None and len(book) == 127
    index, dist = book.match(guide_person.images)
    assert index[:4].tolist() == [58, 59, 60, 61] and dist[:4].max() < 1e-3  # training crops: themselves
    assert 58 <= int(index[4]) <= 61 and dist[4] < 0.4, (index, dist)


def test_person_codes_lie_together(guide_person, demo_codes, demo_faces):
    """The five photos' codes are closer to each other than any of them is to another person's code."""
    person = _ws(demo_codes, guide_person.names).flatten(1)
    others = _ws(demo_codes, [n for n in demo_faces.names if n not in guide_person.names]).flatten(1)
    within = torch.pdist(person).max()
    assert within < torch.cdist(person, others).min(), within


def test_other_people_preserved(erasure_off):
    report, _ = erasure_off
    assert len(report.others_names) >= 20
    assert report.preserved_fraction >= 0.90
    change = float((report.others_after - report.others_before).mean())
    assert abs(change) < 0.1


def test_pixel_measure_agrees(erasure_off):
    """Unoptimised beside dlib: the person's renderings move away from their photos; the others' barely move."""
    report, _ = erasure_off
    px = report.pixel
    assert px["person_after"] > px["person_before"] + 0.02
    assert px["others_after"] - px["others_before"] < 0.5 * (px["person_after"] - px["person_before"])


def test_id_term_on_is_reported(demo_eraser, demo_faces, guide_person, demo_codes, demo_metric):
    """The same erase with the ID term on (faceapi through a differentiable dlib-chip crop). faceapi shares dlib's
    weights, so this run optimises the metric itself: reported, not relied on."""
    _, others = E.split_people(demo_faces)
    others = others[::3]  # a fixed third of the people keeps this report quick
    chip = E.faceapi_chip(demo_metric.mean_landmarks, 64)
    report, result = E.erasure_report(
        demo_eraser, guide_person.images[4:5], guide_person, _ws(demo_codes, guide_person.names),
        demo_faces.subset(others), _ws(demo_codes, [demo_faces.names[i] for i in others]), demo_metric,
        identity_model=chip)
    print(json.dumps(report.figures()))
    assert result.patch.metadata["identity_model"] == chip.name
    assert result.history[-1]["local_id"] != 0.0
    assert (report.person_after > report.person_before).all()


# -- bad input -------------------------------------------------------------------------------------------------


def test_photo_without_a_face(demo_eraser, tmp_path):
    from PIL import Image

    f = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (120, 130, 140)).save(f)
    with pytest.raises(NoFaceError, match="no face"):
        demo_eraser.erase(f)


def test_cli_photo_without_a_face_writes_nothing(tmp_path, capsys):
    """The README's main job on a photo with no face: exit code 2, one clear line, no patch, no picture."""
    from PIL import Image

    from guide_unlearn.cli import EXIT_USER_ERROR, main

    f = tmp_path / "wall.png"
    Image.new("RGB", (256, 256), (120, 130, 140)).save(f)
    out = tmp_path / "out" / "person"
    assert main(["erase", str(f), "--model", "demo-faces", "--out", str(out)]) == EXIT_USER_ERROR
    assert "no face" in capsys.readouterr().err
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["wall.png"]


def test_image_too_small(demo_eraser, tmp_path):
    from PIL import Image

    f = tmp_path / "tiny.png"
    Image.new("RGB", (10, 10), (200, 150, 120)).save(f)
    with pytest.raises(ImageLoadError, match="too small|at least"):
        demo_eraser.invert(f)


def test_empty_input(demo_eraser):
    with pytest.raises(InputError):
        demo_eraser.invert([])


def test_unknown_person_still_erases_and_says_how_close(demo_eraser, shared_dir):
    """deepface img38 shows two people; training used the larger face only. The smaller one is a person the
    model never saw: the erase runs, and the result reports how close the model's rendering was."""
    from PIL import Image

    from guide_unlearn.config import EraseConfig
    from guide_unlearn.faces import detect_faces

    photo = Image.open(shared_dir / "faces/deepface_train/img38.jpg").convert("RGB")
    faces = detect_faces(photo)
    assert len(faces) == 2
    small = faces[1]
    x1, y1, x2, y2 = small.box
    pad = 0.6 * max(x2 - x1, y2 - y1)
    crop = photo.crop((int(max(0, x1 - pad)), int(max(0, y1 - pad)), int(min(photo.width, x2 + pad)),
                       int(min(photo.height, y2 + pad))))
    result = demo_eraser.erase(crop, config=EraseConfig(iterations=20), progress=False)
    assert demo_eraser.inverter.last_matches.tolist() == [-1]  # nobody in the code book: inverted from scratch
    m = result.metrics
    print(json.dumps({k: m[k] for k in ("photo_l1_before", "photo_l1_after")}))
    assert np.isfinite(m["photo_l1_before"]) and m["photo_l1_after"] >= m["photo_l1_before"] - 0.01
    assert result.patch.metadata.get("generator_family") == "stylegan2"
