"""Identity judges of the audit: how a protocol turns photos and renderings into identity vectors (offline-v1:
dlib; toy-v1: a random toy network; paper-v1 lives in :mod:`.audit_paper`), and photo preparation through them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from guide_unlearn import metrics as M
from guide_unlearn.errors import ConfigError, ImageLoadError, NoFaceError

from .audit_photos import PhotoSpec, _items, _Photo, _PhotoSet

if TYPE_CHECKING:
    from .auditing import Protocol

class _Judge:
    """Identity vectors of photos and renderings, and the same-person rule, for one protocol."""

    name = ""
    rule = "cosine"  # "cosine" (>= threshold) or "euclidean" (< threshold) on ``descriptor`` vectors
    threshold = 0.0
    cosine_threshold = 0.0
    frechet_metric = "fd"  # which keys the Fréchet distance fills: "fd" (fd_pre, ...) or "fid" (fid_pre, ...)

    def photo(self, image: Image.Image, label: str, person: str, eraser) -> _Photo: ...

    def describe(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        """renderings [N, 3, R, R] (+ face landmarks [N, 5, 2] in their pixels, or None: find them) -> [N, D]
        (NaN rows where no face was found)."""

    def faces(self, images: torch.Tensor) -> np.ndarray:
        """renderings [N, 3, R, R] -> bool [N]: is there a face (a rendering without one is never recognised)."""

    def networks(self) -> dict[str, Any]: ...

    def thresholds(self) -> dict[str, Any]: ...

    def frechet_features(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        """renderings [N, 3, R, R] -> features [N, F] of the Fréchet distance (default: ``describe``)."""
        return self.describe(images, landmarks)

    def best(self, rendered: np.ndarray, refs: np.ndarray, groups=None) -> tuple[np.ndarray, np.ndarray]:
        """-> (best score under the judge's rule [N], best cosine [N]) of each rendering against its references."""
        score = M.best_match(rendered, refs, groups, self.rule)
        cos = M.best_match(rendered, refs, groups, "cosine")
        return score, cos

    def recognised(self, score: np.ndarray) -> np.ndarray:
        return M.recognised(score, self.threshold, self.rule)


def _file_digest(path: Union[str, Path]) -> str:
    from guide_unlearn.io import sha256_file

    return "sha256:" + sha256_file(path)


class _DlibJudge(_Judge):
    """offline-v1: MTCNN finds faces, dlib's ResNet describes dlib150 chips (raw descriptors, Euclidean < 0.6)."""

    rule = "euclidean"

    def __init__(self, style: str, resolution: int):
        from guide_unlearn.adapters.identity.dlib_metric import DLIB_COSINE_THRESHOLD, DLIB_THRESHOLD, DlibIdentity
        from guide_unlearn.faces import get_detector
        from guide_unlearn.faces.backends import find_dlib_file

        self.dlib = DlibIdentity()
        self.dlib_file = find_dlib_file("dlib_face_recognition_resnet_model_v1.dat")
        self.detector = get_detector("mtcnn")
        self.style, self.resolution = style, resolution
        self.name = "dlib_face_recognition_resnet_model_v1"
        self.threshold, self.cosine_threshold = DLIB_THRESHOLD, DLIB_COSINE_THRESHOLD

    def photo(self, image: Image.Image, label: str, person: str, eraser) -> _Photo:
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
        if eraser.generator.c_dim:
            camera = torch.as_tensor(list(estimate_camera(image, face).label), dtype=torch.float32)
        return _Photo(label, person, pil_to_tensor(crop, self.resolution), camera, self._photo_descriptor(image, face),
                      lms)

    def _photo_descriptor(self, image: Image.Image, face) -> np.ndarray:
        """The identity vector of one detected ``face`` of a photo: a raw dlib descriptor [128] of its dlib150 chip."""
        from guide_unlearn.faces import align_face

        return self.dlib.descriptors([align_face(image, face, "dlib150")])[0]

    def describe(self, images: torch.Tensor, landmarks: Optional[np.ndarray]) -> np.ndarray:
        from guide_unlearn.adapters.identity.dlib_metric import crop_chips

        images = images.detach().float().cpu()
        if landmarks is not None:
            return self.dlib.descriptors(crop_chips(images, landmarks))
        out = np.full((images.shape[0], 128), np.nan)
        from guide_unlearn.faces import align_face, detect_faces, pick_face

        for i, pil in enumerate(self._upscaled(images)):
            found = detect_faces(pil, self.detector)
            if found:
                out[i] = self.dlib.descriptors([align_face(pil, pick_face(found), "dlib150")])[0]
        return out

    def _upscaled(self, images: torch.Tensor) -> list[Image.Image]:
        from guide_unlearn.images import tensor_to_pil

        if images.shape[-1] < 256:
            images = F.interpolate(images.float(), size=256, mode="bicubic", align_corners=False).clamp(-1, 1)
        return [tensor_to_pil(x) for x in images]

    def faces(self, images: torch.Tensor) -> np.ndarray:
        from guide_unlearn.faces import detect_faces

        return np.array([len(detect_faces(p, self.detector)) > 0 for p in self._upscaled(images.detach().cpu())],
                        dtype=bool)

    def networks(self) -> dict[str, Any]:
        from guide_unlearn.faces.weights import candidate_paths

        mtcnn = {}
        for name in ("pnet.pt", "rnet.pt", "onet.pt"):
            path = next((p for p in candidate_paths("mtcnn", name) if p.is_file()), None)
            mtcnn[name] = _file_digest(path) if path is not None else None
        return {"identity": {"name": self.name, "file": Path(self.dlib_file).name,
                             "digest": _file_digest(self.dlib_file),
                             "input": "dlib150 chips (5-point similarity alignment)"},
                "detector": {"name": "mtcnn", "files": mtcnn},
                "features": {"name": "FD-dlib", "what": "raw 128-d dlib descriptors of dlib150 chips cut from the "
                             "renderings at fixed face landmarks (not Inception, not FID)"}}

    def thresholds(self) -> dict[str, Any]:
        return {"same_person": self.threshold, "same_person_rule": "Euclidean distance between raw dlib "
                "descriptors < 0.6 (dlib's published threshold)", "same_person_cosine": self.cosine_threshold,
                "same_person_cosine_rule": "cosine between L2-normalised dlib descriptors >= 0.92 (the equivalent "
                "cut; used to read id / id_others)"}


class _ToyJudge(_Judge):
    """toy-v1: the random ToyIdentityNet on whole images; every rendering counts as a 'face'."""

    rule = "cosine"
    threshold = cosine_threshold = 0.9

    def __init__(self, resolution: int):
        from guide_unlearn.adapters.toy import ToyIdentityNet

        self.net = ToyIdentityNet(seed=0)
        self.resolution = resolution
        self.name = self.net.name

    def photo(self, image: Image.Image, label: str, person: str, eraser) -> _Photo:
        from guide_unlearn.images import pil_to_tensor

        crop = pil_to_tensor(image, self.resolution)
        camera = None
        if eraser.generator.c_dim:
            camera = eraser.generator.frontal_camera(1)[0].detach().cpu()
        return _Photo(label, person, crop, camera, self.describe(crop, None)[0], None)

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
        return {"same_person": self.threshold, "same_person_rule": "cosine >= 0.9 (ARBITRARY: the toy network "
                "is random and has no published threshold)", "same_person_cosine": self.cosine_threshold}


def _judge(proto: Protocol, eraser) -> _Judge:
    res = int(getattr(eraser.generator, "img_resolution", 0) or 0)
    if proto.identity == "toy":
        return _ToyJudge(res)
    if proto.identity == "dlib":
        return _DlibJudge(getattr(eraser.inverter, "input_alignment", "ffhq"), res)
    if proto.identity == "curricularface":
        from .audit_paper import CurricularJudge

        return CurricularJudge(getattr(eraser.inverter, "input_alignment", "ffhq"), res, proto.identity_depth)
    raise ConfigError(f"protocol {proto.name} names identity network {proto.identity!r}, which has no judge")


def _prepare(spec: PhotoSpec, role: str, judge: _Judge, eraser, skipped: list[dict[str, str]],
             items: Optional[list[tuple[str, Any, str]]] = None) -> _PhotoSet:
    """Load, detect and describe every photo of ``spec`` (or of ``items``, already normalised by ``_items``);
    unreadable files and photos without a face are added to ``skipped`` (with the reason) instead of raising."""
    from guide_unlearn.images import load_image

    out = []
    for label, item, person in (_items(spec, role) if items is None else items):
        try:
            image = load_image(item)
            photo = judge.photo(image, label, person, eraser)
        except ImageLoadError as exc:
            skipped.append({"role": role, "photo": label, "reason": f"not a usable image ({exc})"})
            continue
        except NoFaceError:
            skipped.append({"role": role, "photo": label, "reason": "no face found"})
            continue
        if isinstance(item, (str, os.PathLike)):
            photo.key = os.path.abspath(str(item))
        out.append(photo)
    return _PhotoSet(out, [s for s in skipped if s["role"] == role])
