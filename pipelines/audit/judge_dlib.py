"""The judge of protocol ``offline-v1``: MTCNN finds faces, dlib's face-recognition ResNet describes dlib150 chips
(raw 128-d descriptors; same person when the Euclidean distance is below :data:`RULE`'s cut, dlib's published 0.6
calibrated for renderings of the model's resolution). Registers itself as judge ``dlib``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from .judges import DetectingJudge, file_digest, register_judge, rendering_resolution
from .photos import input_alignment
from .rule import SamePersonRule

NETWORK = "dlib_face_recognition_resnet_model_v1"


def published_rule() -> SamePersonRule:
    """dlib's published same-person rule: Euclidean distance < 0.6 between raw descriptors (cosine >= 0.92 on
    L2-normalised ones, the equivalent cut)."""
    from guide_unlearn.adapters.identity.dlib_metric import DLIB_COSINE_THRESHOLD, DLIB_THRESHOLD

    return SamePersonRule(NETWORK, "euclidean", DLIB_THRESHOLD, "dlib's published threshold",
                          cosine_cut=DLIB_COSINE_THRESHOLD)


RULE = SamePersonRule(
    NETWORK, "euclidean", 0.6165,
    "calibrated: false-accept rate 0.01 over the 16236 ordered pairs of different people among the 128 photos (124 "
    "people) of shared/faces, each photo's 64-px probe described as the audit describes a rendering against the "
    "other people's full-resolution photos (benchmarks/same_person_cut.py, benchmarks/results/audit/"
    "same_person_cut.json); dlib's published cut 0.6 accepts 0.69 % of those pairs, 0.6165 accepts 1.0 %",
    cosine_cut=0.915, details={"published_cut": 0.6, "published_cosine_cut": 0.92, "false_accept_rate": 0.01})
"""The one same-person rule of dlib descriptors: the audit's offline-v1 figures and the erase's identity check
(``pipelines/identity_check.py``) both read it from the judge. Its cut was chosen where only 1 % of pairs of
different people pass, on photos shown to dlib as the demo model's 64-px renderings are; at full resolution the same
calibration puts the 1 % cut at 0.624, so this cut passes fewer than 1 % of different people there too."""


class DlibJudge(DetectingJudge):
    """offline-v1: MTCNN finds faces, dlib's ResNet describes dlib150 chips (raw descriptors, Euclidean distance
    under :data:`RULE`'s cut; ``published`` keeps dlib's own 0.6 for comparison).

    style, resolution: the inverter's alignment style and the generator's resolution (the photos' crops)."""

    def __init__(self, style: str, resolution: int):
        from guide_unlearn.adapters.faces.backends import find_dlib_file
        from guide_unlearn.adapters.identity.dlib_metric import DlibIdentity

        self.dlib = DlibIdentity()
        self.dlib_file = find_dlib_file("dlib_face_recognition_resnet_model_v1.dat")
        super().__init__(style, resolution)
        self.name = NETWORK
        self.same_person = RULE
        self.published = published_rule()

    def photo_descriptor(self, image: Image.Image, face) -> np.ndarray:
        """The raw dlib descriptor [128] of one detected ``face``'s dlib150 chip."""
        from guide_unlearn.faces import align_face

        return self.dlib.descriptors([align_face(image, face, "dlib150")])[0]

    def describe(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        from guide_unlearn.adapters.identity.dlib_metric import crop_chips
        from guide_unlearn.faces import align_face, detect_faces, pick_face

        images = images.detach().float().cpu()
        if landmarks is not None:
            return self.dlib.descriptors(crop_chips(images, landmarks))
        out = np.full((images.shape[0], 128), np.nan)
        for i, pil in enumerate(self.upscaled(images)):
            found = detect_faces(pil, self.detector)
            if found:
                out[i] = self.dlib.descriptors([align_face(pil, pick_face(found), "dlib150")])[0]
        return out

    def networks(self) -> dict[str, Any]:
        return {"identity": {"name": self.name, "file": Path(self.dlib_file).name,
                             "digest": file_digest(self.dlib_file),
                             "input": "dlib150 chips (5-point similarity alignment)"},
                "detector": self.detector_record(),
                "features": {"name": "FD-dlib", "what": "raw 128-d dlib descriptors of dlib150 chips cut from the "
                             "renderings at fixed face landmarks (not Inception, not FID)"}}

    def thresholds(self) -> dict[str, Any]:
        rule = self.same_person
        return {"same_person": rule.cut, "same_person_rule": f"Euclidean distance between raw dlib descriptors < "
                f"{rule.cut:g} ({rule.how_chosen})", "same_person_published": self.published.cut,
                "same_person_cosine": rule.cosine_cut,
                "same_person_cosine_rule": f"cosine between L2-normalised dlib descriptors >= {rule.cosine_cut:g} "
                "(the same calibration; used to read id / id_others)"}


register_judge("dlib", lambda protocol, eraser: DlibJudge(input_alignment(eraser), rendering_resolution(eraser)))
