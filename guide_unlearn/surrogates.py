"""Learned per-identity surrogate targets: a small network, trained per run from the people's codes, that maps each
person's code to the code of a coherent, DISTINCT other face (SUGAR, Nguyen et al., WACV 2026: their "trigger"
network; this module is our own formulation of it).

UFO (:func:`guide_unlearn.targets.ufo_target`) sends every person to the sphere of radius d around w_avg, opposite
their identity direction; on a model whose targets sit near w_avg those renderings are average-looking faces, and
different people are erased into what a face recogniser calls the same person. Here the target direction is
learned instead: the network starts AT the UFO target (its correction layer is zero) and moves each person's
target on the same sphere so that

- its rendering is not the person (identity cosine to the person's own rendering below ``self_margin``),
- the people's targets are different people (pairwise identity cosine of the targets below ``pair_margin``),
- it stays close to the person's rendering in pixels (``near_weight``): a surrogate that keeps pose, light and
  background is a coherent face, and the erase has less to change (SUGAR keeps the target's tri-planes close for
  the same reason).

The identity cosines use the run's identity model when it is differentiable, otherwise
:class:`DeviationEmbedding` (what differs from the average face, in low-resolution pixels): a labelled stand-in,
not a face recogniser. The network, its training and the targets stay in memory: nothing of them is stored in a
patch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError

__all__ = ["DeviationEmbedding", "SurrogateNetwork", "SurrogateTraining", "face_directions", "pair_cosines",
           "train_surrogates"]


class SurrogateNetwork(nn.Module):
    """Person code -> surrogate target code on the sphere ||w_t - w_avg||_F = distance.

    x = (w_u - w_avg) / ||w_u - w_avg||_F (flattened, [K, num_ws·w_dim]), the identity direction UFO uses;
    h = x + out(lrelu(inp(s))); the target is w_t = w_avg - distance · h / ||h||. ``out`` starts at zero, so the
    untrained network gives UFO's target exactly. The correction reads s, the directions standardised over the
    codes of the run (:meth:`fit`: minus their mean, divided by their RMS spread): two people whose directions are
    almost the same — the case where UFO's targets are almost the same — differ in s by O(1), so a smooth network
    can still send them to different faces. Without :meth:`fit` (or for one code) s = x.

    With ``basis`` (orthonormal rows [q, num_ws·w_dim], e.g. :func:`face_directions`) the correction is projected
    onto that subspace: a free direction in W+ of the same length renders no face, while the principal directions of
    mapped codes do.

    num_ws, w_dim: the generator's code shape; hidden: width of the correction MLP; generator: the seeded
    torch.Generator of the input layer's initial weights (the output layer starts at zero).
    """

    def __init__(self, num_ws: int, w_dim: int, hidden: int = 256, generator: Optional[torch.Generator] = None,
                 basis: Optional[torch.Tensor] = None):
        super().__init__()
        if hidden < 1:
            raise ConfigError(f"the surrogate network needs hidden >= 1, got {hidden}")
        self.num_ws, self.w_dim = num_ws, w_dim
        size = num_ws * w_dim
        self.inp = nn.Linear(size, hidden)
        self.out = nn.Linear(hidden, size)
        with torch.no_grad():
            self.inp.weight.copy_(torch.randn(hidden, size, generator=generator) / size ** 0.5)
            self.inp.bias.zero_()
            self.out.weight.zero_()
            self.out.bias.zero_()
        self.register_buffer("centre", torch.zeros(size))
        self.register_buffer("spread", torch.ones(()))
        if basis is not None and (basis.ndim != 2 or basis.shape[1] != size):
            raise ConfigError(f"the surrogate basis must be [q, {size}] orthonormal rows, got {list(basis.shape)}")
        self.register_buffer("basis", None if basis is None else basis.detach().clone())

    def directions(self, w_u: torch.Tensor, w_avg: torch.Tensor) -> torch.Tensor:
        """UFO's identity directions: w_u [K, num_ws, w_dim] -> unit rows [K, num_ws·w_dim]."""
        if w_u.ndim != 3 or tuple(w_u.shape[1:]) != (self.num_ws, self.w_dim):
            raise ConfigError(f"codes must be [K, {self.num_ws}, {self.w_dim}], got {list(w_u.shape)}")
        return F.normalize((w_u - w_avg.to(w_u).expand_as(w_u[0])).flatten(1), dim=1, eps=1e-12)

    @torch.no_grad()
    def fit(self, w_u: torch.Tensor, w_avg: torch.Tensor) -> "SurrogateNetwork":
        """Set the standardisation of the correction's input from the run's codes w_u [K, num_ws, w_dim] (K >= 2;
        one code leaves it as it is). -> self."""
        if w_u.shape[0] >= 2:
            x = self.directions(w_u, w_avg)
            self.centre.copy_(x.mean(0))
            self.spread.copy_((x - self.centre).square().sum(1).mean().sqrt().clamp_min(1e-8))
        return self

    def forward(self, w_u: torch.Tensor, w_avg: torch.Tensor, distance: float) -> torch.Tensor:
        """w_u [K, num_ws, w_dim], w_avg [w_dim] or [num_ws, w_dim] -> w_t [K, num_ws, w_dim]."""
        x = self.directions(w_u, w_avg)
        correction = self.out(F.leaky_relu(self.inp((x - self.centre) / self.spread), 0.2))
        if self.basis is not None:  # keep the correction among the directions where the generator renders faces
            correction = (correction @ self.basis.T) @ self.basis
        h = x + correction
        return w_avg.to(w_u).expand_as(w_u[0]) - distance * F.normalize(h, dim=1, eps=1e-12).view_as(w_u)


