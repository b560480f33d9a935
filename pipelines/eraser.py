"""IdentityEraser: the user-facing object that inverts a photo, erases the identity and manages patches.

A facade: patches are applied, removed and merged by :mod:`guide_unlearn.patching`, photos become codes in
:mod:`guide_unlearn.pipelines.photos`, the run is :func:`guide_unlearn.engine.run_erase`, its measurements are
:mod:`guide_unlearn.pipelines.measure`, and several people are :mod:`guide_unlearn.pipelines.requests`."""

from __future__ import annotations

import logging
import os
from typing import Any, ContextManager, Optional, Sequence, Union

import torch

from guide_unlearn import patching
from guide_unlearn.config import EraseConfig
from guide_unlearn.engine import EraseRun, ErasureResult, run_erase
from guide_unlearn.errors import ConfigError
from guide_unlearn.fingerprint import patch_state
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.pipelines import measure as _measure
from guide_unlearn.pipelines import photos as _photos
from guide_unlearn.pipelines.components import (Deferred, LazyComponent, check_fields, default_inverter,
                                                default_perceptual, eraser_repr, provenance, warn_dropped_defaults)
from guide_unlearn.pipelines.photos import Faces, Inputs
from guide_unlearn.pipelines.requests import ManyErasureResult, Requests
from guide_unlearn.pipelines.requests import erase_many as _erase_many
from guide_unlearn.protocols import GeneratorAdapter, IdentityModel, Inverter, PerceptualDistance, module_of

logger = logging.getLogger(__name__)
__all__ = ["IdentityEraser", "ManyErasureResult", "Inputs", "Faces", "Requests"]


