"""What an erase method is to the training loop: its settings (a frozen :class:`MethodConfig`) and the hooks through
which it contributes to the ONE loop of :func:`guide_unlearn.engine.run_erase` (rows, extra loss terms, phases,
metadata, resumable state). A method never runs a loop of its own."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager, Mapping, Optional, Sequence

import torch

from ..errors import ConfigError
from ..protocols import GeneratorAdapter, IdentityModel, PerceptualDistance, PersonJudge

if TYPE_CHECKING:
    from ..config import EraseConfig


def need(condition: bool, message: str) -> None:
    """ConfigError(message) unless ``condition``: the validation helper of every config."""
    if not condition:
        raise ConfigError(message)


def finite(value: Any) -> bool:
    """A real number (not a bool) that is finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def count(value: Any) -> bool:
    """An int (not a bool) >= 0."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class MethodConfig:
    """Base of a method's own settings: a frozen dataclass, one docstring line per field, validated in
    ``__post_init__``. Part of the recipe: recorded in the patch and in its digest (``EraseConfig.recipe_dict``)."""

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The names of this config's settings."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "MethodConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MethodConfig":
        """Inverse of :meth:`to_dict` (lists become tuples); unknown keys are a ConfigError."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__} needs a mapping of its settings, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} settings {unknown}; known: {sorted(cls.field_names())}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class LoraSettings(MethodConfig):
    """The settings of a method that trains a LoRA forget patch (the base of their configs)."""

    lora_rank: int = 4
    """LoRA rank r."""
    lora_alpha: float = 4.0
    """LoRA alpha; the delta is scaled by alpha / r."""
    lora_targets: Optional[tuple[str, ...]] = None
    """Module names the LoRA wraps; None = the backend's default (the synthesis 3x3 convs)."""

    def __post_init__(self) -> None:
        if isinstance(self.lora_targets, list):
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))
        need(isinstance(self.lora_rank, int) and not isinstance(self.lora_rank, bool) and self.lora_rank >= 1,
             f"lora_rank must be an integer >= 1, got {self.lora_rank!r}")
        need(finite(self.lora_alpha) and self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha!r}")
        need(self.lora_targets is None or (isinstance(self.lora_targets, tuple) and len(self.lora_targets) > 0
                                           and all(isinstance(t, str) for t in self.lora_targets)),
             "lora_targets must be None or a non-empty tuple of module names")


@dataclass
class Erasure:
    """Who one run erases (memory only: never stored in a patch).

    codes:      w_u [K, num_ws, w_dim], checked (finite, this generator's shape and device).
    person_of:  [K] long, which of the ``people`` people each code shows (all 0 for one person).
    person_ids: one string per person (e.g. request ids) labelling per-person figures in the metadata, or None.
    keep:       [M, num_ws, w_dim] codes of people erased by patches applied before this run (continual), or None.
    """

    codes: torch.Tensor
    person_of: torch.Tensor
    people: int
    person_ids: Optional[Sequence[str]] = None
    keep: Optional[torch.Tensor] = None


@dataclass
class RunContext:
    """What the loop gives a method: the generator (rendering G_u while the patch trains), the recipe, the
    networks of the loss, the run's single seeded torch.Generator, the resolved UFO distance and adjacency range,
    who is erased, the pipeline services the method declared (:attr:`EraseMethod.services`), and the identity
    ``judge`` bound to the request (None: targets are not checked) with the record of its target check."""

    generator: GeneratorAdapter
    cfg: "EraseConfig"
    perceptual: PerceptualDistance
    identity: Optional[IdentityModel]
    rng: torch.Generator
    distance: float
    alpha: tuple[float, float]
    erasure: Erasure
    services: Any = None
    judge: Optional[PersonJudge] = None
    target_record: Optional[dict[str, Any]] = None

    @property
    def device(self) -> torch.device:
        return self.generator.w_avg.device


@dataclass
class StepRows:
    """A method's rows for one iteration (see :meth:`EraseMethod.rows`).

    w_u, w_t:       [k, num_ws, w_dim] the L_local codes G_u renders and the targets G_s renders for them.
    adjacency_idx:  [n_adj] long, which of the k rows each adjacency sample starts from.
    local_weights:  [k] weights of the L_local rows (None = mean over the rows).
    cfg:            the recipe of this iteration's loss (None = the run's), e.g. a re-weighted L_global.
    extra_u, extra_t: [e, num_ws, w_dim] extra rows weighted as adjacency samples (set by
                    :meth:`EraseMethod.extra_rows`), or None.
    info:           the method's own bookkeeping for the iteration (read back in its later hooks).
    """

    w_u: torch.Tensor
    w_t: torch.Tensor
    adjacency_idx: torch.Tensor
    local_weights: Optional[torch.Tensor] = None
    cfg: Optional["EraseConfig"] = None
    extra_u: Optional[torch.Tensor] = None
    extra_t: Optional[torch.Tensor] = None
    info: Any = None

    @property
    def k(self) -> int:
        return int(self.w_u.shape[0])

    @property
    def extra(self) -> int:
        return 0 if self.extra_u is None else int(self.extra_u.shape[0])


@dataclass
class LossTerm:
    """An extra term of a method's loss: ``weight * value`` joins the total; ``value`` is logged under ``name``."""

    name: str
    value: torch.Tensor
    weight: float


