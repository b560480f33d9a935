"""guide_unlearn: make a pretrained face generator forget a person (GUIDE, CVPR 2024) with LoRA forget patches.

Public API::

    from guide_unlearn import IdentityEraser, EraseConfig, RunOptions, ForgetPatch, ErasureResult, Verdict
    from guide_unlearn import list_methods  # the erase methods: 'lora' (default), 'paper', 'joint', 'robust'
    from guide_unlearn import patching   # apply / remove / merge / check patches without an eraser
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    BackendUnavailableError,
    CheckpointError,
    ConfigError,
    FaceChoiceError,
    GuideUnlearnError,
    ImageLoadError,
    InputError,
    LatentError,
    NoFaceError,
    PatchError,
    PatchMismatchError,
    PatchStateError,
    SaveError,
    TrainingDivergedError,
    UnsafeCheckpointError,
)

# The one place the version is written: pyproject.toml reads it from here ([tool.setuptools.dynamic]).
__version__ = "0.1.0"

# Heavy names load lazily so `import guide_unlearn` stays cheap and the pipelines/adapters can import the core.
_LAZY = {
    "EraseConfig": "guide_unlearn.config",
    "RunOptions": "guide_unlearn.config",
    "EraseRun": "guide_unlearn.outputs",
    "ForgetPatch": "guide_unlearn.patch",
    "ErasureResult": "guide_unlearn.outputs",
    "ManyErasureResult": "guide_unlearn.outputs",
    "Verdict": "guide_unlearn.outputs",
    "list_methods": "guide_unlearn.methods",
    "IdentityEraser": "guide_unlearn.pipelines.eraser",
    "load_generator": "guide_unlearn.pipelines.loading",
    "load_inverter": "guide_unlearn.pipelines.loading",
    "load_identity_model": "guide_unlearn.adapters.identity",
    "audit": "guide_unlearn.pipelines.audit",
    "AuditReport": "guide_unlearn.pipelines.audit",
}

if TYPE_CHECKING:  # what editors and type checkers see; at run time these load lazily through __getattr__
    from guide_unlearn.adapters.identity import load_identity_model
    from guide_unlearn.config import EraseConfig, RunOptions
    from guide_unlearn.methods import list_methods
    from guide_unlearn.outputs import EraseRun, ErasureResult, ManyErasureResult, Verdict
    from guide_unlearn.patch import ForgetPatch
    from guide_unlearn.pipelines.eraser import IdentityEraser
    from guide_unlearn.pipelines.loading import load_generator, load_inverter


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'guide_unlearn' has no attribute {name!r}")


__all__ = sorted(
    list(_LAZY)
    + [
        "BackendUnavailableError", "CheckpointError", "ConfigError", "FaceChoiceError", "GuideUnlearnError",
        "ImageLoadError", "InputError", "LatentError", "NoFaceError", "PatchError", "PatchMismatchError",
        "PatchStateError", "SaveError", "TrainingDivergedError", "UnsafeCheckpointError", "__version__",
    ]
)
