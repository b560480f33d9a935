"""Official StyleGAN2 checkpoints <-> :class:`StyleGAN2Generator` (docs/checkpoints.md).

- NVIDIA network pickles (stylegan2-ada-pytorch, stylegan3's ``stylegan2-*.pkl``): our parameter names *are*
  NVIDIA's, so conversion is a config read from ``_init_kwargs`` plus a strict key/shape check.
- rosinality ``.pt`` (``{'g_ema', 'latent_avg'}``) and the ``decoder.*`` half of e4e checkpoints: a name map.
- Export back: :func:`to_nvidia_state_dict` / :func:`to_rosinality_state_dict` (and
  :func:`export_safetensors`) so other StyleGAN tools can use an erased model.

No official code is imported; pickles are read by :mod:`guide_unlearn.checkpoints` without executing them.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

from guide_unlearn.errors import CheckpointError

from .layers import channels_at, resolution_list, setup_filter
from .model import StyleGAN2Generator

__all__ = [
    "config_from_nvidia_kwargs",
    "config_from_state_dict",
    "config_from_rosinality",
    "export_safetensors",
    "from_nvidia",
    "from_nvidia_state_dict",
    "from_rosinality",
    "load_nvidia_pickle",
    "nvidia_to_rosinality",
    "rosinality_to_nvidia",
    "to_nvidia_state_dict",
    "to_rosinality_state_dict",
]

_NV_FC = re.compile(r"mapping\.fc(\d+)\.weight")
_NV_BLOCK = re.compile(r"synthesis\.b(\d+)\.")
_DEFAULT_FILTER = (1, 3, 3, 1)


# ----------------------------------------------------------------------------------------------------------------
# NVIDIA


def config_from_nvidia_kwargs(init_kwargs: Mapping[str, Any]) -> dict:
    """:class:`StyleGAN2Generator` config from a pickled ``Generator``'s constructor kwargs.

    Accepts both layouts: stylegan2-ada nests the synthesis options under ``synthesis_kwargs``, stylegan3's
    ``networks_stylegan2`` passes them at top level. Raises CheckpointError for options this implementation does
    not reproduce (a non-'skip' architecture, another FIR filter, another activation).
    """
    kw = dict(init_kwargs)
    syn = {**{k: v for k, v in kw.items() if k not in ("mapping_kwargs", "synthesis_kwargs")},
           **dict(kw.get("synthesis_kwargs") or {})}
    mapping = dict(kw.get("mapping_kwargs") or {})
    missing = [k for k in ("z_dim", "w_dim", "img_resolution", "img_channels") if k not in kw]
    if missing:
        raise CheckpointError(f"generator kwargs lack {missing}; the pickle is not a StyleGAN2 Generator")
    arch = syn.get("architecture", "skip")
    if arch != "skip":
        raise CheckpointError(f"StyleGAN2 architecture '{arch}' is not supported (only the config-f 'skip' "
                              "generator); convert with the official tools first")
    if tuple(syn.get("resample_filter", _DEFAULT_FILTER)) != _DEFAULT_FILTER:
        raise CheckpointError(f"resample_filter {syn.get('resample_filter')} is not supported (only [1,3,3,1])")
    for key in ("activation",):
        if syn.get(key, "lrelu") != "lrelu" or mapping.get(key, "lrelu") != "lrelu":
            raise CheckpointError("only lrelu activations are supported")
    for key in ("embed_features", "layer_features"):
        if mapping.get(key) not in (None, kw["w_dim"]):
            raise CheckpointError(f"mapping {key}={mapping.get(key)} differs from w_dim; not supported")
    return dict(
        z_dim=int(kw["z_dim"]), w_dim=int(kw["w_dim"]), c_dim=int(kw.get("c_dim", 0)),
        img_resolution=int(kw["img_resolution"]), img_channels=int(kw["img_channels"]),
        mapping_layers=int(mapping.get("num_layers", 8)),
        mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
        channel_base=int(syn.get("channel_base", 32768)), channel_max=int(syn.get("channel_max", 512)),
        conv_clamp=None if syn.get("conv_clamp") is None else float(syn["conv_clamp"]),
        use_noise=bool(syn.get("use_noise", True)),
    )


def _channel_base_from(channels: dict[int, int], channel_max: int) -> int:
    smallest = min(channels)
    candidates = sorted({c * r for r, c in channels.items() if c < channel_max} or {channel_max * max(channels)})
    for base in candidates:
        if all(channels_at(r, base, channel_max) == c for r, c in channels.items()):
            return base
    raise CheckpointError(f"feature channels {channels} do not follow min(channel_base / res, channel_max) "
                          f"(from {smallest})")


def config_from_state_dict(sd: Mapping[str, torch.Tensor]) -> dict:
    """Infer a :class:`StyleGAN2Generator` config from NVIDIA-named tensors (no kwargs available).

    ``conv_clamp`` cannot be seen in weights; it is taken as None (as in the original config-f networks).
    """
    try:
        fcs = sorted(int(m.group(1)) for k in sd if (m := _NV_FC.fullmatch(k)))
        res = sorted({int(m.group(1)) for k in sd if (m := _NV_BLOCK.match(k))})
        if not fcs or not res:
            raise KeyError("mapping.fc*/synthesis.b*")
        c_dim = int(sd["mapping.embed.weight"].shape[1]) if "mapping.embed.weight" in sd else 0
        w_dim = int(sd[f"mapping.fc{fcs[-1]}.weight"].shape[0])
        z_dim = int(sd["mapping.fc0.weight"].shape[1]) - (w_dim if c_dim else 0)
        channels = {r: int(sd[f"synthesis.b{r}.conv1.weight"].shape[0]) for r in res}
        channel_max = max(channels.values())
        img_channels = int(sd[f"synthesis.b{res[-1]}.torgb.weight"].shape[0])
        use_noise = f"synthesis.b{res[-1]}.conv1.noise_strength" in sd
    except KeyError as exc:
        raise CheckpointError(f"not a StyleGAN2 state dict in NVIDIA's layout (missing {exc})") from None
    return dict(z_dim=z_dim, w_dim=w_dim, c_dim=c_dim, img_resolution=res[-1], img_channels=img_channels,
                mapping_layers=len(fcs), mapping_lr_multiplier=0.01,
                channel_base=_channel_base_from(channels, channel_max), channel_max=channel_max, conv_clamp=None,
                use_noise=use_noise)


def _load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], what: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"{what}: keys do not match a StyleGAN2 generator of this config (missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})")
    bad = [(k, tuple(sd[k].shape), tuple(own[k].shape)) for k in own if tuple(sd[k].shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{what}: tensor shapes differ from the config, e.g. {bad[0][0]} is {bad[0][1]}, "
                              f"expected {bad[0][2]}")
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()},
                          strict=True)


def from_nvidia_state_dict(sd: Mapping[str, torch.Tensor], config: Optional[Mapping[str, Any]] = None,
                           what: str = "checkpoint") -> StyleGAN2Generator:
    """:class:`StyleGAN2Generator` from NVIDIA-named tensors (``mapping.fc0.weight``, ``synthesis.b4.const``, ...).

    config: constructor kwargs of :class:`StyleGAN2Generator`; inferred from the shapes when None.
    Raises CheckpointError when keys or shapes do not match.
    """
    from guide_unlearn.checkpoints.folders import build_checked

    config = dict(config) if config is not None else config_from_state_dict(sd)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{what}: the state dict holds something other than tensors")
    # bounded and compared with the tensors present on the meta device before anything is allocated
    model = build_checked(StyleGAN2Generator, config, {k: tuple(v.shape) for k, v in sd.items()}, what)
    _load_strict(model, sd, what)
    return model.eval()


def from_nvidia(state_dict: Mapping[str, torch.Tensor], init_kwargs: Optional[Mapping[str, Any]] = None,
                attrs: Optional[Mapping[str, Any]] = None) -> StyleGAN2Generator:
    """Builder for an NVIDIA ``Generator`` read by :func:`guide_unlearn.checkpoints.load_nvidia_module`.

    state_dict: flattened G_ema tensors; init_kwargs: its ``_init_kwargs`` (may be empty: then the config is
    inferred from the shapes); attrs: its plain attributes (unused for 2D StyleGAN2).
    """
    if any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in state_dict):
        raise CheckpointError("this pickle holds a StyleGAN3 generator, which is not supported; use a StyleGAN2 "
                              "pickle (e.g. stylegan2-ffhq-1024x1024.pkl)")
    config = config_from_nvidia_kwargs(init_kwargs) if init_kwargs else None
    return from_nvidia_state_dict(state_dict, config, what="NVIDIA generator")


def load_nvidia_pickle(path: Union[str, os.PathLike], key: str = "G_ema") -> StyleGAN2Generator:
    """Load network ``key`` of an NVIDIA StyleGAN2 pickle without executing it (see docs/checkpoints.md)."""
    from guide_unlearn.checkpoints import load_nvidia_module

    mod = load_nvidia_module(path, key)
    if mod.class_name != "Generator":
        raise CheckpointError(f"{path}: '{key}' is a {mod.class_name}, not a StyleGAN2 Generator")
    return from_nvidia(mod.state_dict, mod.init_kwargs, mod.attributes)


def to_nvidia_state_dict(generator: nn.Module) -> dict[str, torch.Tensor]:
    """The generator's tensors under NVIDIA's G_ema names (ours are the same), detached, contiguous, on CPU, with
    every applied forget patch folded in (:func:`guide_unlearn.lineage.effective_state_dict`).

    Raises CheckpointError if the model carries adapters that are not applied patches (names with 'lora').
    """
    from guide_unlearn.lineage import effective_state_dict

    if any(p.is_meta for p in generator.parameters()):
        sd = {k.replace(".base_layer", ""): v for k, v in generator.state_dict().items()}  # architecture checks
    else:
        sd = effective_state_dict(generator)
    extra = [k for k in sd if "lora" in k]
    if extra:
        raise CheckpointError(f"the generator still has adapter weights ({extra[0]}, ...); merge the forget patch "
                              "into the weights before exporting")
    return {k: _cpu(v).contiguous() for k, v in sd.items()}


def _cpu(t: torch.Tensor) -> torch.Tensor:
    """Detached copy on the CPU (meta tensors stay meta: shapes only, for architecture checks)."""
    t = t.detach()
    return t if t.device.type == "meta" else t.to("cpu")


# ----------------------------------------------------------------------------------------------------------------
# rosinality  (name map: docs/checkpoints.md)


def _rosinality_pairs(resolutions: list[int], mapping_layers: int, use_noise: bool = True):
    """Yield (rosinality name, NVIDIA name, kind) for every tensor of a generator."""
    for i in range(mapping_layers):
        yield f"style.{i + 1}.weight", f"mapping.fc{i}.weight", "plain"
        yield f"style.{i + 1}.bias", f"mapping.fc{i}.bias", "plain"
    yield "input.input", "synthesis.b4.const", "const"

    def conv(ros: str, nv: str, noise_idx: int, up: bool):
        yield f"{ros}.conv.weight", f"{nv}.weight", "conv"
        yield f"{ros}.conv.modulation.weight", f"{nv}.affine.weight", "plain"
        yield f"{ros}.conv.modulation.bias", f"{nv}.affine.bias", "plain"
        if use_noise:
            yield f"{ros}.noise.weight", f"{nv}.noise_strength", "noise_strength"
            yield f"noises.noise_{noise_idx}", f"{nv}.noise_const", "noise"
        yield f"{ros}.activate.bias", f"{nv}.bias", "plain"
        if up:
            yield f"{ros}.conv.blur.kernel", f"{nv}.resample_filter", "filter"

    def torgb(ros: str, nv: str):
        yield f"{ros}.conv.weight", f"{nv}.weight", "conv"
        yield f"{ros}.conv.modulation.weight", f"{nv}.affine.weight", "plain"
        yield f"{ros}.conv.modulation.bias", f"{nv}.affine.bias", "plain"
        yield f"{ros}.bias", f"{nv}.bias", "rgb_bias"

    yield from conv("conv1", "synthesis.b4.conv1", 0, up=False)
    yield from torgb("to_rgb1", "synthesis.b4.torgb")
    for r in resolutions[1:]:
        k = int(math.log2(r)) - 3
        yield from conv(f"convs.{2 * k}", f"synthesis.b{r}.conv0", 2 * k + 1, up=True)
        yield from conv(f"convs.{2 * k + 1}", f"synthesis.b{r}.conv1", 2 * k + 2, up=False)
        yield from torgb(f"to_rgbs.{k}", f"synthesis.b{r}.torgb")
        yield f"to_rgbs.{k}.upsample.kernel", f"synthesis.b{r}.resample_filter", "filter"


def _to_rosinality_tensor(kind: str, t: torch.Tensor) -> torch.Tensor:
    if kind == "const":
        return t.unsqueeze(0)
    if kind == "conv":
        return t.unsqueeze(0)
    if kind == "noise_strength":
        return t.reshape(1)
    if kind == "noise":
        return t.reshape(1, 1, *t.shape)
    if kind == "rgb_bias":
        return t.reshape(1, -1, 1, 1)
    if kind == "filter":
        return t * 4  # rosinality stores the up-sampling FIR with its gain (factor**2) folded in
    return t


def _from_rosinality_tensor(kind: str, t: torch.Tensor) -> torch.Tensor:
    if kind in ("const", "conv"):
        return t.squeeze(0)
    if kind == "noise_strength":
        return t.reshape(())
    if kind == "noise":
        return t.reshape(*t.shape[-2:])
    if kind == "rgb_bias":
        return t.reshape(-1)
    if kind == "filter":
        return t / 4
    return t


def config_from_rosinality(g_ema: Mapping[str, torch.Tensor]) -> dict:
    """:class:`StyleGAN2Generator` config of a rosinality ``Generator`` state dict (size, style_dim, n_mlp,
    channel_multiplier read from the shapes)."""
    try:
        n_mlp = len([k for k in g_ema if re.fullmatch(r"style\.\d+\.weight", k)])
        style_dim = int(g_ema["style.1.weight"].shape[0])
        n_rgbs = len({k.split(".")[1] for k in g_ema if k.startswith("to_rgbs.")})
        size = 2 ** (n_rgbs + 2)
        channels = {4: int(g_ema["conv1.conv.weight"].shape[1])}
        for r in resolution_list(size)[1:]:
            channels[r] = int(g_ema[f"convs.{2 * (int(math.log2(r)) - 3)}.conv.weight"].shape[1])
        img_channels = int(g_ema["to_rgb1.conv.weight"].shape[1])
        use_noise = "conv1.noise.weight" in g_ema
    except KeyError as exc:
        raise CheckpointError(f"not a rosinality StyleGAN2 generator state dict (missing {exc})") from None
    channel_max = max(channels.values())
    return dict(z_dim=style_dim, w_dim=style_dim, c_dim=0, img_resolution=size, img_channels=img_channels,
                mapping_layers=n_mlp, mapping_lr_multiplier=0.01,
                channel_base=_channel_base_from(channels, channel_max), channel_max=channel_max, conv_clamp=None,
                use_noise=use_noise)


def rosinality_to_nvidia(g_ema: Mapping[str, torch.Tensor], latent_avg: Optional[torch.Tensor] = None,
                         config: Optional[Mapping[str, Any]] = None) -> dict[str, torch.Tensor]:
    """rosinality ``g_ema`` state dict -> NVIDIA-named state dict (docs/checkpoints.md).

    latent_avg: [w_dim] (or [num_ws, w_dim], rows equal: e4e) -> ``mapping.w_avg``; zeros when None.
    Non-upsampling layers get the default FIR buffers rosinality does not store.
    Raises CheckpointError on missing / unexpected keys.
    """
    config = dict(config) if config is not None else config_from_rosinality(g_ema)
    res = resolution_list(config["img_resolution"])
    out: dict[str, torch.Tensor] = {}
    used = set()
    for ros, nv, kind in _rosinality_pairs(res, config["mapping_layers"], config.get("use_noise", True)):
        if ros not in g_ema:
            raise CheckpointError(f"rosinality state dict lacks '{ros}' (for {nv}); the file is incomplete")
        out[nv] = _from_rosinality_tensor(kind, g_ema[ros])
        used.add(ros)
    unexpected = sorted(set(g_ema) - used)
    if unexpected:
        raise CheckpointError(f"rosinality state dict has keys this converter does not know: {unexpected[:5]}")
    filt = setup_filter(_DEFAULT_FILTER)
    for r in res:
        out.setdefault(f"synthesis.b{r}.resample_filter", filt.clone())
        for layer in ("conv0", "conv1"):
            if r == 4 and layer == "conv0":
                continue
            out.setdefault(f"synthesis.b{r}.{layer}.resample_filter", filt.clone())
    w_dim = config["w_dim"]
    if latent_avg is None:
        out["mapping.w_avg"] = torch.zeros(w_dim)
    else:
        la = latent_avg.detach().to(torch.float32)
        out["mapping.w_avg"] = la.reshape(-1, w_dim)[0].clone()
    return out


def nvidia_to_rosinality(sd: Mapping[str, torch.Tensor], config: Optional[Mapping[str, Any]] = None
                         ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """NVIDIA-named state dict -> (rosinality ``g_ema`` state dict, ``latent_avg`` [w_dim]).

    Only generators rosinality's ``Generator`` can represent are accepted: no conditioning, FIR [1,3,3,1],
    channels min(512, 16384·multiplier/res) pattern is not required (any channel_base works for the keys).
    """
    config = dict(config) if config is not None else config_from_state_dict(sd)
    if config.get("c_dim", 0):
        raise CheckpointError("rosinality's Generator has no conditioning input; export a c_dim=0 generator")
    res = resolution_list(config["img_resolution"])
    out: dict[str, torch.Tensor] = {}
    for ros, nv, kind in _rosinality_pairs(res, config["mapping_layers"], config.get("use_noise", True)):
        if nv not in sd:
            raise CheckpointError(f"state dict lacks '{nv}'; not a StyleGAN2 generator in NVIDIA's layout")
        out[ros] = _to_rosinality_tensor(kind, _cpu(sd[nv])).contiguous()
    return out, _cpu(sd["mapping.w_avg"]).clone()


def from_rosinality(g_ema: Mapping[str, torch.Tensor], latent_avg: Optional[torch.Tensor] = None
                    ) -> StyleGAN2Generator:
    """:class:`StyleGAN2Generator` from a rosinality ``g_ema`` state dict (+ ``latent_avg`` -> ``w_avg``)."""
    config = config_from_rosinality(g_ema)
    return from_nvidia_state_dict(rosinality_to_nvidia(g_ema, latent_avg, config), config, what="rosinality g_ema")


def to_rosinality_state_dict(generator: nn.Module, include_latent_avg: bool = True) -> dict[str, torch.Tensor]:
    """The generator's tensors under rosinality's names (``style.1.weight``, ``convs.0.conv.weight`` [1,O,I,3,3],
    ``noises.noise_0`` [1,1,4,4], ...); with ``include_latent_avg`` the mean latent is added as ``latent_avg``
    [w_dim] (pop it before ``Generator.load_state_dict``)."""
    config = dict(getattr(generator, "config", {}) or {})
    sd = to_nvidia_state_dict(generator)
    g_ema, latent_avg = nvidia_to_rosinality(sd, {k: v for k, v in config.items() if not k.startswith("_")}
                                             if config else None)
    if include_latent_avg:
        g_ema["latent_avg"] = latent_avg
    return g_ema


def export_safetensors(generator: nn.Module, path: Union[str, os.PathLike], layout: str = "nvidia",
                       overwrite: bool = False) -> Path:
    """Write the generator as one ``.safetensors`` state dict in ``layout`` 'nvidia' | 'rosinality' (atomic write;
    an existing file is replaced only with ``overwrite``). Applied forget patches are folded in.

    The header metadata records the layout, our config (JSON) and the lineage (the original base fingerprint and
    the merged patches), so :func:`guide_unlearn.pipelines.loading.load_generator` loads the file back with it.
    """
    from safetensors.torch import save

    from guide_unlearn.fingerprint import patch_state
    from guide_unlearn.io import atomic_write_bytes, check_output_file

    check_output_file(path, overwrite)
    if layout == "nvidia":
        sd = to_nvidia_state_dict(generator)
    elif layout == "rosinality":
        sd = to_rosinality_state_dict(generator)
    else:
        raise CheckpointError(f"unknown export layout '{layout}'; use 'nvidia' or 'rosinality'")
    config = {k: v for k, v in dict(getattr(generator, "config", {}) or {}).items() if not k.startswith("_")}
    state = patch_state(generator)
    merged = list(state["merged"]) + [{"patch_id": pid, "kind": p.kind} for pid, p in state["applied"].items()]
    lineage = {"base_fingerprint": state["base_fingerprint"], "merged_patches": merged}
    meta = {"format": f"stylegan2-{layout}", "config": json.dumps(config), "library": "guide_unlearn",
            "lineage": json.dumps(lineage, default=str)}
    path = Path(path)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in sd.items()}, metadata=meta), overwrite=overwrite)
    return path


def is_rosinality_state_dict(sd: Mapping[str, Any]) -> bool:
    """True for a rosinality generator state dict (``style.1.weight`` and ``conv1.conv.weight`` present)."""
    return "style.1.weight" in sd and "conv1.conv.weight" in sd


def is_nvidia_state_dict(sd: Mapping[str, Any]) -> bool:
    """True for NVIDIA-named StyleGAN2 tensors (``mapping.fc0.weight`` and ``synthesis.b4.const``)."""
    return "mapping.fc0.weight" in sd and "synthesis.b4.const" in sd
