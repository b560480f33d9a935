"""Known checkpoints: which official file a name means, where to get it, its format and its architecture, and
what an eraser built from it uses besides the weights.

A registry entry is data; :func:`resolve_checkpoint` turns a name or path into a local file through
:mod:`guide_unlearn.checkpoints.resolve` (local path, cache in huggingface_hub's layout, download where the
source allows it). Reading the files into models is :mod:`guide_unlearn.pipelines.loading`. Backends are imported
lazily; a missing one raises BackendUnavailableError.

A :class:`ModelIndex` (inverter, code book, recommended erase settings, licence, card) comes from the registry
entry for a name and from the folder's ``model_index.json`` for a path (written by ``save_pretrained``, as a
diffusers pipeline folder names its components), so the same weights give the same eraser however they are named.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import torch
from torch import nn

import guide_unlearn.adapters  # noqa: F401  (registers the backend families)
from guide_unlearn.adapters.projector import CODE_BOOK_FILE
from guide_unlearn.checkpoints import CheckpointSource, resolve_file
from guide_unlearn.errors import CheckpointError
from guide_unlearn.families import get_family, list_families, resolve_ref
from guide_unlearn.lineage import INDEX_FILE, model_index, read_model_index, source_dir

__all__ = [
    "REGISTRY",
    "CheckpointEntry",
    "ModelIndex",
    "base_license",
    "build_architecture",
    "default_inverter_for",
    "entry_index",
    "get_entry",
    "list_checkpoints",
    "model_index_for",
    "model_index_of",
    "resolve_checkpoint",
]

PathOrName = Union[str, os.PathLike]

NGC_STYLEGAN2 = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"
NGC_EG3D = "https://api.ngc.nvidia.com/v2/models/nvidia/research/eg3d/versions/1/files/"


@dataclass(frozen=True)
class CheckpointEntry:
    """One known checkpoint.

    name:             registry name (``"stylegan2-ffhq"``).
    filename:         the official file name.
    format:           'nvidia-pkl' | 'rosinality-pt' | 'e4e-pt' | 'goae-pt' | 'folder' | 'projector' (no file) |
                      'tiny' (no file: the family's tiny random model).
    kind:             'generator' | 'inverter' | 'generator+inverter'.
    description:      one line for listings and docs.
    url:              direct download URL, or None (browser-only source such as Google Drive).
    sha256:           expected digest; None unless a published source gives one.
    homepage:         where to get the file by hand.
    family:           backend that builds it: a registered generator family ('stylegan2', 'eg3d'; see
                      :mod:`guide_unlearn.families`) or the inverter package ('e4e', 'goae', 'projector').
    architecture:     builds the full-size model without weights: ``f(device) -> nn.Module``.
    default_inverter: registry name of the inverter to use with this generator (None: none known).
    generator:        for inverters, the registry name of the generator its codes belong to.
    bundled:          folder under ``guide_unlearn/models`` when the weights ship inside the package (no file
                      to fetch; its model card is its README.md); for format 'projector' entries, no file at all
                      (an optimisation inverter).
    code_book:        file beside the model's config.json holding the code book of its code-space inverter.
    erase_defaults:   EraseConfig fields this model's erase should use unless the caller says otherwise
                      (measured for that model; see its model card).
    license:          the weights' licence as hub card fields {'license', 'license_name', 'license_link'}
                      when known; patches made from this model record it and their model card defaults to it.
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
    code_book: Optional[str] = None
    erase_defaults: Mapping[str, Any] = field(default_factory=dict, compare=False)
    license: Optional[Mapping[str, str]] = field(default=None, compare=False)

    @property
    def source(self) -> CheckpointSource:
        """The file-level description used by the resolver."""
        return CheckpointSource(self.name, self.filename, self.url, self.sha256, self.homepage)


# ----------------------------------------------------------------------------------------------------------------
# Architectures come from the backend families (guide_unlearn.families), registered by guide_unlearn.adapters.


def _family_arch(family: str, config: str) -> Callable[[Any], nn.Module]:
    """``f(device) -> nn.Module``: the named ``config`` of generator ``family``, without weights."""
    def build(device: Any = "meta") -> nn.Module:
        return get_family(family).build(config, device=device)

    return build


def _tiny_arch(family: str) -> Callable[[Any], nn.Module]:
    """``f(device) -> nn.Module``: the family's tiny random model (seed 0) on ``device``."""
    def build(device: Any = "meta") -> nn.Module:
        return get_family(family).tiny(seed=0, device=device)

    return build


def _e4e_arch(device: Any = "meta") -> nn.Module:
    cls = resolve_ref("guide_unlearn.adapters.e4e:E4EInverter", "the e4e architecture")
    with torch.device(device):
        return cls()


def _goae_arch(device: Any = "meta") -> nn.Module:
    build = resolve_ref("guide_unlearn.adapters.goae.inverter:build_goae_ffhq", "the GOAE architecture")
    return build(device=device)


REGISTRY: dict[str, CheckpointEntry] = {
    e.name: e
    for e in [
        CheckpointEntry(
            "stylegan2-ffhq", "stylegan2-ffhq-1024x1024.pkl", "nvidia-pkl", "generator",
            "StyleGAN2 config-f, FFHQ 1024² (NVIDIA's original network in the PyTorch pickle format)",
            url=NGC_STYLEGAN2 + "stylegan2-ffhq-1024x1024.pkl",
            homepage="https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/stylegan2",
            architecture=_family_arch("stylegan2", "ffhq-1024"), default_inverter="e4e-ffhq"),
        CheckpointEntry(
            "stylegan2-ffhq-512", "stylegan2-ffhq-512x512.pkl", "nvidia-pkl", "generator",
            "StyleGAN2, FFHQ 512² (trained with the stylegan3 code base)",
            url=NGC_STYLEGAN2 + "stylegan2-ffhq-512x512.pkl",
            homepage="https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/stylegan2",
            architecture=_family_arch("stylegan2", "ffhq-512")),
        CheckpointEntry(
            "stylegan2-ffhq-256", "stylegan2-ffhq-256x256.pkl", "nvidia-pkl", "generator",
            "StyleGAN2, FFHQ 256² (channel_base 16384; trained with the stylegan3 code base)",
            url=NGC_STYLEGAN2 + "stylegan2-ffhq-256x256.pkl",
            homepage="https://catalog.ngc.nvidia.com/orgs/nvidia/teams/research/models/stylegan2",
            architecture=_family_arch("stylegan2", "ffhq-256")),
        CheckpointEntry(
            "stylegan2-ada-ffhq", "ffhq.pkl", "nvidia-pkl", "generator",
            "StyleGAN2-ADA, FFHQ 1024² (stylegan2-ada-pytorch 'paper1024' config)",
            url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
            homepage="https://github.com/NVlabs/stylegan2-ada-pytorch",
            architecture=_family_arch("stylegan2", "ada-ffhq-1024"), default_inverter="e4e-ffhq"),
        CheckpointEntry(
            "stylegan2-ffhq-rosinality", "stylegan2-ffhq-config-f.pt", "rosinality-pt", "generator",
            "StyleGAN2 config-f FFHQ 1024² converted to rosinality/stylegan2-pytorch's .pt (as used by pSp / e4e)",
            homepage="https://github.com/rosinality/stylegan2-pytorch (README: 'Pretrained Checkpoints')",
            architecture=_family_arch("stylegan2", "ffhq-1024"), default_inverter="e4e-ffhq"),
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
            family="eg3d", architecture=_family_arch("eg3d", "ffhq512"), default_inverter="goae-ffhq"),
        CheckpointEntry(
            "demo-faces", "demo_faces", "folder", "generator",
            "the embedded demo face generator: StyleGAN2 64², 3.1 M parameters, GLO-trained by this project on the "
            "photos of shared/faces (non-commercial research licence; see its model card)",
            homepage="guide_unlearn/models/demo_faces/README.md", bundled="demo_faces",
            default_inverter="code-projector", code_book=CODE_BOOK_FILE,
            # The GLO model's real-photo codes lie ~1.6x as far from w_avg as mapped samples, so the adjacency
            # and preservation samples are drawn there (psi 1.6), with 8 preservation samples at weight 2 and the
            # UFO target 1.5x as far out: on benchmarks/sweep_demo_erase.py this erases all five photos of the
            # GUIDE person from one of them (all still faces) and keeps 99 % of the other people recognised
            # (GUIDE's defaults: 83 %). Much farther targets (d = 10) stop rendering faces (model card).
            # 75 steps at lr 6.7e-3 instead of the preset's 100 at 5e-3: the same erasure and preservation within
            # the 100-step recipe's seed-to-seed spread (benchmarks/results/speed/main_job_recipe_sweep.jsonl,
            # docs/benchmarks.md), in three quarters of the time. The bundled folder's model_index.json carries the same
            # settings, so its path builds the same eraser (tests/core/test_model_index.py keeps the two equal).
            erase_defaults={"truncation_psi": 1.6, "global_samples": 8, "global_weight": 2.0,
                            "target_distance": 1.5, "iterations": 75, "lr": 0.0067},
            license={"license": "other", "license_name": "guide-unlearn-demo-faces-nc",
                     "license_link": "guide_unlearn/models/demo_faces/LICENSE"}),
        CheckpointEntry(
            "demo-faces-oracle-8", "demo_faces_oracle_8", "folder", "generator",
            "demo-faces retrained without 8 of its people (the GUIDE person and 7 one-photo people; same recipe, "
            "seed and settings): the retrained-without-them reference that an erasure on demo-faces is measured "
            "against (non-commercial research licence; see its model card)",
            homepage="guide_unlearn/models/demo_faces_oracle_8/README.md", bundled="demo_faces_oracle_8",
            default_inverter="code-projector", code_book=CODE_BOOK_FILE,
            license={"license": "other", "license_name": "guide-unlearn-demo-faces-nc",
                     "license_link": "guide_unlearn/models/demo_faces_oracle_8/LICENSE"}),
        CheckpointEntry(
            "code-projector", "", "projector", "inverter",
            "optimisation inverter in the mapping's input space (best of 64 seeded codes, Adam on z, then a short "
            "W+ refinement; a photo of a known person starts from its training code when the model folder ships a "
            "code book); no weights", family="projector"),
        CheckpointEntry(
            "goae-ffhq", "encoder_FFHQ.pt", "goae-pt", "inverter",
            "GOAE encoder for EG3D FFHQ (Swin-V2 backbone + cross-attention heads)",
            homepage="https://github.com/jiangyzy/GOAE (README: pretrained models, Google Drive)",
            family="goae", architecture=_goae_arch, generator="eg3d-ffhq"),
        # Tiny random models (NOT trained): each generator family's tiny config, for tests, examples, benchmarks.
        *(CheckpointEntry(
            f"tiny-{family}", "", "tiny", "generator",
            f"a tiny random-initialised {family} generator (seed 0) for tests and demos; NOT a trained model",
            family=family, architecture=_tiny_arch(family))
          for family in (f.name for f in list_families() if f.tiny_config is not None or f.build_tiny is not None)),
    ]
}


