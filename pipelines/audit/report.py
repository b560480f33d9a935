"""What an audit returns and where it is kept: :class:`AuditReport` (metrics, details, networks; JSON, HTML and
figures) and :func:`record_audit` (the summary in a patch's metadata and model card)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from guide_unlearn.card import CARD_FILE, refreshed_card
from guide_unlearn.errors import SaveError
from guide_unlearn.patch import ForgetPatch


@dataclass
class AuditReport:
    """What ``audit`` measured.

    protocol:   {"name", "version", "description", "feature_space", "identity"}.
    metrics:    the flat dict of floats (``METRIC_KEYS``, then the keys of any other registered family that ran;
                NaN where a metric could not run, the reason in ``details["not_run"]``).
    details:    per photo / per view / per attack rows, counts, skipped photos, settings.
    networks:   which networks ran (identity, detector, feature space, generator, inverters) with file digests.
    thresholds: the same-person rules used.
    seconds:    wall time of the audit, and of its parts.
    """

    protocol: dict[str, Any]
    metrics: dict[str, float]
    details: dict[str, Any]
    networks: dict[str, Any]
    thresholds: dict[str, Any]
    seconds: dict[str, float]
    gallery: dict[str, Any] = field(default_factory=dict, repr=False)  # tensors for the figures (not in JSON)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (NaN becomes null)."""
        return jsonable({"protocol": self.protocol, "metrics": self.metrics, "details": self.details,
                          "networks": self.networks, "thresholds": self.thresholds, "seconds": self.seconds})

    def to_json(self, indent: Optional[int] = 2) -> str:
        """The report as strict JSON (NaN written as null)."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False, allow_nan=False)

    def summary(self) -> dict[str, Any]:
        """The audit summary a patch carries (metadata key "audit"): protocol, metrics, networks, date."""
        return jsonable({"protocol": self.protocol["name"], "metrics": self.metrics, "networks": self.networks,
                          "date": self.details.get("date")})

    def figures(self) -> dict[str, bytes]:
        """{file name: PNG bytes} of the report's figures (needs matplotlib: the 'audit' extra)."""
        from .figures import make_figures

        return make_figures(self)

    def save(self, directory: Union[str, os.PathLike]) -> Path:
        """Write ``report.json``, a self-contained ``report.html`` (figures as PNG data URIs) and the figure PNGs
        into ``directory`` (created, or used when empty; a non-empty folder is refused), atomically. -> it."""
        from guide_unlearn.io import atomic_directory

        from .figures import render_html

        directory = Path(directory)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise SaveError(f"{directory} exists and is not an empty folder; choose a new folder for the report "
                            "(nothing was written)")
        figures = self.figures()
        html = render_html(self, figures)
        with atomic_directory(directory, overwrite=True) as tmp:
            (tmp / "report.json").write_text(self.to_json())
            (tmp / "report.html").write_text(html, encoding="utf-8")
            for name, data in figures.items():
                (tmp / name).write_bytes(data)
        return directory

    def write_to_patch(self, patch_dir: Union[str, os.PathLike]) -> Path:
        """Record :meth:`summary` in the patch folder's metadata (key "audit"); the tensors, their sha256 and the
        patch id are unchanged, so the patch stays valid. -> the metadata file."""
        return record_audit(patch_dir, self.summary())


def record_audit(patch_dir: Union[str, os.PathLike], summary: Mapping[str, Any]) -> Path:
    """Store ``summary`` under metadata key "audit" of the patch folder ``patch_dir`` and refresh its model card
    (README.md) when it has one, so a shared patch carries its evidence. All or nothing: the patch is verified,
    the new metadata and card are both built (a malformed card fails here, before anything is written), then the
    two files are replaced together (:func:`guide_unlearn.io.replace_files`); the patch is verified again after.
    -> the metadata file."""
    from guide_unlearn.io import replace_files
    from guide_unlearn.patch import MAX_JSON_BYTES, META_FILE, read_metadata

    patch_dir = Path(patch_dir)
    ForgetPatch.from_pretrained(patch_dir)  # verify first: never annotate a tampered patch
    meta = read_metadata(patch_dir)  # through the reading gate, as the loader just read it
    meta["audit"] = jsonable(dict(summary))
    data = json.dumps(meta, indent=2, sort_keys=True, allow_nan=False).encode()
    if len(data) > MAX_JSON_BYTES:
        raise SaveError(f"the patch metadata with the audit would be {len(data)} bytes (limit {MAX_JSON_BYTES}); "
                        "nothing was written")
    updates = {META_FILE: data}  # --write-to-patch is the request to update the record
    card_file = patch_dir / CARD_FILE
    if card_file.exists() or card_file.is_symlink():  # the card shows the audit: refreshed with its licence kept
        updates[CARD_FILE] = str(refreshed_card(card_file, meta)).encode("utf-8")
    replace_files(patch_dir, updates)
    ForgetPatch.from_pretrained(patch_dir)
    return patch_dir / META_FILE


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars, tuples and paths made JSON-ready; NaN and inf become None, floats are
    rounded to 6 decimals."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return round(v, 6) if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj
