"""EraseConfig: every knob that decides the patch, with the paper's defaults, and the two presets; RunOptions: how a
run behaves (progress, logging, checkpoints, trackers), never part of the patch."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

from .errors import ConfigError

TARGET_KINDS = ("extrapolate", "average")
MIXED_PRECISION = ("no", "bf16", "fp16")
# any of these set (non-zero) makes a config robust (EraseConfig.is_robust; the hub card names the preset by it)
ROBUST_FIELDS = ("adversarial_rounds", "repulsion_weight", "bridge_samples", "decoys", "tracking_steps")
ROUND_ATTACKERS = ("default", "scratch")  # the attackers of an adversarial round (guide_unlearn.robust)
NOISE_MODES = ("random", "const", "none")
PRESENTATION_FIELDS = ("progress", "log_every", "checkpoint_every")
"""Fields that change how a run is shown or saved along the way, never its result (the patch): they are left out
of :meth:`EraseConfig.recipe_dict` / :meth:`EraseConfig.digest`, so a resume or a comparison ignores them. They are
accepted on EraseConfig for compatibility only and routed to :class:`RunOptions` (:meth:`EraseConfig.run_options`)."""


@dataclass(frozen=True)
class RunOptions:
    """How one erase RUNS — shown, logged, checkpointed — as opposed to what it makes (:class:`EraseConfig`), the
    way peft keeps a LoraConfig apart from its runtime settings. Never recorded in a patch nor in its digest.

    >>> run_erase(generator, w_u, EraseConfig(), perceptual, run=RunOptions(progress=False, log_every=10))
    """

    progress: bool = True
    """Show a tqdm progress bar with the current losses (and the optimising inverter's bar)."""
    log_every: int = 1
    """Record losses in the history (and trackers) every N steps."""
    checkpoint_every: int = 0
    """Save resumable state to ``state_dir`` every N steps (0 = never). The state holds the person's code."""
    state_dir: Optional[Union[str, os.PathLike]] = None
    """Folder of the resumable state (None = no state; a run resumes from the state found there)."""
    trackers: Optional[tuple[str, ...]] = None
    """accelerate trackers to log the losses to (e.g. ("tensorboard",)); None = none."""

    def __post_init__(self) -> None:
        if not isinstance(self.checkpoint_every, int) or isinstance(self.checkpoint_every, bool) \
                or self.checkpoint_every < 0:
            raise ConfigError(f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        if not isinstance(self.log_every, int) or isinstance(self.log_every, bool) or self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {self.log_every!r}")
        if self.trackers is not None:
            if isinstance(self.trackers, str) or not all(isinstance(t, str) for t in self.trackers):
                raise ConfigError(f"trackers must be a list of tracker names, got {self.trackers!r}")
            object.__setattr__(self, "trackers", tuple(self.trackers))

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class EraseConfig:
    """How to erase one identity. Frozen: derive variants with :meth:`replace`.

    The defaults are the LoRA preset (:meth:`lora`); :meth:`paper` gives the official GUIDE recipe.
    """

    iterations: int = 100
    """Optimisation steps (GUIDE: 1000; the LoRA preset: 100, see benchmarks/sweep_lora_lr.py)."""
    lr: float = 5e-3
    """Adam learning rate (GUIDE full fine-tune: 1e-4; rank-4 LoRA factors need a larger step: 5e-3, measured)."""
    adam_betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas (torch defaults, as GUIDE)."""
    target: str = "extrapolate"
    """UFO target: 'extrapolate' (w_avg - d * w_id / ||w_id||, GUIDE) or 'average' (w_avg, the baseline)."""
    target_distance: Optional[float] = None
    """UFO distance d. None = the backend's default (EG3D: 30 absolute; StyleGAN2: 1 × typical distance)."""
    target_distance_relative: Optional[bool] = None
    """True: d is in units of the typical ||w - w_avg|| of mapped samples; None = the backend's default."""

    local_weight: float = 1.0
    """Weight of L_local (make G_u(w_u) look like G_s(w_t))."""
    adjacency_weight: float = 1.0
    """Weight of L_adj (the same terms at codes shifted toward random mapped codes)."""
    global_weight: float = 1.0
    """Weight of L_global (LPIPS between G_u and G_s on random mapped codes)."""
    feature_mse_weight: float = 1e-2
    """Weight of the MSE between intermediate features (EG3D tri-planes) inside L_local / L_adj."""
    lpips_weight: float = 1.0
    """Weight of the perceptual distance inside L_local / L_adj."""
    id_weight: float = 0.1
    """Weight of the identity term 1 - cos(ID(G_u), ID(G_s)) inside L_local / L_adj (0 disables it)."""
    global_id_weight: float = 0.0
    """Weight of identity-aware preservation: 1 - cos(ID(G_u(w_r)), ID(G_s(w_r))) summed over the L_global samples,
    with the eraser's identity model, so random faces keep their identity and not only their pixels (0 = off;
    > 0 needs an identity model). Measured on demo-faces joint runs in docs/queue.md."""
    adjacency_samples: int = 2
    """Random codes per iteration for L_adj (summed, as GUIDE)."""
    global_samples: int = 2
    """Random codes per iteration for L_global (summed, as GUIDE)."""
    adjacency_alpha: tuple[float, float] = (0.0, 15.0)
    """alpha ~ U(lo, hi): how far (absolute, Frobenius) the adjacency shift reaches."""
    adjacency_alpha_relative: Optional[bool] = None
    """True: scale adjacency_alpha by typical ||w - w_avg|| / 30 (GUIDE's range is absolute in EG3D's W space);
    None = follow the backend's target-distance default (relative for StyleGAN2, absolute for EG3D)."""
    truncation_psi: float = 1.0
    """Truncation of the random mapped codes used by L_adj and L_global (GUIDE: 1, i.e. none; < 1 pulls them
    toward w_avg, > 1 pushes them out, e.g. to where a model's inverted real photos lie)."""
    noise_mode: str = "random"
    """Synthesis noise during training: 'random' (GUIDE), 'const' or 'none'."""
    persons_per_step: int = 8
    """Joint runs (``erase_many``): how many people's codes enter L_local per iteration. People are visited in a
    fixed seeded cyclic order, so each is visited once every ceil(P / persons_per_step) iterations and the batch
    stays bounded however many people there are (see docs/queue.md). Ignored for one person."""
    distinct_targets: bool = True
    """Joint runs: keep the people's UFO targets apart (orthogonalised target directions, see
    ``targets.separated_targets``) so that two people are not erased into the same face. Ignored for one person."""

    joint_balance: float = 0.0
    """Joint runs, in [0, 1]: with n erased people visited in an iteration, L_global is weighted by
    1 + joint_balance·(n - 1) (``joint.JointBalance``). 1 = the loss is the sum of each visited person's
    single-erase loss (every person's L_local meets the preservation pressure of a single erase); 0 = one L_global
    against all the visited people's L_local. Measured on demo-faces (docs/queue.md): balance trades erasure for
    preservation, and no setting tried reached 8 of 8 erased with >= 95 % of the others kept within 3x one single
    erase, so the default keeps the erasure (0). Ignored for one person."""
    joint_done_ratio: float = 0.0
    """Joint runs, in [0, 1): per-person early stop (``joint.PersonProgress``). A person whose L_local has fallen
    to this fraction of its value at their first visit counts as done: their L_local and the adjacency samples
    that start from them leave the loss until a later visit finds them above it again, and the run stops as soon
    as every erased person is done, so the patch changes the model no more than the slowest person needs.
    0 = off (every person trains for all iterations). Ignored for one person (a single erase is unchanged)."""

    full_finetune: bool = False
    """False: train a LoRA forget patch; True: fine-tune every synthesis parameter (the paper preset)."""
    lora_rank: int = 4
    """LoRA rank r."""
    lora_alpha: float = 4.0
    """LoRA alpha; the delta is scaled by alpha / r."""
    lora_targets: Optional[tuple[str, ...]] = None
    """Module names the LoRA wraps; None = the backend's default (the synthesis 3×3 convs)."""

    mixed_precision: str = "no"
    """accelerate mixed precision: 'no', 'bf16' or 'fp16'."""
    seed: int = 0
    """Seed of the run's single torch.Generator (z, alpha, cameras, noise): same seed -> identical patch."""
    checkpoint_every: int = 0
    """Compatibility only (a :class:`RunOptions` field, not part of the recipe): routed by :meth:`run_options`."""
    log_every: int = 1
    """Compatibility only (a :class:`RunOptions` field, not part of the recipe): routed by :meth:`run_options`."""
    progress: bool = True
    """Compatibility only (a :class:`RunOptions` field, not part of the recipe): routed by :meth:`run_options`."""

    # -- robust erasure (guide_unlearn.robust; all off in the lora / paper presets) ----------------------------
    adversarial_rounds: int = 0
    """Attack-and-erase rounds after the first ``iterations`` steps: re-invert the request (and augmented copies)
    through the current G_u with the attackers, add the codes they find to the erased set with their own UFO
    targets, train ``adversarial_iterations`` more steps. 0 = the plain GUIDE loop."""
    adversarial_iterations: int = 40
    """Training steps after each adversarial round."""
    attack_augmentations: int = 3
    """Augmented copies of each request photo the attackers invert too (flip, crop, colour; in turn)."""
    attack_steps: int = 100
    """Steps of the from-scratch projector attacker inside the erase (the audit's attacker runs 400); for the
    tracked attacker, the projector steps a code takes before it is erased."""
    round_attackers: tuple[str, ...] = ("default", "scratch")
    """Which attackers re-invert the request in each adversarial round: ``"default"`` (the base model's default
    inverter, loaded fresh with its shipped code book) and / or ``"scratch"`` (the from-scratch projector,
    ``attack_steps`` steps from w_avg). A scratch-found code is a W+ code about as far from the request code as
    another person's (docs/erasing.md): erasing it costs preservation."""
    repulsion_weight: float = 0.0
    """Weight of the identity-repulsion term: relu(cos(ID(G_u(w)), e_person) - repulsion_margin) on the
    attacker-found and adjacency codes (needs a differentiable identity network; 0 disables it)."""
    repulsion_margin: float = 0.0
    """Cosine below which the repulsion term is zero."""
    bridge_samples: int = 0
    """Adjacency samples drawn on the segments between the request codes and the attacker-found codes (codes
    that still rendered the person), each against the same point between their targets."""
    tracking_steps: int = 0
    """Tracked attacker: each step, one code per attack view (the request photo and its augmented copies) takes
    this many Adam steps of the from-scratch projector's objective (pixel MSE + perceptual, lr 0.03) through the
    CURRENT G_u; once a code has taken ``attack_steps`` such steps, it joins L_local every step with its own UFO
    target (and the repulsion term). The attacker follows the patch while it trains instead of being re-run
    between phases. 0 disables it."""
    tracking_restart: int = 0
    """Restart the tracked codes from w_avg (where the audit's projector starts) every this many steps, so the
    whole trajectory of a fresh projector is erased, not only where it ends; 0 = never restart."""
    decoys: int = 0
    """Decoy identities (seeded mapped codes at the erase's truncation psi) erased in the same patch, so a probe
    reading the patch finds k = decoys + 1 candidates instead of one person."""

    # -- presets -----------------------------------------------------------------------------------------------
    @classmethod
    def lora(cls, **overrides: Any) -> "EraseConfig":
        """The default preset: a rank-4 LoRA forget patch on the synthesis convs, 100 steps at lr 5e-3."""
        return cls(**overrides)

    @classmethod
    def paper(cls, **overrides: Any) -> "EraseConfig":
        """The official GUIDE recipe (SPEC §1): full fine-tune of the synthesis, Adam 1e-4, 1000 steps,
        extrapolated target at d = 30, 2 adjacency + 2 global samples, random noise."""
        base = dict(iterations=1000, lr=1e-4, full_finetune=True, target="extrapolate", target_distance=30.0,
                    target_distance_relative=False, noise_mode="random")
        base.update(overrides)
        return cls(**base)

    @classmethod
    def robust(cls, **overrides: Any) -> "EraseConfig":
        """The LoRA preset hardened against re-inversion (``guide_unlearn.robust``, docs/erasing.md): after the
        plain steps (``iterations``), adversarial rounds that re-invert the request through G_u and erase what the
        attackers find, an identity-repulsion term, and adjacency samples bridging to the found codes. The tracked
        attacker (``tracking_steps``) is off: on demo-faces it cost others_kept 1.00 -> 0.14 (docs/erasing.md)."""
        base = dict(adversarial_rounds=2, adversarial_iterations=40, attack_augmentations=3, attack_steps=100,
                    repulsion_weight=1.0, repulsion_margin=0.0, bridge_samples=2)
        base.update(overrides)
        return cls(**base)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "EraseConfig":
        """A preset by name: 'lora' (default), 'robust' or 'paper'."""
        if name == "lora":
            return cls.lora(**overrides)
        if name == "robust":
            return cls.robust(**overrides)
        if name == "paper":
            return cls.paper(**overrides)
        raise ConfigError(f"unknown preset {name!r}; use 'lora', 'robust' or 'paper'")

    def replace(self, **changes: Any) -> "EraseConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of every field."""
        out = dataclasses.asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out

    def recipe_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without the presentation fields (:data:`PRESENTATION_FIELDS`): exactly the settings that
        decide the patch. What a resume compares and what a patch records."""
        return {k: v for k, v in self.to_dict().items() if k not in PRESENTATION_FIELDS}

    def run_options(self, state_dir: Optional[Union[str, os.PathLike]] = None,
                    trackers: Optional[Sequence[str]] = None) -> RunOptions:
        """The :class:`RunOptions` given through this config's compatibility fields (progress, log_every,
        checkpoint_every), plus ``state_dir`` and ``trackers``."""
        return RunOptions(progress=self.progress, log_every=self.log_every, checkpoint_every=self.checkpoint_every,
                          state_dir=state_dir, trackers=None if trackers is None else tuple(trackers))

    def digest(self) -> str:
        """``"sha256:<16 hex>"`` of :meth:`recipe_dict`: equal for configs that produce the same patch from the
        same inputs, whatever their progress bar or logging settings. The same value as the recipe digest in a
        patch's model card (:func:`guide_unlearn.hub.erase_config_digest`)."""
        import hashlib
        import json

        blob = json.dumps(self.recipe_dict(), sort_keys=True, separators=(",", ":"), default=str).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EraseConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown EraseConfig fields {sorted(unknown)}; known: {sorted(names)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fixed)

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(isinstance(self.iterations, int) and self.iterations >= 1,
             f"iterations must be an integer >= 1, got {self.iterations!r}")
        need(_finite(self.lr) and self.lr > 0, f"lr must be a positive finite number, got {self.lr!r}")
        need(self.target in TARGET_KINDS, f"target must be one of {TARGET_KINDS}, got {self.target!r}")
        need(self.target_distance is None or (_finite(self.target_distance) and self.target_distance > 0),
             f"target_distance must be > 0 (or None for the backend default), got {self.target_distance!r}")
        for name in ("local_weight", "adjacency_weight", "global_weight", "feature_mse_weight", "lpips_weight",
                     "id_weight", "global_id_weight"):
            v = getattr(self, name)
            need(_finite(v) and v >= 0, f"{name} must be a finite number >= 0, got {v!r}")
        need(self.local_weight > 0, "local_weight must be > 0: without L_local nothing is erased")
        for name in ("adjacency_samples", "global_samples"):
            v = getattr(self, name)
            need(isinstance(v, int) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
        lo, hi = self.adjacency_alpha
        need(_finite(lo) and _finite(hi) and 0 <= lo <= hi, f"adjacency_alpha must be 0 <= lo <= hi, got {(lo, hi)}")
        need(_finite(self.truncation_psi), f"truncation_psi must be finite, got {self.truncation_psi!r}")
        need(self.noise_mode in NOISE_MODES, f"noise_mode must be one of {NOISE_MODES}, got {self.noise_mode!r}")
        need(isinstance(self.persons_per_step, int) and self.persons_per_step >= 1,
             f"persons_per_step must be an integer >= 1, got {self.persons_per_step!r}")
        need(_finite(self.joint_balance) and 0 <= self.joint_balance <= 1,
             f"joint_balance must be a number in [0, 1], got {self.joint_balance!r}")
        need(_finite(self.joint_done_ratio) and 0 <= self.joint_done_ratio < 1,
             f"joint_done_ratio must be a number in [0, 1), got {self.joint_done_ratio!r}")
        need(isinstance(self.lora_rank, int) and self.lora_rank >= 1,
             f"lora_rank must be an integer >= 1, got {self.lora_rank!r}")
        need(_finite(self.lora_alpha) and self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha!r}")
        need(self.lora_targets is None or (len(self.lora_targets) > 0 and all(isinstance(t, str) for t in self.lora_targets)),
             "lora_targets must be None or a non-empty tuple of module names")
        need(self.mixed_precision in MIXED_PRECISION,
             f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        need(isinstance(self.seed, int) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}")
        need(isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 0,
             f"checkpoint_every must be an integer >= 0, got {self.checkpoint_every!r}")
        need(isinstance(self.log_every, int) and self.log_every >= 1, f"log_every must be >= 1, got {self.log_every!r}")
        for name in ("adversarial_rounds", "adversarial_iterations", "attack_augmentations", "attack_steps",
                     "bridge_samples", "decoys", "tracking_steps", "tracking_restart"):
            v = getattr(self, name)
            need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, f"{name} must be an integer >= 0, got {v!r}")
        need(self.attack_steps >= 1, f"attack_steps must be >= 1, got {self.attack_steps!r}")
        if isinstance(self.round_attackers, list):
            object.__setattr__(self, "round_attackers", tuple(self.round_attackers))
        need(isinstance(self.round_attackers, tuple) and len(self.round_attackers) > 0
             and all(isinstance(a, str) and a in ROUND_ATTACKERS for a in self.round_attackers)
             and len(set(self.round_attackers)) == len(self.round_attackers),
             f"round_attackers must be a non-empty tuple of distinct names from {ROUND_ATTACKERS}, "
             f"got {self.round_attackers!r}")
        for name in ("repulsion_weight", "repulsion_margin"):
            v = getattr(self, name)
            need(_finite(v), f"{name} must be a finite number, got {v!r}")
        need(self.repulsion_weight >= 0, f"repulsion_weight must be >= 0, got {self.repulsion_weight!r}")
        need(not (self.full_finetune and self.is_robust),
             "the robust options (adversarial_rounds, repulsion_weight, bridge_samples, decoys, tracking_steps) train "
             "a LoRA patch; "
             "set full_finetune=False")

    @property
    def is_robust(self) -> bool:
        """Whether this config needs the robust loop (``guide_unlearn.robust``) rather than the plain one."""
        return any(getattr(self, k) for k in ROBUST_FIELDS)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
