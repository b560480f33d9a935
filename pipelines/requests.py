"""Several people in one run and one patch: the request handling behind :meth:`IdentityEraser.erase_many`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, Union

import torch

from guide_unlearn.config import EraseConfig
from guide_unlearn.engine import run_erase
from guide_unlearn.errors import GuideUnlearnError, InputError
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.pipelines import photos
from guide_unlearn.pipelines.components import provenance
from guide_unlearn.pipelines.measure import people_target_similarity
from guide_unlearn.pipelines.photos import Inputs

if TYPE_CHECKING:
    from guide_unlearn.pipelines.eraser import IdentityEraser

Requests = Union[Mapping[str, Inputs], Sequence[tuple[str, Inputs]]]


@dataclass
class ManyErasureResult:
    """What :meth:`IdentityEraser.erase_many` returns.

    patch:          ONE ForgetPatch erasing every person (not applied); its metadata lists the request ids and
                    each person's final losses under ``"requests"``.
    request_ids:    the P request ids, in the order of the run.
    w_source:       request id -> that person's codes [K_i, num_ws, w_dim] (memory only; never in the patch).
    w_target:       request id -> their UFO targets [K_i, num_ws, w_dim] (memory only).
    final_losses:   request id -> L_local terms at that person's last visit.
    target_similarity: how alike the people's targets are: 'latent_cosine_max/mean' (target directions) and,
                    with an identity model, 'identity_cosine_max/mean' (its embeddings of G_s(w_t)); the same
                    figures for plain per-person UFO targets under 'ufo_*' keys, for comparison.
    history, seconds: as :class:`ErasureResult`.
    """

    patch: ForgetPatch
    request_ids: list[str]
    w_source: dict[str, torch.Tensor]
    w_target: dict[str, torch.Tensor]
    final_losses: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    seconds: float = 0.0
    target_similarity: dict[str, float] = field(default_factory=dict)


def erase_many(eraser: "IdentityEraser", requests: Requests, config: Optional[EraseConfig] = None,
               camera: Optional[torch.Tensor] = None, measure: bool = True,
               keep_erased: Optional[Inputs] = None) -> ManyErasureResult:
    """The body of :meth:`IdentityEraser.erase_many` (see there); ``keep_erased``: the photos or codes of
    people erased by the applied patches (photos or codes, as in :meth:`IdentityEraser.erase`)."""
    items = request_items(requests)
    if config is None:
        config = eraser.default_config()
        visits = math.ceil(config.iterations * len(items) / (2 * min(config.persons_per_step, len(items))))
        config = config.replace(iterations=max(config.iterations, visits))
    codes, person_of = [], []
    for p, (rid, inputs) in enumerate(items):
        try:
            photos.check_not_empty(inputs)
            w, _, _ = photos.codes(eraser, inputs, camera)
        except GuideUnlearnError as e:
            raise type(e)(f"request {rid!r}: {e}") from e
        codes.append(w)
        person_of += [p] * w.shape[0]
    ids = [rid for rid, _ in items]
    w_u = torch.cat(codes)
    person = torch.tensor(person_of, dtype=torch.long)
    keep = photos.keep_codes(eraser, keep_erased, camera)
    run = run_erase(eraser.generator, w_u, config, eraser.perceptual, eraser.identity_model,
                    extra_metadata=provenance(eraser.name), person_of=person, person_ids=ids, keep=keep)
    split = [c.shape[0] for c in codes]
    losses = {r["request_id"]: r["final_losses"] for r in run.patch.metadata["requests"]}
    similarity = people_target_similarity(eraser, w_u, run.w_target, person, config) if measure else {}
    return ManyErasureResult(patch=run.patch, request_ids=ids, w_source=dict(zip(ids, torch.split(w_u, split))),
                             w_target=dict(zip(ids, torch.split(run.w_target, split))), final_losses=losses,
                             history=run.history, seconds=run.seconds, target_similarity=similarity)


def request_items(requests: Requests) -> list[tuple[str, Inputs]]:
    """Validate erase_many's requests -> [(request id, inputs)] in the given order."""
    if isinstance(requests, Mapping):
        items = list(requests.items())
    elif isinstance(requests, (list, tuple)) and all(isinstance(r, (list, tuple)) and len(r) == 2 for r in requests):
        items = [tuple(r) for r in requests]
    else:
        raise InputError("requests must map request id -> photos or codes (a dict), or be a list of (id, inputs) "
                         "pairs")
    if not items:
        raise InputError("no requests given; pass at least one request id -> photos or codes")
    seen: set[str] = set()
    for rid, _ in items:
        if not isinstance(rid, str) or not rid.strip():
            raise InputError(f"request ids must be non-empty strings, got {rid!r}")
        if rid in seen:
            raise InputError(f"request id {rid!r} appears twice; give each request its own id (merge the photos of "
                             "one person into one request)")
        seen.add(rid)
    return items
