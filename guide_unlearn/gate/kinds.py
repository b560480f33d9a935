"""The kinds of file the library reads, each with its size cap, its error class, its parse bounds and (for
structured text) the schema its content must satisfy. Adding a reader means adding a kind here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from ..errors import (CheckpointError, ConfigError, GuideUnlearnError, ImageLoadError, InputError, LatentError,
                      PatchError, SaveError)
from .schema import AnyJSON, Dict, Int, List, Map, Num, OneOf, Opt, Schema, Str

__all__ = ["KINDS", "Kind", "get_kind", "register_kind"]

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class Kind:
    """What the gate knows about one kind of file.

    name:        shown in messages ("patch metadata", "model card", ...).
    max_bytes:   the largest file of this kind that is read at all.
    error:       the typed error every refusal raises (a GuideUnlearnError subclass).
    max_depth:   nesting allowed in its JSON / YAML text.
    max_nodes:   items a parse of it may produce (a DAG counted as the tree it expands to).
    schema:      the shape its parsed content must have (None: checked by its own reader).
    allow_empty: whether an empty file is valid (never for binary formats: /proc files report 0 bytes).
    max_entries: entries (files and sub-folders) a folder of this kind may hold (:func:`.files.list_folder`).
    """

    name: str
    max_bytes: int
    error: type
    max_depth: int = 32
    max_nodes: int = 200_000
    schema: Optional[Schema] = None
    allow_empty: bool = False
    max_entries: int = 10_000


KINDS: dict[str, Kind] = {}


def register_kind(key: str, kind: Kind) -> Kind:
    """Declare a kind of file under ``key`` (e.g. ``"patch-metadata"``). -> the kind."""
    if not issubclass(kind.error, GuideUnlearnError):
        raise TypeError(f"the error of kind {key!r} must be a GuideUnlearnError subclass")
    KINDS[key] = kind
    return kind


def get_kind(kind: Union[str, Kind]) -> Kind:
    """A kind by key (or the kind itself)."""
    if isinstance(kind, Kind):
        return kind
    try:
        return KINDS[kind]
    except KeyError:
        raise KeyError(f"unknown file kind {kind!r}; known: {sorted(KINDS)}") from None


# -- shared pieces of schemas -----------------------------------------------------------------------------------
_NAME = Str(256)
_HEX16 = Str(64, pattern=r"[0-9a-f]{1,64}")
_LOSSES = Map(Opt(Num()), key=Str(128), max_len=256)
_FINGERPRINT = Str(160)


def _same_lengths(history: dict) -> Optional[str]:
    lengths = {len(v) for v in history.values()}
    return None if len(lengths) <= 1 else "every series of loss_history must have as many points as 'step'"


_LOSS_HISTORY = Dict({}, extra=List(Opt(Num()), max_len=10_000), max_len=256, rule=_same_lengths)
_REQUEST = Dict({"request_id": Str(512), "final_losses": Opt(_LOSSES), "last_step": Opt(Int(-1, 1 << 40)),
                 "done_at_step": Opt(Int(-1, 1 << 40))}, required=("request_id",), extra=AnyJSON(4096))
_AUDIT = Dict({"protocol": Str(256), "metrics": Map(Opt(Num()), key=Str(128), max_len=512),
               "networks": AnyJSON(4096), "date": Opt(Str(64))}, extra=AnyJSON(4096))
_LICENSE = OneOf(Str(64), Dict({"license": Str(64), "license_name": Opt(Str(256)), "license_link": Opt(Str(2048))},
                               required=("license",)))
_MERGED = Dict({"patch_id": _HEX16, "kind": Opt(Str(16)), "final_losses": Opt(_LOSSES)}, required=("patch_id",),
               extra=AnyJSON(4096))

PATCH_METADATA = Dict({
    "format": Str(128), "format_version": Int(0, 1 << 20), "kind": Str(16),
    "files": Map(Str(64, pattern=r"[0-9a-f]{64}"), key=Str(255), max_len=16),
    "patch_id": Opt(_HEX16), "generator_family": Opt(Str(128)), "generator_config": Opt(AnyJSON(4096)),
    "base_fingerprint": Opt(_FINGERPRINT), "base_name": Opt(Str(1024)), "base_license": Opt(_LICENSE),
    "base_merged": Opt(List(_HEX16, max_len=10_000)),
    "erase_config": Opt(Map(AnyJSON(4096), key=Str(128), max_len=1000)),
    "final_losses": Opt(_LOSSES), "loss_history": Opt(_LOSS_HISTORY),
    "requests": Opt(List(_REQUEST, max_len=100_000)), "request_id": Opt(Str(512)),
    "audit": Opt(_AUDIT), "library_version": Opt(Str(64)), "num_codes": Opt(Int(0, 1 << 31)),
    "combined_from": Opt(List(Dict({"patch_id": _HEX16, "weight": Num(finite=True)}, extra=AnyJSON(4096)),
                              max_len=10_000)),
}, required=("format", "format_version", "kind"), extra=AnyJSON())

LINEAGE_RECORD = Dict({
    "format": Str(128), "format_version": Int(0, 1 << 20), "base_fingerprint": _FINGERPRINT,
    "merged_patches": List(_MERGED, max_len=10_000), "library_version": Opt(Str(64)),
    "files": Map(Str(64, pattern=r"[0-9a-f]{64}"), key=Str(255, pattern=r"[^/\\\x00]+"), max_len=64),
}, required=("base_fingerprint",), extra=AnyJSON(4096))

CARD_BLOCK = Dict({
    "card_format": Str(128), "card_version": Int(0, 1 << 20), "patch_format_version": Opt(Int(0, 1 << 20)),
    "patch_id": Opt(_HEX16), "kind": Opt(Str(16)), "base_name": Opt(Str(1024)), "generator_family": Opt(Str(128)),
    "base_fingerprint": Opt(_FINGERPRINT), "base_merged": Opt(List(_HEX16, max_len=10_000)),
    "preset": Opt(Str(64)), "erase_config_digest": Opt(Str(64)),
    "request_ids": Opt(List(Str(512), max_len=100_000)), "final_losses": Opt(_LOSSES),
    "request_final_losses": Opt(List(Opt(_LOSSES), max_len=100_000)), "audit": Opt(_AUDIT),
    "library_version": Opt(Str(64)),
}, extra=AnyJSON(4096))

CARD_HEADER = Dict({
    "license": Opt(Str(64)), "license_name": Opt(Str(256)), "license_link": Opt(Str(2048)),
    "base_model": Opt(OneOf(Str(256), List(Str(256), max_len=64))), "library_name": Opt(Str(128)),
    "tags": Opt(List(Str(256), max_len=256)), "guide_unlearn": Opt(CARD_BLOCK),
}, extra=AnyJSON(4096))

_RESULT_ROW = Dict({"request_id": Str(128),
                    "status": Str(32, choices=("done", "failed", "skipped-no-face", "pending")),
                    "unit": Opt(Str(256)), "patch": Opt(Str(256)), "patch_id": Opt(_HEX16), "seconds": Opt(Num(finite=True)),
                    "final_losses": Opt(_LOSSES), "error": Opt(Str(4096)), "process": Opt(Int(0, 1 << 20))},
                   required=("request_id", "status"), extra=AnyJSON(4096))
RESULT_ROWS = List(_RESULT_ROW, max_len=100_000)
MANIFEST_HEADER = Dict({"queue": Str(128), "version": Int(0, 1 << 20), "model": Str(4096), "joint": Int(1, 1 << 20),
                        "config": Map(AnyJSON(4096), key=Str(128), max_len=256)}, required=("queue",),
                        extra=AnyJSON(4096))
REQUEST_LINE = Dict({"request_id": Str(128), "photos": OneOf(Str(4096), List(Str(4096), max_len=10_000)),
                     "photo": Str(4096)}, required=("request_id",), extra=AnyJSON(4096))

# -- the kinds --------------------------------------------------------------------------------------------------
for _key, _kind in {
    # checkpoints and weights (binary; parsed by guide_unlearn.checkpoints after the gate opened them)
    "checkpoint": Kind("checkpoint", 64 * GiB, CheckpointError),
    "model-config": Kind("model config (config.json)", MiB, CheckpointError, max_depth=64),
    "model-weights": Kind("model weights file", 64 * GiB, CheckpointError),
    "lineage-record": Kind("generator lineage record (guide_unlearn.json)", MiB, CheckpointError, max_depth=16,
                           max_nodes=100_000, schema=LINEAGE_RECORD),
    "model-index": Kind("model index (model_index.json)", MiB, CheckpointError, max_depth=16, max_nodes=100_000),
    "code-book": Kind("code book", 4 * GiB, CheckpointError),
    "face-weights": Kind("face network weights", 4 * GiB, CheckpointError),
    "weights-manifest": Kind("weights manifest (JSON)", 16 * MiB, CheckpointError, max_depth=16),
    "hub-ref": Kind("hub cache ref (refs/...)", KiB, PatchError),
    "checkpoint-ref": Kind("checkpoint cache ref (refs/...)", KiB, CheckpointError),
    # forget patches and their cards
    "patch-metadata": Kind("patch metadata (forget_patch.json)", MiB, PatchError, schema=PATCH_METADATA),
    "adapter-config": Kind("adapter config (adapter_config.json)", MiB, PatchError),
    "patch-tensors": Kind("patch tensor file", 8 * GiB, PatchError),
    "model-card": Kind("model card (README.md)", MiB, PatchError, max_depth=32, max_nodes=100_000,
                       schema=CARD_HEADER, allow_empty=True),
    # runs, requests, latents, photos
    "resume-state": Kind("saved erase state", 16 * GiB, ConfigError),
    "latent": Kind("latent code file", 256 * MiB, LatentError),
    "request-list": Kind("request list", 64 * MiB, InputError, max_depth=8, allow_empty=True),
    "queue-manifest": Kind("erase-batch manifest", 256 * MiB, SaveError, max_depth=16, allow_empty=True),
    "queue-result": Kind("erase-batch result file", 16 * MiB, SaveError, max_depth=16, schema=RESULT_ROWS),
    "photo": Kind("photo", 512 * MiB, ImageLoadError),
    "text": Kind("text file", 16 * MiB, InputError, allow_empty=True),
}.items():
    register_kind(_key, _kind)
