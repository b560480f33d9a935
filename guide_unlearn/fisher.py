"""Fisher-weighted preservation: the diagonal Fisher information of a generator's weights on the retain objective,
estimated from a few dozen samples before an erase, and the EWC penalty (Kirkpatrick et al., PNAS 2017) that keeps
the weights that matter to everyone else where they are. SUGAR (Nguyen et al., WACV 2026) adds this penalty to a
GUIDE-style erase of many identities; this module is our own formulation of it.

The retain objective is "render every other code as before": for retain codes w_i the squared change of an output
f(G(w_i)) — the image, or an identity embedding of it — per output element. At the start of an erase that
objective and its gradient are zero, so its curvature is what says which weights matter: its Gauss-Newton matrix
J^T J / D (J = d f / d theta, D = the output size), which is also the Fisher information of a unit-variance
Gaussian observation model on f. Its diagonal is estimated without building J: for v ~ N(0, I_D),
E[(v . J)_j^2] = (J^T J)_jj, so one backward pass of v . f(G(w_i)) per sample gives an unbiased estimate
(Hutchinson's estimator). Then

    EWC(delta) = sum_j F_j * delta_j^2  ~  mean squared change of f over the retain codes (second order, diagonal),

zero at the start of an erase and growing as the weights that move f move. (The official SUGAR code instead squares
the gradients of its preservation loss while it ascends that loss on a copy of the generator; the estimate here is
taken at the generator as it is, with sampled outputs.)

For a LoRA patch the penalty is on the EFFECTIVE weight delta (alpha / r) * B @ A of each wrapped layer, with the
Fisher of the wrapped base weight: the function G computes depends on the factors only through that delta (the
same delta can be written with many A, B), B = 0 at the start makes the Fisher of A zero (it would leave A free
however it moved), and the Fisher of B depends on the random A it was measured at. The effective delta is what the
retain loss's curvature is about; the base weight's gradient is the delta's gradient.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch
from torch import nn

from .errors import ConfigError

__all__ = ["diagonal_fisher", "ewc_penalty", "layer_weights", "lora_deltas"]


def layer_weights(model: nn.Module, names: list[str]) -> dict[str, nn.Parameter]:
    """The weight a LoRA delta adds to, for each module name: ``weight`` of the module or, where peft has
    wrapped it (applied patches), of its base layer. -> {module name: the nn.Parameter [O, I, *k]}."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        module = modules.get(name.replace(".base_layer", ""))
        if module is None:
            raise ConfigError(f"{name!r} is not a module of this generator; use the names of "
                              "generator.lora_target_modules()")
        base = module.get_base_layer() if hasattr(module, "get_base_layer") else module
        weight = getattr(base, "weight", None)
        if not isinstance(weight, nn.Parameter):
            raise ConfigError(f"module {name!r} has no weight parameter to estimate a Fisher for")
        out[name] = weight
    return out


def diagonal_fisher(outputs: Callable[[torch.Tensor], torch.Tensor], ws: torch.Tensor,
                    params: Mapping[str, torch.Tensor], generator: torch.Generator,
                    projections: int = 1) -> dict[str, torch.Tensor]:
    """Diagonal Fisher (Gauss-Newton) of ``params`` on the retain objective, one sample at a time.

    outputs:     codes [1, num_ws, w_dim] -> outputs [1, D] (e.g. the flattened image, or an identity embedding),
                 differentiable with respect to ``params``.
    ws:          [N, num_ws, w_dim] retain codes (a few dozen mapped samples).
    params:      {name: tensor} the weights whose Fisher is wanted (their requires_grad is set for the estimate
                 and restored after).
    generator:   the seeded torch.Generator of the projection vectors v ~ N(0, I_D) (``projections`` per sample).
    -> {name: F [same shape as the tensor]} with F = mean over samples and projections of (d (v . f) / d theta)^2 / D,
    so that sum F * delta^2 estimates the mean squared change of f for a weight change delta.
    """
    if ws.ndim != 3 or ws.shape[0] < 1:
        raise ConfigError(f"retain codes must be [N, num_ws, w_dim] with N >= 1, got {list(ws.shape)}")
    if projections < 1:
        raise ConfigError(f"projections must be >= 1, got {projections}")
    names, tensors = list(params), list(params.values())
    fisher = [torch.zeros_like(t, dtype=torch.float32) for t in tensors]
    previous = [t.requires_grad for t in tensors]
    try:
        for t in tensors:
            t.requires_grad_(True)
        for i in range(ws.shape[0]):
            with torch.enable_grad():
                out = outputs(ws[i:i + 1]).flatten(1).float()
                size = out.shape[1]
                for p in range(projections):
                    v = torch.randn(out.shape, generator=generator, device=out.device)
                    grads = torch.autograd.grad((out * v).sum(), tensors, retain_graph=p + 1 < projections,
                                                allow_unused=True)
                    for f, g in zip(fisher, grads):
                        if g is not None:
                            f.add_(g.detach().float().square(), alpha=1.0 / size)
    finally:
        for t, flag in zip(tensors, previous):
            t.requires_grad_(flag)
    scale = 1.0 / (ws.shape[0] * projections)
    return {n: f.mul_(scale) for n, f in zip(names, fisher)}


def ewc_penalty(fisher: Mapping[str, torch.Tensor], deltas: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """sum over names of sum(F * delta^2): the Fisher-weighted squared weight change (a 0-d tensor, differentiable
    in ``deltas``). fisher / deltas: {name: tensor of the same shape}; a name missing from ``deltas`` counts as
    unchanged."""
    total: Optional[torch.Tensor] = None
    for name, f in fisher.items():
        d = deltas.get(name)
        if d is None:
            continue
        if d.shape != f.shape:
            raise ConfigError(f"weight change of {name!r} is {list(d.shape)}, its Fisher {list(f.shape)}")
        term = (f.to(d.device) * d.float().square()).sum()
        total = term if total is None else total + term
    if total is None:
        total = torch.zeros(())
    return total


def lora_deltas(model: nn.Module, adapter: str, names: list[str]) -> dict[str, torch.Tensor]:
    """The effective weight delta (alpha / r) * B @ A of adapter ``adapter`` in each LoRA-wrapped module of
    ``names``, shaped like the base weight [O, I, *k] (differentiable in A and B). -> {module name: delta}."""
    modules = dict(model.named_modules())
    out = {}
    for name in names:
        module = modules.get(name.replace(".base_layer", ""))
        if module is None or not hasattr(module, "get_delta_weight") or adapter not in getattr(module, "lora_A", {}):
            raise ConfigError(f"module {name!r} carries no LoRA adapter {adapter!r}")
        out[name] = module.get_delta_weight(adapter)
    return out
