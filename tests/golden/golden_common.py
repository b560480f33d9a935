"""What the golden-data generator (make_goldens.py) and the golden tests share: where the data lives, the seeded
weight recipe, and how agreement is measured.

Small official networks are stored as files in their official format (tests/golden/data). Networks whose official
architecture is too large to store (the IR-SE50 / IR-101 face nets, FID's Inception, the e4e and GOAE encoders)
are stored as a *recipe*: their parameter names and shapes (read from the official module), a seed and one
rule per tensor. The generator fills the official module with those tensors and records its outputs; a test
rebuilds the same tensors, writes them in the official file layout and loads that file with this library's
loader. A digest of the rebuilt tensors guards against a recipe that no longer reproduces them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import torch

DATA = Path(__file__).resolve().parent / "data"
TOLERANCE = 1e-4
"""Allowed max |ours - official| / max |official| (the tolerance of issue #26)."""

# One rule per tensor, chosen by the first regular expression that matches its name:
#   ("normal", mean, std) | ("fan_in", gain): N(0, gain^2 / fan_in) | ("uniform", lo, hi) | ("zeros",)
#   | ("stored",): the tensor is saved in the golden safetensors | ("keep",): left as the network computes it
#   (FIR kernels, index tables, masks, running averages): in the pickle for pickled networks, else supplied by the
#   test (from this library's network, checked against a stored checksum).
Rule = tuple
Rules = Sequence[tuple[str, Rule]]

BATCHNORM_RULES: Rules = (
    (r".*running_var$", ("uniform", 0.5, 1.5)),
    (r".*running_mean$", ("normal", 0.0, 0.1)),
    (r".*num_batches_tracked$", ("zeros",)),
)


def _seed_of(name: str, seed: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63 - 1)


def rule_for(name: str, shape: Sequence[int], rules: Rules) -> Rule:
    """The rule of tensor ``name``: the first matching pattern, else a default by rank (1-d ``*weight``: N(1, 0.1),
    other 1-d: N(0, 0.1), >= 2-d: fan-in scaled normal)."""
    for pattern, rule in rules:
        if re.fullmatch(pattern, name):
            return rule
    if len(shape) <= 1:
        return ("normal", 1.0, 0.1) if name.endswith("weight") else ("normal", 0.0, 0.1)
    return ("fan_in", 1.0)


def make_tensor(name: str, shape: Sequence[int], dtype: str, rule: Rule, seed: int) -> torch.Tensor:
    """One tensor of the recipe: deterministic for (name, shape, rule, seed), independent of the other tensors."""
    g = torch.Generator().manual_seed(_seed_of(name, seed))
    shape = tuple(int(s) for s in shape)
    kind = rule[0]
    if kind == "zeros":
        t = torch.zeros(shape)
    elif kind == "normal":
        t = torch.randn(shape, generator=g) * rule[2] + rule[1]
    elif kind == "uniform":
        t = torch.rand(shape, generator=g) * (rule[2] - rule[1]) + rule[1]
    elif kind == "fan_in":
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        t = torch.randn(shape, generator=g) * (rule[1] / math.sqrt(max(fan_in, 1)))
    else:
        raise ValueError(f"rule {rule!r} of {name} makes no tensor")
    return t.to(getattr(torch, dtype))


def tensor_spec(state: Mapping[str, torch.Tensor], rules: Rules) -> list[dict[str, Any]]:
    """The recipe of a state dict: [{name, shape, dtype, rule}] in its order (what make_goldens records). A tensor
    registered under two names (LPIPS's ``lin0`` / ``lins.0``) gets the rule ("alias", first name)."""
    spec, seen = [], {}
    for k, v in state.items():
        key = (v.data_ptr(), tuple(v.shape), v.dtype) if v.numel() else None
        rule = ["alias", seen[key]] if key in seen else list(rule_for(k, v.shape, rules))
        if key is not None:
            seen.setdefault(key, k)
        spec.append({"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "rule": rule})
    return spec


def build_state(spec: Sequence[Mapping[str, Any]], seed: int, stored: Optional[Mapping[str, torch.Tensor]] = None,
                kept: Optional[Mapping[str, torch.Tensor]] = None) -> dict[str, torch.Tensor]:
    """The state dict a recipe describes; ``stored`` holds the 'stored' tensors, ``kept`` the 'keep' ones (both by
    name; a 'keep' tensor missing from ``kept`` is left out)."""
    out: dict[str, torch.Tensor] = {}
    for item in spec:
        name, rule = item["name"], tuple(item["rule"])
        if rule[0] == "stored":
            out[name] = stored[name]
        elif rule[0] == "keep":
            if kept is not None and name in kept:
                out[name] = kept[name]
        elif rule[0] == "alias":
            if rule[1] in out:
                out[name] = out[rule[1]]
        else:
            out[name] = make_tensor(name, item["shape"], item["dtype"], rule, seed)
    return out


def seeded(shape: Sequence[int], seed: int, kind: str = "normal") -> torch.Tensor:
    """Fixed inputs: N(0, 1) (``kind`` 'normal') or U[0, 1) ('uniform') draws of ``shape`` from a CPU generator
    seeded with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    shape = [int(s) for s in shape]
    return torch.randn(shape, generator=g) if kind == "normal" else torch.rand(shape, generator=g)


def fixed_uniform(shape: Sequence[int], dtype=torch.float32, device=None) -> torch.Tensor:
    """The fixed stand-in for the EG3D renderer's U[0, 1) draws in the GUIDE-step comparison (both sides): the
    golden-ratio sequence frac((i + 1) · 0.618...) along the sample axis, the same for every ray and every batch
    row, so that it does not depend on how the rays are batched. Stratified jitter [N, M, S, 1] varies along S,
    importance draws [R, K] along K."""
    shape = tuple(int(s) for s in shape)
    axis = len(shape) - 2 if len(shape) == 4 and shape[-1] == 1 else len(shape) - 1
    n = shape[axis]
    values = torch.remainder(torch.arange(1, n + 1, dtype=torch.float64) * 0.6180339887498949, 1.0)
    view = [1] * len(shape)
    view[axis] = n
    return values.view(view).expand(shape).to(dtype=dtype, device=device).contiguous()


def checksum(t: torch.Tensor) -> list[float]:
    """A small fingerprint of a tensor's values: [sum, sum of squares, sum weighted by flat position]."""
    x = t.detach().to(torch.float64).flatten()
    pos = torch.linspace(0, 1, x.numel(), dtype=torch.float64) if x.numel() > 1 else torch.ones_like(x)
    return [float(x.sum()), float(x.square().sum()), float((x * pos).sum())]


def digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the tensors' bytes in name order (the recipe is reproduced exactly, not approximately)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours - ref| / max |ref|: the error relative to the scale of the official output."""
    ours, ref = ours.detach().double(), ref.detach().double()
    if ours.shape != ref.shape:
        raise AssertionError(f"shapes differ: ours {tuple(ours.shape)}, official {tuple(ref.shape)}")
    scale = ref.abs().max().clamp_min(1e-30)
    return float((ours - ref).abs().max() / scale)


ACHIEVED: list[tuple[str, str, float, Optional[float]]] = []
"""(test, what, achieved error, tolerance or None for a difference that is shown, not bounded) of every
comparison in this process (printed by conftest.py)."""


def agree(what: str, ours: torch.Tensor, official: torch.Tensor, tol: float = TOLERANCE) -> float:
    """Assert that ``ours`` matches ``official`` to ``tol`` relative to the official output's scale; record it."""
    import os

    err = relative_error(torch.as_tensor(ours), torch.as_tensor(official))
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0].split("::")[-1]
    ACHIEVED.append((test, what, err, tol))
    assert err <= tol, f"{what}: max |ours - official| / max |official| = {err:.3g} > {tol:g}"
    return err


def read_meta(name: str) -> dict[str, Any]:
    """tests/golden/data/<name>.json."""
    return json.loads((DATA / f"{name}.json").read_text())


def read_tensors(name: str) -> dict[str, torch.Tensor]:
    """tests/golden/data/<name>.safetensors."""
    from safetensors.torch import load_file

    return load_file(str(DATA / f"{name}.safetensors"))


def write_recipe_state(meta: Mapping[str, Any], path: Path, wrap=lambda state: state,
                       stored: Optional[Mapping[str, torch.Tensor]] = None,
                       kept: Optional[Mapping[str, torch.Tensor]] = None) -> Path:
    """Rebuild a recipe's tensors, check them against the recorded digest and ``torch.save(wrap(state), path)``
    (``wrap`` gives the official file layout, e.g. ``{'g_ema': state, 'latent_avg': ...}``)."""
    state = build_state(meta["tensors"], meta["recipe_seed"], stored, kept)
    made = {k: v for k, v in state.items() if not kept or k not in kept}
    if digest(made) != meta["digest"]:
        raise AssertionError("the recipe no longer reproduces the tensors the official code ran; regenerate the "
                             "golden data with tests/golden/make_goldens.py")
    torch.save(wrap(state), path)
    return path
