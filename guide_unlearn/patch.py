"""ForgetPatch: the small, versioned, safetensors-only artefact an erase produces.

Folder layout (format version 1, see docs/patch_format.md)::

    forget_patch.json            metadata (JSON, <= 1 MiB): base model family/config/fingerprint, erase config,
                                 final losses, library version, sha256 of every tensor file
    adapter_config.json          peft LoraConfig           (kind "lora")
    adapter_model.safetensors    peft LoRA tensors          (kind "lora")
    delta_model.safetensors      weight differences         (kind "delta", the paper preset)
    README.md                    model card (YAML header + text; see guide_unlearn.card), not read by the loader

It never holds a photo or a latent code of the person.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import save

from . import card as _card
from . import hub as _hub
from . import gate
from .errors import PatchError
from .io import PathLike, atomic_directory
from .patch_format import (DELTA_FILE, FORMAT, FORMAT_VERSION, LORA_CONFIG_FILE, LORA_FILE, MAX_JSON_BYTES,
                           META_FILE)

MAX_JSON_DEPTH = 32
MAX_RANK = 4096
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
    def base_merged(self) -> list[str]:
        """Ids of the patches that were merged into (or applied to) the weights this patch was trained on: with
        :attr:`base_fingerprint` they name those exact weights. A patch applies only where all of them are merged
        or applied too (:func:`guide_unlearn.patching.check`). Empty for a patch made on the plain base."""
        return [str(p) for p in self.metadata.get("base_merged") or []]

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
            "base_merged": self.base_merged,
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
        merged = {tuple(sorted(p.base_merged)) for p in patches}
        if len(bases) != 1 or len(families) != 1 or len(merged) != 1:
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
        :func:`guide_unlearn.card.model_card` options, e.g. ``{"license": "apache-2.0"}``.
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
        gate.check(json.loads(meta_bytes), "patch-metadata", f"the metadata of patch {self.patch_id}")  # reloadable
        card_text = _card_text(json.loads(meta_bytes), card)
        options = _card.card_options(card)
        licence = _card.license_file(meta) if options is not None and options.get("license") is None else None
        with atomic_directory(save_directory, overwrite=overwrite, recognise=patch_files, what="forget patch") as tmp:
            (tmp / tensor_file).write_bytes(blob)
            if self.kind == "lora":
                (tmp / LORA_CONFIG_FILE).write_text(json.dumps(_peft_config_json(self.lora_config), indent=2))
            (tmp / META_FILE).write_bytes(meta_bytes)
            if card_text is not None:
                (tmp / _card.CARD_FILE).write_text(card_text, encoding="utf-8")
                if licence is not None:  # the card's license_link names this copy of the base's licence
                    (tmp / _card.LICENSE_FILE).write_bytes(licence)
        return save_directory

    def push_to_hub(self, repo_id: str, private: bool = True, token: "str | bool | None" = None,
                    commit_message: Optional[str] = None, revision: Optional[str] = None,
                    subfolder: Optional[str] = None, **card: Any):
        """Upload this patch and its model card to the hub repo ``repo_id`` (created private if missing), under
        ``subfolder`` when given. ``card`` may set ``license`` / ``base_model``. -> huggingface_hub CommitInfo."""
        return _hub.push_patch(self, repo_id, private=private, token=token, commit_message=commit_message,
                               revision=revision, subfolder=subfolder, **card)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: PathLike, revision: Optional[str] = None,
                        subfolder: Optional[str] = None, token: "str | bool | None" = None) -> "ForgetPatch":
        """Load and verify a patch: ``pretrained_model_name_or_path`` is a local patch folder (safetensors only;
        sha256 and sizes checked) or a hub repo id ``"user/repo"``, read at ``revision`` / ``subfolder`` (a local
        folder of the same name wins; see :func:`guide_unlearn.hub.resolve_patch_folder`). Every failure of a
        malformed folder is a PatchError; see :meth:`_from_pretrained` for what is checked."""
        directory = _hub.resolve_patch_folder(pretrained_model_name_or_path, revision=revision, subfolder=subfolder,
                                              token=token)
        try:
            return cls._from_pretrained(directory)
        except PatchError:
            raise
        except (Exception, RecursionError) as exc:  # noqa: BLE001 - a malformed folder, whatever broke
            raise PatchError(f"{directory}: malformed patch folder ({type(exc).__name__}: {str(exc)[:200]}); get a "
                             "fresh copy of the patch") from None

    @classmethod
    def _from_pretrained(cls, directory: Path) -> "ForgetPatch":
        """Load and verify a local patch folder; every file goes through the reading gate (:mod:`guide_unlearn.gate`).

        Refused with a PatchError: files that are not regular or whose real location leaves the folder (except a
        Hugging Face cache snapshot's links into the same repo's ``blobs/``), JSON over 1 MiB or nested too deep,
        metadata values of the wrong type or size (the ``patch-metadata`` schema: loss histories, losses, request
        ids, audit summaries...), non-float or non-finite tensors, a non-finite / non-positive ``lora_alpha``, a
        rank outside 1..:data:`MAX_RANK` or disagreeing with the tensors, tensor names that are not LoRA factors of
        the listed targets. Which modules a patch may touch depends on the generator: checked when it is applied.
        """
        require_patch_folder(directory)  # says plainly what the folder is when it is not a patch
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES)
        if pickles:
            raise PatchError(f"{directory} contains pickle files {pickles}; forget patches are safetensors-only and "
                             "pickles are never loaded. Re-export the patch with guide_unlearn, or delete them")
        meta = read_metadata(directory)
        kind = meta["kind"]
        tensor_file = LORA_FILE if kind == "lora" else DELTA_FILE
        path = directory / tensor_file
        if not (path.exists() or path.is_symlink()):
            raise PatchError(f"{path} is missing; the patch folder is incomplete — copy it again")
        blob = gate.read_bytes(path, "patch-tensors", root=directory)  # read once: hashed and parsed, same bytes
        expected = meta.get("files", {}).get(tensor_file)
        if expected != hashlib.sha256(blob).hexdigest():
            raise PatchError(f"{path} does not match the sha256 recorded in {META_FILE}: the patch was modified or "
                             "corrupted; get a fresh copy")
        tensors, _ = gate.parse_safetensors(blob, str(path), "patch-tensors")
        del blob
        _check_tensors(tensors, path)
        lora_config = None
        if kind == "lora":
            raw = gate.read_json(directory / LORA_CONFIG_FILE, "adapter-config", root=directory)
            if not isinstance(raw, dict):
                raise PatchError(f"{directory / LORA_CONFIG_FILE} (adapter config) must hold a JSON object")
            lora_config = _lora_config(raw, directory / LORA_CONFIG_FILE)
            _check_lora_tensors(tensors, lora_config, path)
        metadata = {k: v for k, v in meta.items() if k not in ("format", "format_version", "kind", "files", "patch_id")}
        patch = cls(kind=kind, tensors=tensors, metadata=metadata, lora_config=lora_config)
        if meta.get("patch_id") not in (None, patch.patch_id):
            raise PatchError(f"{directory}: patch_id in {META_FILE} does not match its tensors; get a fresh copy")
        return patch


def read_metadata(directory: PathLike) -> dict[str, Any]:
    """The verified ``forget_patch.json`` of a patch folder: through the reading gate (regular file inside the
    folder, at most 1 MiB, bounded JSON), checked by the ``patch-metadata`` schema, of this format and a supported
    version and kind. Raises PatchError."""
    directory = Path(directory)
    path = directory / META_FILE
    if not (path.exists() or path.is_symlink()):
        raise PatchError(f"{path} (patch metadata) is missing; the patch folder is incomplete — copy it again")
    meta = gate.read_json(path, "patch-metadata", root=directory)
    if meta.get("format") != FORMAT:
        raise PatchError(f"{path} is not a guide_unlearn forget patch (format={str(meta.get('format'))[:60]!r})")
    version = meta["format_version"]
    if version > FORMAT_VERSION or version < 1:
        raise PatchError(f"patch format version {version!r} is not supported by this library (supports "
                         f"1..{FORMAT_VERSION}); upgrade guide_unlearn")
    if meta["kind"] not in KINDS:
        raise PatchError(f"patch kind {meta['kind']!r} is unknown; expected one of {KINDS}")
    tensor_file = LORA_FILE if meta["kind"] == "lora" else DELTA_FILE
    if not isinstance(meta.get("files"), dict) or tensor_file not in meta["files"]:
        raise PatchError(f"{path} does not list the sha256 of {tensor_file}; the patch folder is malformed — get a "
                         "fresh copy")
    return meta


def _card_text(meta: dict[str, Any], card: "bool | dict[str, Any] | None") -> Optional[str]:
    """The README.md model card for ``meta`` (None when ``card`` is False)."""
    options = _card.card_options(card)
    return None if options is None else str(_card.model_card(meta, **options))


def patch_files(directory: PathLike) -> Optional[list[str]]:
    """The files of a complete forget patch in ``directory`` (its metadata, config and tensor file), or None when
    the folder is not one (no readable ``forget_patch.json`` of this format, or a file it lists is missing).
    Used to decide whether a folder may be replaced; it does not verify the tensors (``from_pretrained`` does)."""
    directory = Path(directory)
    try:
        meta = read_metadata(directory)
    except PatchError:
        return None
    files = meta["files"]
    names = [META_FILE] + [str(n) for n in files]
    if meta.get("kind") == "lora":
        names.append(LORA_CONFIG_FILE)
    names += [_card.CARD_FILE, _card.LICENSE_FILE]  # the card and base licence this library writes (optional)
    if any("/" in n or "\\" in n or not (directory / n).is_file() for n in names
           if n not in (_card.CARD_FILE, _card.LICENSE_FILE)):
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


_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


def _check_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Every patch tensor is a finite float tensor under a plain dotted name."""
    if not tensors:
        raise PatchError(f"{path} holds no tensors; get a fresh copy of the patch")
    for name, t in tensors.items():
        if not _MODULE_NAME.fullmatch(name) or len(name) > 512:
            raise PatchError(f"{path}: tensor name {name[:80]!r} is not a parameter name")
        if t.dtype not in _FLOAT_DTYPES:
            raise PatchError(f"{path}: tensor {name} has dtype {t.dtype}; patch tensors are floating point")
        if not torch.isfinite(t).all():
            raise PatchError(f"{path}: tensor {name} holds NaN or Inf; the patch is corrupted or hostile")


