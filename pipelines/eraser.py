"""IdentityEraser: the user-facing object that inverts a photo, erases the identity and manages patches."""

from __future__ import annotations

import contextlib
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import torch
from PIL import Image
from torch import nn

from guide_unlearn import lora as L
from guide_unlearn.config import EraseConfig
from guide_unlearn.engine import ErasureResult, check_latents, judge_erasure, run_erase
from guide_unlearn.errors import (ConfigError, GuideUnlearnError, InputError, PatchError, PatchMismatchError,
                                  PatchStateError)
from guide_unlearn.fingerprint import patch_state
from guide_unlearn.images import check_image_range, load_image, pil_to_tensor
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.protocols import GeneratorAdapter, IdentityModel, Inverter, PerceptualDistance, module_of

logger = logging.getLogger(__name__)
Inputs = Union[torch.Tensor, Image.Image, str, os.PathLike, Sequence[Any]]
Faces = Union[None, int, Sequence[Optional[int]]]
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
        # The perceptual distance, default inverter and default identity network are built at first use, so
        # commands that only render (apply, merge, info) neither load their weights nor warn that they are missing.
        self.perceptual = perceptual
        self.inverter = inverter
        self.identity_model = identity_model
        self.name = name
        self.erase_defaults = dict(erase_defaults or {})
        EraseConfig(**self.erase_defaults)  # validate now, not at the first erase
        patch_state(module_of(generator))  # fingerprint the base before anything touches it

    @property
    def perceptual(self) -> PerceptualDistance:
        """The perceptual distance of the losses (built at first use: LPIPS-VGG if its weights are found, else
        the labelled stand-in, with one warning)."""
        if self._perceptual is None:
            from guide_unlearn.adapters.perceptual import default_perceptual

            self._perceptual = default_perceptual(self.generator.w_avg.device)
        return self._perceptual

    @perceptual.setter
    def perceptual(self, value: Optional[PerceptualDistance]) -> None:
        self._perceptual = value

    @property
    def inverter(self) -> Inverter:
        """Photo -> codes (built at first use: the model's default inverter, else the optimisation projector)."""
        if isinstance(self._inverter, _Deferred):
            self._inverter = self._inverter.build()  # the model's default inverter (None: the projector below)
        if self._inverter is None:
            from guide_unlearn.adapters.projector import OptimizationInverter

            self._inverter = OptimizationInverter(self.generator, self.perceptual)
        return self._inverter

    @inverter.setter
    def inverter(self, value: Optional[Inverter]) -> None:
        self._inverter = value

    @property
    def identity_model(self) -> Optional[IdentityModel]:
        """The ID-loss network, or None (ID term off). The default that ``from_pretrained`` defers is resolved
        here at first use: ArcFace IR-SE50 when its weights are found, else None (one warning line)."""
        if isinstance(self._identity_model, _Deferred):
            self._identity_model = self._identity_model.build()
        return self._identity_model

    @identity_model.setter
    def identity_model(self, value: Optional[IdentityModel]) -> None:
        self._identity_model = value

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
        return list(patch_state(module_of(self.generator))["applied"].values())

    @property
    def merged_patches(self) -> list[dict[str, Any]]:
        """Records ({'patch_id', ...}) of patches merged into the base weights."""
        return list(patch_state(module_of(self.generator))["merged"])

    def _check_patch(self, patch: ForgetPatch) -> None:
        state = patch_state(module_of(self.generator))
        fam = patch.metadata.get("generator_family")
        base = patch.metadata.get("base_name")
        made_for = repr(base) if base else "a base model whose name it does not record"
        here = f" ({self.name!r})" if self.name else ""
        todo = (f"load {base!r} (IdentityEraser.from_pretrained({base!r})) and apply it there" if base else
                "apply it to the base model it was made for")
        cli = f"pass --model {base}" if base else "pass the --model it was made for"
        if fam != self.generator.family:
            msg = (f"this patch was made for {made_for}, a {fam!r} generator; this generator{here} is a "
                   f"{self.generator.family!r} one")
            raise PatchMismatchError(f"{msg}; {todo}", cli_message=f"{msg}; {cli}")
        if patch.base_fingerprint != state["base_fingerprint"]:
            msg = (f"this patch was made for {made_for} (base weights {patch.base_fingerprint[:19]}…), but this "
                   f"generator{here} has base weights {state['base_fingerprint'][:19]}…")
            raise PatchMismatchError(f"{msg}; {todo}", cli_message=f"{msg}; {cli}")
        if patch.patch_id in state["applied"] or any(m.get("patch_id") == patch.patch_id for m in state["merged"]):
            raise PatchStateError(f"patch {patch.patch_id} is already applied (or merged); applying it twice would "
                                  "double its effect")

    def apply_patch(self, patch: Union[ForgetPatch, str, os.PathLike]) -> ForgetPatch:
        """Apply a patch (object or folder) on top of the applied ones. -> the patch."""
        if not isinstance(patch, ForgetPatch):
            patch = ForgetPatch.from_pretrained(patch)
        self._check_patch(patch)
        model = module_of(self.generator)
        if patch.kind == "lora":
            _apply_lora(model, self.generator, patch)
        else:
            _add_delta(model, patch, sign=1.0, generator=self.generator)
        patch_state(model)["applied"][patch.patch_id] = patch
        return patch

    def remove_patch(self, patch: Union[ForgetPatch, str]) -> None:
        """Remove an applied patch (object or its patch_id)."""
        pid = patch.patch_id if isinstance(patch, ForgetPatch) else str(patch)
        model = module_of(self.generator)
        applied = patch_state(model)["applied"]
        if pid not in applied:
            raise PatchStateError(f"patch {pid} is not applied; applied: {list(applied) or 'none'}")
        p = applied[pid]
        if p.kind == "lora":
            L.delete_adapter(model, p.adapter_name)
        else:
            _add_delta(model, p, sign=-1.0)
        del applied[pid]

    @contextlib.contextmanager
    def patches_disabled(self) -> Iterator[None]:
        """Render the base generator inside this context (applied LoRA patches are switched off, not removed;
        delta patches stay, as they live in the weights)."""
        model = module_of(self.generator)
        with L.suppressed(model, L.adapter_names(model)):
            yield

    def merge_patches(self) -> list[dict[str, Any]]:
        """Merge every applied patch into the base weights (exact up to float rounding). The base fingerprint is
        kept, so later patches made for the same base still apply. -> the merged records."""
        model = module_of(self.generator)
        state = patch_state(model)
        L.unload_merged(model)
        records = []
        for pid, p in state["applied"].items():
            records.append({"patch_id": pid, "kind": p.kind, "final_losses": p.metadata.get("final_losses")})
        state["merged"].extend(records)
        state["applied"].clear()
        return records

    # -- rendering and inversion ------------------------------------------------------------------------------
    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor, seed: int = 0, camera: Optional[torch.Tensor] = None,
                   noise_mode: str = "const") -> torch.Tensor:
        """ws [N, num_ws, w_dim] (+ camera [N or 1, c_dim]) -> images [N, 3, H, W] in [-1, 1], rendered with the
        applied patches. ``seed`` drives any randomness (random noise, ray jitter)."""
        ws = check_latents(ws, self.generator)
        g = torch.Generator(device=self.device).manual_seed(seed)
        if camera is not None and camera.shape[0] == 1 and ws.shape[0] > 1:
            camera = camera.expand(ws.shape[0], -1)
        return self.generator.synthesis(ws, camera, noise_mode=noise_mode, generator=g).images.clamp(-1, 1)

    @torch.no_grad()
    def sample(self, n: int = 1, seed: int = 0, truncation_psi: float = 1.0, noise_mode: str = "random",
               camera: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``n`` random faces -> images [n, 3, H, W] in [-1, 1], rendered with the applied patches.

        ``seed`` draws the codes z [n, z_dim] (on the CPU, so a seed gives the same faces on every device) and,
        with ``noise_mode="random"`` (the default), the per-layer noise and any ray jitter: the same seed
        reproduces the images exactly, another seed gives other images. ``noise_mode="const"`` keeps the
        generator's fixed noise (only the codes change with the seed); ``"none"`` renders without noise.
        ``truncation_psi`` < 1 pulls the codes toward w_avg (less variety, fewer artefacts). Camera models render
        from ``camera`` ([n or 1, c_dim], or (yaw, pitch) in radians) if given, else their default camera.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"n must be a positive number of samples, got {n!r}")
        if noise_mode not in ("random", "const", "none"):
            raise InputError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        z = torch.randn(n, self.generator.z_dim, generator=torch.Generator().manual_seed(seed)).to(self.device)
        cams = None
        if camera is not None and self.generator.c_dim:
            from guide_unlearn.pipelines.assembly import camera_from_user

            cams = camera_from_user(self.generator, camera, n).to(self.device)
        ws = self.generator.mapping(z, cams, truncation_psi=truncation_psi)
        return self.synthesize(ws, seed=seed, camera=cams, noise_mode=noise_mode)

    def invert(self, image_or_images: Inputs, camera: Optional[torch.Tensor] = None, align: bool = True,
               seed: int = 0, face: Faces = None, progress: bool = True) -> torch.Tensor:
        """Photos (paths, PIL images, or a tensor [N, 3, H, W] in [-1, 1] of already aligned crops) -> codes
        [N, num_ws, w_dim]. Paths and PIL images are face-aligned for the inverter when ``align``; a photo with
        several faces (or a face too small for the inverter) is refused unless ``face`` picks one: an index into
        the faces listed by the error (largest first), or one index per photo. ``progress`` shows a progress bar
        for optimising inverters (hundreds of steps)."""
        images, cams = self._prepare_images(image_or_images, camera, align, face)
        g = torch.Generator(device=self.device).manual_seed(seed)
        with _inverter_progress(self.inverter, progress):
            return self.inverter.invert(images, cams, generator=g)

    def _prepare_images(self, inputs: Inputs, camera: Optional[torch.Tensor], align: bool, face: Faces = None):
        items = _as_list(inputs)
        tensors, cams = [], []
        size = getattr(self.generator, "img_resolution", None)
        choices = _face_choices(face, len(items))
        for item, choice in zip(items, choices):
            if torch.is_tensor(item):
                x = item.unsqueeze(0) if item.ndim == 3 else item
                if x.ndim != 4 or x.shape[1] != 3:
                    raise InputError(f"image tensors must be [N, 3, H, W] in [-1, 1], got {list(item.shape)}")
                if not torch.isfinite(x).all():
                    raise InputError("image tensor contains NaN or Inf")
                check_image_range(x)
                tensors.append(x.float())
                cams.append(None)
                continue
            img = load_image(item)
            cam = None
            if align:
                from guide_unlearn.pipelines.assembly import align_photo

                img, cam = align_photo(img, self.inverter.input_alignment, item, face=choice,
                                       min_face=_min_face_size(self.inverter, size))
            tensors.append(pil_to_tensor(img, size))
            cams.append(cam)
        shapes = {tuple(t.shape[-2:]) for t in tensors}
        if len(shapes) > 1:
            target = max(shapes)
            tensors = [torch.nn.functional.interpolate(t, size=target, mode="bilinear", antialias=True) for t in tensors]
        images = torch.cat(tensors).to(self.device)
        cameras = self._cameras(camera, cams, images.shape[0])
        return images, cameras

    def _cameras(self, camera, estimated, n):
        if self.generator.c_dim == 0:
            return None
        from guide_unlearn.pipelines.assembly import camera_from_user

        if camera is not None:
            return camera_from_user(self.generator, camera, n).to(self.device)
        if all(c is not None for c in estimated):
            return torch.stack([torch.as_tensor(c, dtype=torch.float32) for c in estimated]).to(self.device)
        logger.warning("no camera given or estimated; using the frontal camera (for accuracy pass camera=(yaw, pitch) "
                       "in Python, --camera YAW,PITCH on the command line)")
        frontal = getattr(self.generator, "frontal_camera", None)
        if frontal is None:
            return None  # the generator's own default rendering camera
        return frontal(n).to(self.device)

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
        ``face`` picks the face in photos with several (see :meth:`invert`).

        ``keep_erased``: photos or codes of people erased by the patches applied now (continual requests); the
        run keeps their current, erased rendering so that this patch does not bring them back (docs/queue.md).
        They are used in memory only."""
        _check_fields(overrides)
        if config is None:
            config = self.default_config(**overrides)
        else:
            self._warn_dropped_defaults(config)
            if overrides:
                config = config.replace(**overrides)
        w_u, photos, cams = self._codes(inputs, camera, face, progress=config.progress)
        keep = self._keep_codes(keep_erased, camera)
        if config.is_robust:  # the robust preset: attack-and-erase rounds (pipelines/robust_attacks.py)
            if keep is not None:
                raise ConfigError("keep_erased is not supported by the robust preset yet; erase with preset 'lora' "
                                  "or without keep_erased")
            from guide_unlearn.pipelines.robust_attacks import robust_erase

            patch, w_t, history, seconds = robust_erase(self, w_u, config, photos, cams)
            result = self._result(patch, w_u, w_t, history, seconds, measure, photos, cams)
            result.verdict = judge_erasure(result.metrics, config.iterations, config.lr)
            return result
        patch, w_t, history, seconds = run_erase(
            self.generator, w_u, config, self.perceptual, self.identity_model, state_dir=state_dir,
            trackers=trackers, extra_metadata=self._provenance(), keep=keep)
        result = self._result(patch, w_u, w_t, history, seconds, measure, photos, cams)
        result.verdict = judge_erasure(result.metrics, config.iterations, config.lr)
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
        the rest. Without ``config`` the model's default config is used with iterations raised so that every
        person is visited at least half as often as a single erase visits its person. ``measure`` adds the
        target-similarity figures. ``keep_erased``: as in :meth:`erase`. The applied patches stay as they were.
        See :class:`ManyErasureResult`.
        """
        items = _request_items(requests)
        if config is None:
            config = self.default_config()
            visits = math.ceil(config.iterations * len(items) / (2 * min(config.persons_per_step, len(items))))
            config = config.replace(iterations=max(config.iterations, visits))
        codes, person_of = [], []
        for p, (rid, inputs) in enumerate(items):
            try:
                _check_not_empty(inputs)
                w, _, _ = self._codes(inputs, camera)
            except GuideUnlearnError as e:
                raise type(e)(f"request {rid!r}: {e}") from e
            codes.append(w)
            person_of += [p] * w.shape[0]
        ids = [rid for rid, _ in items]
        w_u = torch.cat(codes)
        person = torch.tensor(person_of, dtype=torch.long)
        keep = self._keep_codes(keep_erased, camera)
        patch, w_t, history, seconds = run_erase(
            self.generator, w_u, config, self.perceptual, self.identity_model,
            extra_metadata=self._provenance(), person_of=person, person_ids=ids, keep=keep)
        split = [c.shape[0] for c in codes]
        w_src = dict(zip(ids, torch.split(w_u, split)))
        w_tgt = dict(zip(ids, torch.split(w_t, split)))
        losses = {r["request_id"]: r["final_losses"] for r in patch.metadata["requests"]}
        similarity = self._target_similarity(w_u, w_t, person, config) if measure else {}
        return ManyErasureResult(patch=patch, request_ids=ids, w_source=w_src, w_target=w_tgt, final_losses=losses,
                                 history=history, seconds=seconds, target_similarity=similarity)

    def _keep_codes(self, keep_erased: Optional[Inputs], camera) -> Optional[torch.Tensor]:
        if keep_erased is None:
            return None
        try:
            _check_not_empty(keep_erased)
            return self._codes(keep_erased, camera)[0]
        except InputError as e:
            raise type(e)(f"keep_erased: {e}") from e

    @torch.no_grad()
    def _target_similarity(self, w_u, w_t, person, config: EraseConfig) -> dict[str, float]:
        """Pairwise likeness of the people's targets (separated, and plain UFO for comparison)."""
        from guide_unlearn.engine import resolve_distances
        from guide_unlearn.targets import target_similarity, ufo_target

        d, _ = resolve_distances(config, self.generator)
        plain = ufo_target(w_u, self.generator.w_avg, config.target, d)
        out: dict[str, float] = {}
        for prefix, targets in (("", w_t), ("ufo_", plain)):
            out.update({prefix + k: v for k, v in target_similarity(targets, person, self.generator.w_avg).items()})
            if self.identity_model is not None and int(person.max()) > 0:
                first = torch.stack([targets[(person == p).nonzero()[0, 0]] for p in range(int(person.max()) + 1)])
                emb = torch.nn.functional.normalize(self.identity_model.embed(self.synthesize(first)).float(), dim=1)
                cos = emb @ emb.T
                pairs = cos[torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)]
                out[prefix + "identity_cosine_max"] = float(pairs.max())
                out[prefix + "identity_cosine_mean"] = float(pairs.mean())
        return out

    def _provenance(self) -> dict[str, Any]:
        """Patch metadata naming the base: ``base_name`` and, when the registry knows it, ``base_license``."""
        from guide_unlearn.pipelines.registry import base_license

        lic = base_license(self.name)
        return {"base_name": self.name, **({"base_license": lic} if lic else {})}

    def default_config(self, preset: str = "lora", **overrides: Any) -> EraseConfig:
        """The ``preset`` EraseConfig with this model's recommended settings (``erase_defaults``, from the registry
        entry; applied to the LoRA-based presets 'lora' and 'robust', not to 'paper') and then ``overrides`` on top:
        ``default_config(iterations=20)`` is the way to change a few settings and keep the rest of the model's
        recommendation."""
        _check_fields(overrides)
        base = self.erase_defaults if preset in ("lora", "robust") else {}
        return EraseConfig.preset(preset, **{**base, **overrides})

    def _warn_dropped_defaults(self, config: EraseConfig) -> None:
        """An explicit config built from EraseConfig() silently loses this model's recommended settings: say so."""
        plain = EraseConfig()
        dropped = {k: v for k, v in self.erase_defaults.items()
                   if getattr(config, k) == getattr(plain, k) and getattr(plain, k) != v and not config.full_finetune}
        if dropped:
            logger.warning("this config does not use %s's recommended settings %s; to change a few settings and keep "
                           "the rest use eraser.erase(photo, iterations=...) or eraser.default_config(iterations=...)",
                           self.name or "this model", ", ".join(f"{k}={v!r}" for k, v in sorted(dropped.items())))

    def _codes(self, inputs: Inputs, camera, face: Faces = None, progress: bool = True):
        """-> (codes [K, num_ws, w_dim], the prepared photos [K, 3, H, W] or None, their cameras or None)."""
        if torch.is_tensor(inputs) and inputs.ndim in (2, 3) and tuple(inputs.shape[-2:]) == (
                self.generator.num_ws, self.generator.w_dim):
            return check_latents(inputs, self.generator), None, None
        if torch.is_tensor(inputs) and inputs.ndim in (2, 3) and inputs.shape[0] != 3:
            return check_latents(inputs, self.generator), None, None  # raises a LatentError with the shape
        images, cams = self._prepare_images(inputs, camera, align=True, face=face)
        g = torch.Generator(device=self.device).manual_seed(0)
        with _inverter_progress(self.inverter, progress):
            return self.inverter.invert(images, cams, generator=g), images, cams

    @torch.no_grad()
    def _result(self, patch: ForgetPatch, w_u, w_t, history, seconds, measure: bool, photos=None,
                photo_cams=None) -> ErasureResult:
        # Everything the source generator renders first, then the patch is applied once for the patched renders.
        before = self.synthesize(w_u, camera=photo_cams)
        target = self.synthesize(w_t, camera=photo_cams)
        cams = self.generator.evaluation_cameras(11)
        orbit = lambda: self.synthesize(w_u[:1].expand(cams.shape[0], -1, -1), camera=cams.to(self.device))
        views_before = orbit() if cams is not None else None
        w_r = _random_codes(self, 16, seed=12345) if measure else None
        src_r = self.synthesize(w_r) if measure else None
        self.apply_patch(patch)
        try:
            after = self.synthesize(w_u, camera=photo_cams)
            views_after = orbit() if cams is not None else None
            after_r = self.synthesize(w_r) if measure else None
        finally:
            self.remove_patch(patch)
        metrics = _pixel_metrics(before, after, target, src_r, after_r) if measure else {}
        if photos is not None:
            metrics.update(_photo_fit(photos, before, after))
        return ErasureResult(patch=patch, w_source=w_u, w_target=w_t, history=history, images_before=before,
                             images_after=after, target_images=target, views_before=views_before,
                             views_after=views_after, metrics=metrics, seconds=seconds,
                             photos=None if photos is None else photos.detach().cpu())


