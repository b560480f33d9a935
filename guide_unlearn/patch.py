"""ForgetPatch: the small, versioned, safetensors-only artefact an erase produces.

Folder layout (format version 1, see docs/patch_format.md)::

    forget_patch.json            metadata (JSON, <= 1 MiB): base model family/config/fingerprint, erase config,
                                 final losses, library version, sha256 of every tensor file
    adapter_config.json          peft LoraConfig           (kind "lora")
    adapter_model.safetensors    peft LoRA tensors          (kind "lora")
    delta_model.safetensors      weight differences         (kind "delta", the paper preset)
    README.md                    model card (YAML header + text; see guide_unlearn.hub), not read by the loader

It never holds a photo or a latent code of the person.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from . import hub as _hub
from .errors import PatchError
from .io import PathLike, atomic_directory, sha256_file

FORMAT = "guide_unlearn.forget_patch"
FORMAT_VERSION = 1
META_FILE = "forget_patch.json"
LORA_CONFIG_FILE = "adapter_config.json"
LORA_FILE = "adapter_model.safetensors"
DELTA_FILE = "delta_model.safetensors"
MAX_JSON_BYTES = 1 << 20
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
KINDS = ("lora", "delta")


@dataclass(repr=False)
class ForgetPatch:
    """A forget patch: LoRA factors (``kind='lora'``) or full weight differences (``kind='delta'``).

    tensors:     LoRA: peft keys ``<module>.lora_A.weight`` [r, I·k·k] / ``<module>.lora_B.weight`` [O, r];
                 delta: parameter names -> differences shaped like the parameters.
    lora_config: {'r', 'lora_alpha', 'target_modules'} for LoRA patches, else None.
    metadata:    generator family/config, ``base_fingerprint``, erase config, final losses, versions.
    """

    kind: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, Any]
    lora_config: Optional[dict[str, Any]] = None
    _id: Optional[str] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise PatchError(f"unknown patch kind {self.kind!r}; expected one of {KINDS}")
        if self.kind == "lora" and not self.lora_config:
            raise PatchError("a LoRA patch needs its lora_config (r, lora_alpha, target_modules)")
        for k, t in self.tensors.items():
            if not torch.is_tensor(t):
                raise PatchError(f"patch tensor {k!r} is not a tensor")

    # -- identity ---------------------------------------------------------------------------------------------
    @property
    def patch_id(self) -> str:
        """Content hash (16 hex) of the tensors and their kind: equal patches share it."""
        if self._id is None:
            h = hashlib.sha256(self.kind.encode())
            for k in sorted(self.tensors):
                t = self.tensors[k].detach().to("cpu", torch.float32).contiguous()
                h.update(k.encode())
                h.update(str(tuple(t.shape)).encode())
                h.update(t.numpy().tobytes())
            self._id = h.hexdigest()[:16]
        return self._id

    @property
    def adapter_name(self) -> str:
        """The name under which the patch is applied as a peft adapter."""
        return f"forget_{self.patch_id}"

    @property
    def base_fingerprint(self) -> str:
        """Fingerprint of the base generator weights this patch was made for."""
        return str(self.metadata.get("base_fingerprint", ""))

    @property
    def num_parameters(self) -> int:
        """Number of stored scalars."""
        return sum(t.numel() for t in self.tensors.values())

    @property
    def num_bytes(self) -> int:
        """Bytes of tensor data as stored (fp32)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def __repr__(self) -> str:
        """One line: kind, id, rank, size and base (never the tensors or the whole metadata)."""
        rank = f", r={self.lora_config.get('r')}" if self.kind == "lora" and self.lora_config else ""
        base = self.metadata.get("base_name")
        made_for = f", base={base!r}" if base else ""
        return (f"ForgetPatch(kind={self.kind!r}, id={self.patch_id!r}{rank}, tensors={len(self.tensors)}, "
                f"bytes={self.num_bytes:,}, family={self.metadata.get('generator_family')!r}{made_for}, "
                f"fingerprint={self.base_fingerprint[:19]!r})")

    def describe(self) -> dict[str, Any]:
        """A short JSON-friendly summary (for ``guide-unlearn info``)."""
        return {
            "kind": self.kind, "patch_id": self.patch_id, "parameters": self.num_parameters, "bytes": self.num_bytes,
            "generator_family": self.metadata.get("generator_family"), "base_fingerprint": self.base_fingerprint,
            "lora": self.lora_config, "final_losses": self.metadata.get("final_losses"),
            "perceptual": self.metadata.get("perceptual"), "identity_model": self.metadata.get("identity_model"),
            "library_version": self.metadata.get("library_version"),
        }

    @classmethod
    def combine(cls, patches: "list[ForgetPatch]", weights: "Optional[list[float]]" = None) -> "ForgetPatch":
        """One LoRA patch whose delta is exactly sum_i weights[i] * delta_i (peft's 'cat' combination).

        The factors are concatenated along the rank: A = [A_1; A_2; ...], B = [w_1 s_1 B_1, w_2 s_2 B_2, ...]
        with s_i = alpha_i / r_i and the combined alpha = rank, so nothing is approximated. Patches must be LoRA
        patches for the same base; a module one patch does not target contributes zeros.
        """
        if not patches:
            raise PatchError("combine needs at least one patch")
        weights = [1.0] * len(patches) if weights is None else [float(w) for w in weights]
        if len(weights) != len(patches):
            raise PatchError(f"got {len(weights)} weights for {len(patches)} patches")
        if any(p.kind != "lora" for p in patches):
            raise PatchError("only LoRA patches can be combined; apply delta patches one after the other")
        bases = {p.base_fingerprint for p in patches}
        families = {p.metadata.get("generator_family") for p in patches}
        if len(bases) != 1 or len(families) != 1:
            from .errors import PatchMismatchError

            raise PatchMismatchError("these patches were made for different base generators; combine patches of "
                                     "one base only")
        modules = sorted({m for p in patches for m in p.lora_config["target_modules"]})
        tensors: dict[str, torch.Tensor] = {}
        for m in modules:
            a_parts, b_parts = [], []
            owner = next(p for p in patches if f"{m}.lora_A.weight" in p.tensors)
            fan_in = owner.tensors[f"{m}.lora_A.weight"].shape[1]
            fan_out = owner.tensors[f"{m}.lora_B.weight"].shape[0]
            for p, w in zip(patches, weights):
                r = int(p.lora_config["r"])
                a = p.tensors.get(f"{m}.lora_A.weight")
                b = p.tensors.get(f"{m}.lora_B.weight")
                if a is None:
                    a, b = torch.zeros(r, fan_in), torch.zeros(fan_out, r)
                scale = float(p.lora_config["lora_alpha"]) / r
                a_parts.append(a.float())
                b_parts.append(b.float() * (w * scale))
            tensors[f"{m}.lora_A.weight"] = torch.cat(a_parts, dim=0)
            tensors[f"{m}.lora_B.weight"] = torch.cat(b_parts, dim=1)
        rank = sum(int(p.lora_config["r"]) for p in patches)
        metadata = dict(patches[0].metadata)
        metadata["final_losses"] = None
        metadata["combined_from"] = [{"patch_id": p.patch_id, "weight": w} for p, w in zip(patches, weights)]
        return cls("lora", tensors, metadata, {"r": rank, "lora_alpha": float(rank), "target_modules": modules})

    # -- persistence ------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory: PathLike, overwrite: bool = False,
                        card: "bool | dict[str, Any] | None" = True) -> Path:
        """Write the patch folder atomically (built under a temporary name, then renamed). -> the folder.

        A missing path or an empty folder is written; an existing patch folder is replaced only with
        ``overwrite=True``; a folder holding anything that is not part of a complete forget patch is never
        replaced (SaveError, see :func:`guide_unlearn.io.check_output_dir`).

        card: write the README.md model card (True), not (False), or a dict of
        :func:`guide_unlearn.hub.model_card` options, e.g. ``{"license": "apache-2.0"}``.
        """
        save_directory = Path(save_directory)
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.tensors.items()}
        blob = save(tensors)
        tensor_file = LORA_FILE if self.kind == "lora" else DELTA_FILE
        meta = dict(self.metadata)
        meta.update(format=FORMAT, format_version=FORMAT_VERSION, kind=self.kind, patch_id=self.patch_id,
                    files={tensor_file: hashlib.sha256(blob).hexdigest()})
        meta_bytes = json.dumps(meta, indent=2, sort_keys=True, default=_json_default).encode()
        if len(meta_bytes) > MAX_JSON_BYTES:
            raise PatchError(f"patch metadata is {len(meta_bytes)} bytes (limit {MAX_JSON_BYTES}); trim it")
        card_text = _card_text(json.loads(meta_bytes), card)
        with atomic_directory(save_directory, overwrite=overwrite, recognise=patch_files, what="forget patch") as tmp:
            (tmp / tensor_file).write_bytes(blob)
            if self.kind == "lora":
                (tmp / LORA_CONFIG_FILE).write_text(json.dumps(_peft_config_json(self.lora_config), indent=2))
            (tmp / META_FILE).write_bytes(meta_bytes)
            if card_text is not None:
                (tmp / _hub.CARD_FILE).write_text(card_text, encoding="utf-8")
        return save_directory

    def push_to_hub(self, repo_id: str, private: bool = True, token: "str | bool | None" = None,
                    commit_message: Optional[str] = None, revision: Optional[str] = None,
                    subfolder: Optional[str] = None, **card: Any):
        """Upload this patch and its model card to the hub repo ``repo_id`` (created private if missing), under
        ``subfolder`` when given. ``card`` may set ``license`` / ``base_model``. -> huggingface_hub CommitInfo."""
        return _hub.push_patch(self, repo_id, private=private, token=token, commit_message=commit_message,
                               revision=revision, subfolder=subfolder, **card)

    @classmethod
    def from_pretrained(cls, directory: PathLike, revision: Optional[str] = None, subfolder: Optional[str] = None,
                        token: "str | bool | None" = None) -> "ForgetPatch":
        """Load and verify a patch folder (safetensors only; sha256 and sizes checked), or the patch of a hub repo
        ``"user/repo"`` at ``revision`` / ``subfolder`` (a local folder of the same name wins; see
        :func:`guide_unlearn.hub.resolve_patch_folder`)."""
        directory = _hub.resolve_patch_folder(directory, revision=revision, subfolder=subfolder, token=token)
        require_patch_folder(directory)
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
        if pickles:
            raise PatchError(f"{directory} contains pickle files {pickles}; forget patches are safetensors-only and "
                             "pickles are never loaded. Re-export the patch with guide_unlearn, or delete them")
        _refuse_links(directory, (META_FILE, LORA_CONFIG_FILE, LORA_FILE, DELTA_FILE))
        meta = _read_json(directory / META_FILE, "patch metadata")
        if meta.get("format") != FORMAT:
            raise PatchError(f"{directory / META_FILE} is not a guide_unlearn forget patch (format={meta.get('format')!r})")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
            raise PatchError(f"patch format version {version!r} is not supported by this library (supports "
                             f"1..{FORMAT_VERSION}); upgrade guide_unlearn")
        kind = meta.get("kind")
        if kind not in KINDS:
            raise PatchError(f"patch kind {kind!r} is unknown; expected one of {KINDS}")
        tensor_file = LORA_FILE if kind == "lora" else DELTA_FILE
        path = directory / tensor_file
        if not path.is_file():
            raise PatchError(f"{path} is missing; the patch folder is incomplete — copy it again")
        expected = (meta.get("files") or {}).get(tensor_file)
        if expected != sha256_file(path):
            raise PatchError(f"{path} does not match the sha256 recorded in {META_FILE}: the patch was modified or "
                             "corrupted; get a fresh copy")
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise PatchError(f"{path} is not a readable safetensors file ({e}); get a fresh copy") from e
        lora_config = None
        if kind == "lora":
            raw = _read_json(directory / LORA_CONFIG_FILE, "adapter config")
            lora_config = {"r": raw.get("r"), "lora_alpha": raw.get("lora_alpha"),
                           "target_modules": raw.get("target_modules")}
            if not isinstance(lora_config["r"], int) or lora_config["r"] < 1 or not lora_config["target_modules"]:
                raise PatchError(f"{directory / LORA_CONFIG_FILE} lacks a valid r / target_modules")
            if isinstance(lora_config["target_modules"], str):
                raise PatchError(f"{directory / LORA_CONFIG_FILE}: target_modules must be a list of module names")
            lora_config["target_modules"] = sorted(lora_config["target_modules"])
        metadata = {k: v for k, v in meta.items() if k not in ("format", "format_version", "kind", "files", "patch_id")}
        patch = cls(kind=kind, tensors=tensors, metadata=metadata, lora_config=lora_config)
        if meta.get("patch_id") not in (None, patch.patch_id):
            raise PatchError(f"{directory}: patch_id in {META_FILE} does not match its tensors; get a fresh copy")
        return patch