class EraseMethod:
    """Base of a registered erase method (register with :func:`guide_unlearn.methods.register_method`).

    The loop (:func:`guide_unlearn.engine.run_erase`) owns everything else: accelerate, mixed precision, the
    optimiser, resume, progress, trackers, finite-loss checks, history, patch extraction and its metadata. Per run
    it builds the method with a :class:`RunContext` and calls, in this order: :meth:`setup` (before the trainable
    patch exists: it may draw from ``ctx.rng``); :meth:`start` (the patch exists, before the first step and before
    a saved state is restored); then per phase :meth:`begin_phase` (from the second phase on,
    while the generator renders the current G_u); per step :meth:`before_step`, :meth:`rows`, :meth:`extra_rows`,
    :meth:`extra_loss`, :meth:`observe`; at the end :meth:`metadata`. :meth:`state_dict` /
    :meth:`load_state_dict` make a run resumable.

    Class attributes declare what the method supports, so that an unsupported request is refused before any work.
    """

    several_people: ClassVar[bool] = False
    """Whether one run may erase several people (``erase_many``, ``erase-batch --joint N``)."""
    keeps_erased: ClassVar[bool] = False
    """Whether a run can keep people erased by applied patches erased (``keep_erased``, continual requests)."""
    trains: ClassVar[str] = "lora"
    """What the run trains: ``"lora"`` (a LoRA forget patch, settings from the method's :class:`LoraSettings`) or
    ``"full"`` (every synthesis parameter; a weight-difference patch)."""
    services: ClassVar[Optional[type]] = None
    """The class of the pipeline-level services the method needs (built outside the core, passed in as
    ``RunContext.services``), or None."""
    recipe_defaults: ClassVar[Mapping[str, Any]] = {}
    """Shared recipe settings of this method's preset (e.g. the paper's 1000 steps at lr 1e-4)."""
    model_defaults: ClassVar[bool] = True
    """Whether a model's recommended erase settings (registry ``erase_defaults``) apply to this method."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.config = ctx.cfg.method_config

    @classmethod
    def check(cls, cfg: "EraseConfig", services: Any, identity: Optional[IdentityModel]) -> None:
        """Refuse (ConfigError) before any work a run this method cannot do with these services."""

    def setup(self) -> None:
        """Prepare the run (targets, extra codes). Runs before the patch exists (the generator renders G_s)."""

    def start(self, parameters: Mapping[str, torch.nn.Parameter], source: Callable[[], ContextManager[None]]
              ) -> None:
        """Called once the trainable patch exists (G_u = G_s until the first update), before the first step:
        ``parameters`` are what the run trains, by name (the LoRA factors, or the synthesis weights of a full
        fine-tune); inside ``source()`` the generator renders G_s. A method with a penalty on the parameters (e.g.
        Fisher-weighted preservation) keeps them and estimates what it needs here."""

    def checked(self, w_t: torch.Tensor) -> torch.Tensor:
        """The targets w_t [K, num_ws, w_dim] of the request's codes (``ctx.erasure.codes``, in their order), each
        moved until the run's identity judge counts it as someone other than its person
        (:func:`guide_unlearn.targets.checked_targets`; TargetError before training when none is found); w_t as it
        is without a judge. Every method calls it in :meth:`setup` on the targets of the people it erases."""
        from ..targets import checked_targets

        ctx = self.ctx
        if ctx.judge is None:
            return w_t
        w_t, ctx.target_record = checked_targets(ctx.erasure.codes, w_t, ctx.judge,
                                                 lambda z: ctx.generator.mapping(z, None), ctx.generator.w_avg,
                                                 ctx.generator.z_dim, seed=ctx.cfg.seed)
        return w_t

    def targets(self) -> torch.Tensor:
        """The targets [K, num_ws, w_dim] of the erased codes, in their order (memory only)."""
        raise NotImplementedError

    def phases(self) -> list[int]:
        """Steps per training phase (one phase: ``cfg.iterations`` steps)."""
        return [self.ctx.cfg.iterations]

    def begin_phase(self, phase: int) -> None:
        """Called before the first step of every phase after the first, while the generator renders G_u."""

    def before_step(self, step: int) -> None:
        """Called at the start of every step, before the loop draws its camera and random codes."""

    def rows(self, step: int) -> StepRows:
        """The iteration's L_local rows and where its adjacency samples start (drawn from ``ctx.rng``)."""
        raise NotImplementedError

    def extra_rows(self, step: int, rows: StepRows) -> None:
        """Add rows weighted as adjacency samples (``rows.extra_u`` / ``rows.extra_t``); after the loop drew the
        adjacency distances."""

    def extra_loss(self, step: int, rows: StepRows, out_u: Any, out_s: Any) -> list[LossTerm]:
        """Extra loss terms from the iteration's renders (batch rows: [k local | n_adj adjacency | extra | global])."""
        return []

    def observe(self, step: int, rows: StepRows, loss: Any) -> bool:
        """See the iteration's loss (``guide_unlearn.losses.LTULoss``) before the update; True ends the run here
        (the update of this step is skipped)."""
        return False

    def metadata(self, final: Mapping[str, float]) -> dict[str, Any]:
        """What the patch records about this method's run: counts and settings only, never a code, a target or an
        embedding of anyone."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The method's resumable state (tensors, numbers, lists, dicts) at a checkpoint."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s state."""
