"""Test helpers: write small checkpoints in the exact structures of the official files.

NVIDIA persistence pickles are written with the same globals and state layout as NVIDIA's (every persistent
module pickles as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with meta = {type, version,
module_src, class_name, state}); the official modules are never needed: placeholder modules are registered in
``sys.modules`` only while pickling so that pickle can write the global names. Their functions raise if called.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

HARMLESS_SRC = "# network definitions (placeholder text; a loader must never execute it)\n"

_NV_CLASS = {
    "StyleGAN2Generator": "Generator", "MappingNetwork": "MappingNetwork", "SynthesisNetwork": "SynthesisNetwork",
    "SynthesisBlock": "SynthesisBlock", "SynthesisLayer": "SynthesisLayer", "ToRGBLayer": "ToRGBLayer",
    "FullyConnectedLayer": "FullyConnectedLayer",
}


def _never(*args, **kwargs):  # pragma: no cover - must never run
    raise AssertionError("placeholder official function called")


def _make_placeholders() -> list:
    tu = types.ModuleType("torch_utils")
    pers = types.ModuleType("torch_utils.persistence")
    _never.__module__ = "torch_utils.persistence"
    _never.__qualname__ = _never.__name__ = "_reconstruct_persistent_obj"
    pers._reconstruct_persistent_obj = _never
    dn = types.ModuleType("dnnlib")
    du = types.ModuleType("dnnlib.util")
    du.EasyDict = type("EasyDict", (dict,), {"__module__": "dnnlib.util"})
    tr = types.ModuleType("training")
    trv = types.ModuleType("training.triplane")
    trv.OSGDecoder = type("OSGDecoder", (nn.Module,), {"__module__": "training.triplane"})
    return [tu, pers, dn, du, tr, trv]


_PLACEHOLDERS = _make_placeholders()


@contextlib.contextmanager
def official_names():
    """Register placeholder ``torch_utils.persistence``, ``dnnlib.util`` and ``training.triplane`` modules."""
    for m in _PLACEHOLDERS:
        if m.__name__ in sys.modules and sys.modules[m.__name__] is not m:
            raise RuntimeError(f"{m.__name__} already imported; tests must not import official code")
    fresh = [m for m in _PLACEHOLDERS if m.__name__ not in sys.modules]
    for m in fresh:
        sys.modules[m.__name__] = m
    try:
        yield types.SimpleNamespace(EasyDict=_PLACEHOLDERS[3].EasyDict, OSGDecoder=_PLACEHOLDERS[5].OSGDecoder)
    finally:
        for m in fresh:
            sys.modules.pop(m.__name__, None)


class Persistent:
    """Pickles exactly like an object of an NVIDIA ``@persistent_class``."""

    def __init__(self, class_name: str, state: dict, module_src: str = HARMLESS_SRC, version: int = 6):
        self.class_name, self.state, self.module_src, self.version = class_name, state, module_src, version

    def __reduce__(self):
        meta = dict(type="class", version=self.version, module_src=self.module_src, class_name=self.class_name,
                    state=self.state)
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (meta,))


def module_state(module: nn.Module, children: dict, extra: Optional[dict] = None) -> dict:
    """A torch-1.x-style ``nn.Module.__dict__``: hooks dicts, _parameters / _buffers / _modules, plain attrs."""
    params = OrderedDict((k, nn.Parameter(v.detach().clone(), requires_grad=False) if v is not None else None)
                         for k, v in module._parameters.items())
    buffers = OrderedDict((k, v.detach().clone() if v is not None else None) for k, v in module._buffers.items())
    state = {
        "training": False, "_parameters": params, "_buffers": buffers,
        "_non_persistent_buffers_set": set(module._non_persistent_buffers_set),
        "_backward_hooks": OrderedDict(), "_forward_hooks": OrderedDict(), "_forward_pre_hooks": OrderedDict(),
        "_state_dict_hooks": OrderedDict(), "_load_state_dict_pre_hooks": OrderedDict(),
        "_modules": OrderedDict(children),
    }
    for k, v in module.__dict__.items():
        if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool, type(None))):
            state[k] = v
        if not k.startswith("_") and isinstance(v, list) and all(isinstance(i, int) for i in v):
            state[k] = list(v)
    state.update(extra or {})
    return state


def to_persistent(module: nn.Module, module_src: str = HARMLESS_SRC,
                  top_extra: Optional[dict] = None) -> Persistent:
    """Our module tree -> NVIDIA persistent objects with NVIDIA class names."""
    children = {k: to_persistent(m, module_src) for k, m in module._modules.items()}
    cls = _NV_CLASS.get(type(module).__name__, type(module).__name__)
    extra = {"_init_args": (), "_init_kwargs": {}}
    extra.update(top_extra or {})
    return Persistent(cls, module_state(module, children, extra), module_src)



def nvidia_kwargs(g, fmt: str = "ada") -> Any:
    """The generator's constructor kwargs as the persistence decorator records them (EasyDicts)."""
    E = sys.modules["dnnlib.util"].EasyDict
    c = g.config
    syn = E(channel_base=c.channel_base, channel_max=c.channel_max, num_fp16_res=0, conv_clamp=c.conv_clamp)
    mapping = E(num_layers=c.mapping_layers)
    kw = E(z_dim=c.z_dim, w_dim=c.w_dim, c_dim=c.c_dim, img_resolution=c.img_resolution,
           img_channels=c.img_channels, mapping_kwargs=mapping)
    if fmt == "ada":
        kw["synthesis_kwargs"] = syn
    else:  # stylegan3's networks_stylegan2 takes them at top level
        kw.update(syn)
        kw.update(architecture="skip", resample_filter=[1, 3, 3, 1], use_noise=True, activation="lrelu")
    return kw


