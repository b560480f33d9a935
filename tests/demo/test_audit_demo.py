"""guide_unlearn.audit (offline-v1: dlib + MTCNN) on the demo model with the real photos of shared/faces: the
README main job's erase (aligned_5) audited with aligned_1..4 held out."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

import guide_unlearn
from guide_unlearn.adapters.identity import DLIB_COSINE_THRESHOLD
from guide_unlearn.pipelines.audit import METRIC_KEYS

pytestmark = [pytest.mark.shared, pytest.mark.slow]  # the demo model on shared/ photos: minutes on a CPU

PERSON = "guide_celebahq512"


@pytest.fixture(scope="module")
def demo_audit(demo_eraser, demo_codes, shared_dir, tmp_path_factory):
    """Erase from aligned_5 (its cached code), audit with aligned_1..4 held out (plus a photo with no face), a
    fixed quarter of the other people, small settings (200 FD samples, 50 projector steps)."""
    faces = shared_dir / "faces"
    codes = {str(faces / name): ws for name, ws in demo_codes.items()}
    result = demo_eraser.erase(demo_codes[f"{PERSON}/aligned_5.jpg"].unsqueeze(0),
                               config=demo_eraser.default_config(), measure=False, progress=False)
    wall = tmp_path_factory.mktemp("wall") / "wall.png"
    Image.new("RGB", (256, 256), (120, 130, 140)).save(wall)
    held = [faces / PERSON / f"aligned_{i}.jpg" for i in range(1, 5)] + [wall]
    others = [faces / n for n in sorted(demo_codes) if not n.startswith(PERSON)][::4]
    report = guide_unlearn.audit(demo_eraser, result.patch, [faces / PERSON / "aligned_5.jpg"], held_out=held,
                                 others=others, samples=200, projector_steps=50, leakage_starts=8,
                                 leakage_steps=40, codes=codes)
    print(json.dumps({"metrics": report.to_dict()["metrics"], "seconds": report.seconds}))
    return report


def test_held_out_photos_recognised_before_and_not_after(demo_audit):
    m = demo_audit.metrics
    assert m["held_out_recognised_before"] >= 0.75
    assert m["held_out_recognised_after"] <= 0.25


def test_id_below_and_id_others_above_the_same_person_cosine(demo_audit):
    m = demo_audit.metrics
    assert m["id"] < DLIB_COSINE_THRESHOLD < m["id_others"]


def test_every_metric_but_the_real_folder_and_fid_ones_is_finite(demo_audit):
    for k in METRIC_KEYS:
        if k in ("fd_real_delta", "fid_pre", "fid_real_delta"):
            assert math.isnan(demo_audit.metrics[k]) and demo_audit.details["not_run"][k]
        else:
            assert math.isfinite(demo_audit.metrics[k]), k


def test_held_out_photo_without_a_face_is_skipped_and_counted(demo_audit):
    counts = demo_audit.details["counts"]
    assert counts["held_out"] == 4 and counts["held_out_skipped"] == 1
    assert [s["reason"] for s in demo_audit.details["skipped"]] == ["no face found"]


def test_offline_protocol_names_its_networks_with_digests(demo_audit):
    n = demo_audit.networks
    assert n["identity"]["name"] == "dlib_face_recognition_resnet_model_v1"
    assert n["identity"]["digest"].startswith("sha256:")
    assert all(v and v.startswith("sha256:") for v in n["detector"]["files"].values())
    assert n["features"]["name"] == "FD-dlib" and "not" in n["features"]["what"]
    assert n["inverter"]["code_book"]["codes"] == 127
    assert demo_audit.details["reinversion"]["inverters"]["default"]["name"] == "code-projector"
