"""Use-time bounds: sizes a file chooses (a rendering resolution, a number of codes, a step count) are checked
against what this machine can hold before the first use allocates them.

A generator adapter may declare ``working_memory(batch) -> bytes``, an estimate of the largest allocation of one
forward pass of ``batch`` codes (the activations that dominate it, counted once). :func:`check_first_use` compares
it with :func:`available_bytes` of the device and refuses, with the kind's error, a model whose first rendering
could not fit — instead of letting it take the machine's memory.
"""

from __future__ import annotations

import os
import resource
from typing import Any, Optional

from ..errors import GuideUnlearnError

__all__ = ["available_bytes", "check_first_use", "check_fits", "format_bytes"]


def format_bytes(n: float) -> str:
    """``n`` bytes as a short human string (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _proc_value(path: str, key: str) -> Optional[int]:
    """A ``key: <n> kB`` line of a /proc status file, in bytes (a kernel file, not a user path)."""
    try:
        with open(path, encoding="ascii") as f:  # gate: kernel accounting file, not user data
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_left() -> Optional[int]:
    """Memory left under this process's cgroup v2 limit, if one is set."""
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as f:  # gate: kernel accounting file
            limit = f.read(64).strip()
        with open("/sys/fs/cgroup/memory.current", encoding="ascii") as f:  # gate: kernel accounting file
            used = int(f.read(64).strip())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(0, int(limit) - used)


def available_bytes(device: Any = "cpu") -> int:
    """Bytes the next allocations on ``device`` can take: CUDA's free memory, or on the CPU the smallest of
    MemAvailable, the cgroup's remaining limit and this process's RLIMIT_DATA / RLIMIT_AS headroom."""
    import torch

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    candidates = [v for v in (_proc_value("/proc/meminfo", "MemAvailable"), _cgroup_left()) if v is not None]
    for limit, key in ((resource.RLIMIT_DATA, "VmData"), (resource.RLIMIT_AS, "VmSize")):
        soft, _ = resource.getrlimit(limit)
        used = _proc_value("/proc/self/status", key)
        if soft != resource.RLIM_INFINITY and used is not None:
            candidates.append(max(0, soft - used))
    if not candidates:  # pragma: no cover - not Linux: the physical memory
        try:
            return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return 1 << 62
    return int(min(candidates))


def check_fits(needed: int, what: str, device: Any, error: type, hint: str = "") -> None:
    """Raise ``error`` when ``needed`` bytes exceed :func:`available_bytes` on ``device``."""
    have = available_bytes(device)
    if needed > have:
        raise error(f"{what} needs about {format_bytes(needed)} of memory, more than the {format_bytes(have)} this "
                    f"machine has free on {device}" + (f"; {hint}" if hint else ""))


def check_first_use(model: Any, what: str, error: type, device: Any = None, batch: int = 1) -> None:
    """Refuse (``error``) a generator whose first forward of ``batch`` codes could not fit in memory, from its
    ``working_memory(batch)`` estimate (generators without one are not checked)."""
    estimate = getattr(model, "working_memory", None)
    if estimate is None:
        return
    if device is None:
        try:
            device = next(iter(model.parameters())).device
        except (StopIteration, AttributeError):
            device = "cpu"
        if getattr(device, "type", device) == "meta":
            device = "cpu"
    try:
        needed = int(estimate(batch))
    except GuideUnlearnError:
        raise
    except (ArithmeticError, ValueError, TypeError) as exc:
        raise error(f"{what}: its declared sizes cannot be evaluated ({exc}); the configuration is malformed") \
            from None
    check_fits(needed, f"{what}: one rendering of {batch} code(s)", device, error,
               "the declared rendering sizes (resolution, samples per ray, channels) are too large for this machine; "
               "use a model with a smaller configuration, or a machine with more memory")
