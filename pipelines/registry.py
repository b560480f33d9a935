"""Known checkpoints, and the two loaders the rest of the library uses: ``load_generator`` / ``load_inverter``.

A registry entry says which official file a name means, where to get it, its format and which builder turns
it into a model. Files are found through :mod:`guide_unlearn.checkpoints.resolve` (local path, cache in
huggingface_hub's layout, download where the source allows it) and read without executing anything
(:mod:`guide_unlearn.checkpoints`). Backends are imported lazily; a missing one raises BackendUnavailableError.

Supported inputs of ``load_generator`` (any of them by path, or a registry name):

- our folder format (``config.json`` + safetensors, written by ``save_pretrained`` / ``guide-unlearn convert``);
- NVIDIA network pickles: StyleGAN2 ``Generator`` (stylegan2-ada-pytorch, stylegan3's ``stylegan2-*.pkl``),
  EG3D ``TriPlaneGenerator`` (``ffhq*.pkl``, GUIDE's ``last.pkl``);
- rosinality ``.pt`` (``{'g_ema', 'latent_avg', ...}``), e4e ``.pt`` (its decoder);
- ``.safetensors`` / torch state dicts in NVIDIA's or rosinality's StyleGAN2 key layout.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

from guide_unlearn.checkpoints import (
    CheckpointSource,
    NvidiaModule,
    detect_format,
    load_nvidia_module,
    load_torch_file,
    resolve_file,
)
from guide_unlearn.errors import BackendUnavailableError, CheckpointError

__all__ = [
    "REGISTRY",
    "CheckpointEntry",
    "build_architecture",
    "default_inverter_for",
    "get_entry",
    "list_checkpoints",
    "load_generator",
    "load_inverter",
    "resolve_checkpoint",
]

PathOrName = Union[str, os.PathLike]

NGC_STYLEGAN2 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
NGC_EG3D = "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/"

# Full-size StyleGAN2 configs (constructor kwargs of StyleGAN2Generator).
SG2_FFHQ_1024 = dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=1024, img_channels=3, mapping_layers=8,
                     mapping_lr_multiplier=0.01, channel_base=32768, channel_max=512, conv_clamp=None, use_noise=True)
SG2_FFHQ_256 = {**SG2_FFHQ_1024, "img_resolution": 256, "channel_base": 16384, "conv_clamp": 256.0}
SG2_FFHQ_512 = {**SG2_FFHQ_1024, "img_resolution": 512, "conv_clamp": 256.0}
SG2_ADA_FFHQ_1024 = {**SG2_FFHQ_1024, "conv_clamp": 256.0}


@dataclass(frozen=True)
class CheckpointEntry:
    """One known checkpoint.

    name:             registry name (``"stylegan2-ffhq"``).
    filename:         the official file name.
    format:           'nvidia-pkl' | 'rosinality-pt' | 'e4e-pt' | 'state-dict'.
    kind:             'generator' | 'inverter' | 'generator+inverter'.
    description:      one line for listings and docs.
    url:              direct download URL, or None (browser-only source such as Google Drive).
    sha256:           expected digest; None unless a published source gives one.
    homepage:         where to get the file by hand.
    family:           backend that builds it ('stylegan2', 'eg3d', 'e4e', 'goae').
    architecture:     builds the full-size model without weights: ``f(device) -> nn.Module``.
    default_inverter: registry name of the inverter to use with this generator (None: none known).
    generator:        for inverters, the registry name of the generator its codes belong to.
    bundled:          folder under ``guide_unlearn/models`` when the weights ship inside the package (no file
                      to fetch); for format 'projector' entries, no file at all (an optimisation inverter).
    erase_defaults:   EraseConfig fields this model's erase should use unless the caller says otherwise
                      (measured for that model; see its model card).
    """

    name: str
    filename: str
    format: str
    kind: str
    description: str
    url: Optional[str] = None
    sha256: Optional[str] = None
    homepage: Optional[str] = None
    family: str = "stylegan2"
    architecture: Optional[Callable[[Any], nn.Module]] = field(default=None, compare=False, repr=False)
    default_inverter: Optional[str] = None
    generator: Optional[str] = None
    bundled: Optional[str] = None
    erase_defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def source(self) -> CheckpointSource:
        """The file-level description used by the resolver."""
        return CheckpointSource(self.name, self.filename, self.url, self.sha256, self.homepage)


# ----------------------------------------------------------------------------------------------------------------
# Lazy backends


def _backend(module: str, attr: str, what: str) -> Any:
    """``module.attr``, imported now; BackendUnavailableError if that backend is not installed yet."""
    try:
        mod = import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise BackendUnavailableError(
                f"{what} needs the backend module {module}, which is not available in this installation; "
                "update guide_unlearn (the backend ships with the library)") from None
        raise
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise BackendUnavailableError(f"{what} needs {module}.{attr}, which this version of the backend lacks") \
            from None


def _stylegan2_arch(config: Mapping[str, Any]) -> Callable[[Any], nn.Module]:
    def build(device: Any = "meta") -> nn.Module:
        from guide_unlearn.adapters.stylegan2 import StyleGAN2Generator

        with torch.device(device):
            return StyleGAN2Generator(**config)

    return build


def _e4e_arch(device: Any = "meta") -> nn.Module:
    from guide_unlearn.adapters.e4e import E4EInverter

    with torch.device(device):
        return E4EInverter()


def _eg3d_arch(device: Any = "meta") -> nn.Module:
    build = _backend("guide_unlearn.adapters.eg3d.configs", "build_eg3d_ffhq", "the EG3D architecture")
    return build(device=device)


def _goae_arch(device: Any = "meta") -> nn.Module:
    build = _backend("guide_unlearn.adapters.goae.inverter", "build_goae_ffhq", "the GOAE architecture")
    return build(device=device)


REGISTRY: dict[str, CheckpointEntry] = {
    e.name: e
    for e in [
        CheckpointEntry(
            "stylegan2-ffhq", "stylegan2-ffhq-1024x1024.pkl", "nvidia-pkl", "generator",
            "StyleGAN2 config-f, FFHQ 1024² (NVIDIA's original network in the PyTorch pickle format)",
            url=NGC_STYLEGAN2 + "stylegan2-ffhq-1024x1024.pkl",
            homepage="https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/stylegan2",
            architecture=_stylegan2_arch(SG2_FFHQ_1024), default_inverter="e4e-ffhq"),
        CheckpointEntry(
            "stylegan2-ffhq-512", "stylegan2-ffhq-512x512.pkl", "nvidia-pkl", "generator",
            "StyleGAN2, FFHQ 512² (trained with the stylegan3 code base)",
            url=NGC_STYLEGAN2 + "stylegan2-ffhq-512x512.pkl",
            homepage="https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/stylegan2",
            architecture=_stylegan2_arch(SG2_FFHQ_512)),
        CheckpointEntry(
            "stylegan2-ffhq-256", "stylegan2-ffhq-256x256.pkl", "nvidia-pkl", "generator",
            "StyleGAN2, FFHQ 256² (channel_base 16384; trained with the stylegan3 code base)",
            url=NGC_STYLEGAN2 + "stylegan2-ffhq-256x256.pkl",
            homepage="https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/stylegan2",
            architecture=_stylegan2_arch(SG2_FFHQ_256)),
        CheckpointEntry(
            "stylegan2-ada-ffhq", "ffhq.pkl", "nvidia-pkl", "generator",
            "StyleGAN2-ADA, FFHQ 1024² (stylegan2-ada-pytorch 'paper1024' config)",
            url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
            homepage="https://github.com/NVlabs/stylegan2-ada-pytorch",
            architecture=_stylegan2_arch(SG2_ADA_FFHQ_1024), default_inverter="e4e-ffhq"),
        CheckpointEntry(
            "stylegan2-ffhq-rosinality", "stylegan2-ffhq-config-f.pt", "rosinality-pt", "generator",
            "StyleGAN2 config-f FFHQ 1024² converted to rosinality/stylegan2-pytorch's .pt (as used by pSp / e4e)",
            homepage="https://github.com/rosinality/stylegan2-pytorch (README: 'Pretrained Checkpoints')",
            architecture=_stylegan2_arch(SG2_FFHQ_1024), default_inverter="e4e-ffhq"),
        CheckpointEntry(
            "e4e-ffhq", "e4e_ffhq_encode.pt", "e4e-pt", "generator+inverter",
            "encoder4editing FFHQ encoder (IR-SE50 + 18 GradualStyle heads) with its StyleGAN2-1024 decoder",
            homepage="https://github.com/omertov/encoder4editing (README: 'Pretrained Models', Google Drive)",
            family="e4e", architecture=_e4e_arch, generator="stylegan2-ffhq"),
        CheckpointEntry(
            "eg3d-ffhq", "ffhqrebalanced512-128.pkl", "nvidia-pkl", "generator",
            "EG3D tri-plane generator, FFHQ (rebalanced) 512², neural rendering at 128²",
            url=NGC_EG3D + "ffhqrebalanced512-128.pkl",
            homepage="https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/eg3d",
            family="eg3d", architecture=_eg3d_arch, default_inverter="goae-ffhq"),
        CheckpointEntry(
            "demo-faces", "demo_faces", "folder", "generator",
            "the embedded demo face generator: StyleGAN2 64², 3.1 M parameters, GLO-trained by this project on the "
            "photos of shared/faces (non-commercial research licence; see its model card)",
            homepage="guide_unlearn/models/demo_faces/README.md", bundled="demo_faces",
            default_inverter="code-projector",
            # The GLO model's real-photo codes lie ~1.6x as far from w_avg as mapped samples, so the adjacency
            # and preservation samples are drawn there (psi 1.6), with 8 preservation samples at weight 2: on
            # benchmarks/sweep_demo_erase.py this keeps 95 % of the other people recognised (GUIDE's defaults:
            # 80 %). Farther UFO targets (d >= 2) erase more photos but stop rendering faces (model card).
            erase_defaults={"truncation_psi": 1.6, "global_samples": 8, "global_weight": 2.0}),
        CheckpointEntry(
            "code-projector", "", "projector", "inverter",
            "optimisation inverter in the mapping's input space (best of 64 seeded codes, Adam on z, then a short "
            "W+ refinement); no weights", family="projector"),
        CheckpointEntry(
            "goae-ffhq", "encoder_FFHQ.pt", "state-dict", "inverter",
            "GOAE encoder for EG3D FFHQ (Swin-V2 backbone + cross-attention heads)",
            homepage="https://github.com/jiangyzy/GOAE (README: pretrained models, Google Drive)",
            family="goae", architecture=_goae_arch, generator="eg3d-ffhq"),
    ]
}


def list_checkpoints() -> list[CheckpointEntry]:
    """All registry entries, sorted by name."""
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def default_inverter_for(path_or_name: PathOrName) -> Optional[str]:
    """Registry name of the inverter recommended for a generator name (None for paths and unknown names)."""
    entry = REGISTRY.get(str(path_or_name))
    return entry.default_inverter if entry is not None else None


def get_entry(name: str) -> CheckpointEntry:
    """The entry called ``name``; CheckpointError listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise CheckpointError(f"unknown checkpoint name '{name}'; known names: {', '.join(sorted(REGISTRY))} "
                              "(or pass the path of a file)") from None


