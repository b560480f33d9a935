"""Session fixtures of the demo-model tests: the shipped model, the aligned shared/ photos, the cached codes."""

from __future__ import annotations

from pathlib import Path

import pytest

CODES = Path(__file__).resolve().parents[1] / "data" / "demo_faces_codes.safetensors"


@pytest.fixture(scope="session")
def demo_eraser():
    """IdentityEraser.from_pretrained("demo-faces") (the bundled model and the code-space inverter)."""
    from guide_unlearn import IdentityEraser

    return IdentityEraser.from_pretrained("demo-faces")


@pytest.fixture(scope="session")
def demo_faces(shared_dir):
    """The 127 training photos, aligned and described exactly as the training run did (FaceSet)."""
    from guide_unlearn.recipes.demo_faces.data import build_face_set, list_photos

    root = shared_dir / "faces"
    return build_face_set(root, list_photos(root))


@pytest.fixture(scope="session")
def guide_person(shared_dir):
    """The five photos of GUIDE's person (aligned_5 was held out of training), as a FaceSet."""
    from guide_unlearn.recipes.demo_faces.data import build_face_set
    from guide_unlearn.recipes.demo_faces.evaluate import PERSON_PHOTOS

    return build_face_set(shared_dir / "faces", list(PERSON_PHOTOS))


@pytest.fixture(scope="session")
def demo_codes(demo_eraser):
    """{photo name: ws [num_ws, w_dim]} of every photo, computed by ``evaluate.invert_faces`` (the cache is
    checked against the model's fingerprint and the inverter settings; one test recomputes a few)."""
    from guide_unlearn.recipes.demo_faces.evaluate import load_codes

    return load_codes(CODES, demo_eraser)


@pytest.fixture(scope="session")
def demo_metric(demo_faces):
    from guide_unlearn.recipes.demo_faces.evaluate import metric_for

    return metric_for(demo_faces)
