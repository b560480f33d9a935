"""The audit's photo inputs: folders, paths, PIL images or lists of them, normalised to (label, item, person)
triples, the seeded sample of other people, and the photos a judge prepared (aligned crop, identity vector,
landmarks, camera). A leaf module: a judge is anything with ``photo(image, label, person, eraser)``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from guide_unlearn import gate
from guide_unlearn.errors import ConfigError, ImageLoadError, InputError, NoFaceError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
PhotoSpec = Union[None, str, os.PathLike, Image.Image, Sequence[Any], Mapping[str, Sequence[Any]]]
PhotoItem = tuple[str, Any, str]  # (label, the path or PIL image, person)


@dataclass
class Photo:
    """One usable photo: its aligned crop for the inverter and what the identity network made of it."""

    label: str  # the path (or "image #i")
    person: str  # who it shows (the group label)
    crop: torch.Tensor  # [1, 3, R, R] in [-1, 1], aligned for the inverter
    camera: Optional[torch.Tensor]  # [c_dim] or None
    descriptor: np.ndarray  # [D] identity vector of the photo (the network's own convention)
    landmarks: Optional[np.ndarray]  # [5, 2] face landmarks in crop pixels (None: unknown)
    key: Optional[str] = None  # absolute path, for the ``codes`` cache


@dataclass
class PhotoSet:
    """The usable photos of one role ("request", "held_out", "others", "real") and the skipped ones."""

    photos: list[Photo]
    skipped: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def crops(self) -> torch.Tensor:
        """[N, 3, R, R] aligned crops."""
        return torch.cat([p.crop for p in self.photos])

    @property
    def descriptors(self) -> np.ndarray:
        """[N, D] identity vectors."""
        return np.stack([p.descriptor for p in self.photos])


def input_alignment(eraser) -> str:
    """The face alignment the eraser's inverter expects ("ffhq" unless the inverter says otherwise)."""
    return getattr(eraser.inverter, "input_alignment", "ffhq")


def cameras_of(photos: Sequence[Photo]) -> Optional[torch.Tensor]:
    """[N, c_dim] cameras of the photos, or None (a model without cameras)."""
    if not photos or photos[0].camera is None:
        return None
    return torch.stack([p.camera for p in photos])


def landmarks_of(photos: Sequence[Photo]) -> Optional[np.ndarray]:
    """[N, 5, 2] face landmarks of the photos in crop pixels, or None when the judge finds faces itself."""
    if not photos or photos[0].landmarks is None:
        return None
    return np.stack([p.landmarks for p in photos])


def mean_landmarks(photos: Sequence[Photo]) -> Optional[np.ndarray]:
    """[5, 2] mean landmarks of the photos that have them (where a random sample's face is), or None."""
    lms = [p.landmarks for p in photos if p.landmarks is not None]
    return np.mean(lms, axis=0) if lms else None


def own_groups(photos: Sequence[Photo]) -> list[list[int]]:
    """For each photo, the indices of the photos of the same person (itself included)."""
    return [[j for j, q in enumerate(photos) if q.person == p.person] for p in photos]


def _list_folder(folder: Path, role: str) -> list[PhotoItem]:
    """(label, item, person) of every file under ``folder``; files directly inside are one person each (for
    role "others"), files in a sub-folder are the sub-folder's person. Hidden files are ignored. The folder is
    listed by the reading gate (:func:`guide_unlearn.gate.list_folder`) before any photo is read: a link out of
    it, a pipe or device, an oversized file or too many entries is an ImageLoadError saying what to remove."""
    items = []
    for p in gate.list_folder(folder, "photo"):
        rel = p.relative_to(folder)
        person = str(folder / rel.parts[0]) if len(rel.parts) > 1 else str(p)
        items.append((str(p), p, person))
    if not items:
        raise InputError(f"the {role} folder {folder} holds no files; put photos (JPEG/PNG) in it")
    return items


