"""The robust preset on the demo model with the real photos of shared/faces, small settings: the GUIDE person's
re-inversion through the robust patch (the audit's fresh code-projector attack) is recognised less than through
the default preset's patch."""

from __future__ import annotations

import pytest

import guide_unlearn

pytestmark = [pytest.mark.shared, pytest.mark.slow]  # the demo model on shared/ photos: minutes on a CPU

PERSON = "guide_celebahq512"


def test_reinversion_of_the_guide_person_is_recognised_less_after_the_robust_preset(demo_eraser, demo_codes,
                                                                                      shared_dir):
    faces = shared_dir / "faces"
    codes = {str(faces / name): ws for name, ws in demo_codes.items()}
    photo = faces / PERSON / "aligned_5.jpg"
    held = [faces / PERSON / f"aligned_{i}.jpg" for i in range(1, 5)]
    small = dict(adversarial_rounds=1, adversarial_iterations=30, attack_steps=30, attack_augmentations=1)
    recognised = {}
    for preset, over in (("lora", {}), ("robust", small)):
        result = demo_eraser.erase(photo, config=demo_eraser.default_config(method=preset, **over), measure=False,
                                   progress=False)
        report = guide_unlearn.audit(demo_eraser, result.patch, [photo], held_out=held, attacks=("reinvert",),
                                     samples=20, projector_steps=20, codes=codes)
        recognised[preset] = report.metrics["reinversion_default_recognised_after"]
    print(recognised)
    assert recognised["robust"] < recognised["lora"]
