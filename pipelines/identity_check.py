"""The erase's identity check: the audit's identity judge bound to one erase request, so that the erase verdict
and the target check ask "is this the person?" exactly as the audit does (the same network, the same photo
handling, the same :class:`~guide_unlearn.pipelines.audit.SamePersonRule` object: the judge's ``same_person``).

:class:`RequestJudge` implements the core's :class:`~guide_unlearn.protocols.PersonJudge`; the core receives it
from :meth:`IdentityEraser.erase` and never imports it. :func:`identity_verdict` turns the renderings of the
request codes before and after the patch into the verdict's ``identity`` part.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from guide_unlearn.errors import BackendUnavailableError, GuideUnlearnError
from guide_unlearn.protocols import Recognition

DEFAULT_JUDGE = "offline-v1"  # the audit protocol whose judge checks an erase unless the eraser says otherwise


RETRIES = 2
"""An erase whose patched rendering the judge still recognises runs again, at most this many times, each time with
the UFO distance 1.25x as far (:func:`farther`; the patch's ``erase_config`` records the distance that ran and
``identity_retries`` how many runs came before). The pixels follow the target more closely than the identity does
(demo-faces: a person 96 % of the way to the target in pixel MSE was still recognised); a farther target leaves
room. The verdict of the last run stands, recognised or not."""


def farther(config, generator):
    """``config`` with its UFO distance 1.25x as far (``targets.TARGET_FARTHER``; the backend's default distance
    when the config leaves it to the backend)."""
    from guide_unlearn.targets import TARGET_FARTHER

    d = config.target_distance if config.target_distance is not None else generator.default_target_distance()[0]
    return config.replace(target_distance=float(d) * TARGET_FARTHER)


class _Default:
    def __repr__(self) -> str:
        return "<the eraser's identity_judge>"


DEFAULT = _Default()  # erase(judge=DEFAULT): use ``eraser.identity_judge``


class RequestJudge:
    """The audit judge of ``protocol`` bound to the rows of one erase request.

    judge:      the audit's judge (describe / faces / best, and its ``same_person`` rule).
    references: per request row, the identity vectors [M_i, D] of that row's person: their photos and the source
                model's renderings of their codes (only those when no photo was given).
    landmarks:  [K, 5, 2] face landmarks of each row's photo in rendering pixels (2D models: renderings are cut
                there, as the audit cuts them), or None (the judge finds the face).
    views:      [V, c_dim] cameras of the protocol's views (camera models), or None.
    reference:  what the references are, in words (recorded in the verdict).
    """

    def __init__(self, eraser, judge, references: Sequence[np.ndarray], landmarks: Optional[np.ndarray],
                 views: Optional[torch.Tensor], reference: str):
        self.eraser, self.judge = eraser, judge
        self.name = judge.name
        self.rule = judge.same_person
        self.references = [np.asarray(r, np.float64) for r in references]
        self.landmarks, self.views, self.reference = landmarks, views, reference

    def render(self, ws: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, Optional[np.ndarray], int]:
        """-> (renderings [N·V, 3, H, W] as the audit renders them, their landmarks or None, V)."""
        from .audit.rendering import render

        rows = rows.long().cpu()
        if self.views is None:
            lms = None if self.landmarks is None else self.landmarks[rows.numpy()]
            return render(self.eraser, ws, None), lms, 1
        v = self.views.shape[0]
        cams = self.views.cpu().repeat(ws.shape[0], 1)
        return render(self.eraser, ws.repeat_interleave(v, 0), cams), None, v

    @torch.no_grad()
    def recognise(self, ws: torch.Tensor, rows: torch.Tensor) -> Recognition:
        """codes ws [N, num_ws, w_dim] of request rows ``rows`` [N] -> Recognition (see PersonJudge)."""
        imgs, lms, v = self.render(ws, rows)
        desc = self.judge.describe(imgs, lms)
        face = self.judge.faces(imgs)
        desc[~face] = np.nan
        refs = np.concatenate(self.references)
        starts = np.cumsum([0] + [len(r) for r in self.references])
        groups = [list(range(starts[r], starts[r + 1])) for r in rows.tolist() for _ in range(v)]
        score, cos = self.judge.best(desc, refs, groups)
        same = self.rule.same(score).reshape(-1, v)
        score, cos, face = score.reshape(-1, v), cos.reshape(-1, v), face.reshape(-1, v)
        pick = np.nanmin if self.rule.metric == "euclidean" else np.nanmax
        closest = np.array([pick(s) if np.isfinite(s).any() else np.nan for s in score])
        best_cos = np.array([np.nanmax(c) if np.isfinite(c).any() else np.nan for c in cos])
        return Recognition(torch.from_numpy(closest), torch.from_numpy(best_cos), torch.from_numpy(face.any(1)),
                           torch.from_numpy(same.any(1)), v)


def judge_for(eraser, protocol: Optional[str]):
    """The audit judge of ``protocol`` for this eraser, built once per eraser and protocol; (None, why) when none
    can run. -> (judge or None, reason or None)."""
    if protocol is None:
        return None, "no identity judge was asked for (judge=None)"
    cache = eraser.__dict__.setdefault("_identity_judges", {})
    if protocol not in cache:
        from .audit import get_protocol, make_judge

        try:
            cache[protocol] = (make_judge(get_protocol(protocol), eraser), None)
        except (BackendUnavailableError, ImportError, OSError) as exc:
            cache[protocol] = (None, f"the {protocol} identity judge cannot run here ({exc}); install the 'faces' "
                                     "extra and its weights (docs/faces.md) to check identity")
    return cache[protocol]


def bind(eraser, spec: Any, inputs: Any, w_u: torch.Tensor, person_of: Optional[torch.Tensor] = None,
         face: Any = None):
    """The identity judge of one erase request from ``spec``: an audit protocol name ("offline-v1": dlib, the
    default; "paper-v1"; "toy-v1"), a callable ``(eraser, inputs, w_u, person_of) -> PersonJudge`` (tests, other
    networks), None (identity not checked), or DEFAULT (``eraser.identity_judge``). Where a judge runs, each target
    must be someone else for it (moved if not; TargetError before training) and the verdict fails while it still
    recognises the person after the patch; where none runs, the verdict says identity was not checked.
    -> (PersonJudge, None), or (None, why identity cannot be checked)."""
    from guide_unlearn.errors import ConfigError
    from guide_unlearn.protocols import PersonJudge

    if spec is DEFAULT:
        spec = getattr(eraser, "identity_judge", DEFAULT_JUDGE)
    if spec is None or isinstance(spec, str):
        return request_judge(eraser, inputs, w_u, person_of, protocol=spec, face=face)
    if callable(spec):
        judge = spec(eraser, inputs, w_u, person_of)
        if judge is not None and not isinstance(judge, PersonJudge):
            raise ConfigError(f"the judge factory returned {type(judge).__name__}, not a PersonJudge (name, rule, "
                              "recognise(ws, rows))")
        return (judge, None) if judge is not None else (None, "the judge factory returned no judge")
    raise ConfigError(f"judge must be an audit protocol name (e.g. 'offline-v1'), a callable (eraser, inputs, w_u, "
                      f"person_of) -> PersonJudge, or None; got {type(spec).__name__}")


def photo_items(inputs: Any) -> Optional[list]:
    """The request as a list of photo paths / PIL images, or None when it is tensors or codes."""
    if isinstance(inputs, (str, os.PathLike, Image.Image)):
        return [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, (str, os.PathLike, Image.Image))
                                                             for x in inputs):
        return list(inputs)
    return None


def request_judge(eraser, inputs: Any, w_u: torch.Tensor, person_of: Optional[torch.Tensor] = None,
                  protocol: Optional[str] = DEFAULT_JUDGE, face: Any = None):
    """Bind the judge of ``protocol`` to an erase request. inputs: what ``erase`` was given (photos, tensors or
    codes); w_u [K, num_ws, w_dim] their codes; person_of [K] which person each row is (None: one person).
    -> (RequestJudge, None), or (None, why identity cannot be checked)."""
    judge, why = judge_for(eraser, protocol)
    if judge is None:
        return None, why
    k = w_u.shape[0]
    person = torch.zeros(k, dtype=torch.long) if person_of is None else person_of.long().cpu()
    from .audit import get_protocol

    views = eraser.generator.evaluation_cameras(get_protocol(protocol).views) if eraser.generator.c_dim else None
    items = photo_items(inputs) if face is None else None  # a chosen face: the judge might pick another one
    photos = None
    if items is not None and len(items) == k:
        from .audit import photo_items as audit_items
        from .audit import prepare_photos

        try:
            photos = prepare_photos(audit_items(items, "request"), "request", judge, eraser, []).photos
        except GuideUnlearnError:
            photos = None
        if photos is not None and len(photos) != k:
            photos = None
    lms, photo_desc = None, None
    if photos is not None:
        photo_desc = np.stack([p.descriptor for p in photos])
        lms = None if photos[0].landmarks is None or views is not None else np.stack([p.landmarks for p in photos])
    # The source model's own rendering of the code is the person too (as the audit's ``id`` compares them): a patched
    # rendering still recognised as it has not stopped being that person, whatever the photo says.
    probe = RequestJudge(eraser, judge, [np.zeros((0, 1))] * k, lms, views, "")
    imgs, cut_at, v = probe.render(w_u, torch.arange(k))
    src = judge.describe(imgs, cut_at)
    src[~judge.faces(imgs)] = np.nan
    src = src.reshape(k, v, -1)
    refs = []
    for i in range(k):
        mine = (person == person[i]).numpy()
        rows = [d[np.isfinite(d).all(1)] for d in src[mine]]
        if photo_desc is not None:
            rows.insert(0, photo_desc[mine])
        refs.append(np.concatenate(rows))
    if photos is None and any(len(r) == 0 for r in refs):
        return None, (f"the {protocol} judge finds no face in the source model's rendering of the request code(s) "
                      "and no photo was given to compare with: identity cannot be judged on this model")
    reference = "the request photos and the source model's rendering" if photos is not None else \
        "the source model's rendering (no photo given)"
    return RequestJudge(eraser, judge, refs, lms, views, reference), None


def _rows(rec: Recognition, idx: torch.Tensor) -> Recognition:
    return Recognition(rec.score[idx], rec.cosine[idx], rec.face[idx], rec.recognised[idx], rec.views)


@torch.no_grad()
def check_request(generator, patch, w_u: torch.Tensor, judge: Optional[RequestJudge], no_judge: Optional[str],
                  groups: Optional[Sequence[torch.Tensor]] = None) -> list[dict[str, Any]]:
    """The verdicts' identity parts after a run: the judge's Recognition of the request codes w_u [K, num_ws,
    w_dim] through G_s and through G_u (``patch`` applied while rendering), one :func:`identity_verdict` per group
    of rows (``groups``: long index tensors, one per person; None: all rows are one person)."""
    from guide_unlearn import patching

    groups = [torch.arange(w_u.shape[0])] if groups is None else list(groups)
    if judge is None:
        return [identity_verdict(None, no_judge, None, None) for _ in groups]
    rows = torch.arange(w_u.shape[0])
    before = judge.recognise(w_u, rows)
    with patching.applied_temporarily(generator, patch):
        after = judge.recognise(w_u, rows)
    return [identity_verdict(judge, None, _rows(before, g), _rows(after, g)) for g in groups]


def identity_verdict(judge: Optional[RequestJudge], why: Optional[str], before: Optional[Recognition],
                     after: Optional[Recognition]) -> dict[str, Any]:
    """The verdict's identity part from the request codes' Recognition under G_s (``before``) and G_u (``after``).
    -> {'checked', 'recognised', 'recognised_before', 'judge', 'rule', 'cut', 'metric', 'score', 'similarity',
    'views', 'reference', 'reason'} ('recognised' None when not checked)."""
    if judge is None or before is None or after is None:
        return {"checked": False, "recognised": None, "judge": None, "reason": why or "no identity judge"}
    rule = judge.rule
    out = {"judge": judge.name, "rule": f"{rule.metric} {'<' if rule.metric == 'euclidean' else '>='} {rule.cut:g}",
           "metric": rule.metric, "cut": rule.cut,
           "reference": getattr(judge, "reference", None), "views": after.views, "reason": None}
    if not bool(before.face.any()):
        return {**out, "checked": False, "recognised": None,
                "reason": "the judge finds no face in the source model's rendering of the request code(s): identity "
                          "cannot be judged on this model"}
    pick = torch.argmin if rule.metric == "euclidean" else torch.argmax
    scores = torch.nan_to_num(after.score, nan=float("inf") if rule.metric == "euclidean" else -float("inf"))
    i = int(pick(scores))
    return {**out, "checked": True, "recognised": bool(after.recognised.any()),
            "recognised_before": bool(before.recognised.any()),
            "score": _num(after.score[i]), "similarity": _num(after.cosine[i]), "face": bool(after.face[i]),
            "score_before": _num(before.score[i]), "similarity_before": _num(before.cosine[i])}


def _num(x) -> Optional[float]:
    x = float(x)
    return round(x, 4) if x == x else None