def _card_text(meta: dict[str, Any], card: "bool | dict[str, Any] | None") -> Optional[str]:
    """The README.md model card for ``meta`` (None when ``card`` is False)."""
    options = _hub.card_options(card)
    return None if options is None else str(_hub.model_card(meta, **options))


def _refuse_links(directory: Path, names: tuple[str, ...]) -> None:
    """Refuse symbolic links among the files a loader reads, except huggingface_hub's own cache links."""
    for name in names:
        path = directory / name
        if path.is_symlink() and not _hub.is_hub_cache_link(path):
            raise PatchError(f"{path} is a symbolic link; patch files must be regular files (the only links "
                             "followed are huggingface_hub's cache links into the same repo's blobs/). Copy the "
                             "real file into the folder")


def patch_files(directory: PathLike) -> Optional[list[str]]:
    """The files of a complete forget patch in ``directory`` (its metadata, config and tensor file), or None when
    the folder is not one (no readable ``forget_patch.json`` of this format, or a file it lists is missing).
    Used to decide whether a folder may be replaced; it does not verify the tensors (``from_pretrained`` does)."""
    directory = Path(directory)
    try:
        meta = _read_json(directory / META_FILE, "patch metadata")
    except PatchError:
        return None
    files = meta.get("files")
    if meta.get("format") != FORMAT or meta.get("kind") not in KINDS or not isinstance(files, dict) or not files:
        return None
    names = [META_FILE] + [str(n) for n in files]
    if meta.get("kind") == "lora":
        names.append(LORA_CONFIG_FILE)
    names.append(_hub.CARD_FILE)  # the model card this library writes beside the patch (optional)
    if any("/" in n or "\\" in n or not (directory / n).is_file() for n in names if n != _hub.CARD_FILE):
        return None
    return names


