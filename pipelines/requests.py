"""One erase request from inputs to result, for one person (:meth:`IdentityEraser.erase`) or several in one patch
(:meth:`IdentityEraser.erase_many`): what the method supports is checked before any work, photos become codes,
the services a method declares are built, the one loop runs, and the patch is measured and judged."""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from guide_unlearn.config import EraseConfig, RunOptions
from guide_unlearn.engine import run_erase
from guide_unlearn.errors import ConfigError, GuideUnlearnError, InputError, TargetError
from guide_unlearn.methods import check_supported, get_method
from guide_unlearn.methods.robust import RobustServices
from guide_unlearn.outputs import ErasureResult, ManyErasureResult
from guide_unlearn.pipelines import identity_check, measure, photos
from guide_unlearn.pipelines.components import EraserParts, provenance
from guide_unlearn.pipelines.photos import Inputs

logger = logging.getLogger("guide_unlearn.pipelines.eraser")
Requests = Union[Mapping[str, Inputs], Sequence[tuple[str, Inputs]]]


def erase_one(eraser: EraserParts, inputs: Inputs, config: EraseConfig, run: RunOptions,
              camera: Optional[torch.Tensor] = None, measure_it: bool = True, face: photos.Faces = None,
              keep_erased: Optional[Inputs] = None, judge: Any = identity_check.DEFAULT) -> ErasureResult:
    """The body of :meth:`IdentityEraser.erase` once its settings are resolved (see there); ``judge``: who checks
    identity (:func:`guide_unlearn.pipelines.identity_check.bind`)."""
    check_supported(config.method, people=1, keep=keep_erased is not None)
    w_u, images, cams = photos.codes(eraser, inputs, camera, face, progress=run.progress)
    keep = photos.keep_codes(eraser, keep_erased, camera)
    person_judge, no_judge = identity_check.bind(eraser, judge, inputs, w_u, face=face)
    services = method_services(eraser, config, w_u, images, cams)
    retries = identity_check.RETRIES if person_judge is not None and measure_it else 0
    for retry in range(retries + 1):  # while the judge still recognises the person: again, with a farther target
        try:
            done = run_erase(eraser.generator, w_u, config, eraser.perceptual, eraser.identity_model, keep=keep,
                             services=services, run=run, judge=person_judge,
                             extra_metadata={**provenance(eraser.name), **({"identity_retries": retry} if retry else {})})
        except TargetError:
            if retry == 0:
                raise
            break  # no farther target is someone else: the last erase stands, and its verdict says it failed
        done_config = config
        identity = (identity_check.check_request(eraser.generator, done.patch, w_u, person_judge, no_judge)[0]
                    if measure_it else None)
        if identity is not None:
            identity["retries"] = retry
        if not (identity and identity.get("recognised")):
            break
        config = identity_check.farther(config, eraser.generator)
    result = measure.erasure_result(eraser.generator, done, w_u, measure_it, images, cams, done_config, identity)
    if result.succeeded is False:
        logger.warning("the erase did not succeed: %s", "; ".join(result.verdict.problems))
    return result