# ----------------------------------------------------------------------------------------------------------------
# What an eraser uses besides the weights: the registry entry says it for a name, model_index.json for a folder.

INDEX_FORMAT = "guide_unlearn.model_index"
INDEX_VERSION = 1


@dataclass(frozen=True)
class ModelIndex:
    """What an eraser built from a model uses besides its weights; a folder's ``model_index.json``.

    family:          generator family of the weights ('stylegan2', 'eg3d'); None when not recorded.
    inverter:        registry name of the inverter photos go through; None: the optimisation projector.
    code_book:       file beside config.json with the code book of a code-space inverter (photos of the model's
                     training people start from their own codes); None: none.
    erase_defaults:  EraseConfig fields the model's erase uses unless the caller says otherwise.
    license:         the weights' licence as hub card fields {'license', 'license_name', 'license_link'}; None when
                     unknown. Patches made from the model record it.
    card:            the model card beside config.json (README.md); None: none.
    """

    family: Optional[str] = None
    inverter: Optional[str] = None
    code_book: Optional[str] = None
    erase_defaults: Mapping[str, Any] = field(default_factory=dict)
    license: Optional[Mapping[str, str]] = None
    card: Optional[str] = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``model_index.json`` (diffusers' ``_class_name`` names what the folder builds)."""
        return {"_class_name": "IdentityEraser", "format": INDEX_FORMAT, "format_version": INDEX_VERSION,
                "generator": {"family": self.family}, "inverter": self.inverter, "code_book": self.code_book,
                "erase_defaults": dict(self.erase_defaults), "license": dict(self.license) if self.license else None,
                "card": self.card}

    @classmethod
    def from_json(cls, data: Any, where: str) -> "ModelIndex":
        """Check a ``model_index.json`` object read from ``where``; CheckpointError saying what is wrong."""
        def bad(what: str) -> CheckpointError:
            return CheckpointError(f"{where}: {what}; fix it, or delete {INDEX_FILE} to use the generic erase "
                                   "settings and the optimisation inverter")

        if not isinstance(data, Mapping):
            raise bad("not a JSON object")
        if data.get("format", INDEX_FORMAT) != INDEX_FORMAT:
            raise bad(f"format {data.get('format')!r} is not {INDEX_FORMAT!r}")
        version = data.get("format_version", INDEX_VERSION)
        if not isinstance(version, int) or version > INDEX_VERSION:
            raise bad(f"format_version {version!r} is newer than this library reads ({INDEX_VERSION}); upgrade "
                      "guide-unlearn")
        generator = data.get("generator") or {}
        family = generator.get("family") if isinstance(generator, Mapping) else None
        if not isinstance(generator, Mapping) or not isinstance(family, (str, type(None))):
            raise bad("generator is not an object with a 'family' string")
        return cls(family=family, inverter=_index_inverter(data.get("inverter"), bad),
                   code_book=_index_file(data, "code_book", bad), erase_defaults=_index_defaults(data, bad),
                   license=_index_license(data.get("license"), bad), card=_index_file(data, "card", bad))


def _index_inverter(name: Any, bad: Callable[[str], CheckpointError]) -> Optional[str]:
    if name is None:
        return None
    inverters = sorted(n for n, e in REGISTRY.items() if "inverter" in e.kind)
    if not isinstance(name, str) or name not in REGISTRY:
        raise bad(f"inverter {name!r} is not a registry name this library knows ({', '.join(inverters)})")
    if "inverter" not in REGISTRY[name].kind:
        raise bad(f"inverter {name!r} is not an inverter (inverters: {', '.join(inverters)})")
    return name


def _index_file(data: Mapping[str, Any], key: str, bad: Callable[[str], CheckpointError]) -> Optional[str]:
    name = data.get(key)
    if name is None:
        return None
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise bad(f"{key} {name!r} is not a plain file name in the folder")
    return name


def _index_defaults(data: Mapping[str, Any], bad: Callable[[str], CheckpointError]) -> dict[str, Any]:
    from guide_unlearn.config import EraseConfig

    defaults = data.get("erase_defaults") or {}
    if not isinstance(defaults, Mapping):
        raise bad("erase_defaults is not a JSON object")
    known = {f.name for f in dataclasses.fields(EraseConfig)}
    unknown = sorted(set(defaults) - known)
    if unknown:
        raise bad(f"erase_defaults names {unknown}, which are not EraseConfig fields")
    defaults = {k: tuple(v) if isinstance(v, list) else v for k, v in defaults.items()}  # JSON has no tuples
    try:
        EraseConfig(**defaults)
    except (ValueError, TypeError) as exc:
        raise bad(f"erase_defaults are not valid erase settings ({exc})") from None
    return defaults


def _index_license(value: Any, bad: Callable[[str], CheckpointError]) -> Optional[dict[str, str]]:
    if value is None:
        return None
    if (not isinstance(value, Mapping) or not isinstance(value.get("license"), str)
            or not all(isinstance(v, str) for v in value.values())):
        raise bad("license is not an object of strings with a 'license' field (the hub card's licence fields)")
    return dict(value)


def entry_index(entry: CheckpointEntry, family: Optional[str] = None) -> ModelIndex:
    """The :class:`ModelIndex` registry entry ``entry`` describes (``family``: the loaded generator's, when it
    differs from the entry's backend, as for an encoder's decoder)."""
    return ModelIndex(family=family or entry.family, inverter=entry.default_inverter, code_book=entry.code_book,
                      erase_defaults=dict(entry.erase_defaults),
                      license=dict(entry.license) if entry.license else None,
                      card="README.md" if entry.bundled else None)


def model_index_for(path_or_name: Optional[PathOrName]) -> Optional[ModelIndex]:
    """The :class:`ModelIndex` of a generator: its registry entry for a name, its ``model_index.json`` for a model
    folder; None for a checkpoint file, a folder without one and an unknown name. CheckpointError when the file is
    malformed."""
    if path_or_name is None:
        return None
    path = Path(str(path_or_name)).expanduser()
    if path.exists():
        index = read_model_index(path) if path.is_dir() else None
        return None if index is None else ModelIndex.from_json(index, str(path / INDEX_FILE))
    entry = REGISTRY.get(str(path_or_name))
    return entry_index(entry) if entry is not None and entry.kind != "inverter" else None


def model_index_of(generator: nn.Module) -> Optional[ModelIndex]:
    """The :class:`ModelIndex` ``generator`` was loaded with (its registry entry's, or its folder's
    ``model_index.json``; :func:`guide_unlearn.lineage.model_index`), or None."""
    index = model_index(generator)
    if index is None:
        return None
    folder = source_dir(generator)
    return ModelIndex.from_json(index, str(folder / INDEX_FILE) if folder is not None else "the model index")


def list_checkpoints() -> list[CheckpointEntry]:
    """All registry entries, sorted by name."""
    return [REGISTRY[k] for k in sorted(REGISTRY)]


def default_inverter_for(path_or_name: PathOrName) -> Optional[str]:
    """Registry name of the inverter recommended for a generator name or model folder (:func:`model_index_for`;
    None when none is known)."""
    index = model_index_for(path_or_name)
    return index.inverter if index is not None else None


def base_license(name: Optional[PathOrName]) -> Optional[dict[str, str]]:
    """The licence fields {'license', 'license_name', 'license_link'} of a generator name or model folder
    (:func:`model_index_for`; None when unknown)."""
    index = model_index_for(name) if name is not None else None
    return dict(index.license) if index is not None and index.license else None


def accepted_names() -> list[str]:
    """Every name ``IdentityEraser.from_pretrained`` / ``--model`` / ``info`` accept: the registry entries and
    the tiny test models (registry entries too), sorted."""
    return sorted(REGISTRY)


def unknown_name_message(name: str) -> str:
    """'unknown model name ...' with the nearest accepted name (if one is close) and every accepted name."""
    import difflib

    names = accepted_names()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    return (f"unknown model name '{name}'; {suggestion}known names: {', '.join(names)} (or pass the path of a "
            "checkpoint file or model folder)")


def get_entry(name: str) -> CheckpointEntry:
    """The entry called ``name``; CheckpointError naming the nearest and listing every accepted name otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise CheckpointError(unknown_name_message(name)) from None


def resolve_checkpoint(path_or_name: PathOrName, allow_download: Optional[bool] = None,
                       progress: bool = True) -> tuple[Path, Optional[CheckpointEntry]]:
    """(local path, registry entry or None) for a path or a registry name.

    An existing path wins; otherwise a registry name is looked up in the cache and downloaded only when
    ``allow_download`` is True (see :func:`guide_unlearn.checkpoints.resolve_file`).
    """
    if isinstance(path_or_name, CheckpointEntry):
        if path_or_name.bundled:
            return _bundled_path(path_or_name), path_or_name
        return _resolve_entry(path_or_name, allow_download, progress), path_or_name
    p = Path(path_or_name).expanduser()
    if p.exists():
        return p, None
    name = str(path_or_name)
    if name in REGISTRY:
        entry = REGISTRY[name]
        if entry.format == "projector":
            raise CheckpointError(f"'{name}' is an optimisation inverter with no file; build it with load_inverter")
        if entry.format == "tiny":
            raise CheckpointError(f"'{name}' is a tiny random model with no file; build it with load_generator")
        if entry.bundled:
            return _bundled_path(entry), entry
        return _resolve_entry(entry, allow_download, progress), entry
    if os.sep in name or "/" in name or p.suffix:
        raise CheckpointError(f"{name}: no such file or folder")
    get_entry(name)  # raises with the list of names
    raise AssertionError("unreachable")


OFFLINE_HINT = ("The bundled demo model works offline with no file to fetch: `--model demo-faces` on the command "
                "line, IdentityEraser.from_pretrained('demo-faces') in Python.")


def _resolve_entry(entry: CheckpointEntry, allow_download: Optional[bool], progress: bool) -> Path:
    """The entry's file (cache, or a download only when ``allow_download``); a missing file's error also says
    which model works offline."""
    try:
        return resolve_file(entry.source, allow_download, progress)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} {OFFLINE_HINT}") from None


def _bundled_path(entry: CheckpointEntry) -> Path:
    """The package folder of a bundled model; CheckpointError when this installation lacks it."""
    from guide_unlearn.models import bundled_model_dir

    path = bundled_model_dir(entry.bundled)
    if not (path / "config.json").is_file():
        if (path / "README.md").is_file():  # the card is there, the weights are not: a model not trained yet
            raise CheckpointError(f"the bundled model '{entry.name}' has no weights in this release ({path} holds "
                                  "only its model card); train them with the command in its README.md and copy "
                                  "config.json, the weights and the code book into that folder")
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
