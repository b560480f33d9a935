"""The models an audit measures side by side: the base (G_s, the eraser as given), the patched model (G_u, the
audited patch applied for the time being) and, with ``reference=``, a comparison model of the same family — a
model retrained without the person (an "oracle"), or any other. Each figure of the comparison is measured the
same way through each model (the same calls, photos and seed), so a reference identical to the base gives the
base's figures exactly.

Also the comparison table (``details["comparison"]``): one row per figure with its value through each model and
the differences patched - reference and reference - base."""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from guide_unlearn import patching
from guide_unlearn.errors import ConfigError, ReferenceMismatchError

from .families import AuditContext
from .judges import Match
from .photos import Photo, cameras_of, landmarks_of
from .rendering import invert_photos, render

ROLES = ("before", "after", "reference")  # the base (G_s), the patched model (G_u), the reference
ROLE_NAMES = {"before": "base (G_s)", "after": "patched (G_u)", "reference": "reference"}


@dataclass(frozen=True)
class AuditedModel:
    """One model the audit measures through.

    role:   "before" (the base, G_s), "after" (G_u: the base with the audited patch) or "reference".
    eraser: the IdentityEraser whose generator renders (the audited eraser for "before" and "after").
    patch:  the patch applied while the model is active ("after" only), else None.
    """

    role: str
    eraser: Any
    patch: Any = None

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Make the eraser's generator render as this model inside the block (the patch applied, for "after")."""
        if self.patch is None:
            yield
        else:
            with patching.applied_temporarily(self.eraser.generator, self.patch):
                yield

    @property
    def title(self) -> str:
        """"base (G_s)", "patched (G_u)" or "reference"."""
        return ROLE_NAMES[self.role]


def load_reference(spec: Union[str, os.PathLike, Any], eraser) -> Any:
    """The comparison model of an audit: a registry name or a local checkpoint / folder (loaded on the eraser's
    device), or an IdentityEraser. ReferenceMismatchError when its generator is of another family or renders at
    another resolution than ``eraser``'s; ConfigError for anything else. -> an IdentityEraser (built by the audited
    eraser's own class, so the audit never imports the eraser module: no import cycle)."""
    if isinstance(spec, (str, os.PathLike)):
        if not str(spec):
            raise ConfigError("reference= is empty; pass a registry name or a model folder (e.g. 'demo-faces')")
        reference = type(eraser).from_pretrained(str(spec), device=eraser.device)
    elif isinstance(spec, type(eraser)):
        reference = spec
    else:
        raise ConfigError(f"reference= takes a registry name, a model path or an IdentityEraser, got "
                          f"{type(spec).__name__}")
    if reference is eraser:
        raise ConfigError("reference= is the audited eraser itself; load the comparison model separately "
                          "(IdentityEraser.from_pretrained(...)), so that auditing never renders one through the other")
    mine, theirs = eraser.generator, reference.generator
    if theirs.family != mine.family or _resolution(theirs) != _resolution(mine):
        raise ReferenceMismatchError(
            f"the reference is a {theirs.family!r} generator at {_resolution(theirs)} px, the audited model a "
            f"{mine.family!r} one at {_resolution(mine)} px; compare with a model of the same family and resolution "
            "(for demo-faces: demo-faces-oracle-8, or demo-faces itself as a stand-in)")
    return reference


def _resolution(generator) -> int:
    return int(getattr(generator, "img_resolution", 0) or 0)


def reference_of(ctx: AuditContext) -> Any:
    """The loaded reference eraser of this audit, or None."""
    return ctx.options.get("reference")


def audited_models(ctx: AuditContext) -> list[AuditedModel]:
    """The base, the patched model and (when given) the reference, in that order."""
    models = [AuditedModel("before", ctx.eraser), AuditedModel("after", ctx.eraser, ctx.patch)]
    if reference_of(ctx) is not None:
        models.append(AuditedModel("reference", reference_of(ctx)))
    return models


