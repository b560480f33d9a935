"""Saving a generator with merged patches, and restoring its patch record when it is loaded again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from guide_unlearn.errors import CheckpointError
from guide_unlearn.fingerprint import patch_state, set_base_record
from guide_unlearn.io import PathLike, atomic_directory

RECORD_FILE = "guide_unlearn.json"


def save_generator(generator: nn.Module, directory: PathLike) -> Path:
    """Write the generator (patches must be merged, none applied) as config.json + safetensors, plus
    guide_unlearn.json with the ORIGINAL base fingerprint and the merged patches, atomically. -> the folder."""
    state = patch_state(generator)
    if state["applied"]:
        raise CheckpointError("patches are applied but not merged; call eraser.merge_patches() before saving")
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        generator.save_pretrained(tmp, safe_serialization=True)
        record = {"base_fingerprint": state["base_fingerprint"], "merged_patches": state["merged"]}
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2))
    return directory


def restore_record(generator: nn.Module, directory: PathLike) -> None:
    """If ``directory`` holds a guide_unlearn.json, declare its base fingerprint and merged patches."""
    path = Path(directory) / RECORD_FILE
    if not path.is_file():
        return
    from guide_unlearn.checkpoints.limits import check_nesting, loads_json, read_regular_file

    record: Any = loads_json(read_regular_file(path, 1 << 20, "patch record"), str(path))  # bounded size / depth
    check_nesting(record, str(path), max_nodes=100_000)
    try:
        set_base_record(generator, str(record["base_fingerprint"]), list(record.get("merged_patches", [])))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path} is malformed ({e}); delete it to treat the weights as a new base") from e