def require_patch_folder(directory: PathLike) -> None:
    """Raise a PatchError saying plainly why ``directory`` is not a forget patch: it does not exist, is a file, or
    is a folder without ``forget_patch.json`` (a bare peft adapter, a model folder, any other folder). Returns
    when it may be one (its content is verified by :meth:`ForgetPatch.from_pretrained`)."""
    path = Path(directory)
    if not path.exists():
        raise PatchError(f"{path} does not exist; pass a forget patch folder (written by `guide-unlearn erase` or "
                         "ForgetPatch.save_pretrained)")
    if not path.is_dir():
        raise PatchError(f"{path} is a file, not a forget patch; a patch is a folder holding {META_FILE}")
    if not (path / META_FILE).is_file():
        looks = (" (it looks like a model folder)" if (path / "config.json").is_file() else
                 " (it looks like a bare LoRA adapter)" if (path / "adapter_config.json").is_file() else "")
        raise PatchError(f"{path} is not a forget patch: it has no {META_FILE}{looks}; pass the folder written by "
                         "`guide-unlearn erase` (or ForgetPatch.save_pretrained), copied whole")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise PatchError(f"{path} ({what}) is missing; the patch folder is incomplete — copy it again")
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise PatchError(f"{path} is {size} bytes, over the {MAX_JSON_BYTES}-byte limit for {what}; refusing it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PatchError(f"{path} ({what}) is not valid JSON ({e}); get a fresh copy of the patch") from e
    if not isinstance(data, dict):
        raise PatchError(f"{path} ({what}) must hold a JSON object")
    return data


def _peft_config_json(lora_config: dict[str, Any]) -> dict[str, Any]:
    """peft-compatible adapter_config.json (the custom layer mapping is re-registered at load time)."""
    return {
        "peft_type": "LORA", "task_type": None, "r": int(lora_config["r"]),
        "lora_alpha": float(lora_config["lora_alpha"]), "target_modules": sorted(lora_config["target_modules"]),
        "lora_dropout": 0.0, "bias": "none", "init_lora_weights": True, "use_rslora": False, "use_dora": False,
        "fan_in_fan_out": False, "modules_to_save": None, "inference_mode": True,
        "base_model_name_or_path": None, "guide_unlearn_layer": "WeightDeltaLoraLayer",
    }


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
