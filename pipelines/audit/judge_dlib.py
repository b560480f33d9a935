"""The judge of protocol ``offline-v1``: MTCNN finds faces, dlib's face-recognition ResNet describes dlib150 chips
(raw 128-d descriptors; same person when the Euclidean distance is < 0.6, dlib's published threshold). Registers
itself as judge ``dlib``."""

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


class DlibJudge(DetectingJudge):
    """offline-v1: MTCNN finds faces, dlib's ResNet describes dlib150 chips (raw descriptors, Euclidean < 0.6).

    style, resolution: the inverter's alignment style and the generator's resolution (the photos' crops)."""

    def __init__(self, style: str, resolution: int):
        from guide_unlearn.adapters.faces.backends import find_dlib_file
        from guide_unlearn.adapters.identity.dlib_metric import DlibIdentity

        self.dlib = DlibIdentity()
        self.dlib_file = find_dlib_file("dlib_face_recognition_resnet_model_v1.dat")
        super().__init__(style, resolution)
        self.name = NETWORK
        self.same_person = published_rule()

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
        return {"same_person": self.same_person.cut, "same_person_rule": "Euclidean distance between raw dlib "
                "descriptors < 0.6 (dlib's published threshold)", "same_person_cosine": self.same_person.cosine_cut,
                "same_person_cosine_rule": "cosine between L2-normalised dlib descriptors >= 0.92 (the equivalent "
                "cut; used to read id / id_others)"}


register_judge("dlib", lambda protocol, eraser: DlibJudge(input_alignment(eraser), rendering_resolution(eraser)))