def _request_items(requests: Requests) -> list[tuple[str, Inputs]]:
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


def _check_not_empty(inputs: Inputs) -> None:
    if inputs is None or (isinstance(inputs, (list, tuple)) and not inputs) or (
            torch.is_tensor(inputs) and inputs.numel() == 0):
        raise InputError("the request is empty; give at least one photo or code of the person")


class _Deferred:
    """A component built at its first use: ``_Deferred(factory)``; ``build()`` -> the component."""

    def __init__(self, factory):
        self.build = factory

    def __repr__(self) -> str:
        return "<built at first use>"


@contextlib.contextmanager
def _inverter_progress(inverter: Any, progress: bool) -> Iterator[None]:
    """Switch an optimising inverter's progress bar (its ``progress`` attribute, where it has one) for a call."""
    if not hasattr(inverter, "progress"):
        yield
        return
    saved = inverter.progress
    inverter.progress = bool(progress)
    try:
        yield
    finally:
        inverter.progress = saved


def _random_codes(eraser: IdentityEraser, n: int, seed: int) -> torch.Tensor:
    """n mapped codes [n, num_ws, w_dim] from a fixed seed (the same for every measurement)."""
    g = torch.Generator(device=eraser.device).manual_seed(seed)
    z = torch.randn(n, eraser.generator.z_dim, generator=g, device=eraser.device)
    return eraser.generator.mapping(z, None)


