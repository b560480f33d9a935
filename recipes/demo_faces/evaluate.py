"""The demo model's figures, measured with dlib's face recogniser (the metric of the faces package).

- ``reconstruction``: how often the inversion of a training photo renders as the person in the photo (dlib
  distance of the rendering to the photo's own full-resolution chip < 0.6);
- ``sample_face_rate``: how often MTCNN finds a face in a random sample;
- ``erasure_report``: erase one person from ONE photo, then check every photo of that person (before: renders as
  them; after: renders as someone else) and every other recognised training person (still recognised), with an
  unoptimised pixel measure beside dlib.

A rendering is FFHQ-aligned, so its dlib chip is cut with the landmarks of the photo it reconstructs (mapped into
crop pixels by ``data.crop_landmarks``) or, for random samples, the mean landmarks of the training crops; no
detector runs on a 64-px rendering.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from guide_unlearn.errors import InputError

from .data import GUIDE_PERSON, FaceSet

THRESHOLD = 0.6  # dlib's same-person cut (Euclidean distance between raw descriptors)


def _face(landmarks: np.ndarray, size: int):
    from guide_unlearn.faces import Face

    return Face(np.array([0, 0, size, size], dtype=np.float64), landmarks, 1.0, detector="known")


def chip_grid(landmarks: np.ndarray, size: int, chip: int = 150) -> torch.Tensor:
    """Sampling grid [1, chip, chip, 2] (for ``F.grid_sample``, align_corners=False) that cuts dlib's chip out of
    a size×size rendering whose face has ``landmarks`` [5, 2]: the differentiable twin of
    ``dlib_metric.crop_chips``."""
    from guide_unlearn.faces import alignment_matrix
    from guide_unlearn.faces.geometry import invert_affine

    inv = invert_affine(alignment_matrix(_face(landmarks, size), "dlib150", chip))  # chip px -> render px
    ys, xs = np.meshgrid(np.arange(chip, dtype=np.float64), np.arange(chip, dtype=np.float64), indexing="ij")
    pts = np.stack([xs, ys, np.ones_like(xs)], -1) @ inv.T  # [chip, chip, 2] render pixel coordinates
    grid = (pts + 0.5) / size * 2 - 1
    return torch.from_numpy(grid).float().unsqueeze(0)


class ChipIdentity(torch.nn.Module):
    """An IdentityModel that first cuts dlib's chip out of an FFHQ-aligned rendering (differentiably), so a
    "dlib150" network (faceapi) sees the crop it was trained on. images [N, 3, R, R] -> unit vectors [N, D]."""

    def __init__(self, model: Any, landmarks: np.ndarray, size: int):
        super().__init__()
        self.model = model
        self.register_buffer("grid", chip_grid(landmarks, size))
        self.name = f"{getattr(model, 'name', 'identity')}+chip"
        self.align_style = "ffhq"
        self.differentiable = getattr(model, "differentiable", True)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.grid.to(images.device).expand(images.shape[0], -1, -1, -1)
        return self.model.embed(F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                                              align_corners=False))



JUDGE_IN_LOSS = "faceapi+chip (dlib's own weights: the judge's network was in the loss, so the figures are optimistic)"


def faceapi_chip(landmarks: np.ndarray, size: int) -> ChipIdentity:
    """faceapi (dlib's ResNet weights, differentiable) behind a chip cut at ``landmarks`` [5, 2] of ``size``-px
    renderings: an identity model for an erase, images [N, 3, size, size] -> unit vectors [N, 128]. Its network is
    the offline judge's, so figures of an erase with it in the loss are labelled :data:`JUDGE_IN_LOSS`."""
    from guide_unlearn.adapters.identity import load_identity_model

    return ChipIdentity(load_identity_model("faceapi"), landmarks, size)

@dataclass
class Metric:
    """dlib descriptors of renderings, cut with known landmarks. ``mean_landmarks`` [5, 2] for random samples."""

    mean_landmarks: np.ndarray
    dlib: Any = None

    def __post_init__(self) -> None:
        if self.dlib is None:
            from guide_unlearn.adapters.identity import DlibIdentity

            self.dlib = DlibIdentity()

    def describe(self, images: torch.Tensor, landmarks: Optional[np.ndarray] = None) -> np.ndarray:
        """images [N, 3, R, R] -> raw dlib descriptors [N, 128] (Euclidean convention)."""
        from guide_unlearn.adapters.identity.dlib_metric import crop_chips

        lms = self.mean_landmarks if landmarks is None else landmarks
        return self.dlib.descriptors(crop_chips(images, lms))


def metric_for(faces: FaceSet) -> Metric:
    """The dlib metric with the mean landmarks of ``faces``."""
    return Metric(faces.landmarks.mean(0))


def distances_to(desc: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Row-wise dlib distance: desc [N, 128] vs targets [N, 128] -> [N]."""
    return np.sqrt(((np.asarray(desc) - np.asarray(targets)) ** 2).sum(1))


@torch.no_grad()
def render(eraser, ws: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """ws [N, num_ws, w_dim] -> images [N, 3, R, R] through the eraser (applied patches on), noise 'const'."""
    return torch.cat([eraser.synthesize(chunk) for chunk in ws.split(batch)])


def invert_faces(eraser, faces: FaceSet, seed: int = 0, batch: int = 32) -> torch.Tensor:
    """Codes [N, num_ws, w_dim] of every aligned face through ``eraser.invert`` (the public path). The inverter's
    steps are per image, so the batch size changes a code only by float rounding (measured: 0.2-0.7 Frobenius on
    codes ~34 from w_avg)."""
    return torch.cat([eraser.invert(faces.images[i:i + batch], seed=seed) for i in range(0, len(faces), batch)])


def reconstruction(eraser, faces: FaceSet, ws: torch.Tensor, metric: Metric) -> dict[str, Any]:
    """Fraction of ``faces`` whose inversion ``ws`` renders under dlib 0.6 from the photo. -> figures + the
    per-photo distances [N]."""
    images = render(eraser, ws)
    d = distances_to(metric.describe(images, faces.landmarks), faces.descriptors)
    l1 = (images - faces.images).abs().flatten(1).mean(1).numpy()
    return {"fraction_recognised": float((d < THRESHOLD).mean()), "mean_distance": float(d.mean()),
            "median_distance": float(np.median(d)), "mean_pixel_l1": float(l1.mean()), "n": len(faces),
            "distances": d}


@torch.no_grad()
def sample_face_rate(eraser, n: int = 64, seed: int = 0, upscale: int = 256) -> dict[str, float]:
    """Fraction of ``n`` seeded random samples (z ~ N(0, I)) in which MTCNN finds a face (rendering upscaled to
    ``upscale`` px, bicubic)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, eraser.generator.z_dim, generator=g)
    images = render(eraser, eraser.generator.mapping(z.to(eraser.device), None))
    return {"fraction_with_face": float(np.mean(faces_found(images, upscale))), "n": n}


def faces_found(images: torch.Tensor, upscale: int = 256) -> np.ndarray:
    """images [N, 3, R, R] in [-1, 1] -> [N] bool: does MTCNN find a face (rendering upscaled bicubic)."""
    from guide_unlearn.faces import detect_faces, get_detector
    from guide_unlearn.images import tensor_to_pil

    up = F.interpolate(images.float(), size=upscale, mode="bicubic", align_corners=False).clamp(-1, 1)
    detector = get_detector("mtcnn")
    return np.array([len(detect_faces(tensor_to_pil(x), detector)) > 0 for x in up])


@dataclass
class ErasureReport:
    """Figures of one erase, all dlib distances (lower = more alike; same person below 0.6).

    person_before / person_after: [P] distance of each photo's rendering to that photo (the reconstruction
    measure: does it render as the person in it).
    person_mean_before / person_mean_after: [P] mean distance of each rendering to all P photos of the person.
    others_before / others_after: [M] distance of each other training person's rendering to their own photo,
    for the M people recognised before the patch (distance < 0.6).
    pixel: unoptimised pixel measures (mean |render - aligned photo|) for the person and the others.
    person_faces_after: [P] bool, MTCNN finds a face in each patched rendering of the person ("someone else"
    should still be a face; a far UFO target can turn the person into a non-face, which dlib also scores > 0.6).
    """

    person_names: list[str]
    person_before: np.ndarray
    person_after: np.ndarray
    person_mean_before: np.ndarray
    person_mean_after: np.ndarray
    others_names: list[str]
    others_before: np.ndarray
    others_after: np.ndarray
    pixel: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    id_term: Optional[str] = None
    person_faces_after: Optional[np.ndarray] = None

    @property
    def erased(self) -> bool:
        """Every photo of the person rendered as them before and as someone else after, and (where checked) still
        as a face: a patch that turns the person into a non-face passes dlib's test by destruction."""
        faces = self.person_faces_after is None or bool(np.all(self.person_faces_after))
        return bool((self.person_before < THRESHOLD).all() and (self.person_after > THRESHOLD).all() and faces)

    @property
    def preserved_fraction(self) -> float:
        """Share of the recognised other people still recognised after the patch."""
        return float((self.others_after < THRESHOLD).mean()) if len(self.others_after) else float("nan")

    def figures(self) -> dict[str, Any]:
        """JSON-ready summary."""
        r = lambda a: [round(float(x), 4) for x in a]
        return {"id_term": self.id_term, "erased": self.erased, "person_photos": self.person_names,
                "person_before": r(self.person_before), "person_after": r(self.person_after),
                "person_mean_before": r(self.person_mean_before), "person_mean_after": r(self.person_mean_after),
                "person_faces_after": None if self.person_faces_after is None
                else [bool(x) for x in self.person_faces_after],
                "others_recognised_before": len(self.others_names), "preserved_fraction": self.preserved_fraction,
                "others_mean_distance_change": float((self.others_after - self.others_before).mean())
                if len(self.others_names) else None,
                "pixel": {k: round(v, 4) for k, v in self.pixel.items()}, "erase_seconds": round(self.seconds, 1)}


def erasure_report(eraser, request: torch.Tensor, person: FaceSet, person_ws: torch.Tensor, others: FaceSet,
                   others_ws: torch.Tensor, metric: Metric, config=None, identity_model: Any = None,
                   person_descriptors: Optional[np.ndarray] = None) -> tuple[ErasureReport, Any]:
    """Erase the person of ``request`` (photo path / aligned tensor / codes) and measure it.

    person: every photo of that person (FaceSet, P photos) with their codes ``person_ws`` [P, num_ws, w_dim];
    others: other people's photos with codes ``others_ws`` [M, num_ws, w_dim]. ``identity_model`` is used for the
    ID term (None: the term is off). -> (report, the ErasureResult of the erase).
    """
    if len(person) == 0:
        raise InputError("the person has no photos to check")
    target = person.descriptors if person_descriptors is None else person_descriptors

    saved = eraser.identity_model
    eraser.identity_model = identity_model
    try:
        result = eraser.erase(request, config=config or eraser.default_config(), measure=False, progress=False)
    finally:
        eraser.identity_model = saved

    def person_dist(images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        desc = metric.describe(images, person.landmarks)
        return distances_to(desc, target), np.sqrt(((desc[:, None] - target[None]) ** 2).sum(-1)).mean(1)

    before_p, before_o = render(eraser, person_ws), render(eraser, others_ws)
    d_o = distances_to(metric.describe(before_o, others.landmarks), others.descriptors)
    keep = np.flatnonzero(d_o < THRESHOLD)
    eraser.apply_patch(result.patch)
    try:
        after_p, after_o = render(eraser, person_ws), render(eraser, others_ws[keep])
    finally:
        eraser.remove_patch(result.patch)
    d_o_after = distances_to(metric.describe(after_o, others.landmarks[keep]), others.descriptors[keep])
    l1 = lambda a, b: float((a - b).abs().mean())
    pixel = {"person_before": l1(before_p, person.images), "person_after": l1(after_p, person.images),
             "others_before": l1(before_o[keep], others.images[keep]), "others_after": l1(after_o, others.images[keep])}
    (own_b, mean_b), (own_a, mean_a) = person_dist(before_p), person_dist(after_p)
    report = ErasureReport(list(person.names), own_b, own_a, mean_b, mean_a,
                           [others.names[i] for i in keep], d_o[keep], d_o_after, pixel, result.seconds,
                           getattr(identity_model, "name", None), faces_found(after_p))
    return report, result


def impostor_rate(faces: FaceSet) -> float:
    """Share of photo pairs of DIFFERENT people that dlib puts under 0.6 (how loose the cut is on this set)."""
    d = faces.descriptors
    dist = np.sqrt(((d[:, None] - d[None]) ** 2).sum(-1))
    people = np.array(faces.people)
    pairs = np.triu(people[:, None] != people[None], 1)
    return float((dist[pairs] < THRESHOLD).mean())


def split_people(faces: FaceSet, person: str = GUIDE_PERSON) -> tuple[list[int], list[int]]:
    """(indices of ``person``'s photos, indices of every other person's photos; one per other person)."""
    mine = [i for i, p in enumerate(faces.people) if p == person]
    seen, rest = set(), []
    for i, p in enumerate(faces.people):
        if p != person and p not in seen:
            seen.add(p)
            rest.append(i)
    return mine, rest


# ----------------------------------------------------------------------------------------------------------------
# Cached inversions: the codes of every photo, computed by ``invert_faces`` and stored with what made them.

PERSON_PHOTOS = tuple(f"{GUIDE_PERSON}/aligned_{i}.jpg" for i in range(1, 6))
REQUEST = PERSON_PHOTOS[-1]  # the deletion request: the held-out photo


def inverter_record(eraser) -> dict[str, Any]:
    """The settings an inversion depends on (stored beside cached codes)."""
    import hashlib

    inv = eraser.inverter
    keys = ("name", "starts", "steps", "lr", "refine_steps", "refine_lr", "refine_space", "mse_weight", "noise_mode",
            "book_refine_steps")
    record = {k: getattr(inv, k) for k in keys if hasattr(inv, k)}
    book = getattr(inv, "code_book", None)
    if book is not None:  # which known codes and descriptors the photos were matched against
        digest = hashlib.sha256(book.codes.numpy().tobytes() + book.descriptors.tobytes()).hexdigest()[:16]
        record["code_book"] = f"{len(book)} codes, threshold {book.threshold}, sha256 {digest}"
    return record


def save_codes(path, names: Sequence[str], ws: torch.Tensor, eraser, seed: int = 0) -> None:
    """Write codes ws [N, num_ws, w_dim] (stored as the shared w [N, w_dim] when every layer has the same w)."""
    import json

    from safetensors.torch import save

    from guide_unlearn.fingerprint import weights_fingerprint
    from guide_unlearn.io import atomic_write_bytes
    from guide_unlearn.protocols import module_of

    shared = bool((ws == ws[:, :1]).all())
    meta = {"names": json.dumps(list(names)), "fingerprint": weights_fingerprint(module_of(eraser.generator)),
            "inverter": json.dumps(inverter_record(eraser)), "seed": str(seed), "broadcast": str(shared)}
    tensor = ws[:, 0] if shared else ws
    atomic_write_bytes(path, save({"ws": tensor.contiguous().float()}, metadata=meta))


def load_codes(path, eraser, seed: int = 0) -> dict[str, torch.Tensor]:
    """{photo name: ws [num_ws, w_dim]} from :func:`save_codes`; ConfigError when they were made by another
    model, inverter setting or seed (regenerate with ``benchmarks/bench_demo_faces.py --write-codes``)."""
    import json

    from guide_unlearn.errors import ConfigError
    from guide_unlearn.fingerprint import weights_fingerprint
    from guide_unlearn.gate import load_safetensors
    from guide_unlearn.protocols import module_of

    tensors, meta = load_safetensors(path, "latent")  # the reading gate
    if "ws" not in tensors:
        raise ConfigError(f"{path} holds no 'ws' codes; regenerate it with "
                          "`python benchmarks/bench_demo_faces.py --write-codes`")
    ws = tensors["ws"]
    want = {"fingerprint": weights_fingerprint(module_of(eraser.generator)),
            "inverter": json.dumps(inverter_record(eraser)), "seed": str(seed)}
    stale = [k for k, v in want.items() if meta.get(k) != v]
    if stale:
        raise ConfigError(f"{path} was computed with another {', '.join(stale)}; regenerate it with "
                          "`python benchmarks/bench_demo_faces.py --write-codes`")
    if meta.get("broadcast") == "True":
        ws = ws.unsqueeze(1).expand(-1, eraser.generator.num_ws, -1)
    return dict(zip(json.loads(meta["names"]), ws))
