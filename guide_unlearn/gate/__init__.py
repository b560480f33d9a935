"""The reading gate: every file the library reads comes through here (docs/threat_model.md, "The reading gate").

One rule for every kind of file (:mod:`.kinds` lists them: checkpoints, model folders, patches, cards, hub refs,
lineage records, resume states, latents, code books, request lists, erase-batch bookkeeping, photos):

1. **Regular files only**, opened without blocking and checked on the open descriptor (:mod:`.files`); never read
   past the size ``fstat`` reported; never more than the kind's cap.
2. **Inside the folder it belongs to**: a file found in a folder (a patch's metadata, a model's config, a cache
   snapshot's file, a request's photo) must really lie inside that folder; the one link followed out of it is the
   Hugging Face cache's own ``snapshots/<rev>/<file>`` -> ``blobs/<hash>`` link of the same repo.
   A folder a user gives (a folder of photos) is listed by :func:`.files.list_folder`: every entry checked by
   these rules before any is read, at most the kind's ``max_entries`` looked at.
3. **Bounded parsing** (:mod:`.parse`): text must be UTF-8; JSON nesting is checked on the text before parsing;
   YAML is read by a safe loader that refuses aliases and counts nesting; CSV fields and rows are capped; pickles
   are scanned against an allow-list before ``torch.load(weights_only=True)`` (:func:`.tensors.torch_load`, the
   library's only ``torch.load``).
4. **A schema per kind** (:mod:`.schema`): every value is checked (type, range, length) before it is used, so a
   malformed value is a typed error naming the file and the key, not an exception deep in the code that uses it.
5. **Use-time bounds** (:mod:`.memory`): sizes a file chooses that drive allocation later are checked against the
   memory the first use needs.

``tests/security/test_sec_gate.py`` scans the source tree and fails when a new reader bypasses the gate.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Union

from .files import BoundedFile, check_file, hub_blob_link, inside, list_folder, open_file, read_bytes, sha256
from .kinds import KINDS, Kind, get_kind, register_kind
from .memory import available_bytes, check_first_use, check_fits, format_bytes
from .parse import card_header, check_nesting, decode_text, json_depth, parse_csv, parse_json, parse_jsonl, parse_yaml
from .schema import Schema
from .tensors import MAX_PIXELS, load_npz, load_safetensors, open_image, parse_safetensors, safetensors_header, torch_load

__all__ = [
    "KINDS", "MAX_PIXELS", "BoundedFile", "Kind", "available_bytes", "card_header", "check", "check_file",
    "check_first_use", "check_fits", "check_nesting", "decode_text", "format_bytes", "get_kind", "hub_blob_link",
    "inside", "json_depth", "list_folder", "load_npz", "load_safetensors", "open_file", "open_image", "parse_csv", "parse_json", "parse_jsonl",
    "parse_safetensors", "parse_yaml", "read_bytes", "read_card", "read_csv", "read_json", "read_jsonl", "read_text", "register_kind",
    "safetensors_header", "sha256", "torch_load",
]

PathLike = Union[str, os.PathLike]
KindLike = Union[str, Kind]


def check(value: Any, kind: KindLike, where: str, schema: Optional[Schema] = None) -> Any:
    """``value`` checked by ``schema`` (default: the kind's); raises the kind's error naming ``where``."""
    kind = get_kind(kind)
    schema = schema or kind.schema
    return value if schema is None else schema.check(value, where, kind.error)


def read_text(path: PathLike, kind: KindLike, root: Optional[PathLike] = None) -> str:
    """A ``kind`` text file (UTF-8), through the gate's file checks."""
    return decode_text(read_bytes(path, kind, root), str(path), kind)


def read_json(path: PathLike, kind: KindLike, root: Optional[PathLike] = None,
              schema: Optional[Schema] = None) -> Any:
    """A ``kind`` JSON file: file checks, bounded parse, then the kind's schema (or ``schema``)."""
    value = parse_json(read_bytes(path, kind, root), str(path), kind)
    return check(value, kind, str(path), schema)


def read_jsonl(path: PathLike, kind: KindLike, root: Optional[PathLike] = None,
               max_lines: int = 100_000) -> list[tuple[int, Any]]:
    """A ``kind`` JSON-lines file -> [(line number, value)], each line bounded (no schema: callers check rows)."""
    return parse_jsonl(read_bytes(path, kind, root), str(path), kind, max_lines)


def read_csv(path: PathLike, kind: KindLike, root: Optional[PathLike] = None, max_rows: int = 100_000,
             max_field: int = 4096) -> tuple[list[str], list[dict[str, str]]]:
    """A ``kind`` CSV file with a header row -> (field names, rows)."""
    return parse_csv(read_bytes(path, kind, root), str(path), kind, max_rows, max_field)


def read_card(path: PathLike, root: Optional[PathLike] = None, kind: KindLike = "model-card"
              ) -> tuple[dict[str, Any], str]:
    """A model card (README.md): (its YAML header checked by the card schema, {} without one; the Markdown body).
    YAML aliases are refused, nesting and size bounded."""
    kind = get_kind(kind)
    text = read_text(path, kind, root)
    header, body = card_header(text)
    if header is None or not header.strip():
        return {}, body
    data = parse_yaml(header, f"{path} (YAML header)", kind)
    if data is None:
        return {}, body
    if not isinstance(data, dict):
        raise kind.error(f"{path}: the card's YAML header is not a mapping; fix or remove the header")
    return check(data, kind, f"{path} (YAML header)"), body
