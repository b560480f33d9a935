"""The same-person rule: which identity network judges, on which score, where the cut is, and how that cut was
chosen. One object, so that the audit (and, later, the erase verdict) say "recognised" by the same rule and a
report can show it. A leaf module.

>>> rule = SamePersonRule("dlib_face_recognition_resnet_model_v1", "euclidean", 0.6, "dlib's published threshold")
>>> rule.same(np.array([0.41, 0.72, np.nan]))
array([ True, False, False])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from guide_unlearn import metrics as M
from guide_unlearn.errors import ConfigError

METRICS = ("euclidean", "cosine")


@dataclass(frozen=True)
class SamePersonRule:
    """Two identity vectors show the same person when their score passes the cut.

    network:    the identity network the vectors come from (the judge's name).
    metric:     "euclidean" (same when the distance between raw vectors is < cut) or "cosine" (same when the
                cosine is >= cut).
    cut:        the threshold on that score.
    how_chosen: where the cut comes from (a published value, or a calibration: data, false-accept rate, pairs).
    cosine_cut: the equivalent cut on the cosine of L2-normalised vectors (how ``id`` / ``id_others`` read), or
                None when the rule is already a cosine rule.
    details:    the calibration's numbers (pairs, rates, the published cut beside it), when calibrated.
    """

    network: str
    metric: str
    cut: float
    how_chosen: str
    cosine_cut: Optional[float] = None
    details: Optional[dict[str, Any]] = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ConfigError(f"a same-person rule's metric is one of {METRICS}, got {self.metric!r}")
        if not np.isfinite(self.cut):
            raise ConfigError(f"a same-person rule needs a finite cut, got {self.cut!r}")

    def best(self, rendered: np.ndarray, refs: np.ndarray, groups: Optional[list[list[int]]] = None) -> np.ndarray:
        """rendered [N, D] against refs [M, D] (per row, the reference rows ``groups`` allows; None: all) -> the
        best score under this rule [N] (lowest distance or highest cosine; NaN rows give NaN)."""
        return M.best_match(rendered, refs, groups, self.metric)

    def same(self, scores: np.ndarray) -> np.ndarray:
        """Best scores [N] -> bool [N]: recognised as the same person (NaN, i.e. no face, never is)."""
        return M.recognised(scores, self.cut, self.metric)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (for reports and patch metadata)."""
        out = {"network": self.network, "metric": self.metric, "cut": self.cut, "how_chosen": self.how_chosen,
               "cosine_cut": self.cosine_cut}
        if self.details:
            out["details"] = dict(self.details)
        return out