class IdentityEraser:
    """Generator + inverter + identity model + perceptual distance, and the patches applied to the generator.

    >>> eraser = IdentityEraser.from_pretrained("eg3d-ffhq")
    >>> result = eraser.erase(Image.open("person.jpg"))
    >>> result.patch.save_pretrained("patches/person-123")
    """

    def __init__(
        self,
        generator: GeneratorAdapter,  # the base generator (an nn.Module adapter)
        inverter: Optional[Inverter] = None,  # photo -> codes; None = the optimisation projector
        identity_model: Optional[IdentityModel] = None,  # ID-loss network (None disables the ID term)
        perceptual: Optional[PerceptualDistance] = None,  # None = LPIPS if available, else the labelled stand-in
        name: Optional[str] = None,  # where the generator came from (recorded in patches)
        erase_defaults: Optional[dict[str, Any]] = None,  # EraseConfig fields this model recommends
    ):
        module_of(generator)
        self.generator = generator
        self.perceptual = perceptual
        self.inverter = inverter
        self.identity_model = identity_model
        self.name = name
        self.erase_defaults = dict(erase_defaults or {})
        EraseConfig(**self.erase_defaults)  # validate now, not at the first erase
        patch_state(module_of(generator))  # fingerprint the base before anything touches it

    # Built at first use, so commands that only render (apply, merge, info) neither load their weights nor warn.
    perceptual = LazyComponent(default_perceptual, "The perceptual distance of the losses (built at first use: "
                               "LPIPS-VGG if its weights are found, else the labelled stand-in, with one warning).")
    inverter = LazyComponent(default_inverter, "Photo -> codes (built at first use: the model's default inverter, "
                             "else the optimisation projector).")
    identity_model = LazyComponent(None, "The ID-loss network, or None (ID term off); the default that "
                                   "from_pretrained defers (ArcFace IR-SE50 when its weights are found) is built at "
                                   "first use.")

    def __repr__(self) -> str:
        """One line: model, family, device, applied and merged patch ids, components (builds nothing)."""
        return eraser_repr(self)

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str = "eg3d-ffhq", device: Union[str, torch.device] = "cpu",
                        allow_download: bool = False, **components: Any) -> "IdentityEraser":
        """Assemble an eraser from a registry name ("eg3d-ffhq" — the default —, "stylegan2-ffhq", "e4e-ffhq",
        "demo-faces" — the embedded 64² face model, works offline —, "tiny-stylegan2", "tiny-eg3d", ...) or a
        local checkpoint / folder. Nothing is downloaded unless ``allow_download=True`` (or the file was fetched
        with ``guide-unlearn download NAME``); a missing file raises CheckpointError saying where to put it.
        ``components`` may override ``inverter``, ``identity_model`` and ``perceptual``."""
        from guide_unlearn.devices import resolve_device
        from guide_unlearn.pipelines.assembly import assemble

        return assemble(cls, name_or_path, resolve_device(device), allow_download=allow_download, **components)

    def save_pretrained(self, save_directory: Union[str, os.PathLike], overwrite: bool = False):
        """Save the generator as a model folder that loads again with its lineage: applied patches folded into
        the weights and recorded as merged, the original base fingerprint kept (so patches made for the base
        still apply), and the licence, model card and code book of the model it came from carried over. An
        existing folder is replaced only with ``overwrite=True`` and only when it is a generator folder written
        by this library (see :mod:`guide_unlearn.lineage`). -> the folder (pathlib.Path)."""
        from guide_unlearn.lineage import save_generator

        return save_generator(module_of(self.generator), save_directory, overwrite=overwrite)

    @property
    def device(self) -> torch.device:
        """Device of the generator."""
        return self.generator.w_avg.device

    # -- patches ----------------------------------------------------------------------------------------------
    @property
    def applied_patches(self) -> list[ForgetPatch]:
        """Patches currently applied (in application order; merged ones are listed in ``merged_patches``)."""
        return patching.applied(self.generator)

    @property
    def merged_patches(self) -> list[dict[str, Any]]:
        """Records ({'patch_id', ...}) of patches merged into the base weights."""
        return patching.merged(self.generator)

    def _check_patch(self, patch: ForgetPatch) -> None:
        """Compatibility: :func:`guide_unlearn.patching.check` against this generator."""
        patching.check(self.generator, patch, self.name)

    def apply_patch(self, patch: Union[ForgetPatch, str, os.PathLike]) -> ForgetPatch:
        """Apply a patch (object or folder) on top of the applied ones (:func:`guide_unlearn.patching.apply`).
        -> the patch."""
        return patching.apply(self.generator, patch, self.name)

    def remove_patch(self, patch: Union[ForgetPatch, str]) -> None:
        """Remove an applied patch (object or its patch_id)."""
        patching.remove(self.generator, patch)

    def patches_disabled(self) -> ContextManager[None]:
        """Render the base generator inside this context (applied LoRA patches are switched off, not removed;
        delta patches stay, as they live in the weights)."""
        return patching.disabled(self.generator)

    def merge_patches(self) -> list[dict[str, Any]]:
        """Merge every applied patch into the base weights (exact up to float rounding). The base fingerprint is
        kept, so later patches made for the same base still apply. -> the merged records."""
        return patching.merge(self.generator)

    # -- rendering and inversion ------------------------------------------------------------------------------
    def synthesize(self, ws: torch.Tensor, seed: int = 0, camera: Optional[torch.Tensor] = None,
                   noise_mode: str = "const") -> torch.Tensor:
        """ws [N, num_ws, w_dim] (+ camera [N or 1, c_dim]) -> images [N, 3, H, W] in [-1, 1], rendered with the
        applied patches. ``seed`` drives any randomness (random noise, ray jitter)."""
        return _photos.synthesize(self.generator, ws, seed, camera, noise_mode)

    def sample(self, n: int = 1, seed: int = 0, truncation_psi: float = 1.0, noise_mode: str = "random",
               camera: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``n`` random faces -> images [n, 3, H, W] in [-1, 1], rendered with the applied patches.

        ``seed`` draws the codes z [n, z_dim] (on the CPU, so a seed gives the same faces on every device) and,
        with ``noise_mode="random"`` (the default), the per-layer noise and any ray jitter: the same seed
        reproduces the images exactly. ``"const"`` keeps the generator's fixed noise, ``"none"`` renders without
        noise. ``truncation_psi`` < 1 pulls the codes toward w_avg. Camera models render from ``camera``
        ([n or 1, c_dim], or (yaw, pitch) in radians) if given, else their default camera."""
        return _photos.sample(self.generator, n, seed, truncation_psi, noise_mode, camera)

    def invert(self, image_or_images: Inputs, camera: Optional[torch.Tensor] = None, align: bool = True,
               seed: int = 0, face: Faces = None, progress: bool = True) -> torch.Tensor:
        """Photos (paths, PIL images, or a tensor [N, 3, H, W] in [-1, 1] of already aligned crops) -> codes
        [N, num_ws, w_dim]. Paths and PIL images are face-aligned for the inverter when ``align``; a photo with
        several faces (or a face too small for the inverter) is refused unless ``face`` picks one: an index into
        the faces listed by the error (largest first), or one index per photo. ``progress`` shows a progress bar
        for optimising inverters (hundreds of steps)."""
        return _photos.invert(self, image_or_images, camera, align, seed, face, progress)

    def _prepare_images(self, inputs: Inputs, camera: Optional[torch.Tensor], align: bool, face: Faces = None):
        """-> (images [N, 3, H, W], cameras or None): :func:`guide_unlearn.pipelines.photos.prepare_images`."""
        return _photos.prepare_images(self, inputs, camera, align, face)

    # -- erase ------------------------------------------------------------------------------------------------
    def erase(self, inputs: Inputs, config: Optional[EraseConfig] = None, camera: Optional[torch.Tensor] = None,
              state_dir: Optional[Union[str, os.PathLike]] = None, trackers: Optional[Sequence[str]] = None,
              measure: bool = True, face: Faces = None, keep_erased: Optional[Inputs] = None,
              **overrides: Any) -> ErasureResult:
        """Erase ONE person given photos of them (paths / PIL / image tensor [N, 3, H, W]) or their codes
        [K, num_ws, w_dim]. All inputs are erased together. Returns with the applied patches as they were (the
        new patch is not applied). See :class:`ErasureResult`; ``result.verdict`` / ``result.succeeded`` judge
        the measured figures, and a failed erase is logged as a warning.

        Settings: ``eraser.erase(photo, iterations=20)`` changes fields of :meth:`default_config` (this model's
        recommended settings stay); ``config=`` replaces them all (``overrides`` then apply on top of it).
        ``face`` picks the face in photos with several (see :meth:`invert`). How the run behaves (progress,
        log_every, checkpoint_every, ``state_dir``, ``trackers``) is a :class:`~guide_unlearn.config.RunOptions`,
        never part of the patch.

        ``keep_erased``: photos or codes of people erased by the patches applied now (continual requests); the
        run keeps their current, erased rendering so that this patch does not bring them back (docs/queue.md).
        They are used in memory only."""
        check_fields(overrides)
        if config is None:
            config = self.default_config(**overrides)
        else:
            self._warn_dropped_defaults(config)
            if overrides:
                config = config.replace(**overrides)
        options = config.run_options(state_dir=state_dir, trackers=trackers)
        w_u, photos, cams = _photos.codes(self, inputs, camera, face, progress=options.progress)
        keep = _photos.keep_codes(self, keep_erased, camera)
        if config.is_robust:  # the robust preset: attack-and-erase rounds (pipelines/robust_attacks.py)
            if keep is not None:
                raise ConfigError("keep_erased is not supported by the robust preset yet; erase with preset 'lora' "
                                  "or without keep_erased")
            from guide_unlearn.pipelines.robust_attacks import robust_erase

            run = EraseRun(*robust_erase(self, w_u, config, photos, cams), run=options)
            return _measure.erasure_result(self, run, w_u, measure, photos, cams, config)
        run = run_erase(self.generator, w_u, config, self.perceptual, self.identity_model,
                        extra_metadata=provenance(self.name), keep=keep, run=options)
        result = _measure.erasure_result(self, run, w_u, measure, photos, cams, config)
        if result.succeeded is False:
            logger.warning("the erase did not succeed: %s", "; ".join(result.verdict["problems"]))
        return result

    def erase_many(self, requests: Requests, config: Optional[EraseConfig] = None,
                   camera: Optional[torch.Tensor] = None, measure: bool = True,
                   keep_erased: Optional[Inputs] = None) -> ManyErasureResult:
        """Erase SEVERAL people in one run and one patch.

        ``requests`` maps a request id (any non-empty string the caller chooses; it is stored in the patch
        metadata, so do not use a name unless you mean to) to that person's photos or codes [K_i, num_ws, w_dim]
        (as :meth:`erase`); a sequence of (id, inputs) pairs is accepted too (duplicate ids are refused). Each
        person gets their own UFO target (kept apart, ``config.distinct_targets``); L_local and L_adj cover every
        person through a cyclic schedule of ``config.persons_per_step`` people per iteration; L_global preserves
        the rest, weighted 1 + ``config.joint_balance``·(n - 1) for the n people visited (docs/queue.md: the
        default 0 keeps the erasure, 1 gives every person a single erase's preservation);
        ``config.joint_done_ratio`` > 0 stops training each person once done and ends the run when all are.
        Without ``config`` the model's default config is used with iterations raised so that every person is
        visited at least half as often as a single erase visits its person. ``measure`` adds the
        target-similarity figures. ``keep_erased``: as in :meth:`erase`. The applied patches stay as they were.
        See :class:`ManyErasureResult`.
        """
        return _erase_many(self, requests, config, camera, measure, keep_erased)

    def _provenance(self) -> dict[str, Any]:
        return provenance(self.name)

    def default_config(self, preset: str = "lora", **overrides: Any) -> EraseConfig:
        """The ``preset`` EraseConfig with this model's recommended settings (``erase_defaults``, from the registry
        entry; applied to the LoRA-based presets 'lora' and 'robust', not to 'paper') and then ``overrides`` on top:
        ``default_config(iterations=20)`` keeps the rest of the model's recommendation."""
        check_fields(overrides)
        base = self.erase_defaults if preset in ("lora", "robust") else {}
        return EraseConfig.preset(preset, **{**base, **overrides})

    def _warn_dropped_defaults(self, config: EraseConfig) -> None:
        warn_dropped_defaults(config, self.erase_defaults, self.name)


_Deferred = Deferred  # the former private name (pipelines.assembly and older code)
_check_fields = check_fields