def resolve_checkpoint(path_or_name: PathOrName, allow_download: Optional[bool] = None,
                       progress: bool = True) -> tuple[Path, Optional[CheckpointEntry]]:
    """(local path, registry entry or None) for a path or a registry name.

    An existing path wins; otherwise a registry name is looked up in the cache and downloaded where allowed
    (see :func:`guide_unlearn.checkpoints.resolve_file`).
    """
    if isinstance(path_or_name, CheckpointEntry):
        if path_or_name.bundled:
            return _bundled_path(path_or_name), path_or_name
        return resolve_file(path_or_name.source, allow_download, progress), path_or_name
    p = Path(path_or_name).expanduser()
    if p.exists():
        return p, None
    name = str(path_or_name)
    if name in REGISTRY:
        entry = REGISTRY[name]
        if entry.format == "projector":
            raise CheckpointError(f"'{name}' is an optimisation inverter with no file; build it with load_inverter")
        if entry.bundled:
            return _bundled_path(entry), entry
        return resolve_file(entry.source, allow_download, progress), entry
    if os.sep in name or "/" in name or p.suffix:
        raise CheckpointError(f"{name}: no such file or folder")
    get_entry(name)  # raises with the list of names
    raise AssertionError("unreachable")


def _bundled_path(entry: CheckpointEntry) -> Path:
    """The package folder of a bundled model; CheckpointError when this installation lacks it."""
    from guide_unlearn.models import bundled_model_dir

    path = bundled_model_dir(entry.bundled)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"the bundled model '{entry.name}' is missing from this installation ({path}); "
                              "reinstall guide-unlearn (pip install -e . from a full checkout)")
    return path


