"""Models that ship inside the package (weights only, no code). Each lives in its own folder with its own
LICENSE and model card: the weights may carry a different licence from the Apache-2.0 code."""

from __future__ import annotations

from pathlib import Path

__all__ = ["bundled_model_dir"]


def bundled_model_dir(name: str) -> Path:
    """Folder of the bundled model ``name`` ("demo_faces"), whether or not it exists in this installation."""
    return Path(__file__).resolve().parent / name
