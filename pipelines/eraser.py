"""IdentityEraser: the user-facing object that inverts a photo, erases the identity and manages patches.

A facade: patches are applied, removed and merged by :mod:`guide_unlearn.patching`, photos become codes in
:mod:`guide_unlearn.pipelines.photos`, keyword settings become a config in :mod:`guide_unlearn.pipelines.components`,
and a request runs through :mod:`guide_unlearn.pipelines.requests` (the one loop,
:func:`guide_unlearn.engine.run_erase`, then the measurements of :mod:`guide_unlearn.pipelines.measure`)."""

from __future__ import annotations

import os
from typing import Any, ContextManager, Optional, Sequence, Union

import torch

from guide_unlearn import patching
from guide_unlearn.config import EraseConfig, RunOptions
from guide_unlearn.errors import ConfigError
from guide_unlearn.fingerprint import patch_state
from guide_unlearn.outputs import ErasureResult, ManyErasureResult
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.pipelines import components
from guide_unlearn.pipelines import requests as _requests
from guide_unlearn.pipelines import photos as _photos
from guide_unlearn.pipelines.components import LazyComponent, default_inverter, default_perceptual, eraser_repr
from guide_unlearn.pipelines import identity_check as _identity
from guide_unlearn.pipelines.photos import Faces, Inputs
from guide_unlearn.pipelines.requests import Requests
from guide_unlearn.protocols import GeneratorAdapter, IdentityModel, Inverter, PerceptualDistance, module_of
from guide_unlearn.resume import check_state_file

