"""What erases return: dataclasses on one base, :class:`BaseOutput`, read by attribute or by key (``result.patch`` is
``result["patch"]``), like diffusers' ``BaseOutput`` — and never a tuple. The verdict of an erase is a typed
:class:`Verdict`, judged from the measured figures by :func:`judge_erasure`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import torch

from .config import RunOptions
from .patch import ForgetPatch


class BaseOutput:
    """Base of the result dataclasses: attribute access, key access (``out["patch"]``), ``keys()``, ``get``, ``in``
    and :meth:`to_dict`. Iterating or unpacking one is a TypeError: a result is not a tuple."""

    def keys(self) -> list[str]:
        """The field names, in declaration order."""
        return [f.name for f in dataclasses.fields(self)]

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str):
            raise TypeError(f"{type(self).__name__} is read by field name (out['patch'] or out.patch), not by "
                            f"position {key!r}")
        if key not in self.keys():
            raise KeyError(f"{type(self).__name__} has no field {key!r}; its fields are {self.keys()}")
        return getattr(self, key)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def get(self, key: str, default: Any = None) -> Any:
        """The field ``key``, or ``default`` when there is no such field."""
        return getattr(self, key) if key in self.keys() else default

    def __iter__(self) -> Iterator[Any]:
        raise TypeError(f"{type(self).__name__} is not a tuple: read its fields by name "
                        f"({', '.join(self.keys()[:4])}, ...)")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (nested outputs as dicts too; tensors and patches as they are)."""
        return {k: v.to_dict() if isinstance(v, BaseOutput) else v for k, v in
                ((k, getattr(self, k)) for k in self.keys())}


ERASURE_RATIO_LIMIT = 0.5
"""An erase succeeded only if G_u(w_u) got at least halfway to the target: erased_mse / before_mse <= 0.5 (the LoRA
defaults reach 0.07 on the tiny model, lr 1e-3 x 100 steps leaves 0.40, too few steps leave ~1: benchmarks/
sweep_lora_lr.py)."""
PRESERVATION_RATIO_LIMIT = 0.5
"""...and only if random samples changed by less than half the difference between two random samples:
preserved_mse / random_pair_mse <= 0.5 (the defaults give 0.05 on the tiny model)."""


@dataclass
class Verdict(BaseOutput):
    """Whether an erase did what it should, judged from measured figures (:func:`judge_erasure`). The booleans
    are None when nothing was measured. More judges may add fields (each with a default).

    erased:             the person's rendering moved at least halfway to the target (erasure_ratio <= limit) AND,
                        where an identity judge ran, the judge no longer recognises the person.
    preserved:          random faces changed little (preservation_ratio <= limit).
    succeeded:          erased and preserved.
    erasure_ratio:      erased_mse / before_mse (pixel MSEs the loop does not optimise).
    preservation_ratio: preserved_mse / random_pair_mse.
    limits:             the limits used, by ratio name.
    problems:           one sentence per failed check, saying what to do.
    identity_checked:   whether an identity judge decided whether the person is still recognised.
    identity:           that check (``pipelines.identity_check.identity_verdict``): the judge, its rule and cut, the
                        references, the closest score and cosine before and after the patch, ``recognised``; or
                        ``checked`` False and the ``reason`` it was not run.
    notes:              what the reader must know that is not a failure ("identity not checked: ...").
    """

    erased: Optional[bool] = None
    preserved: Optional[bool] = None
    succeeded: Optional[bool] = None
    erasure_ratio: Optional[float] = None
    preservation_ratio: Optional[float] = None
    limits: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    identity_checked: bool = False
    identity: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def judge_erasure(metrics: dict[str, float], iterations: Optional[int] = None, lr: Optional[float] = None,
                  identity: Optional[dict[str, Any]] = None) -> Verdict:
    """Judge an erase from the figures already measured (pixel MSEs, not optimised by the loop): ``metrics`` with
    'erased_mse', 'before_mse', 'preserved_mse', 'random_pair_mse'. ``iterations`` / ``lr`` (the run's) make the
    advice concrete. ``identity``: whether an identity judge still recognises the person after the patch
    ({'checked', 'recognised', 'judge', 'rule', 'metric', 'score', 'reason', ...}, built by a pipeline with the
    audit's judge); None = no judge. A person still recognised is not erased, whatever the pixels say; without a
    check the verdict says so in ``notes``. -> :class:`Verdict` (its booleans None when ``metrics`` lacks the
    figures)."""
    limits = {"erasure_ratio": ERASURE_RATIO_LIMIT, "preservation_ratio": PRESERVATION_RATIO_LIMIT}
    identity = dict(identity) if identity is not None else {"checked": False, "recognised": None, "judge": None,
                                                            "reason": "no identity judge was given"}
    checked = bool(identity.get("checked"))
    notes = [] if checked else [f"identity not checked ({identity.get('reason')}): 'erased' rests on the pixel "
                                "figures only"]
    if not {"erased_mse", "before_mse", "preserved_mse", "random_pair_mse"} <= set(metrics):
        return Verdict(limits=limits, identity_checked=checked, identity=identity, notes=notes,
                       problems=["not measured (measure=False): nothing says whether the person was erased"])
    ratio = metrics["erased_mse"] / max(metrics["before_mse"], 1e-12)
    keep = metrics["preserved_mse"] / max(metrics["random_pair_mse"], 1e-12)
    problems = []
    moved, preserved = ratio <= ERASURE_RATIO_LIMIT, keep <= PRESERVATION_RATIO_LIMIT
    if not moved:
        more = f" (now {iterations})" if iterations is not None else ""
        problems.append(f"NOT ERASED: the person's rendering moved only {max(0.0, 1 - ratio):.0%} of the way to the "
                        f"target (erased_mse / before_mse = {ratio:.2f}, must be <= {ERASURE_RATIO_LIMIT}); run more "
                        f"iterations{more} or a larger learning rate")
    recognised = checked and bool(identity.get("recognised"))
    if recognised:
        problems.append(f"STILL RECOGNISED: {identity.get('judge')} still recognises the person in the patched "
                        f"rendering of the request code ({identity.get('metric')} {identity.get('score')}, same "
                        f"person when {identity.get('rule')}); the pixels moved but the person is not erased: raise "
                        "target_distance, run more iterations, or use the 'robust' method")
    if not preserved:
        now = f" (now {lr})" if lr is not None else ""
        problems.append(f"NOT PRESERVED: other people changed too (preserved_mse / random_pair_mse = {keep:.2f}, "
                        f"must be <= {PRESERVATION_RATIO_LIMIT}); lower the learning rate{now} or raise global_weight")
    erased = moved and not recognised
    return Verdict(erased=erased, preserved=preserved, succeeded=erased and preserved, erasure_ratio=round(ratio, 4),
                   preservation_ratio=round(keep, 4), limits=limits, problems=problems, identity_checked=checked,
                   identity=identity, notes=notes)


