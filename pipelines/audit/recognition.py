"""Recognition before and after: render codes through G_s and through G_u (the audited patch applied with
``patching.applied_temporarily``) and match the renderings against reference identity vectors."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import torch

from guide_unlearn import patching

from .families import AuditContext
from .judges import Match
from .photos import Photo, cameras_of, landmarks_of
from .rendering import render

Codes = Union[torch.Tensor, Callable[[], torch.Tensor]]


@dataclass
class BeforeAfter:
    """The same photos' renderings matched through G_s ("before") and G_u ("after").

    before, after: the :class:`Match` of each; images_before, images_after: the renderings [N, 3, H, W] (None when
    not kept)."""

    before: Match
    after: Match
    images_before: Optional[torch.Tensor]
    images_after: Optional[torch.Tensor]

    def rows(self, photos: Sequence[Photo]) -> list[dict[str, Any]]:
        """Per photo: its label and, before and after, the score, cosine, recognised and face flags."""
        rows = []
        for i, p in enumerate(photos):
            row: dict[str, Any] = {"photo": p.label}
            for when, m in (("before", self.before), ("after", self.after)):
                row.update({f"score_{when}": m.score[i], f"cosine_{when}": m.cosine[i],
                            f"recognised_{when}": bool(m.recognised[i]), f"face_{when}": bool(m.face[i])})
            rows.append(row)
        return rows


def before_and_after(ctx: AuditContext, codes: Codes, photos: Sequence[Photo], refs: np.ndarray,
                     groups: Optional[list[list[int]]], images: bool = True) -> BeforeAfter:
    """Render ``codes`` (ws [N, num_ws, w_dim], or a callable that finds them through the generator as it is when
    called: an attack) with each photo's camera through G_s, then G_u, and match each rendering against ``refs``
    [M, D] (per row, the rows ``groups`` allows). ``images`` False: no face check and no renderings kept (for
    the histograms)."""
    matches, kept = [], []
    for after in (False, True):
        applied = patching.applied_temporarily(ctx.eraser.generator, ctx.patch) if after else contextlib.nullcontext()
        with applied:
            ws = codes() if callable(codes) else codes
            imgs = render(ctx.eraser, ws, cameras_of(photos))
        matches.append(ctx.judge.match(imgs, landmarks_of(photos), refs, groups, check_faces=images))
        kept.append(imgs if images else None)
    return BeforeAfter(matches[0], matches[1], kept[0], kept[1])


def nanmean(x: np.ndarray) -> float:
    """Mean of the finite entries; NaN when there is none."""
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")