__all__ = ["IdentityEraser", "Inputs", "Faces", "Requests"]


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
        erase_defaults: Optional[dict[str, Any]] = None,  # erase settings this model recommends
    ):
        module_of(generator)
        self.generator = generator
        self.perceptual = perceptual
        self.inverter = inverter
        self.identity_model = identity_model
        self.name = name
        self.erase_defaults = dict(erase_defaults or {})
        self.identity_judge: Any = _identity.DEFAULT_JUDGE  # who checks identity (erase's judge=); None: nobody
        components.check_erase_defaults(self.erase_defaults)  # validate now, not at the first erase
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
        still apply), its licence, card and code book carried over, and model_index.json (inverter, erase_defaults)
        so that ``from_pretrained`` of the folder builds the same eraser. An existing folder is replaced only with
        ``overwrite=True`` and only when it is a generator folder written by this library. -> the folder."""
        from guide_unlearn.pipelines.assembly import save_eraser

        return save_eraser(self, save_directory, overwrite=overwrite)

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

    # -- erase ------------------------------------------------------------------------------------------------
    def erase(self, inputs: Inputs, config: Optional[EraseConfig] = None, camera: Optional[torch.Tensor] = None,
              state_dir: Optional[Union[str, os.PathLike]] = None, trackers: Optional[Sequence[str]] = None,
              measure: bool = True, face: Faces = None, keep_erased: Optional[Inputs] = None,
              method: Optional[str] = None, run: Optional[RunOptions] = None, judge: Any = _identity.DEFAULT,
              **settings: Any) -> ErasureResult:
        """Erase ONE person given photos of them (paths / PIL / image tensor [N, 3, H, W]) or their codes
        [K, num_ws, w_dim], with the erase method ``method`` (default 'lora'; :func:`guide_unlearn.list_methods`).
        All inputs are erased together. Returns with the applied patches as they were (the new patch is not
        applied). See :class:`ErasureResult`; ``result.verdict`` / ``result.succeeded`` judge the measured figures,
        and a failed erase is logged as a warning, whatever the method.

        Settings: ``eraser.erase(photo, method="robust", iterations=20, adversarial_rounds=1)`` changes settings of
        :meth:`default_config` (the recipe's or the method's; this model's recommended settings stay); ``config=``
        replaces them all (``settings`` then apply on top of it). How the run behaves — ``progress``,
        ``log_every``, ``checkpoint_every``, ``state_dir``, ``trackers`` — is a :class:`RunOptions` (``run=`` or
        these keywords), never part of the patch. An unknown setting is a ConfigError naming the valid ones.
        ``face`` picks the face in photos with several (see :meth:`invert`).

        ``keep_erased``: photos or codes of people erased by the patches applied now (continual requests), with a
        method that keeps them (``method="joint"``): the run keeps their current, erased rendering so that this
        patch does not bring them back (docs/queue.md). They are used in memory only.

        ``judge`` (default ``self.identity_judge``, "offline-v1"): the identity judge that every target must not
        recognise and that the verdict asks whether the person is still recognised; None: identity not checked, and
        the verdict says so (:func:`guide_unlearn.pipelines.identity_check.bind`)."""
        config, options = self._resolve(config, method, settings, state_dir, trackers, run)
        return _requests.erase_one(self, inputs, config, options, camera, measure, face, keep_erased, judge)

    def erase_many(self, requests: Requests, config: Optional[EraseConfig] = None,
                   camera: Optional[torch.Tensor] = None, measure: bool = True,
                   keep_erased: Optional[Inputs] = None, method: Optional[str] = None,
                   state_dir: Optional[Union[str, os.PathLike]] = None, trackers: Optional[Sequence[str]] = None,
                   run: Optional[RunOptions] = None, judge: Any = _identity.DEFAULT,
                   **settings: Any) -> ManyErasureResult:
        """Erase SEVERAL people in one run and one patch, with a method that erases several people (default
        'joint'; a method that cannot is refused before any work, naming those that can).

        ``requests`` maps a request id (any non-empty string the caller chooses; it is stored in the patch
        metadata, so do not use a name unless you mean to) to that person's photos or codes [K_i, num_ws, w_dim]
        (as :meth:`erase`); a sequence of (id, inputs) pairs is accepted too (duplicate ids are refused). With
        'joint', each person gets their own UFO target (kept apart, ``distinct_targets``); L_local and L_adj cover
        every person through a cyclic schedule of ``persons_per_step`` people per iteration; L_global preserves
        the rest, weighted 1 + ``joint_balance``·(n - 1) for the n people visited (docs/queue.md);
        ``joint_done_ratio`` > 0 stops training each person once done and ends the run when all are. Settings,
        ``config``, run options and ``keep_erased`` work as in :meth:`erase`; without ``config`` and without
        ``iterations=``, iterations are raised so that every person is visited at least half as often as a single
        erase visits its person. ``measure`` adds each person's figures and verdict (``result.verdicts``) and the
        target-similarity figures. The applied patches stay as they were. See :class:`ManyErasureResult`.
        """
        raise_iterations = config is None and "iterations" not in settings
        config, options = self._resolve(config, method, settings, state_dir, trackers, run, default="joint")
        return _requests.erase_many(self, requests, config, options, camera, measure, keep_erased, raise_iterations,
                                    judge)

    def default_config(self, method: Optional[str] = None, preset: Optional[str] = None,
                       **settings: Any) -> EraseConfig:
        """The EraseConfig of ``method`` (default 'lora'; ``preset=`` is the former spelling) with this model's
        recommended settings (``erase_defaults``, from the registry entry; for the methods that take them — every
        shipped method but 'paper') and then ``settings`` on top, each routed to the recipe or to the method's
        config: ``default_config("robust", iterations=20)`` keeps the rest of the model's recommendation."""
        return components.default_config(self.erase_defaults, _method_name(method, preset), settings)

    def _resolve(self, config, method, settings, state_dir, trackers, run, default: str = "lora"):
        """An erase call's arguments -> (EraseConfig, RunOptions) (:func:`components.resolve`)."""
        method = _method_name(method, settings.pop("preset", None), default=None)
        extra = {k: v for k, v in (("state_dir", state_dir), ("trackers", trackers)) if v is not None}
        config, options = components.resolve(self.erase_defaults, self.name, config, method, {**settings, **extra},
                                             run, default_method=default)
        check_state_file(options.state_dir)  # a saved state that is a link or FIFO: refused before any inversion
        return config, options


def _method_name(method: Optional[str], preset: Optional[str], default: Optional[str] = "lora") -> Optional[str]:
    """``method`` or its former spelling ``preset`` (both given and different: ConfigError)."""
    if method is not None and preset is not None and method != preset:
        raise ConfigError(f"method={method!r} and preset={preset!r} disagree; give only method=")
    return method or preset or default
