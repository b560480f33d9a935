"""Identity judges: how a protocol turns photos and renderings into identity vectors and decides "same person".

A judge is a :class:`Judge`; a protocol names it by the name it was registered under. A new judge is one file::

    from guide_unlearn.pipelines.audit import Judge, register_judge

    class MyJudge(Judge):
        ...
    register_judge("mine", lambda protocol, eraser: MyJudge(...))

The shipped judges register themselves the same way: ``toy`` (:mod:`.judge_toy`), ``dlib``
(:mod:`.judge_dlib`), ``curricularface`` (:mod:`.judge_paper`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from guide_unlearn import metrics as M
from guide_unlearn.errors import NoFaceError

from .photos import Photo
from .registry import Registry
from .rule import SamePersonRule

if TYPE_CHECKING:
    from .protocols import Protocol


@dataclass
class Match:
    """How renderings matched their references (arrays of length N, one entry per rendering).

    score:      best score under the judge's same-person rule (NaN: no face).
    cosine:     best cosine of the identity vectors.
    recognised: the rule says "same person".
    face:       a face was found (a rendering without one is never recognised).
    """

    score: np.ndarray
    cosine: np.ndarray
    recognised: np.ndarray
    face: np.ndarray


class Judge:
    """Identity vectors of photos and renderings, and the same-person rule, for one protocol.

    Subclasses set ``name`` (the identity network) and ``same_person`` and implement ``photo``, ``describe``,
    ``faces``, ``networks`` and ``thresholds``; ``frechet_metric`` says which keys the Fréchet distance fills
    ("fd": fd_pre / fd_real_delta, "fid": fid_pre / fid_real_delta)."""

    name = ""
    same_person: SamePersonRule
    frechet_metric = "fd"

    def photo(self, image: Image.Image, label: str, person: str, eraser) -> Photo:
        """A photo -> :class:`Photo` (aligned crop for the eraser's inverter, identity vector, landmarks, camera
        for a camera model; ``eraser`` None: no camera); NoFaceError when it shows no face."""
        raise NotImplementedError

    def describe(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        """renderings [N, 3, R, R] (+ face landmarks [N, 5, 2] in their pixels, or None: find them) -> [N, D]
        (NaN rows where no face was found)."""
        raise NotImplementedError

    def faces(self, images: torch.Tensor) -> np.ndarray:
        """renderings [N, 3, R, R] -> bool [N]: is there a face (a rendering without one is never recognised)."""
        raise NotImplementedError

    def networks(self) -> dict[str, Any]:
        """{"identity", "detector", "features"} records of the networks that ran, with file digests."""
        raise NotImplementedError

    def thresholds(self) -> dict[str, Any]:
        """The same-person rule as the report records it ("same_person", "same_person_rule", ...)."""
        rule = self.same_person
        sign = "<" if rule.metric == "euclidean" else ">="
        return {"same_person": rule.cut, "same_person_rule": f"{rule.metric} {sign} {rule.cut} ({rule.how_chosen})",
                "same_person_cosine": rule.cut if rule.cosine_cut is None else rule.cosine_cut}

    def frechet_features(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        """renderings [N, 3, R, R] -> features [N, F] of the Fréchet distance (default: ``describe``)."""
        return self.describe(images, landmarks)

    def best(self, rendered: np.ndarray, refs: np.ndarray, groups=None) -> tuple[np.ndarray, np.ndarray]:
        """-> (best score under the judge's rule [N], best cosine [N]) of each rendering against its references."""
        return self.same_person.best(rendered, refs, groups), M.best_match(rendered, refs, groups, "cosine")

    def recognised(self, score: np.ndarray) -> np.ndarray:
        """Best scores [N] -> bool [N] under the judge's same-person rule."""
        return self.same_person.same(score)

    def match(self, images: torch.Tensor, landmarks: Optional[np.ndarray], refs: np.ndarray,
              groups: Optional[list[list[int]]] = None, check_faces: bool = True) -> Match:
        """Renderings [N, 3, R, R] (+ landmarks [N, 5, 2] or None) against reference vectors [M, D] (per row, the
        rows ``groups`` allows). ``check_faces`` False skips the face detector (every rendering counts as a face;
        for histograms only). -> :class:`Match`."""
        desc = self.describe(images, landmarks)
        face = self.faces(images) if check_faces else np.ones(images.shape[0], bool)
        desc[~face] = np.nan
        score, cos = self.best(desc, refs, groups)
        return Match(score, cos, self.recognised(score), face)


def file_digest(path: Union[str, Path]) -> str:
    """"sha256:<hex>" of a weight file (recorded with every network a report names)."""
    from guide_unlearn.io import sha256_file

    return "sha256:" + sha256_file(path)


class DetectingJudge(Judge):
    """A judge that finds faces with MTCNN and aligns them itself (offline-v1, paper-v1). Subclasses implement
    ``photo_descriptor(image, face)`` and ``describe``.

    style, resolution: the inverter's alignment style and the generator's resolution (the photos' crops)."""

    def __init__(self, style: str, resolution: int):
        from guide_unlearn.faces import get_detector

        self.detector = get_detector("mtcnn")
        self.style, self.resolution = style, resolution

    def photo_descriptor(self, image: Image.Image, face) -> np.ndarray:
        """The identity vector [D] of one detected ``face`` of a photo."""
        raise NotImplementedError

    def photo(self, image: Image.Image, label: str, person: str, eraser) -> Photo:
        from guide_unlearn.faces import align_face, alignment_matrix, detect_faces, estimate_camera, pick_face
        from guide_unlearn.faces.align import DEFAULT_SIZES
        from guide_unlearn.faces.geometry import apply_transform
        from guide_unlearn.images import pil_to_tensor

        found = detect_faces(image, self.detector)
        if not found:
            raise NoFaceError(f"no face found in {label}")
        face = pick_face(found)
        full = DEFAULT_SIZES[self.style]
        crop = align_face(image, face, self.style)
        matrix = alignment_matrix(face, self.style, full, image_height=image.height)
        lms = (apply_transform(matrix, face.landmarks) + 0.5) * (self.resolution / full) - 0.5
        camera = None
        if eraser is not None and eraser.generator.c_dim:
            camera = torch.as_tensor(list(estimate_camera(image, face).label), dtype=torch.float32)
        return Photo(label, person, pil_to_tensor(crop, self.resolution), camera, self.photo_descriptor(image, face),
                     lms)

    def upscaled(self, images: torch.Tensor) -> list[Image.Image]:
        """Renderings [N, 3, R, R] -> PIL images at least 256 px wide (bicubic), where MTCNN finds small faces."""
        from guide_unlearn.images import tensor_to_pil

        if images.shape[-1] < 256:
            images = F.interpolate(images.float(), size=256, mode="bicubic", align_corners=False).clamp(-1, 1)
        return [tensor_to_pil(x) for x in images]

    def faces(self, images: torch.Tensor) -> np.ndarray:
        from guide_unlearn.faces import detect_faces

        return np.array([len(detect_faces(p, self.detector)) > 0 for p in self.upscaled(images.detach().cpu())],
                        dtype=bool)

    def detector_record(self) -> dict[str, Any]:
        """The MTCNN record of ``networks()``: each weight file's digest."""
        from guide_unlearn.faces.weights import candidate_paths

        mtcnn = {}
        for name in ("pnet.pt", "rnet.pt", "onet.pt"):
            path = next((p for p in candidate_paths("mtcnn", name) if p.is_file()), None)
            mtcnn[name] = file_digest(path) if path is not None else None
        return {"name": "mtcnn", "files": mtcnn}


JudgeFactory = Callable[["Protocol", Any], Judge]  # (protocol, eraser) -> Judge
JUDGES: Registry[JudgeFactory] = Registry("identity judge")


def register_judge(name: str, factory: JudgeFactory, replace: bool = False) -> JudgeFactory:
    """Make a protocol whose ``identity`` is ``name`` judge with ``factory(protocol, eraser)``. -> factory."""
    return JUDGES.register(name, factory, replace=replace)


def make_judge(protocol: "Protocol", eraser) -> Judge:
    """The judge of ``protocol`` for ``eraser`` (ConfigError when no judge is registered under its identity)."""
    if protocol.identity not in JUDGES:
        from guide_unlearn.errors import ConfigError

        raise ConfigError(f"protocol {protocol.name} names identity network {protocol.identity!r}, which has no "
                          f"judge; register one (register_judge) or choose one of {', '.join(JUDGES)}")
    return JUDGES[protocol.identity](protocol, eraser)


def rendering_resolution(eraser) -> int:
    """The generator's output resolution (the size of the photos' crops)."""
    return int(getattr(eraser.generator, "img_resolution", 0) or 0)