def _list_items(spec: Sequence[Any], role: str) -> list[PhotoItem]:
    if not spec:
        raise InputError(f"the {role} photo list is empty; pass at least one photo")
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            out += _list_folder(Path(item), role)
        elif isinstance(item, (str, os.PathLike)):
            out.append((str(item), Path(item), str(item)))
        elif isinstance(item, Image.Image):
            label = getattr(item, "filename", "") or f"image #{i}"
            out.append((label, item, label))
        else:
            raise InputError(f"{role} photos must be paths, folders or PIL images, got {type(item).__name__}")
    return out


def photo_items(spec: PhotoSpec, role: str) -> list[PhotoItem]:
    """Normalise a folder / path / PIL image / list / {person: [photos]} to (label, item, person) triples."""
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        return [(lab, it, str(person)) for person, group in spec.items() for lab, it, _ in photo_items(group, role)]
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            return _list_folder(path, role)
        if not path.exists():
            raise InputError(f"{role} photo or folder {path} does not exist")
        return [(str(path), path, str(path))]
    if isinstance(spec, Image.Image):
        return [("image #0", spec, "image #0")]
    if isinstance(spec, (list, tuple)):
        return _list_items(spec, role)
    raise InputError(f"{role} must be a folder, a photo path, a PIL image or a list of them, got "
                     f"{type(spec).__name__}")


def sample_people(items: list[PhotoItem], max_people: Optional[int], seed: int
                  ) -> tuple[list[PhotoItem], dict[str, Any]]:
    """At most ``max_people`` whole people of ``items`` ((label, item, person) triples), chosen by a permutation
    seeded with ``seed`` and kept in their original order; None or 0 keeps everyone.
    -> (items kept, {"people_given", "people_audited", "max_others", "seed"})."""
    def looks_like_image(label: str, item: Any) -> bool:
        return isinstance(item, Image.Image) or str(item if item is not None else label).lower().endswith(
            IMAGE_SUFFIXES)

    # Only people with an image file compete for the places; other files (a README in a photo folder) are kept so
    # that they are skipped and counted as before, without taking a person's place.
    people = list(dict.fromkeys(person for label, item, person in items if looks_like_image(label, item)))
    record: dict[str, Any] = {"people_given": len(people), "people_audited": len(people),
                              "max_others": max_people or None, "seed": seed}
    if max_people is not None and max_people < 0:
        raise ConfigError(f"max_others must be >= 0 (0 = every person), got {max_people}")
    if not max_people or len(people) <= max_people:
        return items, record
    order = torch.randperm(len(people), generator=torch.Generator().manual_seed(seed)).tolist()
    keep = {people[i] for i in order[:max_people]}
    record["people_audited"] = len(keep)
    return [it for it in items if it[2] in keep or it[2] not in people], record


def prepare_photos(items: Sequence[PhotoItem], role: str, judge, eraser, skipped: list[dict[str, str]]) -> PhotoSet:
    """Load, detect and describe every (label, item, person) of ``items`` with ``judge.photo``; unreadable files
    and photos without a face are added to ``skipped`` (with the reason) instead of raising. -> PhotoSet."""
    from guide_unlearn.images import load_image

    out = []
    for label, item, person in items:
        try:
            photo = judge.photo(load_image(item), label, person, eraser)
        except ImageLoadError as exc:
            skipped.append({"role": role, "photo": label, "reason": f"not a usable image ({exc})"})
            continue
        except NoFaceError:
            skipped.append({"role": role, "photo": label, "reason": "no face found"})
            continue
        if isinstance(item, (str, os.PathLike)):
            photo.key = os.path.abspath(str(item))
        out.append(photo)
    return PhotoSet(out, [s for s in skipped if s["role"] == role])


def load_photos(spec: PhotoSpec, role: str, judge, eraser) -> PhotoSet:
    """:func:`photo_items` then :func:`prepare_photos` (the skipped photos are in the set's ``skipped``)."""
    return prepare_photos(photo_items(spec, role), role, judge, eraser, [])
