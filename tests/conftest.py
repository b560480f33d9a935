"""Shared pytest fixtures: tiny models, temporary caches, the shared/ data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# One thread keeps timings stable and leaves the second core to the rest of the machine.
torch.set_num_threads(int(os.environ.get("GUIDE_TEST_THREADS", "1")))


def shared_root() -> Path:
    """shared/ data folder: $GUIDE_SHARED, else ../shared beside the repository."""
    return Path(os.environ.get("GUIDE_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared/ folder. Missing data fails (not skips) when GUIDE_REQUIRE_SHARED=1, as in CI."""
    root = shared_root()
    if not (root / "README.md").is_file():
        if os.environ.get("GUIDE_REQUIRE_SHARED") == "1":
            pytest.fail(f"shared data required (GUIDE_REQUIRE_SHARED=1) but not found at {root}; set GUIDE_SHARED")
        pytest.skip(f"shared data not found at {root} (set GUIDE_SHARED)")
    return root


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    """Point every HOME-like cache at a temporary folder so tests never touch (or download into) real ones."""
    cache = tmp_path_factory.getbasetemp() / "caches"
    for var, sub in (("HF_HOME", "hf"), ("TORCH_HOME", "torch"), ("GUIDE_UNLEARN_CACHE", "guide"),
                     ("XDG_CACHE_HOME", "xdg")):
        monkeypatch.setenv(var, str(cache / sub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(autouse=True)
def _reset_accelerate_state():
    """accelerate keeps process-global state; reset it so each test builds its own Accelerator."""
    yield
    try:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    except Exception:  # pragma: no cover - accelerate missing or API moved
        pass
