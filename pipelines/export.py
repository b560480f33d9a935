"""Saving a generator with its patches and lineage, and restoring its patch record when it is loaded again.

The work is done by :mod:`guide_unlearn.lineage` (which ``generator.save_pretrained`` also uses); these names stay
for callers of the pipelines API.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from torch import nn

from guide_unlearn.io import PathLike
from guide_unlearn.lineage import RECORD_FILE, generator_files
from guide_unlearn.lineage import restore_record as _restore
from guide_unlearn.lineage import save_generator as _save

__all__ = ["RECORD_FILE", "generator_files", "restore_record", "save_generator"]


def save_generator(generator: nn.Module, directory: PathLike, overwrite: bool = False,
                   carry_from: Optional[PathLike] = None) -> Path:
    """Write the generator as config.json + safetensors + guide_unlearn.json (the ORIGINAL base fingerprint and
    every merged or applied patch; applied patches are folded into the written weights), carrying the licence,
    model card and code book of the folder it was loaded from, atomically. An existing folder is replaced only
    with ``overwrite`` and only when it is a generator folder of this library. -> the folder."""
    return _save(generator, directory, overwrite=overwrite, carry_from=carry_from)


def restore_record(generator: nn.Module, directory: PathLike) -> None:
    """If ``directory`` holds a guide_unlearn.json, declare its base fingerprint and merged patches (the weights
    must still match the record)."""
    _restore(generator, directory)