@torch.no_grad()
def face_directions(mapping: Callable[..., torch.Tensor], w_avg: torch.Tensor, z_dim: int, rank: int,
                    generator: torch.Generator, samples: Optional[int] = None,
                    truncation_psi: float = 1.0) -> torch.Tensor:
    """The top ``rank`` principal directions of mapped codes around w_avg: ``samples`` (default 4·rank) codes
    mapping(z [n, z_dim], truncation_psi=...) -> [n, num_ws, w_dim], z drawn from ``generator``.
    -> orthonormal rows [rank', num_ws·w_dim] (rank' = min(rank, samples))."""
    n = samples if samples is not None else 4 * rank
    if rank < 1 or n < 1:
        raise ConfigError(f"face_directions needs rank >= 1 and samples >= 1, got {rank}, {n}")
    z = torch.randn(n, z_dim, generator=generator, device=generator.device)
    ws = mapping(z, truncation_psi=truncation_psi)
    x = (ws - w_avg.to(ws).expand_as(ws[0])).flatten(1).double()
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return vh[:min(rank, vh.shape[0])].to(ws.dtype)


class DeviationEmbedding:
    """A stand-in identity embedding when no differentiable face recogniser is available: how a rendering
    differs from the rendering of the average code, average-pooled to ``size`` x ``size`` and L2-normalised.
    NOT a face recogniser (it sees pose and light as well as identity); its name says so.

    reference: [1, 3, H, W] the average face's rendering. embed(images [N, 3, H, W]) -> [N, 3·size·size].
    """

    name = "pixel-deviation (not a face recogniser)"
    differentiable = True

    def __init__(self, reference: torch.Tensor, size: int = 16):
        self.size = size
        self.reference = F.adaptive_avg_pool2d(reference.detach(), size)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(images, self.size) - self.reference.to(images)
        return F.normalize(pooled.flatten(1), dim=1, eps=1e-12)


def pair_cosines(embeddings: torch.Tensor, person_of: torch.Tensor) -> torch.Tensor:
    """Cosine between the mean embeddings of every pair of different people: embeddings [K, D] (unit rows),
    person_of [K] long 0..P-1 -> [P·(P-1)/2] (empty for one person)."""
    people = int(person_of.max()) + 1
    means = torch.zeros(people, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    means = F.normalize(means.index_add(0, person_of.to(embeddings.device), embeddings), dim=1, eps=1e-12)
    upper = torch.triu(torch.ones(people, people, dtype=torch.bool, device=embeddings.device), diagonal=1)
    return (means @ means.T)[upper]


@dataclass
class SurrogateTraining:
    """What :func:`train_surrogates` returns (memory only).

    targets:  [K, num_ws, w_dim] the trained surrogate target codes (detached).
    history:  per step {'loss', 'self', 'pair', 'near', 'self_cos_max', 'pair_cos_max'} (over that step's people).
    final:    {'self_cos_max', 'pair_cos_max'} over every code and every pair of people, from one last view.
    """

    targets: torch.Tensor
    history: list[dict[str, float]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)


def _seed_from(generator: torch.Generator) -> torch.Generator:
    """A fresh generator seeded from ``generator`` (one draw): one step's view, replayable for two renders."""
    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator, device=generator.device))
    return torch.Generator(device=generator.device).manual_seed(seed)