@dataclass
class EraseRun(BaseOutput):
    """What :func:`guide_unlearn.engine.run_erase` returns (the optimisation only; :class:`ErasureResult` adds the
    measurements).

    patch:      the new ForgetPatch (not applied); its metadata names the method that ran.
    w_target:   the targets [K, num_ws, w_dim] of the erased codes (memory only).
    history:    per logged step, a dict of losses ('step', 'loss', 'local', 'adjacency', 'global', ...; 'round' for
                methods with several phases).
    seconds:    wall time of the training loop (set-up excluded).
    run:        the :class:`RunOptions` the run used.
    """

    patch: ForgetPatch
    w_target: torch.Tensor
    history: list[dict[str, float]]
    seconds: float
    run: RunOptions = field(default_factory=RunOptions)


@dataclass
class ErasureResult(BaseOutput):
    """What ``IdentityEraser.erase`` returns.

    patch:          the ForgetPatch (not applied to the eraser).
    w_source:       the person's code(s) w_u [K, num_ws, w_dim] (kept in memory only; never in the patch).
    w_target:       the target(s) w_t [K, num_ws, w_dim].
    history:        per logged step, a dict of losses ('loss', 'local', 'adjacency', 'global', ...).
    images_before:  G_s(w_u) [K, 3, H, W] in [-1, 1]; images_after: G_u(w_u); target_images: G_s(w_t).
    views_before / views_after: multi-view renders [V, 3, H, W] of the first code for camera models, else None.
    metrics:        unoptimised measurements taken after the erase (pixel MSEs, see ``pipelines/measure.py``).
    seconds:        wall time of the optimisation.
    photos:         the aligned photos [K, 3, H', W'] in [-1, 1] the codes were inverted from (None for codes).
    verdict:        :func:`judge_erasure` of ``metrics`` (a :class:`Verdict`).
    """

    patch: ForgetPatch
    w_source: torch.Tensor
    w_target: torch.Tensor
    history: list[dict[str, float]]
    images_before: torch.Tensor
    images_after: torch.Tensor
    target_images: torch.Tensor
    views_before: Optional[torch.Tensor] = None
    views_after: Optional[torch.Tensor] = None
    metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    photos: Optional[torch.Tensor] = None
    verdict: Verdict = field(default_factory=Verdict)

    @property
    def succeeded(self) -> Optional[bool]:
        """True when the measured figures say the person was erased and the rest kept, False when they say it
        failed, None when nothing was measured."""
        return self.verdict.succeeded


@dataclass
class ManyErasureResult(BaseOutput):
    """What ``IdentityEraser.erase_many`` returns.

    patch:          ONE ForgetPatch erasing every person (not applied); its metadata lists the request ids and
                    each person's final losses under ``"requests"``.
    request_ids:    the P request ids, in the order of the run.
    w_source:       request id -> that person's codes [K_i, num_ws, w_dim] (memory only; never in the patch).
    w_target:       request id -> their targets [K_i, num_ws, w_dim] (memory only).
    final_losses:   request id -> L_local terms at that person's last visit.
    history, seconds: as :class:`ErasureResult`.
    target_similarity: how alike the people's targets are: 'latent_cosine_max/mean' (target directions) and,
                    with an identity model, 'identity_cosine_max/mean' (its embeddings of G_s(w_t)); the same
                    figures for plain per-person UFO targets under 'ufo_*' keys, for comparison.
    metrics:        request id -> that person's figures, as :class:`ErasureResult` measures them (their codes
                    before / after against their targets, the shared preservation figures, the photo fit).
    verdicts:       request id -> :class:`Verdict` of that person's figures.
    """

    patch: ForgetPatch
    request_ids: list[str]
    w_source: dict[str, torch.Tensor]
    w_target: dict[str, torch.Tensor]
    final_losses: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    seconds: float = 0.0
    target_similarity: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)

    @property
    def succeeded(self) -> Optional[bool]:
        """False when any person's verdict failed, True when every one succeeded, None when nothing was measured."""
        states = [v.succeeded for v in self.verdicts.values()]
        if any(s is False for s in states):
            return False
        return True if states and all(states) else None
