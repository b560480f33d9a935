"""Metric families: the audit is a short runner over these. Each family measures some keys of the report (the
person's identity, held-out photos, an attack, the Fréchet distance...) from one shared :class:`AuditContext`.

A new measurement or attack is one file that registers itself::

    from guide_unlearn.pipelines.audit import AuditAttack, register_attack

    @register_attack
    class Relearning(AuditAttack):
        name = "relearn"                                # audit(..., attacks=("reinvert", "relearn"))
        keys = ("relearn_recognised_after",)
        meanings = {"relearn_recognised_after": "held-out photos recognised after k fine-tuning steps"}
        options = {"relearn_steps": "fine-tuning steps (default 50)"}   # audit(..., relearn_steps=20)

        def run(self, ctx):
            with ctx.timed("relearn"):
                ...
                ctx.metrics["relearn_recognised_after"] = ...

Families run in registration order (the shipped ones first: identity, held-out, re-inversion, leakage, Fréchet).
A family that is not an attack always runs; an attack runs when ``attacks=`` names it, and otherwise its keys are
recorded as not run. The report's metrics are always :data:`METRIC_KEYS` (NaN where not run) followed by the
keys of the other families that ran. A leaf module (types only below).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from guide_unlearn.errors import ConfigError

from .registry import Registry

if TYPE_CHECKING:
    from guide_unlearn.patch import ForgetPatch

    from .judges import Judge
    from .photos import Photo, PhotoSet
    from .protocols import Protocol

#: The keys every report carries, in this order (NaN, with the reason in ``details["not_run"]``, where not run).
METRIC_KEYS = (
    "id", "id_others", "held_out_recognised_before", "held_out_recognised_after", "held_out_similarity_before",
    "held_out_similarity_after", "reinversion_default_recognised_before", "reinversion_default_recognised_after",
    "reinversion_scratch_recognised_before", "reinversion_scratch_recognised_after", "others_kept",
    "leakage_recognised", "leakage_similarity", "fd_pre", "fd_real_delta", "fid_pre", "fid_real_delta",
)


@dataclass(frozen=True)
class AuditSettings:
    """The audit's numeric settings (see :func:`~guide_unlearn.pipelines.audit.audit`)."""

    samples: int  # G_s / G_u samples of the Fréchet distance
    projector_steps: int  # steps of the from-scratch projector attack
    leakage_starts: int  # random starts of the leakage probe
    leakage_steps: int  # gradient-ascent steps of the leakage probe
    max_others: Optional[int]  # others people audited at most (None or 0: all)


@dataclass
class AuditContext:
    """Everything a metric family reads and writes during one audit.

    eraser, patch: the eraser (G_s) and the audited patch (G_u = G_s with it applied).
    protocol, judge, settings, seed, attacks: how the audit was asked to run; ``options``: the extra keywords of
    ``audit()`` that registered families declared.
    request, held_out, others, real: the prepared photos of each role; ``skipped``: photos left out, with reasons.
    codes: G_s codes [N, num_ws, w_dim] (CPU) of "request", "held_out", "others" (None when that role is empty).
    views: the evaluation cameras [V, c_dim] of a camera model, else None.
    clip: the CLIP embedder of the optional CMMD figure, or None.
    metrics, details, gallery, not_run, seconds: what the report will hold (written by the families).
    shared: what one family hands to a later one (e.g. "others_recognised_before").
    networks: records of further networks a family ran (a reference model, ...), added to the report's networks.
    """

    eraser: Any
    patch: "ForgetPatch"
    protocol: "Protocol"
    judge: "Judge"
    settings: AuditSettings
    seed: int
    attacks: tuple[str, ...]
    progress: bool
    request: "PhotoSet"
    held_out: "PhotoSet"
    others: "PhotoSet"
    real: "PhotoSet"
    skipped: list[dict[str, str]]
    codes: dict[str, Optional[torch.Tensor]]
    views: Optional[torch.Tensor] = None
    clip: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    gallery: dict[str, Any] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)
    networks: dict[str, Any] = field(default_factory=dict)

    @property
    def person(self) -> list["Photo"]:
        """The person's usable photos: the request's, then the held-out ones."""
        return self.request.photos + self.held_out.photos

    @property
    def person_descriptors(self) -> np.ndarray:
        """[P, D] identity vectors of :attr:`person`."""
        return np.stack([p.descriptor for p in self.person])

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Record the wall time of the ``with`` block as ``seconds[part]``."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = time.perf_counter() - t

    def mark_not_run(self, keys: Sequence[str], why: str) -> None:
        """Say why ``keys`` have no value (their metrics stay NaN)."""
        for k in keys:
            self.not_run[k] = why