def reference_record(reference) -> dict[str, Any]:
    """What the report's networks record of the reference: its name, family, resolution and weights fingerprint."""
    from guide_unlearn.fingerprint import patch_state
    from guide_unlearn.protocols import module_of

    gen = reference.generator
    state = patch_state(module_of(gen))
    return {"name": reference.name, "family": gen.family, "resolution": _resolution(gen),
            "base_fingerprint": state["base_fingerprint"], "merged_patches": [m.get("patch_id") for m in
                                                                              state["merged"]],
            "applied_patches": [p.patch_id for p in reference.applied_patches]}


def is_stand_in(reference, eraser) -> bool:
    """Whether the reference renders exactly as the audited base (the same base weights, merged and applied
    patches): a stand-in, not a model that never learnt the person."""
    mine, theirs = reference_record(eraser), reference_record(reference)
    return all(mine[k] == theirs[k] for k in ("base_fingerprint", "merged_patches", "applied_patches"))


@contextlib.contextmanager
def quiet(inverter, progress: bool) -> Iterator[Any]:
    """The inverter with its progress bar set to ``progress`` for the block."""
    own = getattr(inverter, "progress", None)
    if own is not None:
        inverter.progress = progress
    try:
        yield inverter
    finally:
        if own is not None:
            inverter.progress = own


def own_codes(ctx: AuditContext, model: AuditedModel, photos: Sequence[Photo]) -> torch.Tensor:
    """Codes [N, num_ws, w_dim] (CPU) of ``photos`` through ``model`` with its eraser's own inverter (the one its
    erase would use), seeded with the audit's seed: what the audit's G_s codes are for the base."""
    with quiet(model.eraser.inverter, ctx.progress) as inverter, model.active():
        return invert_photos(inverter, model.eraser, photos, ctx.seed)


def judged(ctx: AuditContext, model: AuditedModel, ws: torch.Tensor, photos: Sequence[Photo], refs: np.ndarray,
           groups: Optional[list[list[int]]]) -> tuple[Match, torch.Tensor]:
    """Render ws [N, num_ws, w_dim] through ``model`` with each photo's camera and match the renderings against
    refs [M, D] (per row, the rows ``groups`` allows). -> (Match, renderings [N, 3, H, W])."""
    with model.active():
        imgs = render(model.eraser, ws, cameras_of(photos))
    return ctx.judge.match(imgs, landmarks_of(photos), refs, groups), imgs


def add_row(ctx: AuditContext, figure: str, values: dict[str, float], meaning: str, higher_is: str) -> dict:
    """Append one row to ``details["comparison"]``: the figure through each model ("before", "after",
    "reference"; NaN where not measured), after - reference and reference - before. ``higher_is``: what a higher
    value means ("worse erasure", "better preservation", ...). -> the row."""
    row: dict[str, Any] = {"figure": figure, "meaning": meaning, "higher_is": higher_is}
    for role in ROLES:
        row[role] = float(values.get(role, float("nan")))
    row["after_minus_reference"] = _minus(row["after"], row["reference"])
    row["reference_minus_before"] = _minus(row["reference"], row["before"])
    ctx.details.setdefault("comparison", []).append(row)
    return row


def record_row(ctx: AuditContext, figure: str, values: dict[str, float], meaning: str, higher_is: str) -> dict:
    """:func:`add_row`, and the figure's metrics: ``<figure>_before`` / ``_after`` and, when ``values`` has a
    reference, ``reference_<figure>`` and ``<figure>_minus_reference``. -> the row."""
    row = add_row(ctx, figure, values, meaning, higher_is)
    ctx.metrics[f"{figure}_before"], ctx.metrics[f"{figure}_after"] = row["before"], row["after"]
    if "reference" in values:
        ctx.metrics[f"reference_{figure}"] = row["reference"]
        ctx.metrics[f"{figure}_minus_reference"] = row["after_minus_reference"]
    return row


def _minus(a: float, b: float) -> float:
    return a - b if math.isfinite(a) and math.isfinite(b) else float("nan")