def _pixel_metrics(src_u, after_u, src_t, src_r, after_r) -> dict[str, float]:
    """Pixel-MSE measurements the loop does not optimise directly.

    erased_mse:    MSE(G_u(w_u), G_s(w_t)); before_mse: MSE(G_s(w_u), G_s(w_t)) — erasure when erased < before.
    preserved_mse: mean MSE(G_u(w_r), G_s(w_r)) on random mapped codes; random_pair_mse: mean MSE between
                   different random samples of G_s — preservation when preserved << random_pair.
    """
    mse = lambda a, b: float((a - b).square().mean())
    n = src_r.shape[0]
    pairs = [mse(src_r[i], src_r[j]) for i in range(n) for j in range(i + 1, n)]
    return {"erased_mse": mse(after_u, src_t), "before_mse": mse(src_u, src_t),
            "preserved_mse": mse(after_r, src_r), "random_pair_mse": sum(pairs) / max(1, len(pairs))}


def _photo_fit(photos: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> dict[str, float]:
    """How close the model's rendering of the photo was, before and after the patch (mean |pixel| difference on
    [-1, 1], at the rendering's size). A person the model never knew starts far (large ``photo_l1_before``);
    an erased one moves away (``photo_l1_after`` > ``photo_l1_before``)."""
    p = photos.to(before)
    if p.shape[-2:] != before.shape[-2:]:
        p = torch.nn.functional.interpolate(p, size=before.shape[-2:], mode="bilinear", align_corners=False,
                                            antialias=True)
    return {"photo_l1_before": float((before - p).abs().mean()), "photo_l1_after": float((after - p).abs().mean())}


def _check_fields(overrides: dict[str, Any]) -> None:
    """Keyword settings must name EraseConfig fields (a typo would otherwise be a bare TypeError)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(EraseConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        import difflib

        hints = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
        hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
        raise ConfigError(f"unknown erase settings {unknown}{hint}; the EraseConfig fields are {sorted(known)}")


def _face_choices(face: Faces, n: int) -> list[Optional[int]]:
    """``face`` (None, one index for every photo, or one per photo) -> one choice per photo."""
    if face is None or isinstance(face, int):
        if isinstance(face, bool):
            raise InputError("face must be an integer index (largest face first) or one index per photo")
        return [face] * n
    choices = list(face)
    if len(choices) != n or not all(c is None or (isinstance(c, int) and not isinstance(c, bool)) for c in choices):
        raise InputError(f"face must be one index for every photo or a list of {n} indices (one per photo), "
                         f"got {face!r}")
    return choices


def _min_face_size(inverter: Any, resolution: Optional[int]) -> int:
    """Smallest face box side (pixels) the inverter can use without inventing detail: its ``min_face_size`` if it
    declares one, else 1/8 of the generator's resolution (a crop enlarged more than ~4x), at least 16."""
    declared = getattr(inverter, "min_face_size", None)
    if declared is not None:
        return int(declared)
    return max(16, int(resolution or 0) // 8)


def _as_list(inputs: Inputs) -> list[Any]:
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InputError("no images given; pass at least one photo (path, PIL image or tensor)")
        return list(inputs)
    if torch.is_tensor(inputs) and inputs.numel() == 0:
        raise InputError("the image tensor is empty; pass at least one photo")
    return [inputs]


def _patchable_modules(model: nn.Module, generator: GeneratorAdapter) -> set[str]:
    """Names of the modules a forget patch may touch: instances of ``generator.lora_layer_types()`` outside any
    mapping network (peft's ``.base_layer`` wrappers seen through)."""
    types = tuple(generator.lora_layer_types())
    return {n.replace(".base_layer", "") for n, m in model.named_modules()
            if isinstance(m, types) and "mapping" not in n.split(".")}


def _apply_lora(model: nn.Module, generator: GeneratorAdapter, patch: ForgetPatch) -> None:
    from peft.utils import set_peft_model_state_dict

    targets = patch.lora_config["target_modules"]
    known = {n.replace(".base_layer", "") for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in known]
    if missing:
        raise PatchMismatchError(f"the patch targets modules {missing[:3]} that this generator does not have; "
                                 "it was made for another architecture")
    allowed = _patchable_modules(model, generator)
    outside = [t for t in targets if t not in allowed]
    if outside:
        raise PatchError(f"the patch targets {outside[:3]}, which are not synthesis layers a forget patch may "
                         f"change ({', '.join(t.__name__ for t in generator.lora_layer_types())} outside the "
                         "mapping network); refusing it")
    modules = dict(model.named_modules())
    for t in targets:  # shapes first: peft would allocate the factors before comparing anything
        layer = modules.get(t)
        base = getattr(layer, "base_layer", layer)
        weight = getattr(base, "weight", None)
        a, b = patch.tensors.get(f"{t}.lora_A.weight"), patch.tensors.get(f"{t}.lora_B.weight")
        if weight is None or a is None or b is None or tuple(a.shape) != (patch.lora_config["r"], weight[0].numel()) \
                or tuple(b.shape) != (weight.shape[0], patch.lora_config["r"]):
            raise PatchMismatchError(f"the patch's tensors for {t} do not match that layer on this generator; it was "
                                     "made for another architecture")
    cfg = L.make_lora_config(patch.lora_config["r"], patch.lora_config["lora_alpha"], targets,
                             generator.lora_layer_types())
    name = patch.adapter_name
    try:
        L.add_adapter(model, name, cfg)
    except GuideUnlearnError:
        raise
    except Exception as exc:  # noqa: BLE001 - peft's own errors for a patch it cannot inject
        raise PatchError(f"patch {patch.patch_id} cannot be applied to this generator ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None
    try:
        expected = {}
        for lname, layer in L.lora_layers(model):
            if name in layer.lora_A:
                expected[f"{lname}.lora_A.weight"] = layer.lora_A[name].weight.shape
                expected[f"{lname}.lora_B.weight"] = layer.lora_B[name].weight.shape
        got = {k: tuple(v.shape) for k, v in patch.tensors.items()}
        if set(got) != set(expected) or any(tuple(expected[k]) != got[k] for k in got):
            raise PatchMismatchError("the patch's tensors do not match its target layers on this generator "
                                     "(different names or shapes); it was made for another architecture")
        result = set_peft_model_state_dict(model, patch.tensors, adapter_name=name)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise PatchMismatchError(f"patch tensors {unexpected[:3]} were not used by this generator")
        for lname, layer in L.lora_layers(model):
            if name in layer.lora_A:
                base = layer.get_base_layer().weight
                if not torch.isfinite(base + layer.get_delta_weight(name)).all():
                    raise PatchError(f"patch {patch.patch_id}: its delta makes {lname} non-finite; the patch is "
                                     "corrupted or hostile")
    except GuideUnlearnError:
        L.delete_adapter(model, name)
        raise
    except Exception as exc:  # noqa: BLE001 - peft's own errors
        L.delete_adapter(model, name)
        raise PatchError(f"patch {patch.patch_id} cannot be applied to this generator ({type(exc).__name__}: "
                         f"{str(exc)[:200]})") from None


def _add_delta(model: nn.Module, patch: ForgetPatch, sign: float, generator: Optional[GeneratorAdapter] = None
               ) -> None:
    params = {n.replace(".base_layer", ""): p for n, p in model.named_parameters() if ".lora_" not in n}
    for n, t in patch.tensors.items():
        if n not in params or tuple(params[n].shape) != tuple(t.shape):
            raise PatchMismatchError(f"delta patch tensor {n} {tuple(t.shape)} has no matching parameter in this "
                                     "generator; it was made for another architecture")
    if generator is not None:
        allowed = {n.replace(".base_layer", "") for n in generator.full_finetune_parameters()}
        outside = sorted(n for n in patch.tensors if n not in allowed)
        if outside:
            raise PatchError(f"the delta patch changes {outside[:3]}, which are not synthesis parameters a forget "
                             "patch may change (never the mapping network); refusing it")
        for n, t in patch.tensors.items():
            if not torch.isfinite(params[n].detach() + t.to(params[n])).all():
                raise PatchError(f"the delta patch makes {n} non-finite; the patch is corrupted or hostile")
    with torch.no_grad():
        for n, t in patch.tensors.items():
            params[n].add_(t.to(params[n]), alpha=sign)
