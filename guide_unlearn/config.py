"""EraseConfig: the recipe every erase method shares (with the paper's defaults), the name of the method that runs
and that method's own settings; RunOptions: how a run behaves (progress, logging, checkpoints, trackers), never part
of the patch."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from .errors import ConfigError
from .methods import MethodConfig, get_method, list_methods
from .methods.base import count, finite, need

TARGET_KINDS = ("extrapolate", "average")
MIXED_PRECISION = ("no", "bf16", "fp16")
NOISE_MODES = ("random", "const", "none")
PRESENTATION_FIELDS = ("progress", "log_every", "checkpoint_every")
""":class:`RunOptions` settings that a recorded recipe may still hold (they once sat in the recipe): they change
how a run is shown or saved along the way, never the patch, so the recipe digest and the resume check leave them
out."""


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
    """How to erase: the recipe every method shares, the method that runs (``method``, a name from
    :func:`guide_unlearn.list_methods`) and that method's own settings (``method_config``, an instance of the
    method's config class; None = its defaults). Frozen: derive variants with :meth:`replace`.

    The defaults are the ``lora`` method's; :meth:`preset` builds any method's recommended recipe, routing each
    setting to the recipe or to the method's config: ``EraseConfig.preset("robust", iterations=50,
    adversarial_rounds=1)``.
    """

    iterations: int = 100
    """Optimisation steps (GUIDE: 1000; the LoRA methods: 100, see benchmarks/sweep_lora_lr.py)."""
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
    mixed_precision: str = "no"
    """accelerate mixed precision: 'no', 'bf16' or 'fp16'."""
    seed: int = 0
    """Seed of the run's single torch.Generator (z, alpha, cameras, noise): same seed -> identical patch."""

    method: str = "lora"
    """The erase method that runs (:func:`guide_unlearn.list_methods`): 'lora' (default), 'paper', 'joint',
    'robust', or a registered plug-in."""
    method_config: Optional[MethodConfig] = None
    """The method's own settings (an instance of its config class, e.g. ``JointConfig``); None = its defaults."""

    # -- presets -----------------------------------------------------------------------------------------------
    @classmethod
    def preset(cls, method: str = "lora", **settings: Any) -> "EraseConfig":
        """The recommended recipe of ``method`` (its ``recipe_defaults``, e.g. the paper's 1000 steps at lr 1e-4)
        with ``settings`` on top, each routed to the shared recipe or to the method's config; an unknown setting
        is a ConfigError naming the valid ones."""
        spec = get_method(method)
        shared, own = route_settings(method, settings)
        return cls(**{**spec.method_class.recipe_defaults, **shared}, method=method,
                   method_config=spec.config_class(**own))

    @classmethod
    def lora(cls, **settings: Any) -> "EraseConfig":
        """The default: a rank-4 LoRA forget patch on the synthesis convs, 100 steps at lr 5e-3, one person."""
        return cls.preset("lora", **settings)

    @classmethod
    def paper(cls, **settings: Any) -> "EraseConfig":
        """The official GUIDE recipe: full fine-tune of the synthesis, Adam 1e-4, 1000 steps, extrapolated target at
        d = 30, 2 adjacency + 2 global samples, random noise."""
        return cls.preset("paper", **settings)

    @classmethod
    def joint(cls, **settings: Any) -> "EraseConfig":
        """Several people in one LoRA patch (``erase_many``) and continual erases (``keep_erased``)."""
        return cls.preset("joint", **settings)

    @classmethod
    def robust(cls, **settings: Any) -> "EraseConfig":
        """The LoRA method hardened against re-inversion: attack-and-erase rounds, identity repulsion, bridges."""
        return cls.preset("robust", **settings)

    # -- derived configs and records ---------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "EraseConfig":
        """A copy with some settings changed (validated), each routed to the recipe or the method's config.
        ``method=`` switches the method (its settings start from its config's defaults)."""
        method = changes.pop("method", self.method)
        given = changes.pop("method_config", None)
        shared, own = route_settings(method, changes)
        if given is None:
            given = self.method_config if method == self.method else get_method(method).config_class()
        if own:
            given = given.replace(**own)
        return dataclasses.replace(self, **shared, method=method, method_config=given)

    def settings(self) -> dict[str, Any]:
        """Every setting by name, the recipe's and the method's, in one flat dict (the keywords
        :meth:`preset` and :meth:`replace` take)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in _METHOD_FIELDS}
        out.update({k: getattr(self.method_config, k) for k in self.method_config.field_names()})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict: the shared recipe, ``method`` and ``method_config`` (a dict)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "method_config"}
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
        out["method_config"] = self.method_config.to_dict()
        return out

    def recipe_dict(self) -> dict[str, Any]:
        """Exactly the settings that decide the patch (:meth:`to_dict`; how a run behaves is a
        :class:`RunOptions`): what a patch records, what a resume compares and what the digest hashes."""
        return self.to_dict()

    def digest(self) -> str:
        """``"sha256:<16 hex>"`` of :meth:`recipe_dict`: equal for configs that produce the same patch from the
        same inputs. The same value as the recipe digest in a patch's model card (``guide_unlearn.card``)."""
        blob = json.dumps(self.recipe_dict(), sort_keys=True, separators=(",", ":"), default=str).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EraseConfig":
        """Inverse of :meth:`to_dict`; unknown keys are a ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown EraseConfig fields {sorted(unknown)}; known: {sorted(names)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**fixed)

    def __post_init__(self) -> None:
        spec = get_method(self.method)
        mc = self.method_config
        if mc is None:
            object.__setattr__(self, "method_config", spec.config_class())
        elif isinstance(mc, Mapping):
            object.__setattr__(self, "method_config", spec.config_class.from_dict(mc))
        elif type(mc) is not spec.config_class:
            raise ConfigError(f"method {self.method!r} takes a {spec.config_class.__name__}, got "
                              f"{type(mc).__name__}; build it with EraseConfig.preset({self.method!r}, ...)")
        _check_recipe(self)


_METHOD_FIELDS = ("method", "method_config")
SHARED_FIELDS = tuple(f.name for f in dataclasses.fields(EraseConfig) if f.name not in _METHOD_FIELDS)
"""The settings of the recipe every method shares (``EraseConfig``'s fields but ``method`` and ``method_config``)."""
RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunOptions))
"""The settings of how a run behaves (:class:`RunOptions`)."""


