"""IdentityEraser: the user-facing object that inverts a photo, erases the identity and manages patches."""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Optional, Sequence, Union

import torch
from PIL import Image
from torch import nn

from guide_unlearn import lora as L
from guide_unlearn.config import EraseConfig
from guide_unlearn.engine import ErasureResult, check_latents, run_erase
from guide_unlearn.errors import InputError, PatchMismatchError, PatchStateError
from guide_unlearn.fingerprint import patch_state
from guide_unlearn.images import check_image_range, load_image, pil_to_tensor
from guide_unlearn.patch import ForgetPatch
from guide_unlearn.protocols import GeneratorAdapter, IdentityModel, Inverter, PerceptualDistance, module_of

logger = logging.getLogger(__name__)
Inputs = Union[torch.Tensor, Image.Image, str, os.PathLike, Sequence[Any]]


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
                        **components: Any) -> "IdentityEraser":
        """Assemble an eraser from a registry name ("eg3d-ffhq" — the default —, "stylegan2-ffhq", "e4e-ffhq",
        "demo-faces" — the embedded 64² face model, works offline —, "tiny-stylegan2", "tiny-eg3d", ...) or a
        local checkpoint / folder. ``components`` may override ``inverter``, ``identity_model`` and
        ``perceptual``."""
        from guide_unlearn.devices import resolve_device
        from guide_unlearn.pipelines.assembly import assemble

        return assemble(cls, name_or_path, resolve_device(device), **components)

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
            _add_delta(model, patch, sign=1.0)
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
               seed: int = 0, progress: bool = True) -> torch.Tensor:
        """Photos (paths, PIL images, or a tensor [N, 3, H, W] in [-1, 1] of already aligned crops) -> codes
        [N, num_ws, w_dim]. Paths and PIL images are face-aligned for the inverter when ``align``. ``progress``
        shows a progress bar for optimising inverters (hundreds of steps)."""
        images, cams = self._prepare_images(image_or_images, camera, align)
        g = torch.Generator(device=self.device).manual_seed(seed)
        with _inverter_progress(self.inverter, progress):
            return self.inverter.invert(images, cams, generator=g)

    def _prepare_images(self, inputs: Inputs, camera: Optional[torch.Tensor], align: bool):
        items = _as_list(inputs)
        tensors, cams = [], []
        size = getattr(self.generator, "img_resolution", None)
        for item in items:
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

                img, cam = align_photo(img, self.inverter.input_alignment, item)
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
              measure: bool = True) -> ErasureResult:
        """Erase ONE person given photos of them (paths / PIL / image tensor [N, 3, H, W]) or their codes
        [K, num_ws, w_dim]. All inputs are erased together. Returns with the applied patches as they were (the
        new patch is not applied). See :class:`ErasureResult`."""
        config = config or self.default_config()
        w_u, photos, cams = self._codes(inputs, camera, progress=config.progress)
        patch, w_t, history, seconds = run_erase(
            self.generator, w_u, config, self.perceptual, self.identity_model, state_dir=state_dir,
            trackers=trackers, extra_metadata=self._provenance())
        return self._result(patch, w_u, w_t, history, seconds, measure, photos, cams)

    def _provenance(self) -> dict[str, Any]:
        """Patch metadata naming the base: ``base_name`` and, when the registry knows it, ``base_license``."""
        from guide_unlearn.pipelines.registry import base_license

        lic = base_license(self.name)
        return {"base_name": self.name, **({"base_license": lic} if lic else {})}

    def default_config(self, preset: str = "lora", **overrides: Any) -> EraseConfig:
        """The ``preset`` EraseConfig with this model's recommended settings (``erase_defaults``, from the registry
        entry; applied to the LoRA preset only) and then ``overrides`` on top."""
        base = self.erase_defaults if preset == "lora" else {}
        return EraseConfig.preset(preset, **{**base, **overrides})

    def _codes(self, inputs: Inputs, camera, progress: bool = True):
        """-> (codes [K, num_ws, w_dim], the prepared photos [K, 3, H, W] or None, their cameras or None)."""
        if torch.is_tensor(inputs) and inputs.ndim in (2, 3) and tuple(inputs.shape[-2:]) == (
                self.generator.num_ws, self.generator.w_dim):
            return check_latents(inputs, self.generator), None, None
        if torch.is_tensor(inputs) and inputs.ndim in (2, 3) and inputs.shape[0] != 3:
            return check_latents(inputs, self.generator), None, None  # raises a LatentError with the shape
        images, cams = self._prepare_images(inputs, camera, align=True)
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


def _as_list(inputs: Inputs) -> list[Any]:
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InputError("no images given; pass at least one photo (path, PIL image or tensor)")
        return list(inputs)
    if torch.is_tensor(inputs) and inputs.numel() == 0:
        raise InputError("the image tensor is empty; pass at least one photo")
    return [inputs]


def _apply_lora(model: nn.Module, generator: GeneratorAdapter, patch: ForgetPatch) -> None:
    from peft.utils import set_peft_model_state_dict

    targets = patch.lora_config["target_modules"]
    known = {n.replace(".base_layer", "") for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in known]
    if missing:
        raise PatchMismatchError(f"the patch targets modules {missing[:3]} that this generator does not have; "
                                 "it was made for another architecture")
    cfg = L.make_lora_config(patch.lora_config["r"], patch.lora_config["lora_alpha"], targets,
                             generator.lora_layer_types())
    name = patch.adapter_name
    L.add_adapter(model, name, cfg)
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
    except Exception:
        L.delete_adapter(model, name)
        raise


def _add_delta(model: nn.Module, patch: ForgetPatch, sign: float) -> None:
    params = {n.replace(".base_layer", ""): p for n, p in model.named_parameters() if ".lora_" not in n}
    for n, t in patch.tensors.items():
        if n not in params or tuple(params[n].shape) != tuple(t.shape):
            raise PatchMismatchError(f"delta patch tensor {n} {tuple(t.shape)} has no matching parameter in this "
                                     "generator; it was made for another architecture")
    with torch.no_grad():
        for n, t in patch.tensors.items():
            params[n].add_(t.to(params[n]), alpha=sign)