def build_architecture(name: str, device: Any = "meta") -> nn.Module:
    """The full-size architecture of registry entry ``name``, without weights (default on the meta device).

    Raises CheckpointError for an unknown name, BackendUnavailableError when its backend is not installed.
    """
    entry = get_entry(name)
    if entry.architecture is None:
        raise CheckpointError(f"checkpoint '{name}' has no architecture builder")
    return entry.architecture(device)


# ----------------------------------------------------------------------------------------------------------------
# Generators


_FOLDER_CLASSES = {
    "StyleGAN2Generator": ("guide_unlearn.adapters.stylegan2", "StyleGAN2Generator"),
}


def _load_folder(path: Path) -> nn.Module:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}/config.json is unreadable ({exc})") from None
    cls_name = config.get("_class_name")
    if cls_name in _FOLDER_CLASSES:
        module, attr = _FOLDER_CLASSES[cls_name]
    elif isinstance(cls_name, str) and "EG3D" in cls_name:
        module, attr = "guide_unlearn.adapters.eg3d", cls_name
    else:
        raise CheckpointError(f"{path}: config.json names class {cls_name!r}, which is not a generator of this "
                              "library")
    cls = _backend(module, attr, f"the model folder {path}")
    try:
        return cls.from_pretrained(str(path))
    except (OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the model folder cannot be loaded ({exc})") from None


def _generator_from_nvidia(mod: NvidiaModule, path: Path) -> nn.Module:
    if mod.class_name == "Generator":
        from guide_unlearn.adapters.stylegan2.convert import from_nvidia

        return from_nvidia(mod.state_dict, mod.init_kwargs, mod.attributes)
    if mod.class_name == "TriPlaneGenerator":
        from_nvidia = _backend("guide_unlearn.adapters.eg3d.convert", "from_nvidia", f"EG3D pickle {path}")
        return from_nvidia(mod.state_dict, mod.init_kwargs, mod.attributes)
    raise CheckpointError(f"{path}: G_ema is a '{mod.class_name}', which this library cannot build (supported: "
                          "StyleGAN2 Generator, EG3D TriPlaneGenerator)")


def _generator_from_tensors(sd: Mapping[str, torch.Tensor], path: Path, latent_avg=None,
                            config: Optional[dict] = None) -> nn.Module:
    from guide_unlearn.adapters.stylegan2 import convert as sg2

    if sg2.is_nvidia_state_dict(sd):
        return sg2.from_nvidia_state_dict(sd, config, what=str(path))
    if sg2.is_rosinality_state_dict(sd):
        sd = dict(sd)
        la = sd.pop("latent_avg", latent_avg)
        return sg2.from_rosinality(sd, la)
    keys = sorted(sd)[:5]
    raise CheckpointError(f"{path}: tensors are neither NVIDIA nor rosinality StyleGAN2 names (first keys {keys})")


def _generator_from_file(path: Path) -> nn.Module:
    fmt = detect_format(path)
    if fmt.kind == "folder":
        return _load_folder(path)
    if fmt.kind == "pickle":
        return _generator_from_nvidia(load_nvidia_module(path, "G_ema"), path)
    if fmt.kind == "safetensors":
        from safetensors import safe_open

        from guide_unlearn.checkpoints import load_state_file

        sd = load_state_file(path)
        config = None
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") == "stylegan2-nvidia" and meta.get("config"):
            try:
                config = json.loads(meta["config"])
            except ValueError:
                config = None
        return _generator_from_tensors(sd, path, config=config)
    obj = load_torch_file(path)
    if isinstance(obj, Mapping):
        from guide_unlearn.adapters.e4e.convert import is_e4e_checkpoint, load_e4e

        if "g_ema" in obj:
            from guide_unlearn.adapters.stylegan2.convert import from_rosinality

            return from_rosinality(obj["g_ema"], obj.get("latent_avg"))
        if is_e4e_checkpoint(obj):
            return load_e4e(obj, want="generator")
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return _generator_from_tensors(obj, path)
        raise CheckpointError(f"{path}: a torch checkpoint with keys {sorted(map(str, obj))[:8]}, which is not a "
                              "known generator format (rosinality {'g_ema', ...}, e4e, or a StyleGAN2 state dict)")
    raise CheckpointError(f"{path}: a torch checkpoint holding a {type(obj).__name__}, not a generator")


def load_generator(path_or_name: PathOrName, device: Any = "cpu", allow_download: Optional[bool] = None
                   ) -> nn.Module:
    """The library's generator for any supported file, folder or registry name, in eval mode on ``device``.

    Nothing embedded in the file is executed; see the module docstring for the formats.

    Raises:
        UnsafeCheckpointError: the file names a global outside the allow-list (named in the message).
        CheckpointError: missing / truncated / unknown format (the message says what the file seems to be).
        BackendUnavailableError: the file needs a backend that is not installed.
    """
    path, entry = resolve_checkpoint(path_or_name, allow_download)
    if entry is not None and entry.kind == "inverter":
        raise CheckpointError(f"'{entry.name}' is an inverter; load it with load_inverter (its generator is "
                              f"'{entry.generator}')")
    model = _generator_from_file(path)
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------------------------
# Inverters


def _load_goae(path: Path, generator: Optional[nn.Module], device: Any) -> nn.Module:
    from guide_unlearn.checkpoints.torch_zip import scan_torch_file

    if generator is None:
        raise CheckpointError(f"{path}: GOAE codes are offsets from the EG3D generator's w_avg; pass generator= "
                              "(e.g. load_generator('eg3d-ffhq'))")
    load = _backend("guide_unlearn.adapters.goae.inverter", "load_goae_ffhq", f"GOAE encoder {path}")
    scan_torch_file(path)  # refuse unsafe globals before the backend reads the file with weights_only=True
    return load(path, generator.w_avg.detach(), device=device).eval()


def _projector(entry: CheckpointEntry, generator: Optional[nn.Module], device: Any) -> Any:
    if generator is None:
        raise CheckpointError(f"'{entry.name}' inverts through a generator; pass generator=")
    from guide_unlearn.adapters.projector import CodeInverter

    return CodeInverter(generator.to(device))


def load_inverter(path_or_name: PathOrName, device: Any = "cpu", generator: Optional[nn.Module] = None,
                  allow_download: Optional[bool] = None) -> nn.Module:
    """An inverter (core ``Inverter`` protocol: ``invert(images) -> ws``) from a file or registry name.

    Supported: e4e ``.pt`` (Encoder4Editing, W+ codes of its StyleGAN2-1024 decoder); GOAE ``encoder_FFHQ.pt``
    through the GOAE backend (which may use ``generator`` for its w_avg); ``"code-projector"`` (no file: the
    code-space optimisation inverter through ``generator``).

    Raises CheckpointError / UnsafeCheckpointError / BackendUnavailableError like :func:`load_generator`.
    """
    entry = REGISTRY.get(str(path_or_name)) if not Path(str(path_or_name)).expanduser().exists() else None
    if entry is not None and entry.format == "projector":
        return _projector(entry, generator, device)
    path, entry = resolve_checkpoint(path_or_name, allow_download)
    if entry is not None and entry.kind == "generator":
        if entry.default_inverter:
            raise CheckpointError(f"'{entry.name}' is a generator; its inverter is '{entry.default_inverter}'")
        raise CheckpointError(f"'{entry.name}' is a generator, not an inverter")
    if entry is not None and entry.family == "goae":
        return _load_goae(path, generator, device)
    fmt = detect_format(path)
    if fmt.kind not in ("torch-zip", "torch-legacy"):
        raise CheckpointError(f"{path}: an inverter checkpoint is a torch.save file, this is {fmt.description}")
    obj = load_torch_file(path)
    from guide_unlearn.adapters.e4e.convert import is_e4e_checkpoint, load_e4e

    if is_e4e_checkpoint(obj):
        inv = load_e4e(obj, want="inverter")
        if generator is not None and getattr(generator, "num_ws", inv.num_ws) != inv.num_ws:
            raise CheckpointError(f"the e4e encoder makes {inv.num_ws} codes, the generator takes "
                                  f"{generator.num_ws}; use it with its StyleGAN2-1024 decoder")
        return inv.to(device).eval()
    if isinstance(obj, Mapping) and any(str(k).startswith("swin_model.") for k in obj):
        return _load_goae(path, generator, device)
    keys = sorted(map(str, obj))[:8] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(f"{path}: not a known inverter checkpoint (found {keys}); supported: e4e .pt, GOAE .pt")
