"""Checking a requested torch device before anything is loaded onto it."""

from __future__ import annotations

from typing import Union

import torch

from .errors import DeviceError

__all__ = ["resolve_device"]


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"`` or a torch.device -> that torch.device, once it is known to
    exist on this machine (``None`` means cpu).

    Raises :class:`~guide_unlearn.errors.DeviceError` (a ConfigError) naming the devices that do exist when the
    string is not a device, when CUDA / MPS is requested on a machine without it, or when the CUDA index is past
    the last GPU.
    """
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise DeviceError(f"{device!r} is not a torch device; use cpu, cuda, cuda:N or mps",
                          cli_message=f"--device {device!r} is not a torch device; use cpu, cuda, cuda:N or mps") \
            from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device {str(dev)!r} was requested but this machine has no usable CUDA GPU "
                              "(torch.cuda.is_available() is False); use device='cpu'",
                              cli_message=f"--device {str(dev)} was requested but this machine has no usable CUDA "
                                          "GPU; use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise DeviceError(f"device {str(dev)!r} does not exist: this machine has {count} CUDA GPU(s) "
                              f"(cuda:0 to cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceError(f"device 'mps' was requested but Apple's Metal backend is not available here; use "
                              "device='cpu'", cli_message="--device mps was requested but Apple's Metal backend is "
                                                          "not available here; use --device cpu")
    elif dev.type not in ("cpu", "meta"):
        if not _backend_available(dev.type):
            raise DeviceError(f"device {str(dev)!r} is not available on this machine; use cpu or cuda")
    return dev


def _backend_available(kind: str) -> bool:
    module = getattr(torch, kind, None)
    is_available = getattr(module, "is_available", None)
    try:
        return bool(is_available()) if callable(is_available) else False
    except Exception:  # pragma: no cover - a backend that cannot even answer is not available
        return False
