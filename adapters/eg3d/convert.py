"""Build an :class:`EG3DGenerator` from the flattened contents of an official EG3D pickle.

The safe pickle reader (``guide_unlearn.checkpoints``) turns the ``G_ema`` persistent object into
``(state_dict, init_kwargs, attributes)`` without executing anything; this module maps the official constructor
arguments (``TriPlaneGenerator(z_dim, c_dim, w_dim, img_resolution, img_channels, sr_num_fp16_res,
mapping_kwargs, rendering_kwargs, sr_kwargs, **synthesis_kwargs)``) onto our config and loads the weights with
``strict=True`` — parameter names are identical, so no key is renamed.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch

from guide_unlearn.errors import CheckpointError

from .model import EG3DGenerator

#: The only super-resolution module implemented (what every 512² EG3D checkpoint uses).
SUPPORTED_SR = "SuperresolutionHybrid8XDC"


def _get(mapping: Mapping[str, Any], key: str, default: Any = None) -> Any:
    if mapping is None:
        return default
    if isinstance(mapping, Mapping):
        return mapping.get(key, default)
    return getattr(mapping, key, default)


def config_from_nvidia(init_kwargs: Mapping[str, Any], attrs: Optional[Mapping[str, Any]] = None,
                       camera_pivot: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """Official ``TriPlaneGenerator`` init kwargs (+ pickled attributes) -> :class:`EG3DGenerator` config dict.

    ``attrs['rendering_kwargs']`` (the live attribute) wins over the constructor copy, and
    ``attrs['neural_rendering_resolution']`` sets the ray resolution (128 for ffhqrebalanced512-128).
    ``camera_pivot`` overrides the checkpoint's ``avg_camera_pivot`` (e.g. [0, 0, 0] for GUIDE's code).
    """
    attrs = attrs or {}
    rk = dict(_get(init_kwargs, "rendering_kwargs", {}) or {})
    rk.update(dict(_get(attrs, "rendering_kwargs", {}) or {}))
    sr_module = str(rk.get("superresolution_module", ""))
    if not sr_module.endswith(SUPPORTED_SR):
        raise CheckpointError(f"this EG3D checkpoint uses super-resolution module {sr_module!r}; only "
                              f"{SUPPORTED_SR} (512² models such as ffhqrebalanced512-128.pkl) is supported")
    if rk.get("disparity_space_sampling", False):
        raise CheckpointError("disparity-space ray sampling is not implemented; use an FFHQ/AFHQ EG3D checkpoint")
    if rk.get("ray_start") == "auto" or rk.get("ray_end") == "auto":
        raise CheckpointError("automatic ray bounds (ShapeNet configs) are not implemented; use an FFHQ/AFHQ "
                              "EG3D checkpoint")
    if rk.get("clamp_mode", "softplus") != "softplus":
        raise CheckpointError(f"density clamp mode {rk.get('clamp_mode')!r} is not implemented (only 'softplus')")
    if int(_get(init_kwargs, "img_channels", 3)) != 3:
        raise CheckpointError("only RGB EG3D generators (img_channels = 3) are supported")
    mapping_kwargs = _get(init_kwargs, "mapping_kwargs", {}) or {}
    sr_fp16 = int(_get(init_kwargs, "sr_num_fp16_res", 0) or 0)
    pivot = camera_pivot if camera_pivot is not None else rk.get("avg_camera_pivot", (0.0, 0.0, 0.2))
    nrr = _get(attrs, "neural_rendering_resolution", None) or 64  # the official constructor's default
    return dict(
        z_dim=int(_get(init_kwargs, "z_dim", 512)),
        w_dim=int(_get(init_kwargs, "w_dim", 512)),
        c_dim=25,
        img_resolution=int(_get(init_kwargs, "img_resolution", 512)),
        mapping_layers=int(_get(mapping_kwargs, "num_layers", 8)),
        mapping_lr_multiplier=float(_get(mapping_kwargs, "lr_multiplier", 0.01)),
        c_scale=float(rk.get("c_scale", 0.0)),  # the official mapping multiplies by .get('c_scale', 0)
        conditioning_zero=bool(rk.get("c_gen_conditioning_zero", False)),
        plane_resolution=256,
        plane_channels=32,
        channel_base=int(_get(init_kwargs, "channel_base", 32768)),
        channel_max=int(_get(init_kwargs, "channel_max", 512)),
        conv_clamp=_get(init_kwargs, "conv_clamp", 256),  # NVIDIA's SynthesisBlock default when absent
        decoder_hidden_dim=64,
        decoder_output_dim=32,
        decoder_lr_multiplier=float(rk.get("decoder_lr_mul", 1.0)),
        neural_rendering_resolution=int(nrr),
        depth_resolution=int(rk.get("depth_resolution", 48)),
        depth_resolution_importance=int(rk.get("depth_resolution_importance", 48)),
        ray_start=float(rk.get("ray_start", 2.25)),
        ray_end=float(rk.get("ray_end", 3.3)),
        box_warp=float(rk.get("box_warp", 1.0)),
        white_back=bool(rk.get("white_back", False)),
        sr_input_resolution=128,
        sr_channels=(256, 128),
        sr_conv_clamp=256 if sr_fp16 > 0 else None,
        sr_antialias=bool(rk.get("sr_antialias", True)),
        sr_noise_mode=str(rk.get("superresolution_noise_mode", "none")),
        camera_radius=float(rk.get("avg_camera_radius", 2.7)),
        camera_pivot=tuple(float(p) for p in pivot),
    )


def sr_widths(tensors: Mapping[str, torch.Tensor], default: Sequence[int] = (256, 128)) -> tuple[int, int]:
    """The super-resolution blocks' widths as the file holds them (the output channels of
    ``superresolution.block{0,1}.conv1.weight``); ``default`` when those tensors are absent. The official module
    always has 256 and 128; reading them keeps a narrowed copy (the golden tests' tiny EG3D) loadable, and the
    resulting config is bounded and checked against every tensor shape like the rest."""
    widths = []
    for i, fallback in enumerate(default):
        w = tensors.get(f"superresolution.block{i}.conv1.weight")
        widths.append(int(w.shape[0]) if isinstance(w, torch.Tensor) and w.ndim == 4 else int(fallback))
    return widths[0], widths[1]


def from_nvidia(state_dict: Mapping[str, Any], init_kwargs: Mapping[str, Any],
                attrs: Optional[Mapping[str, Any]] = None, camera_pivot: Optional[Sequence[float]] = None,
                device=None) -> EG3DGenerator:
    """Official G_ema contents -> :class:`EG3DGenerator` (eval mode, float32, on ``device`` or the tensors' device).

    state_dict: flattened parameter/buffer names -> tensors (``backbone.synthesis.b4.const`` ...).
    init_kwargs / attrs: the persistent object's ``_init_kwargs`` and plain attributes.
    Raises :class:`CheckpointError` when names or shapes do not match.
    """
    config = config_from_nvidia(init_kwargs, attrs, camera_pivot)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in state_dict.items():
        t = torch.as_tensor(value)
        tensors[name] = t.float() if t.is_floating_point() else t
    config["sr_channels"] = sr_widths(tensors, config["sr_channels"])
    if device is not None:
        tensors = {k: v.to(device) for k, v in tensors.items()}
    from guide_unlearn.checkpoints.folders import check_config

    check_config(config, "EG3D checkpoint")  # bounded before the architecture is built, even on meta
    try:
        with torch.device("meta"):
            model = EG3DGenerator(**config)
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError, OverflowError) as exc:
        raise CheckpointError(f"EG3D checkpoint: its init_kwargs describe no buildable generator "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k])
    if missing or unexpected or wrong:
        def head(keys):
            return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        raise CheckpointError(
            f"EG3D checkpoint does not match the architecture its init_kwargs describe: {len(missing)} missing "
            f"({head(missing)}), {len(unexpected)} unexpected ({head(unexpected)}), {len(wrong)} with another shape "
            f"({head(wrong)}); is this an EG3D TriPlaneGenerator G_ema with SuperresolutionHybrid8XDC?")
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()
