"""The judge of protocol ``toy-v1`` (tests and tiny models): the random ToyIdentityNet on whole images; every
rendering counts as a "face". Registers itself as judge ``toy``."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import numpy as np
import torch
from PIL import Image

from .judges import Judge, register_judge, rendering_resolution
from .photos import Photo
from .rule import SamePersonRule


RULE = SamePersonRule("toy-identity (random weights, tests only)", "cosine", 0.9, "ARBITRARY: the toy network is random and has no published "
                      "threshold")
"""toy-v1's one same-person rule (the audit and the erase's identity check read it from the judge)."""


class ToyJudge(Judge):
    """toy-v1: the random ToyIdentityNet (seed 0) on whole images; same person when cosine >= 0.9 (arbitrary).

    resolution: the generator's resolution (the photos' crops)."""

    def __init__(self, resolution: int):
        from guide_unlearn.adapters.toy import ToyIdentityNet

        self.net = ToyIdentityNet(seed=0)
        self.resolution = resolution
        self.name = self.net.name
        self.same_person = RULE

    def photo(self, image: Image.Image, label: str, person: str, eraser) -> Photo:
        from guide_unlearn.images import pil_to_tensor

        crop = pil_to_tensor(image, self.resolution)
        camera = None
        if eraser is not None and eraser.generator.c_dim:
            camera = eraser.generator.frontal_camera(1)[0].detach().cpu()
        return Photo(label, person, crop, camera, self.describe(crop, None)[0], None)

    @torch.no_grad()
    def describe(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        return self.net.embed(images.detach().float().cpu()).double().numpy()

    def faces(self, images: torch.Tensor) -> np.ndarray:
        return np.ones(images.shape[0], dtype=bool)

    def networks(self) -> dict[str, Any]:
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in self.net.parameters())).hexdigest()
        return {"identity": {"name": self.name, "file": None, "digest": f"sha256:{digest} (weights, seed 0)",
                             "input": "whole image resized to 32x32"},
                "detector": None, "features": {"name": "FD-toy", "what": "toy identity vectors (random network)"}}

    def thresholds(self) -> dict[str, Any]:
        return {"same_person": self.same_person.cut, "same_person_rule": "cosine >= 0.9 (ARBITRARY: the toy network "
                "is random and has no published threshold)", "same_person_cosine": self.same_person.cut}


register_judge("toy", lambda protocol, eraser: ToyJudge(rendering_resolution(eraser)))