def write_nvidia_pickle(path: Path, g: nn.Module, fmt: str = "ada", protocol: int = 4, only_g_ema: bool = False,
                        module_src: str = HARMLESS_SRC, g_ema_override: Any = None) -> Path:
    """An NVIDIA-style network pickle of StyleGAN2 ``g``: {G, D, G_ema, augment_pipe, training_set_kwargs}."""
    with official_names() as off:
        top = {"_init_args": (), "_init_kwargs": nvidia_kwargs(g, fmt)}
        g_ema = g_ema_override if g_ema_override is not None else to_persistent(g, module_src=module_src,
                                                                                 top_extra=top)
        if only_g_ema:  # GUIDE's last.pkl
            data = {"G_ema": g_ema}
        else:
            d_mod = nn.Module()
            d_mod.b4 = nn.Linear(4, 2)
            d = Persistent("Discriminator", module_state(d_mod, {"b4": to_persistent(d_mod.b4)}), module_src)
            aug = nn.Module()
            aug.register_buffer("p", torch.zeros([]))
            data = {"G": to_persistent(g, module_src=module_src, top_extra=top), "D": d, "G_ema": g_ema,
                    "augment_pipe": Persistent("AugmentPipe", module_state(aug, {})),
                    "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "ffhq.zip",
                                            "resolution": g.img_resolution, "use_labels": False, "xflip": True}}
        path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def tiny_generator(seed: int = 0, **overrides) -> nn.Module:
    """A tiny StyleGAN2 (16², w 32) with random non-trivial weights and buffers."""
    from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator

    torch.manual_seed(seed)
    cfg = dict(z_dim=32, w_dim=32, img_resolution=16, mapping_layers=2, channel_base=256, channel_max=32)
    cfg.update(overrides)
    g = StyleGAN2Generator(**cfg)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        g.w_avg.copy_(torch.randn_like(g.w_avg))
    return g.eval()


def render(g: nn.Module, seed: int = 1) -> torch.Tensor:
    """Deterministic output (const noise) of a generator for fixed z: [2, 3, R, R]."""
    torch.manual_seed(seed)
    z = torch.randn(2, g.z_dim)
    with torch.no_grad():
        ws = g.mapping(z, None, truncation_psi=0.7)
        return g.synthesis(ws, noise_mode="const").images


class Evil:
    """``pickle`` of this object calls ``func(*args)`` at load time (the classic payload)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)
