"""The judge of protocol ``paper-v1`` (the paper's evaluation): CurricularFace IR-101 on MTCNN-aligned 112x112
crops for identity, FID's Inception-v3 for the Fréchet distance (``fid_pre`` / ``fid_real_delta``). Registers
itself as judge ``curricularface``; the paper's networks load only when the protocol asks for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from .judges import DetectingJudge, file_digest, register_judge, rendering_resolution
from .photos import input_alignment
from .rule import SamePersonRule

#: Embeddings per forward pass of the identity network.
EMBED_BATCH = 16


RULE = SamePersonRule("CurricularFace", "cosine", 0.3, "a documented choice: CurricularFace publishes no fixed "
                      "threshold; see docs/audit.md")
"""paper-v1's one same-person rule (``CURRICULARFACE_COSINE_THRESHOLD``; the audit and the erase's identity check read
it from the judge)."""


class CurricularJudge(DetectingJudge):
    """paper-v1: MTCNN finds faces and their 5 landmarks, a similarity warp puts them on the 112x112
    ArcFace/InsightFace template ("arcface" style), CurricularFace IR-101 embeds them (inputs (x - 0.5) / 0.5,
    unit vectors [N, 512]); the same-person rule is cosine >= ``CURRICULARFACE_COSINE_THRESHOLD`` (a documented
    choice, see that constant). The Fréchet features are FID Inception-v3 pool3 vectors [N, 2048] of the whole
    images quantised to uint8.

    style, resolution: the inverter's alignment style and the generator's resolution (the photos' crops).
    depth: the IR depth the CurricularFace file must have (101; None: whatever its keys hold, e.g. short test
    backbones — the report then names that depth, never 'IR-101').
    """

    frechet_metric = "fid"

    def __init__(self, style: str, resolution: int, depth: Optional[int] = 101):
        from guide_unlearn.adapters.identity.arcface import load_curricularface
        from guide_unlearn.adapters.perceptual.fid_inception import load_fid_inception

        self.model = load_curricularface(depth=depth)
        self.inception = load_fid_inception()
        super().__init__(style, resolution)
        self.name = f"CurricularFace {self.model.depth}"
        self.same_person = RULE

    @torch.no_grad()
    def _embed(self, crops: list[Image.Image]) -> np.ndarray:
        """112x112 'arcface' crops -> unit vectors [N, 512] (float64)."""
        out = [self.model.embed(crops[i:i + EMBED_BATCH]).double().cpu().numpy()
               for i in range(0, len(crops), EMBED_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, self.model.backbone.embedding))

    def photo_descriptor(self, image: Image.Image, face) -> np.ndarray:
        """The unit CurricularFace embedding [512] of one detected ``face``'s 112x112 ArcFace-template crop."""
        from guide_unlearn.faces import align_face

        return self._embed([align_face(image, face, "arcface")])[0]

    def describe(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        """renderings [N, 3, R, R] in [-1, 1] (+ landmarks [N, 5, 2] in their pixels, or None: MTCNN finds them)
        -> [N, 512] unit vectors, NaN rows where no face was found."""
        from guide_unlearn.faces import Face, align_face, detect_faces, pick_face
        from guide_unlearn.images import tensor_to_pil

        images = images.detach().float().cpu()
        out = np.full((images.shape[0], self.model.backbone.embedding), np.nan)
        if landmarks is not None:
            size = images.shape[-1]
            box = np.array([0, 0, size, size], dtype=np.float64)
            lms = np.broadcast_to(np.asarray(landmarks, dtype=np.float64), (images.shape[0], 5, 2))
            crops = [align_face(tensor_to_pil(img), Face(box, lm, 1.0, detector="known"), "arcface")
                     for img, lm in zip(images, lms)]
            return self._embed(crops)
        rows, crops = [], []
        for i, pil in enumerate(self.upscaled(images)):
            found = detect_faces(pil, self.detector)
            if found:
                rows.append(i)
                crops.append(align_face(pil, pick_face(found), "arcface"))
        if crops:
            out[rows] = self._embed(crops)
        return out

    def frechet_features(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        """renderings [N, 3, R, R] in [-1, 1] -> FID Inception pool3 features [N, 2048] (float64)."""
        return self.inception.from_generator(images.detach().cpu()).double().numpy()

    def networks(self) -> dict[str, Any]:
        model_file, inception_file = Path(self.model.file), Path(self.inception.file)
        return {"identity": {"name": self.name, "file": model_file.name, "digest": file_digest(model_file),
                             "depth": self.model.depth, "stage_units": list(self.model.stage_units),
                             "input": "112x112 crops, 5-point similarity warp to the ArcFace/InsightFace template, "
                                      "(x - 0.5) / 0.5; cosine of the 512-d embeddings"},
                "detector": self.detector_record(),
                "features": {"name": "FID-inception", "file": inception_file.name,
                             "digest": file_digest(inception_file),
                             "what": "Inception-v3 pool3 features [2048] (pytorch-fid's port of the 2015-12-05 "
                                     "TensorFlow graph) of whole images quantised to uint8, resized bilinearly to "
                                     "299x299"}}

    def thresholds(self) -> dict[str, Any]:
        return {"same_person": self.same_person.cut,
                "same_person_rule": f"cosine between CurricularFace embeddings >= {self.same_person.cut} (a "
                                    "documented choice: CurricularFace publishes no fixed threshold; see "
                                    "docs/audit.md)",
                "same_person_cosine": self.same_person.cut}


register_judge("curricularface", lambda protocol, eraser: CurricularJudge(
    input_alignment(eraser), rendering_resolution(eraser), protocol.identity_depth))
