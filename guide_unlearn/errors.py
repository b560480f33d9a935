"""Typed exceptions of guide_unlearn.

Every error the package raises on purpose derives from :class:`GuideUnlearnError`, so callers can catch one
class. Messages always say what was wrong *and* what to do about it.
"""

from __future__ import annotations


class GuideUnlearnError(Exception):
    """Base class of every error raised on purpose by guide_unlearn.

    ``cli_message`` (optional) is the same message worded for command-line users (flags instead of Python
    keywords, e.g. ``--no-align`` instead of ``align=False``); the CLI prints it instead of ``str(error)``.
    """

    def __init__(self, message: str = "", *args: object, cli_message: "str | None" = None):
        super().__init__(message, *args)
        self.cli_message = cli_message


class ConfigError(GuideUnlearnError, ValueError):
    """A configuration value is out of range or inconsistent (e.g. ``iterations=0``, ``rank=0``)."""


class DeviceError(ConfigError):
    """The requested torch device does not exist on this machine (e.g. ``cuda`` without a CUDA GPU)."""


class InputError(GuideUnlearnError, ValueError):
    """A user input (image, latent code, list of images) cannot be used as given."""


class ImageLoadError(InputError):
    """An image file is missing, corrupt, not an image, or too large to decode safely."""


class NoFaceError(InputError):
    """No face was found in a photo that must contain one."""


class FaceChoiceError(InputError):
    """A photo has several faces, or only a face too small for the inverter, and no face was chosen: the library
    does not guess whom to erase. ``faces`` lists what was found: [{'index', 'box', 'size', 'score'}]."""

    def __init__(self, message: str, faces: "list[dict] | None" = None):
        super().__init__(message)
        self.faces = list(faces or [])


class LatentError(InputError):
    """A latent code has the wrong shape, dtype or device, or contains NaN / Inf."""


class PatchError(GuideUnlearnError):
    """A forget patch folder is missing, malformed, tampered with or unsafe."""


class PatchMismatchError(PatchError):
    """A patch was made for another base generator, or cannot be stacked with the patches applied."""


class PatchStateError(PatchError):
    """A patch operation does not fit the current state (applied twice, removed while not applied)."""


class ReferenceMismatchError(ConfigError):
    """A comparison model (an audit's ``reference=``) is of another generator family or resolution than the
    audited model, so its figures cannot stand beside the audited model's."""


class CheckpointError(GuideUnlearnError):
    """A checkpoint file is missing, truncated, of an unknown format or does not match the model."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint would execute code or import something outside the allow-list; it was not loaded."""


class BackendUnavailableError(GuideUnlearnError, ImportError):
    """An optional dependency or weight file needed by a backend is not installed / not found."""


class TrainingDivergedError(GuideUnlearnError, FloatingPointError):
    """The erase loop produced a non-finite loss."""


class SaveError(GuideUnlearnError, OSError):
    """Writing a file failed (e.g. disk full); nothing half-written was left behind."""


class TargetError(GuideUnlearnError, ValueError):
    """No erase target was found that the identity judge counts as someone other than the person: nothing was
    trained (an erase toward a face that is still the person would erase nothing)."""