def _terms(network, w_u, person_of, w_avg, distance, render, embed, view, margins, near_weight):
    """One view's surrogate loss terms for the codes w_u [k] of people person_of [k] (0..S-1)."""
    state = view.get_state()
    with torch.no_grad():
        images_u = render(w_u, view)
        e_u = embed(images_u)
    view.set_state(state)  # the same view (and noise) for the person and their target
    images_t = render(network(w_u, w_avg, distance), view)
    e_t = embed(images_t)
    own = (e_t * e_u).sum(1)
    pairs = pair_cosines(e_t, person_of)
    self_term = F.relu(own - margins[0]).mean()
    pair_term = F.relu(pairs - margins[1]).mean() if pairs.numel() else own.new_zeros(())
    near = (images_t - images_u).square().mean()
    return self_term + pair_term + near_weight * near, self_term, pair_term, near, own, pairs


def train_surrogates(network: SurrogateNetwork, w_u: torch.Tensor, person_of: torch.Tensor, w_avg: torch.Tensor,
                     distance: float, render: Callable[[torch.Tensor, torch.Generator], torch.Tensor],
                     embed: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator, steps: int = 60,
                     lr: float = 1e-3, self_margin: float = 0.5, pair_margin: float = 0.5,
                     near_weight: float = 0.0, people_per_step: Optional[int] = None) -> SurrogateTraining:
    """Fit ``network`` to the run's codes (:meth:`SurrogateNetwork.fit`) and train it (Adam, ``steps`` steps at
    ``lr``) so that each person's surrogate is another face, the people's surrogates are different faces and, with
    ``near_weight`` > 0, close to the person's rendering.

    w_u:        [K, num_ws, w_dim] the people's codes; person_of [K] long person index 0..P-1 of each code.
    render:     (codes [N, num_ws, w_dim], torch.Generator) -> images [N, 3, H, W] of the SOURCE generator,
                differentiable in the codes (the generator draws the view of the step and any renderer sampling).
    embed:      images -> unit identity vectors [N, D], differentiable.
    people_per_step: train on this many people per step, a seeded random subset each step (the cost of a step does
                not grow with P; unlike fixed groups, any pair of people can meet in a step: over s steps a
                given pair misses every one with probability (1 - S(S-1)/(P(P-1)))^s); None = everyone every step.
    Loss per step: mean relu(cos(e(w_t), e(w_u)) - self_margin) over codes + mean relu(cos(e_p, e_q) - pair_margin)
    over pairs of people (e_p: the mean of person p's target embeddings) + near_weight · pixel MSE(G(w_t), G(w_u)).
    -> :class:`SurrogateTraining`. With ``steps`` = 0 the targets are the untrained network's (UFO's).
    """
    if steps < 0 or not lr > 0:
        raise ConfigError(f"surrogate training needs steps >= 0 and lr > 0, got steps={steps}, lr={lr}")
    network.fit(w_u, w_avg)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    people = int(person_of.max()) + 1
    per_step = people if people_per_step is None else max(1, min(int(people_per_step), people))
    margins = (self_margin, pair_margin)
    history: list[dict[str, float]] = []
    for _ in range(steps):
        visited = torch.randperm(people, generator=generator, device=generator.device)[:per_step].tolist()
        rows = torch.cat([torch.nonzero(person_of == p).flatten() for p in visited])
        local = torch.cat([torch.full((int((person_of == p).sum()),), j, dtype=torch.long)
                           for j, p in enumerate(visited)]).to(person_of.device)
        loss, self_term, pair_term, near, own, pairs = _terms(network, w_u[rows], local, w_avg, distance, render,
                                                              embed, _seed_from(generator), margins, near_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append({"loss": float(loss.detach()), "self": float(self_term.detach()),
                        "pair": float(pair_term.detach()), "near": float(near.detach()),
                        "self_cos_max": float(own.detach().max()),
                        "pair_cos_max": float(pairs.detach().max()) if pairs.numel() else 0.0})
    with torch.no_grad():
        *_, own, pairs = _terms(network, w_u, person_of, w_avg, distance, render, embed, _seed_from(generator),
                                margins, near_weight)
        targets = network(w_u, w_avg, distance).detach()
    final = {"self_cos_max": float(own.max()), "pair_cos_max": float(pairs.max()) if pairs.numel() else 0.0}
    return SurrogateTraining(targets, history, final)
