"""A code book: the codes a GLO-trained generator learnt for its training photos, keyed by a face descriptor.

A GLO model has no encoder; what it has instead is one code per training photo. Stored with an identity
descriptor of each training crop, those codes let an inverter start a photo of a person the model knows from
that person's own code instead of from the best of a few random codes. This is what makes different photos of
one person land near each other in code space (on ``demo-faces``: the five GUIDE photos lie 8-17 apart in W+
instead of 30-52), and so what lets a patch made from ONE photo reach the other photos of the person.

File format (``code_book.safetensors``, beside the model's ``config.json``; written by the demo recipe):

- ``codes`` [K, z_dim] float32: the training codes (inputs of the mapping network);
- ``descriptors`` [K, D] float32: the descriptor of each training crop, computed exactly as ``describe`` will
  compute it for a new crop (for ``demo-faces``: dlib's ResNet on the dlib150 chip cut out of the R-px crop);
- ``landmarks`` [5, 2] float32: where the 5 landmarks of a face sit in an R-px crop (to cut the chip);
- metadata ``format`` = ``guide-unlearn-code-book/1``, ``descriptor`` (what made the descriptors),
  ``threshold`` (the descriptor distance under which a crop counts as the same person).

Nothing is executed on load (safetensors); a file with missing or mis-shaped tensors is a CheckpointError.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
import torch

from guide_unlearn.errors import CheckpointError, GuideUnlearnError, InputError

logger = logging.getLogger(__name__)

CODE_BOOK_FILE = "code_book.safetensors"
MAX_THRESHOLD = 100.0  # descriptor distances of face recognisers are O(1); a larger threshold matches anyone
FORMAT = "guide-unlearn-code-book/1"
DLIB_DESCRIPTOR = "dlib_face_recognition_resnet_model_v1 on dlib150 chips cut from the crops"

Describe = Callable[[torch.Tensor], np.ndarray]  # crops [N, 3, R, R] in [-1, 1] -> descriptors [N, D]


class CodeBook:
    """Training codes [K, z_dim] with a descriptor [K, D] each; ``match`` finds the known code of a new crop.

    describe: crops [N, 3, R, R] in [-1, 1] -> descriptors [N, D] (np.ndarray), the same function that made
    ``descriptors``. threshold: Euclidean descriptor distance under which a crop matches (dlib: 0.6).
    """

    def __init__(self, codes: torch.Tensor, descriptors: np.ndarray, describe: Describe, threshold: float,
                 landmarks: Optional[np.ndarray] = None, descriptor: str = ""):
        codes = torch.as_tensor(codes, dtype=torch.float32)
        descriptors = np.asarray(descriptors, dtype=np.float64)
        if codes.ndim != 2 or descriptors.ndim != 2 or codes.shape[0] != descriptors.shape[0] or not len(codes):
            raise InputError(f"a code book needs codes [K, z_dim] and descriptors [K, D] with the same K >= 1, got "
                             f"{list(codes.shape)} and {list(descriptors.shape)}")
        if not (torch.isfinite(codes).all() and np.isfinite(descriptors).all()):
            raise InputError("code book codes and descriptors must be finite")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
                or not math.isfinite(threshold) or not 0 < threshold <= MAX_THRESHOLD:
            raise InputError(f"threshold must be a finite number in (0, {MAX_THRESHOLD}], got {threshold!r}")
        if landmarks is not None:
            landmarks = np.asarray(landmarks, dtype=np.float64)
            if landmarks.shape != (5, 2) or not np.isfinite(landmarks).all():
                raise InputError(f"landmarks must be 5 finite (x, y) points, got shape {list(landmarks.shape)}")
        self.codes, self.descriptors, self.describe = codes, descriptors, describe
        self.threshold = float(threshold)
        self.landmarks = landmarks
        self.descriptor = descriptor

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def z_dim(self) -> int:
        return int(self.codes.shape[1])

    def match(self, images: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """crops [N, 3, R, R] in [-1, 1] -> (index [N] long of the nearest known code, -1 where none is within
        ``threshold``; distance [N] float64 to the nearest known descriptor)."""
        desc = np.asarray(self.describe(images.detach().float().cpu()), dtype=np.float64)
        if desc.ndim != 2 or desc.shape != (images.shape[0], self.descriptors.shape[1]):
            raise InputError(f"describe returned {list(desc.shape)}, expected [{images.shape[0]}, "
                             f"{self.descriptors.shape[1]}]")
        dist = np.sqrt(((desc[:, None, :] - self.descriptors[None]) ** 2).sum(-1))  # [N, K]
        nearest, best = dist.argmin(1), dist.min(1)
        index = torch.from_numpy(np.where(best < self.threshold, nearest, -1)).long()
        return index, best

    def entries_near(self, images: torch.Tensor) -> list[int]:
        """crops [N, 3, R, R] in [-1, 1] -> the sorted indices of every entry whose descriptor lies within
        ``threshold`` of at least one crop's (all the entries a person's photos would match, not only the
        nearest)."""
        desc = np.asarray(self.describe(images.detach().float().cpu()), dtype=np.float64)
        if desc.ndim != 2 or desc.shape[1] != self.descriptors.shape[1]:
            raise InputError(f"describe returned {list(desc.shape)}, expected [N, {self.descriptors.shape[1]}]")
        dist = np.sqrt(((desc[:, None, :] - self.descriptors[None]) ** 2).sum(-1))  # [N, K]
        return sorted(int(k) for k in np.nonzero((dist < self.threshold).any(0))[0])

    def without(self, indices) -> "CodeBook":
        """A new book without the entries ``indices`` (the rest in their order, the same describe function and
        threshold); InputError for an index out of range or a book left empty."""
        drop = {int(i) for i in indices}
        if any(not 0 <= i < len(self) for i in drop):
            raise InputError(f"code book entries {sorted(drop)[:5]} are not all in [0, {len(self)})")
        keep = [i for i in range(len(self)) if i not in drop]
        if not keep:
            raise InputError("dropping these entries would leave the code book empty; use the inverter without one")
        return CodeBook(self.codes[keep], self.descriptors[keep], self.describe, self.threshold, self.landmarks,
                        self.descriptor)

    def save(self, path: Union[str, Path], overwrite: bool = False) -> Path:
        """Write the book to ``path`` (a .safetensors file) atomically; an existing file is replaced only with
        ``overwrite``. -> path."""
        from safetensors.torch import save

        from guide_unlearn.io import atomic_write_bytes

        tensors = {"codes": self.codes.contiguous(), "descriptors": torch.from_numpy(self.descriptors).float()}
        if self.landmarks is not None:
            tensors["landmarks"] = torch.from_numpy(self.landmarks).float()
        meta = {"format": FORMAT, "descriptor": self.descriptor, "threshold": repr(self.threshold)}
        atomic_write_bytes(Path(path), save(tensors, metadata=meta), overwrite=overwrite)
        return Path(path)

    @classmethod
    def load(cls, path: Union[str, Path], describe: Optional[Describe] = None) -> "CodeBook":
        """Read a code book. ``describe`` None: the dlib descriptor named in the file (needs dlib and its
        recogniser weights: BackendUnavailableError / CheckpointError otherwise). Raises CheckpointError for a
        file that is not a code book: not a regular file, tensors other than 2-d float codes / descriptors /
        landmarks [5, 2], non-finite values, a threshold that is not a finite number in (0, MAX_THRESHOLD]."""
        try:
            return cls._load(path, describe)
        except GuideUnlearnError:
            raise
        except (Exception, RecursionError) as exc:  # noqa: BLE001 - a malformed file, whatever broke
            raise CheckpointError(f"{path}: malformed code book ({type(exc).__name__}: {str(exc)[:200]})") from None

    @classmethod
    def _load(cls, path: Union[str, Path], describe: Optional[Describe] = None) -> "CodeBook":
        from guide_unlearn.gate import load_safetensors, safetensors_header

        path = Path(path)
        if not (path.exists() or path.is_symlink()):
            raise CheckpointError(f"{path}: no such code book file")
        # through the reading gate: a regular file inside the folder it sits in, bounded header checked first
        _, shapes, _ = safetensors_header(path, "code-book", root=path.parent)
        if set(shapes) - {"codes", "descriptors", "landmarks"}:
            raise CheckpointError(f"{path}: unexpected tensors {sorted(shapes)[:4]} in a code book")
        if any(len(shape) != 2 for _, shape in shapes.values()):
            raise CheckpointError(f"{path}: code book tensors must be 2-d, got "
                                  f"{ {k: list(v) for k, (_, v) in shapes.items()} }")
        tensors, meta = load_safetensors(path, "code-book", root=path.parent)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path}: format {str(meta.get('format'))[:60]!r} is not {FORMAT!r}; rebuild it "
                                  "with the recipe that trained the model")
        if any(not t.is_floating_point() for t in tensors.values()):
            raise CheckpointError(f"{path}: code book tensors must be floating point")
        try:
            threshold = float(meta["threshold"])
            codes, descriptors = tensors["codes"], tensors["descriptors"].double().numpy()
        except (KeyError, ValueError) as exc:
            raise CheckpointError(f"{path}: the code book lacks {str(exc)[:80]} (or it is not a number); rebuild it "
                                  "with the model's recipe") from None
        landmarks = tensors["landmarks"].double().numpy() if "landmarks" in tensors else None
        if describe is None:
            if meta.get("descriptor") != DLIB_DESCRIPTOR or landmarks is None or landmarks.shape != (5, 2):
                raise CheckpointError(f"{path}: descriptor {meta.get('descriptor')!r} has no built-in describe "
                                      "function; pass describe=")
            describe = dlib_crop_describer(landmarks)
        try:
            return cls(codes, descriptors, describe, threshold, landmarks, meta.get("descriptor", ""))
        except InputError as exc:
            raise CheckpointError(f"{path}: {exc}") from None


def dlib_crop_describer(landmarks: np.ndarray, weights=None) -> Describe:
    """A describe function: crops [N, 3, R, R] in [-1, 1] whose faces have ``landmarks`` [5, 2] (crop pixels) ->
    raw dlib descriptors [N, 128]. Loads dlib's recogniser now (BackendUnavailableError / CheckpointError when
    dlib or its weights are missing)."""
    from guide_unlearn.adapters.identity.dlib_metric import DlibIdentity, crop_chips

    dlib = DlibIdentity(weights)
    lms = np.asarray(landmarks, dtype=np.float64)

    def describe(images: torch.Tensor) -> np.ndarray:
        return dlib.descriptors(crop_chips(images, lms))

    return describe