def _lora_config(raw: dict[str, Any], path: Path) -> dict[str, Any]:
    """{'r', 'lora_alpha', 'target_modules'} of an adapter_config.json, validated."""
    r, alpha, targets = raw.get("r"), raw.get("lora_alpha"), raw.get("target_modules")
    if type(r) is not int or not 1 <= r <= MAX_RANK:
        raise PatchError(f"{path}: r must be an integer in 1..{MAX_RANK}, got {str(r)[:40]}")
    if type(alpha) not in (int, float) or not math.isfinite(alpha) or not 0 < alpha <= 1e6:
        raise PatchError(f"{path}: lora_alpha must be a finite number in (0, 1e6], got {str(alpha)[:40]}")
    if not isinstance(targets, list) or not targets or len(targets) > 100_000:
        raise PatchError(f"{path}: target_modules must be a non-empty list of module names")
    if not all(isinstance(t, str) and _MODULE_NAME.fullmatch(t) and len(t) <= 512 for t in targets):
        raise PatchError(f"{path}: target_modules must hold plain dotted module names")
    if len(set(targets)) != len(targets):
        raise PatchError(f"{path}: target_modules lists a module twice")
    return {"r": r, "lora_alpha": alpha, "target_modules": sorted(targets)}


def _check_lora_tensors(tensors: dict[str, torch.Tensor], cfg: dict[str, Any], path: Path) -> None:
    """Exactly one A [r, fan_in] and one B [fan_out, r] per target, r the configured rank."""
    r = cfg["r"]
    expected = {f"{m}.lora_{ab}.weight" for m in cfg["target_modules"] for ab in "AB"}
    if set(tensors) != expected:
        extra = sorted(set(tensors) - expected)[:3]
        missing = sorted(expected - set(tensors))[:3]
        raise PatchError(f"{path}: tensors do not match target_modules (unexpected {extra}, missing {missing})")
    for m in cfg["target_modules"]:
        a, b = tensors[f"{m}.lora_A.weight"], tensors[f"{m}.lora_B.weight"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
            raise PatchError(f"{path}: {m} has A {list(a.shape)} and B {list(b.shape)}, which disagree with the "
                             f"rank r={r}")


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