def erase_many(eraser: EraserParts, requests: Requests, config: EraseConfig, run: RunOptions,
               camera: Optional[torch.Tensor] = None, measure_it: bool = True,
               keep_erased: Optional[Inputs] = None, raise_iterations: bool = False,
               judge: Any = identity_check.DEFAULT) -> ManyErasureResult:
    """The body of :meth:`IdentityEraser.erase_many` once its settings are resolved (see there); ``judge`` as in
    :func:`erase_one`, bound to every person's rows.
    ``raise_iterations``: raise ``config.iterations`` so that every person is visited at least half as often as a
    single erase visits its person (for a config the caller did not give iterations for)."""
    items = request_items(requests)
    check_supported(config.method, people=max(2, len(items)), keep=keep_erased is not None)
    if raise_iterations:
        per_step = min(getattr(config.method_config, "persons_per_step", len(items)), len(items))
        visits = math.ceil(config.iterations * len(items) / (2 * per_step))
        config = config.replace(iterations=max(config.iterations, visits))
    codes, images, cams, person_of = [], [], [], []
    for p, (rid, inputs) in enumerate(items):
        try:
            photos.check_not_empty(inputs)
            w, im, cam = photos.codes(eraser, inputs, camera, progress=run.progress)
        except GuideUnlearnError as e:
            raise type(e)(f"request {rid!r}: {e}") from e
        codes.append(w), images.append(im), cams.append(cam)
        person_of += [p] * w.shape[0]
    ids = [rid for rid, _ in items]
    w_u, person = torch.cat(codes), torch.tensor(person_of, dtype=torch.long)
    keep = photos.keep_codes(eraser, keep_erased, camera)
    person_judge, no_judge = identity_check.bind(eraser, judge, _flat_photos(items), w_u, person_of=person)
    services = method_services(eraser, config, w_u, None, None)
    done = run_erase(eraser.generator, w_u, config, eraser.perceptual, eraser.identity_model, person_of=person,
                     person_ids=ids, keep=keep, services=services, run=run, extra_metadata=provenance(eraser.name),
                     judge=person_judge)
    groups = [torch.nonzero(person == p).flatten() for p in range(len(ids))]
    identities = (identity_check.check_request(eraser.generator, done.patch, w_u, person_judge, no_judge, groups)
                  if measure_it else None)
    metrics, verdicts = measure.people_figures(eraser.generator, done, codes, images, cams, config, measure_it,
                                               identities)
    similarity = (measure.people_target_similarity(eraser.generator, eraser.identity_model, w_u, done.w_target,
                                                   person, config) if measure_it else {})
    failed = [rid for rid, v in zip(ids, verdicts) if v.succeeded is False]
    if failed:
        logger.warning("the erase did not succeed for %d of %d people: %s", len(failed), len(ids),
                       "; ".join(f"{rid}: {' '.join(verdicts[ids.index(rid)].problems)}" for rid in failed))
    split = [c.shape[0] for c in codes]
    return ManyErasureResult(
        patch=done.patch, request_ids=ids, w_source=dict(zip(ids, codes)),
        w_target=dict(zip(ids, torch.split(done.w_target, split))),
        final_losses={r["request_id"]: r["final_losses"] for r in done.patch.metadata["requests"]},
        history=done.history, seconds=done.seconds, target_similarity=similarity, metrics=dict(zip(ids, metrics)),
        verdicts=dict(zip(ids, verdicts)))


def method_services(eraser: EraserParts, config: EraseConfig, w_u: torch.Tensor, images: Optional[torch.Tensor],
                    cams: Optional[torch.Tensor]) -> Any:
    """The pipeline-level services ``config.method`` declares (``EraseMethod.services``), built from the eraser's
    parts for the people's codes w_u [K, num_ws, w_dim] (and their photos [K, 3, H, W] with cameras, when given).
    A method that needs services these pipelines cannot build is a ConfigError before any work."""
    needed = get_method(config.method).method_class.services
    if needed is None:
        return None
    builder = SERVICE_BUILDERS.get(needed)
    if builder is None:
        raise ConfigError(f"method {config.method!r} needs {needed.__name__}, which the pipelines cannot build; "
                          "pass them to guide_unlearn.engine.run_erase(..., services=...) yourself")
    return builder(eraser, config, w_u, images, cams)


def _robust_services(eraser: EraserParts, config: EraseConfig, w_u: torch.Tensor, images: Optional[torch.Tensor],
                     cams: Optional[torch.Tensor]) -> RobustServices:
    from guide_unlearn.pipelines.robust_attacks import build_services

    return build_services(eraser, config, w_u, images, cams)


SERVICE_BUILDERS = {RobustServices: _robust_services}
"""Services class (``EraseMethod.services``) -> the function that builds them for a run: (eraser, config, codes,
photos or None, cameras or None) -> services."""


def _flat_photos(items: list[tuple[str, Inputs]]) -> Optional[list]:
    """Every request's photos in row order when every request is given as photos (paths / PIL), else None (the
    identity judge then compares with the source model's renderings)."""
    flat: list = []
    for _, inputs in items:
        got = identity_check.photo_items(inputs)
        if got is None:
            return None
        flat += got
    return flat


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