class MetricFamily:
    """Some keys of the report, measured together.

    name:            the family's name (an attack's name is what ``attacks=`` lists).
    keys:            the metric keys it fills (floats; NaN with a reason in ``not_run`` where it cannot).
    meanings:        one line per key for the report's table.
    attack:          True for an attack (runs only when requested; see :class:`AuditAttack`).
    not_requested:   an attack's reason for its keys when it was not requested.
    options:         extra keywords of ``audit()`` this family reads from ``ctx.options`` (name -> one line).
    figure_captions: {figure file name: caption} of the figures :meth:`figures` makes.
    title:           what the audit's progress calls its stage ("held-out photos"; default: ``name``).
    photo_options:   those of its ``options`` that are photo folders: the audit lists them through the reading
                     gate with its own photos, before the patch or any model is loaded.
    """

    name = ""
    title = ""
    keys: tuple[str, ...] = ()
    meanings: Mapping[str, str] = {}
    attack = False
    not_requested = ""
    options: Mapping[str, str] = {}
    photo_options: tuple[str, ...] = ()
    figure_captions: Mapping[str, str] = {}

    def runs(self, attacks: Sequence[str], options: Mapping[str, Any]) -> bool:
        """Whether this family runs in an audit with these ``attacks`` and extra keywords (default: every family
        that is not an attack, and the attacks ``attacks`` names). A family that needs one of its options (a
        reference model, a folder of strangers) runs only when it is given, and its keys are then in the report."""
        return not self.attack or self.name in attacks

    def prepare(self, eraser, options: dict[str, Any]) -> None:
        """Check (and load) this family's options before the audit does any work, so a bad one fails fast; may
        replace a value in ``options`` (a model name by the loaded model). Default: nothing."""

    def work(self, ctx: AuditContext) -> str:
        """What this family's stage works on, shown in the audit's progress after its title (e.g. "4 photos");
        default: nothing. Cheap: called just before :meth:`run`."""
        return ""

    def run(self, ctx: AuditContext) -> None:
        """Measure this family's keys into ``ctx.metrics`` (and ``details``, ``gallery``, ``seconds``)."""
        raise NotImplementedError

    def figures(self, report) -> dict[str, bytes]:
        """{file name: PNG bytes} of this family's figures, from ``report.gallery`` ({} when it has none)."""
        return {}


class AuditAttack(MetricFamily):
    """A metric family that runs only when ``audit(attacks=...)`` names it."""

    attack = True

    @property
    def not_requested(self) -> str:  # type: ignore[override]
        return f"the {self.name} attack was not requested"


METRIC_FAMILIES: Registry[MetricFamily] = Registry("audit metric family")
Family = Union[MetricFamily, type]


def register_metric_family(family: Family, replace: bool = False) -> Family:
    """Add a metric family (an instance, or a class built with no arguments; usable as a class decorator) to every
    audit; its keys may not be another family's. -> what was given."""
    instance = family() if isinstance(family, type) else family
    if not instance.name or not instance.keys:
        raise ConfigError(f"a metric family needs a name and keys, got {instance.name!r} with {instance.keys!r}")
    taken = {k: f.name for f in METRIC_FAMILIES.values() if f.name != instance.name for k in f.keys}
    clash = sorted(set(instance.keys) & set(taken))
    if clash:
        raise ConfigError(f"metric keys {clash} already belong to family {taken[clash[0]]!r}; choose other keys")
    METRIC_FAMILIES.register(instance.name, instance, replace=replace)
    return family


def register_attack(family: Family, replace: bool = False) -> Family:
    """Register an attack (an :class:`AuditAttack`: it runs when ``audit(attacks=...)`` names it). -> what was
    given (usable as a class decorator)."""
    instance = family() if isinstance(family, type) else family
    if not instance.attack:
        raise ConfigError(f"{type(instance).__name__} is not an attack; subclass AuditAttack (or register it with "
                          "register_metric_family to run in every audit)")
    register_metric_family(instance, replace=replace)
    return family


def registered_attacks() -> tuple[str, ...]:
    """Names ``audit(attacks=...)`` accepts, in registration order."""
    return tuple(name for name, f in METRIC_FAMILIES.items() if f.attack)


def meaning_of(key: str) -> str:
    """The one-line meaning of a metric key (from the family that fills it), or ""."""
    return next((f.meanings.get(key, "") for f in METRIC_FAMILIES.values() if key in f.keys), "")