def route_settings(method: str, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split keyword settings into (the shared recipe's, the method's own). An unknown name is a ConfigError that
    names the nearest valid setting and lists them all."""
    own_fields = get_method(method).config_class.field_names()
    shared = {k: v for k, v in settings.items() if k in SHARED_FIELDS}
    own = {k: v for k, v in settings.items() if k in own_fields}
    unknown = sorted(set(settings) - set(shared) - set(own))
    if unknown:
        raise ConfigError(unknown_settings_message(unknown, method, ()))
    return shared, own


def unknown_settings_message(unknown: Any, method: str, extra: Any = ()) -> str:
    """The message of an unknown erase setting: the nearest valid name, then every valid one (the recipe's, the
    method's, and ``extra`` ones such as the run options)."""
    own = get_method(method).config_class.field_names()
    valid = list(SHARED_FIELDS) + list(own) + list(extra)
    hints = [m for u in unknown for m in difflib.get_close_matches(u, valid, n=1)]
    hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
    others = f"; method {method!r}'s: {sorted(own)}" if own else f"; method {method!r} has no settings of its own"
    runs = f"; the run's: {sorted(extra)}" if extra else ""
    runs_given = sorted(set(unknown) & set(RUN_FIELDS) - set(extra))
    if runs_given:  # once recipe fields: how a run behaves is never part of the recipe
        hint += (f" ({', '.join(runs_given)}: how a run behaves, not the recipe; give them as RunOptions(...) or as "
                 "keywords of eraser.erase)")
    if "full_finetune" in unknown:  # the former switch: which parameters train is the method's
        full = [m for m in list_methods() if get_method(m).method_class.trains == "full"]
        hint += (f" (a full fine-tune of the synthesis is method {' or '.join(repr(m) for m in full)}; method "
                 f"{method!r} trains a {get_method(method).method_class.trains} patch)")
    shared = sorted(SHARED_FIELDS)
    return f"unknown erase settings {sorted(unknown)}{hint}. The recipe's settings: {shared}{others}{runs}"


def _check_recipe(cfg: EraseConfig) -> None:
    """Validate the shared recipe (ConfigError naming the field and its valid range)."""
    need(isinstance(cfg.iterations, int) and not isinstance(cfg.iterations, bool) and cfg.iterations >= 1,
         f"iterations must be an integer >= 1, got {cfg.iterations!r}")
    need(finite(cfg.lr) and cfg.lr > 0, f"lr must be a positive finite number, got {cfg.lr!r}")
    need(cfg.target in TARGET_KINDS, f"target must be one of {TARGET_KINDS}, got {cfg.target!r}")
    need(cfg.target_distance is None or (finite(cfg.target_distance) and cfg.target_distance > 0),
         f"target_distance must be > 0 (or None for the backend default), got {cfg.target_distance!r}")
    for name in ("local_weight", "adjacency_weight", "global_weight", "feature_mse_weight", "lpips_weight",
                 "id_weight", "global_id_weight"):
        v = getattr(cfg, name)
        need(finite(v) and v >= 0, f"{name} must be a finite number >= 0, got {v!r}")
    need(cfg.local_weight > 0, "local_weight must be > 0: without L_local nothing is erased")
    for name in ("adjacency_samples", "global_samples"):
        need(count(getattr(cfg, name)), f"{name} must be an integer >= 0, got {getattr(cfg, name)!r}")
    lo, hi = cfg.adjacency_alpha
    need(finite(lo) and finite(hi) and 0 <= lo <= hi, f"adjacency_alpha must be 0 <= lo <= hi, got {(lo, hi)}")
    need(finite(cfg.truncation_psi), f"truncation_psi must be finite, got {cfg.truncation_psi!r}")
    need(cfg.noise_mode in NOISE_MODES, f"noise_mode must be one of {NOISE_MODES}, got {cfg.noise_mode!r}")
    need(cfg.mixed_precision in MIXED_PRECISION,
         f"mixed_precision must be one of {MIXED_PRECISION}, got {cfg.mixed_precision!r}")
    need(count(cfg.seed), f"seed must be an integer >= 0, got {cfg.seed!r}")
