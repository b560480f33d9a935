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
from guide_unlearn.errors import GuideUnlearnError, InputError, PatchError, PatchMismatchError, PatchStateError
from guide_unlearn.fingerprint import patch_state
from guide_unlearn.images import load_image, pil_to_tensor
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
        if perceptual is None:
            from guide_unlearn.adapters.perceptual import default_perceptual

            perceptual = default_perceptual(generator.w_avg.device)
        self.perceptual = perceptual
        if inverter is None:
            from guide_unlearn.adapters.projector import OptimizationInverter

            inverter = OptimizationInverter(generator, perceptual)
        self.inverter = inverter
        self.identity_model = identity_model
        self.name = name
        self.erase_defaults = dict(erase_defaults or {})
        EraseConfig(**self.erase_defaults)  # validate now, not at the first erase
        patch_state(module_of(generator))  # fingerprint the base before anything touches it

    # -- construction -----------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str = "eg3d-ffhq", device: Union[str, torch.device] = "cpu",
                        **components: Any) -> "IdentityEraser":
        """Assemble an eraser from a registry name ("eg3d-ffhq" — the default —, "stylegan2-ffhq", "e4e-ffhq",
        "demo-faces" — the embedded 64² face model, works offline —, "tiny-stylegan2", "tiny-eg3d", ...) or a
        local checkpoint / folder. ``components`` may override ``inverter``, ``identity_model`` and
        ``perceptual``."""
        from guide_unlearn.pipelines.assembly import assemble

        return assemble(cls, name_or_path, torch.device(device), **components)

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
        if fam != self.generator.family:
            raise PatchMismatchError(f"this patch was made for a {fam!r} generator, not {self.generator.family!r}; "
                                     "apply it to the base model it was made for")
        if patch.base_fingerprint != state["base_fingerprint"]:
            raise PatchMismatchError(
                f"this patch was made for base weights {patch.base_fingerprint[:19]}…, but this generator's base is "
                f"{state['base_fingerprint'][:19]}…; apply it to the same checkpoint it was made from")
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

    def invert(self, image_or_images: Inputs, camera: Optional[torch.Tensor] = None, align: bool = True,
               seed: int = 0) -> torch.Tensor:
        """Photos (paths, PIL images, or a tensor [N, 3, H, W] in [-1, 1] of already aligned crops) -> codes
        [N, num_ws, w_dim]. Paths and PIL images are face-aligned for the inverter when ``align``."""
        images, cams = self._prepare_images(image_or_images, camera, align)
        g = torch.Generator(device=self.device).manual_seed(seed)
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
        logger.warning("no camera given or estimated; using the frontal camera (pass camera=... for accuracy)")
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
        w_u, photos, cams = self._codes(inputs, camera)
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

    def _codes(self, inputs: Inputs, camera):
        """-> (codes [K, num_ws, w_dim], the prepared photos [K, 3, H, W] or None, their cameras or None)."""
        if torch.is_tensor(inputs) and inputs.ndim in (2, 3) and tuple(inputs.shape[-2:]) == (
                self.generator.num_ws, self.generator.w_dim):
            return check_latents(inputs, self.generator), None, None
        if torch.is_tensor(inputs) and inputs.ndim in (2, 3) and inputs.shape[0] != 3:
            return check_latents(inputs, self.generator), None, None  # raises a LatentError with the shape
        images, cams = self._prepare_images(inputs, camera, align=True)
        g = torch.Generator(device=self.device).manual_seed(0)
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
