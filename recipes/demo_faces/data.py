"""The demo model's training data: every face photo in shared/faces, aligned the way the eraser aligns a photo.

Each photo goes through the same steps as ``IdentityEraser.invert`` (detect with MTCNN, take the largest face,
FFHQ alignment, antialiased resize to the model's resolution), so a training crop and a user's photo of the same
face are the same tensor. Alongside the crop we keep what the evaluation needs: the face's 5 landmarks in crop
pixels (to cut dlib's chip out of a rendering without detecting again), the dlib descriptor of the photo itself
(from its full-resolution dlib chip), and the person it shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from guide_unlearn.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Held out of training: an unseen photo of a person the model knows (aligned_1..4 are the same person).
HELD_OUT = ("guide_celebahq512/aligned_5.jpg",)
# Folders whose photos all show ONE person; every other photo is its own person (shared/README.md).
ONE_PERSON_FOLDERS = ("guide_celebahq512",)
GUIDE_PERSON = "guide_celebahq512"


@dataclass
class FaceSet:
    """Aligned faces and what the evaluation needs about each.

    images:      [N, 3, R, R] float in [-1, 1] (FFHQ-aligned crops at the model resolution R).
    landmarks:   [N, 5, 2] float, the detected landmarks mapped into crop pixels (at resolution R).
    descriptors: [N, 128] float64 dlib descriptors of each photo's own full-resolution dlib150 chip.
    names:       N paths relative to the faces folder ("stargan_v2_celebahq/000001.jpg").
    people:      N person labels (the folder for one-person folders, else the photo's own name).
    skipped:     (name, reason) of photos left out (no face found, unreadable, too small).
    """

    images: torch.Tensor
    landmarks: np.ndarray
    descriptors: np.ndarray
    names: list[str]
    people: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, idx: Sequence[int]) -> "FaceSet":
        """The faces at positions ``idx`` (in that order)."""
        idx = list(idx)
        return FaceSet(self.images[idx], self.landmarks[idx], self.descriptors[idx], [self.names[i] for i in idx],
                       [self.people[i] for i in idx], list(self.skipped))

    def index(self, name: str) -> int:
        """Position of the photo called ``name`` (relative path); InputError when absent."""
        try:
            return self.names.index(name)
        except ValueError:
            raise InputError(f"{name} is not in this face set ({len(self)} photos)") from None

    def save(self, path: Path) -> None:
        """Write the set to one ``.npz`` file (atomically)."""
        from guide_unlearn.io import atomic_write_bytes
        import io

        buf = io.BytesIO()
        np.savez_compressed(buf, images=self.images.numpy().astype(np.float32), landmarks=self.landmarks,
                            descriptors=self.descriptors, names=np.array(self.names), people=np.array(self.people),
                            skipped=np.array(["\t".join(s) for s in self.skipped] or [""]))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> "FaceSet":
        """Read a set written by :meth:`save` (no pickled objects are allowed in it)."""
        from guide_unlearn.gate import load_npz

        z = load_npz(path, "checkpoint")  # the reading gate: no pickles, bounded sizes
        skipped = [tuple(s.split("\t")) for s in z["skipped"].tolist() if s]
        return cls(torch.from_numpy(z["images"]), z["landmarks"], z["descriptors"], z["names"].tolist(),
                   z["people"].tolist(), skipped)


def faces_root(shared: Optional[Path] = None) -> Path:
    """shared/faces: ``shared`` if given, else $GUIDE_SHARED or ../shared. ConfigError when missing."""
    from guide_unlearn.faces.weights import shared_dirs

    candidates = [Path(shared)] if shared is not None else shared_dirs()
    for root in candidates:
        if (root / "faces").is_dir():
            return (root / "faces").resolve()
    raise ConfigError(f"shared/faces not found (looked in {', '.join(map(str, candidates))}); set GUIDE_SHARED to "
                      "the shared data folder")


def list_photos(root: Path, exclude: Iterable[str] = HELD_OUT) -> list[str]:
    """Relative paths of every image under ``root`` (sorted), without ``exclude``."""
    out = []
    excluded = set(exclude)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and rel not in excluded:
            out.append(rel)
    return out


def person_of(name: str) -> str:
    """Person label of a photo: its folder for one-person folders, else the photo itself."""
    folder = name.split("/", 1)[0]
    return folder if folder in ONE_PERSON_FOLDERS else name


def leave_out(names: Sequence[str], people: Iterable[str], held_out: Iterable[str] = HELD_OUT
              ) -> tuple[list[str], list[str]]:
    """Remove whole people from the photo list ``names`` (relative paths, in order) -> (kept names in their
    original order, removed names).

    Each entry of ``people`` names ONE person as :func:`person_of` labels them: a one-person folder
    (``guide_celebahq512``: all its photos) or the relative path of a photo that is its own person
    (``deepface_train/img1.jpg``). InputError, before anything is removed, for an entry that matches no photo,
    a photo of a person with several photos (leaving out one of them would keep the person), or a folder of
    several people. ``held_out`` photos (never in ``names``) count as photos of their person.
    """
    wanted = list(dict.fromkeys(p.strip().rstrip("/") for p in people))
    labels = [person_of(n) for n in names]
    counts: dict[str, int] = {}
    for label in labels + [person_of(n) for n in held_out]:
        counts[label] = counts.get(label, 0) + 1
    for entry in wanted:
        if entry in labels:
            continue
        owner = person_of(entry)
        if owner != entry and owner in labels:
            raise InputError(f"{entry} is one of the {counts[owner]} photos of the person {owner}; leave out the "
                             f"whole person with --exclude {owner}")
        inside = [n for n in names if n.startswith(entry.rstrip("/") + "/")]
        if inside:
            raise InputError(f"{entry} is a folder of {len(inside)} different people; name each person's photo "
                             f"(e.g. --exclude {inside[0]})")
        raise InputError(f"--exclude {entry} matches no training photo (names are paths relative to shared/faces, "
                         f"e.g. {names[0] if names else 'folder/photo.jpg'}, or a one-person folder: "
                         f"{', '.join(ONE_PERSON_FOLDERS)})")
    drop = set(wanted)
    kept = [n for n, label in zip(names, labels) if label not in drop]
    removed = [n for n, label in zip(names, labels) if label in drop]
    return kept, removed


def read_people_file(path: Path) -> list[str]:
    """People named in a text file, one per line (``#`` starts a comment; blank lines are ignored)."""
    from guide_unlearn.gate import read_text

    lines = read_text(path, "text").splitlines()  # the reading gate: a regular file, UTF-8, size cap (InputError)
    people = [line.split("#", 1)[0].strip() for line in lines]
    people = [p for p in people if p]
    if not people:
        raise InputError(f"{path} names no person (one shared/faces folder or photo per line)")
    return people


def crop_landmarks(face, size: int) -> np.ndarray:
    """[5, 2] landmarks of ``face`` in the pixels of its FFHQ crop resized to ``size``."""
    from guide_unlearn.faces import alignment_matrix
    from guide_unlearn.faces.align import DEFAULT_SIZES
    from guide_unlearn.faces.geometry import apply_transform

    full = DEFAULT_SIZES["ffhq"]
    pts = apply_transform(alignment_matrix(face, "ffhq", full), face.landmarks)
    return (pts + 0.5) * (size / full) - 0.5


def build_face_set(root: Path, names: Sequence[str], resolution: int = 64, dlib_weights: Optional[str] = None
                   ) -> FaceSet:
    """Detect, align and describe every photo in ``names`` (relative to ``root``). Photos without a usable face
    are listed in ``skipped`` with the reason, not raised. -> FaceSet with N <= len(names) faces."""
    from guide_unlearn.adapters.identity.dlib_metric import DlibIdentity
    from guide_unlearn.errors import GuideUnlearnError
    from guide_unlearn.faces import align_face, detect_faces, get_detector, load_image, pick_face
    from guide_unlearn.images import pil_to_tensor

    detector = get_detector("mtcnn")
    dlib = DlibIdentity(dlib_weights)
    images, landmarks, chips, kept, skipped = [], [], [], [], []
    for name in names:
        try:
            photo = load_image(root / name)
            found = detect_faces(photo, detector)
            if not found:
                skipped.append((name, "no face found"))
                continue
            face = pick_face(found)
            crop = align_face(photo, face, "ffhq")
        except GuideUnlearnError as exc:
            skipped.append((name, str(exc)))
            continue
        images.append(pil_to_tensor(crop, resolution))
        landmarks.append(crop_landmarks(face, resolution))
        chips.append(align_face(photo, face, "dlib150"))
        kept.append(name)
    if not kept:
        raise InputError(f"no usable face in the {len(names)} photos under {root}")
    for name, why in skipped:
        logger.info("skipped %s: %s", name, why)
    return FaceSet(torch.cat(images), np.stack(landmarks), dlib.descriptors(chips), kept,
                   [person_of(n) for n in kept], skipped)
