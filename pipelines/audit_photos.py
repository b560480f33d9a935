"""The audit's photo inputs: folders, paths, PIL images or lists of them, normalised to (label, item, person)
triples, the seeded sample of other people, and the prepared photos a judge described."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image

from guide_unlearn.errors import ConfigError, InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
PhotoSpec = Union[None, str, os.PathLike, Image.Image, Sequence[Any], Mapping[str, Sequence[Any]]]

@dataclass
class _Photo:
    """One usable photo: its aligned crop for the inverter and what the identity network made of it."""

    label: str  # the path (or "image #i")
    person: str  # who it shows (the group label)
    crop: torch.Tensor  # [1, 3, R, R] in [-1, 1], aligned for the inverter
    camera: Optional[torch.Tensor]  # [c_dim] or None
    descriptor: np.ndarray  # [D] identity vector of the photo (the network's own convention)
    landmarks: Optional[np.ndarray]  # [5, 2] face landmarks in crop pixels (None: unknown)
    key: Optional[str] = None  # absolute path, for the ``codes`` cache


@dataclass
class _PhotoSet:
    photos: list[_Photo]
    skipped: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.photos)

    @property
    def crops(self) -> torch.Tensor:
        return torch.cat([p.crop for p in self.photos])

    @property
    def descriptors(self) -> np.ndarray:
        return np.stack([p.descriptor for p in self.photos])


def _list_folder(folder: Path, role: str) -> tuple[list[tuple[str, Any, str]], list[dict[str, str]]]:
    """(label, item, person) of every file under ``folder``; files directly inside are one person each (for
    role "others"), files in a sub-folder are the sub-folder's person. Hidden files are ignored."""
    items, skipped = [], []
    entries = sorted(p for p in folder.rglob("*") if not any(part.startswith(".") for part in
                                                              p.relative_to(folder).parts))
    for p in entries:
        if not p.is_file():
            continue
        rel = p.relative_to(folder)
        person = str(folder / rel.parts[0]) if len(rel.parts) > 1 else str(p)
        items.append((str(p), p, person))
    if not items:
        raise InputError(f"the {role} folder {folder} holds no files; put photos (JPEG/PNG) in it")
    return items, skipped


def _items(spec: PhotoSpec, role: str) -> list[tuple[str, Any, str]]:
    """Normalise a folder / path / PIL image / list / {person: [photos]} to (label, item, person) triples."""
    if spec is None:
        return []
    if isinstance(spec, Mapping):
        out = []
        for person, group in spec.items():
            out += [(lab, it, str(person)) for lab, it, _ in _items(group, role)]
        return out
    if isinstance(spec, (str, os.PathLike)):
        path = Path(spec)
        if path.is_dir():
            return _list_folder(path, role)[0]
        if not path.exists():
            raise InputError(f"{role} photo or folder {path} does not exist")
        return [(str(path), path, str(path))]
    if isinstance(spec, Image.Image):
        return [("image #0", spec, "image #0")]
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise InputError(f"the {role} photo list is empty; pass at least one photo")
        out = []
        for i, item in enumerate(spec):
            if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
                out += _list_folder(Path(item), role)[0]
            elif isinstance(item, (str, os.PathLike)):
                out.append((str(item), Path(item), str(item)))
            elif isinstance(item, Image.Image):
                label = getattr(item, "filename", "") or f"image #{i}"
                out.append((label, item, label))
            else:
                raise InputError(f"{role} photos must be paths, folders or PIL images, got {type(item).__name__}")
        return out
    raise InputError(f"{role} must be a folder, a photo path, a PIL image or a list of them, got "
                     f"{type(spec).__name__}")


def sample_people(items: list[tuple[str, Any, str]], max_people: Optional[int], seed: int
                  ) -> tuple[list[tuple[str, Any, str]], dict[str, Any]]:
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
