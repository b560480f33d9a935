"""Choosing a same-person cut on real photos: the cut at a fixed false-accept rate over pairs of different people,
measured where the audit measures — a rendering at the generator's resolution against a full-resolution photo.

A published cut (dlib: Euclidean 0.6) was chosen for full-resolution photos. The audit compares a 64-px rendering,
upsampled to a dlib150 chip at its landmarks, with a photo's full-resolution chip: the same person at 64 px is
further from their photo than at full resolution, so the published cut may call them someone else.
:func:`calibrate_same_person_rule` describes each photo's aligned crop at the audit's resolution exactly as the
audit describes a rendering, scores it against every OTHER person's full-resolution photo, and puts the cut where
only ``far`` of those pairs would be called the same person. It reports the published cut beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from guide_unlearn import metrics as M
from guide_unlearn.errors import InputError

from .judges import Judge
from .photos import PhotoSet, PhotoSpec, landmarks_of, load_photos
from .rule import SamePersonRule


@dataclass
class Calibration:
    """A calibrated same-person rule and the figures it was chosen from.

    rule:        the calibrated rule (its ``details`` hold the figures below).
    published:   the judge's own (published) rule, for comparison.
    far:         the false-accept rate the cut was chosen for.
    resolution:  the probes' resolution in pixels (the generator's; None: full-resolution photos).
    people, photos, impostor_pairs, genuine_pairs: what was measured (ordered probe -> photo pairs; a genuine pair
                 is a photo of the same person other than the probe's own photo).
    rates:       {"calibrated" | "published": {"false_accept", "same_photo_accept", "same_person_accept"}}:
                 impostor pairs called the same person; each photo's probe recognised as its own photo; genuine
                 pairs recognised (NaN without any).
    closest:     the 5 impostor pairs with the most similar scores (probe, photo, score): check that they really
                 are different people.
    """

    rule: SamePersonRule
    published: SamePersonRule
    far: float
    resolution: Optional[int]
    people: int
    photos: int
    impostor_pairs: int
    genuine_pairs: int
    rates: dict[str, dict[str, float]]
    closest: list[tuple[str, str, float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {"rule": self.rule.to_dict(), "published": self.published.to_dict(), "far": self.far,
                "resolution": self.resolution, "people": self.people, "photos": self.photos,
                "impostor_pairs": self.impostor_pairs, "genuine_pairs": self.genuine_pairs, "rates": self.rates,
                "closest_impostors": [list(c) for c in self.closest]}


def cut_at_false_accept_rate(impostor: np.ndarray, far: float, metric: str) -> float:
    """The loosest cut that calls at most ``far`` of the impostor scores [P] "same person" (Euclidean: same when
    < cut; cosine: same when >= cut)."""
    s = np.sort(np.asarray(impostor, np.float64)[np.isfinite(impostor)])
    if s.size == 0 or not 0.0 <= far < 1.0:
        raise InputError(f"a cut needs impostor scores and 0 <= far < 1 (got {s.size} scores, far={far})")
    k = int(np.floor(far * s.size))  # at most k impostor pairs may pass
    if metric == "euclidean":
        return float(s[k])  # d < s[k] admits at most the k smallest distances
    return float(np.nextafter(s[::-1][k], np.inf))  # cos >= just above the (k+1)-th largest admits at most k


def pair_scores(probes: np.ndarray, photos: np.ndarray, metric: str) -> np.ndarray:
    """Score of every probe [N, D] against every photo [N, D] -> [N, N] (Euclidean distance or cosine)."""
    if metric == "cosine":
        return M.cosine_matrix(probes, photos)
    a, b = np.asarray(probes, np.float64), np.asarray(photos, np.float64)
    return np.sqrt(np.maximum(((a[:, None, :] - b[None]) ** 2).sum(-1), 0.0))


def calibrate_same_person_rule(judge: Judge, photos: Union[PhotoSpec, PhotoSet], far: float = 0.01, full_resolution: bool = False
                               ) -> Calibration:
    """The judge's rule with its cut moved to false-accept rate ``far`` over pairs of different people.

    judge:      a judge that aligns photos itself (offline-v1's DlibJudge); ``judge.resolution`` is the size of
                the renderings the audit judges (the generator's).
    photos:     photos of several people ({person: [photos]}, a folder with one sub-folder per person or one
                photo per file, or a list where each photo is its own person), or a PhotoSet the judge prepared;
                photos without a face are skipped.
    full_resolution: False (default): describe each probe as the audit describes a rendering (the photo's aligned
                crop at ``judge.resolution``, chips cut at its landmarks); True: compare full-resolution photos.
    -> :class:`Calibration` (pairs: every probe against every other person's full-resolution photo).
    """
    found = photos if isinstance(photos, PhotoSet) else load_photos(photos, "calibration", judge, None)
    people = [p.person for p in found.photos]
    if len(set(people)) < 2:
        raise InputError(f"calibration needs photos of at least 2 people with a face; got {len(set(people))}")
    full = found.descriptors
    probes = full if full_resolution else judge.describe(found.crops, landmarks_of(found.photos))
    resolution = None if full_resolution else int(found.crops.shape[-1])
    label = np.array(people)
    different = label[:, None] != label[None, :]
    same_person = ~different & ~np.eye(len(label), dtype=bool)
    rule0 = getattr(judge, "published", None) or judge.same_person  # the network's own cut, not a calibration
    scores = pair_scores(probes, full, rule0.metric)
    cut = cut_at_false_accept_rate(scores[different], far, rule0.metric)
    cos_cut = cut_at_false_accept_rate(pair_scores(probes, full, "cosine")[different], far, "cosine")
    rates = {}
    for name, c in (("calibrated", cut), ("published", rule0.cut)):
        same = M.recognised(scores, c, rule0.metric)
        rates[name] = {"false_accept": float(same[different].mean()), "same_photo_accept": float(np.diag(same).mean()),
                       "same_person_accept": float(same[same_person].mean()) if same_person.any() else float("nan")}
    order = np.argsort(scores[different] if rule0.metric == "euclidean" else -scores[different])[:5]
    rows, cols = np.nonzero(different)
    closest = [(found.photos[rows[i]].label, found.photos[cols[i]].label, float(scores[rows[i], cols[i]]))
               for i in order]
    where = "full-resolution photos" if resolution is None else f"{resolution}-px probes vs full-resolution photos"
    how = (f"calibrated: false-accept rate {far:g} over {int(different.sum())} ordered pairs of different people "
           f"({len(set(people))} people, {len(label)} photos; {where})")
    rule = SamePersonRule(rule0.network, rule0.metric, cut, how, None if rule0.metric == "cosine" else cos_cut,
                          {"published_cut": rule0.cut, "rates": rates})
    return Calibration(rule, rule0, far, resolution, len(set(people)), len(label), int(different.sum()),
                       int(same_person.sum()), rates, closest)
