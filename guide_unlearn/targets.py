"""UFO — Un-identifying Face On latent space: choose the code the person's code should render like."""

from __future__ import annotations

from typing import Any, Optional

import torch

from .errors import ConfigError


def ufo_target(w_u: torch.Tensor, w_avg: torch.Tensor, kind: str = "extrapolate", distance: float = 30.0) -> torch.Tensor:
    """The UFO target code(s) for the person's code(s).

    w_u:   [N, num_ws, w_dim] inverted codes of the person (one row per photo).
    w_avg: [w_dim] or [num_ws, w_dim] mean code.
    kind:  'extrapolate': w_t = w_avg - d * w_id / ||w_id||_F with w_id = w_u - w_avg (norm over the whole
           [num_ws, w_dim] code, per photo), as in GUIDE; 'average': w_t = w_avg (the baseline).
    -> w_t [N, num_ws, w_dim].
    """
    if w_u.ndim != 3:
        raise ConfigError(f"w_u must be [N, num_ws, w_dim], got {list(w_u.shape)}")
    avg = w_avg.to(w_u.dtype).to(w_u.device)
    avg = avg.expand_as(w_u[0]) if avg.ndim == 1 else avg
    if kind == "average":
        return avg.unsqueeze(0).expand_as(w_u).clone()
    if kind != "extrapolate":
        raise ConfigError(f"unknown UFO target kind {kind!r}; use 'extrapolate' or 'average'")
    w_id = w_u - avg
    norm = w_id.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1)
    return avg - distance * w_id / norm


@torch.no_grad()
def typical_distance(mapping, w_avg: torch.Tensor, z_dim: int, n: int = 256, seed: int = 1234,
                     device: Optional[torch.device] = None, truncation_psi: float = 1.0) -> float:
    """Mean Frobenius norm ||w - w_avg|| over ``n`` mapped samples [num_ws, w_dim] (a seeded estimate).

    mapping: callable z [n, z_dim] -> ws [n, num_ws, w_dim]. Used to express the UFO distance and the
    adjacency range relative to a model's own W space (d = 30 is absolute in EG3D's).
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(n, z_dim, generator=g).to(device or w_avg.device)
    ws = mapping(z, truncation_psi=truncation_psi)
    avg = w_avg.to(ws.dtype)
    return float((ws - avg).flatten(1).norm(dim=1).mean())


def separated_targets(w_u: torch.Tensor, person_of: torch.Tensor, w_avg: torch.Tensor, kind: str = "extrapolate",
                      distance: float = 30.0) -> torch.Tensor:
    """UFO targets for a joint run over several people, kept apart from each other.

    UFO sends every person to the sphere of radius ``distance`` around w_avg, opposite their identity direction;
    people whose directions are alike get targets that are alike. Here each person's mean identity direction
    m_p (unit, flattened [num_ws·w_dim]) is replaced by the closest set of mutually ORTHOGONAL unit directions
    (Löwdin's symmetric orthogonalisation V = (M Mᵀ)^-1/2 M: order-independent, and the least change to the set
    in the least-squares sense), so any two people's targets are d·√2 apart. A person with several codes keeps
    the per-code spread: each code's direction is shifted by its person's correction (v_p - m_p) and re-normalised.

    w_u:       [K, num_ws, w_dim] codes of all people; person_of [K] long, person index 0..P-1 of each code.
    -> w_t [K, num_ws, w_dim]. With one person, or kind 'average' (every target is w_avg by definition), this is
    :func:`ufo_target`.
    """
    base = ufo_target(w_u, w_avg, kind, distance)
    people = int(person_of.max()) + 1 if person_of.numel() else 0
    if kind != "extrapolate" or people < 2:
        return base
    avg = w_avg.to(base) if w_avg.ndim == 2 else w_avg.to(base).expand_as(base[0])
    n = ((avg - base) / distance).flatten(1).double()  # per-code unit identity directions [K, D]
    m = torch.zeros(people, n.shape[1], dtype=n.dtype, device=n.device).index_add_(0, person_of.to(n.device), n)
    m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
    evals, evecs = torch.linalg.eigh(m @ m.T)
    inv_sqrt = evecs @ torch.diag(evals.clamp_min(1e-8).rsqrt()) @ evecs.T
    v = inv_sqrt @ m
    v = v / v.norm(dim=1, keepdim=True)
    shifted = n + (v - m)[person_of.to(n.device)]
    shifted = shifted / shifted.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (avg - distance * shifted.to(base.dtype).view_as(base)).contiguous()


def target_similarity(w_t: torch.Tensor, person_of: torch.Tensor, w_avg: torch.Tensor) -> dict[str, float]:
    """How alike the people's targets are in latent space: cosine between their mean target directions
    (w_t - w_avg, flattened), over every pair of different people. w_t [K, num_ws, w_dim], person_of [K].
    -> {'latent_cosine_max', 'latent_cosine_mean'} (0 for a single person)."""
    people = int(person_of.max()) + 1 if person_of.numel() else 0
    if people < 2:
        return {"latent_cosine_max": 0.0, "latent_cosine_mean": 0.0}
    avg = w_avg.to(w_t) if w_avg.ndim == 2 else w_avg.to(w_t).expand_as(w_t[0])
    d = (w_t - avg).flatten(1).double()
    m = torch.zeros(people, d.shape[1], dtype=d.dtype, device=d.device).index_add_(0, person_of.to(d.device), d)
    m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cos = m @ m.T
    pairs = cos[torch.triu(torch.ones_like(cos, dtype=torch.bool), diagonal=1)]
    return {"latent_cosine_max": float(pairs.max()), "latent_cosine_mean": float(pairs.mean())}


def resolve_distances(cfg: Any, generator: Any) -> tuple[float, tuple[float, float]]:
    """The UFO distance d and the adjacency alpha range of a recipe (``EraseConfig``) on ``generator``, with the
    backend's defaults (``generator.default_target_distance()``) and relative units resolved (relative distances
    are in units of the model's typical ||w - w_avg||, :func:`typical_distance`; the adjacency range of GUIDE is
    absolute in EG3D's W space, so a relative range is scaled by typical / 30). -> (d, (alpha_lo, alpha_hi))."""
    default_d, default_rel = generator.default_target_distance()
    d = cfg.target_distance if cfg.target_distance is not None else default_d
    rel = cfg.target_distance_relative if cfg.target_distance_relative is not None else default_rel
    rel_alpha = cfg.adjacency_alpha_relative if cfg.adjacency_alpha_relative is not None else default_rel
    lo, hi = cfg.adjacency_alpha
    if rel or rel_alpha:
        typical = typical_distance(generator.mapping, generator.w_avg, generator.z_dim, device=generator.w_avg.device)
        d = d * typical if rel else d
        if rel_alpha:
            lo, hi = lo * typical / 30.0, hi * typical / 30.0
    return d, (lo, hi)


TARGET_TRIES = 8
"""Targets tried per code before an erase is refused (:func:`checked_targets`): the method's own target, then
alternately 1.25x as far from w_avg and turned toward another seeded face of the model."""
TARGET_FARTHER = 1.25


def target_candidate(w_t: torch.Tensor, w_avg: torch.Tensor, attempt: int, turns: torch.Tensor) -> torch.Tensor:
    """The ``attempt``-th target tried for each code (0 = the method's own target ``w_t``).

    Attempt a > 0 keeps the distance from w_avg, times 1.25 when a is odd, and turns the direction w_t - w_avg by 45 degrees toward turn a // 2 (turn 0 = no turn):
    the unit direction u of ``turns[a // 2 - 1]`` - w_avg with its component along the target direction removed,
    direction' = unit(v + u). w_t [K, num_ws, w_dim]; turns [J, num_ws, w_dim] mapped codes of other faces.
    -> [K, num_ws, w_dim]."""
    if attempt == 0:
        return w_t
    avg = w_avg.to(w_t) if w_avg.ndim == 2 else w_avg.to(w_t).expand_as(w_t[0])
    v = (w_t - avg).flatten(1)
    dist = v.norm(dim=1, keepdim=True)
    far = dist > 1e-6 * max(1.0, float(avg.norm()))
    if not bool(far.all()):
        from .errors import TargetError

        raise TargetError("the target w_avg (target kind 'average') is recognised as the person and has no direction "
                          "to move in; nothing was trained. Use target 'extrapolate' (the UFO target)")
    v = v / dist
    turn = attempt // 2
    if turn > 0:
        if turn > turns.shape[0]:
            raise ConfigError(f"attempt {attempt} needs {turn} turn directions, got {turns.shape[0]}")
        u = (turns[turn - 1].to(w_t) - avg).flatten()
        u = u.unsqueeze(0) - (v @ u).unsqueeze(1) * v  # [K, D], orthogonal to each code's direction
        u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        v = (v + u) / (v + u).norm(dim=1, keepdim=True)
    scale = TARGET_FARTHER if attempt % 2 else 1.0
    return (avg.flatten() + scale * dist * v).view_as(w_t)


@torch.no_grad()
def checked_targets(w_u: torch.Tensor, w_t: torch.Tensor, judge, mapping, w_avg: torch.Tensor, z_dim: int,
                    tries: int = TARGET_TRIES, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Targets that the identity ``judge`` counts as someone other than the person, by trying
    :func:`target_candidate` s in order until each code's target is not recognised (and renders a face, when the
    person's own code does).

    w_u, w_t [K, num_ws, w_dim] (row i = request row i); judge: a :class:`~guide_unlearn.protocols.PersonJudge`
    (renders with the generator as it is: G_s); mapping: z [J, z_dim] -> ws, for the seeded turn directions.
    -> (targets [K, num_ws, w_dim], record for the patch metadata: judge, rule, per code the attempt taken and the
    score / cosine of its target to the person — numbers, never a code). TargetError when a code has none after
    ``tries`` attempts (nothing is trained)."""
    if tries < 1:
        raise ConfigError(f"tries must be >= 1, got {tries}")
    rows = torch.arange(w_u.shape[0])
    own = judge.recognise(w_u, rows)
    g = torch.Generator(device="cpu").manual_seed(seed)
    n_turns = (tries - 1) // 2
    turns = mapping(torch.randn(max(1, n_turns), z_dim, generator=g).to(w_avg.device)) if n_turns else w_t[:0]
    out, pending = w_t.clone(), rows.clone()
    codes: list[dict] = [{} for _ in range(w_u.shape[0])]
    closest: Optional[float] = None
    seen = faceless = 0  # rejected tries: still the person / no face while the person's rendering has one
    for attempt in range(tries):
        cand = target_candidate(w_t[pending], w_avg, attempt, turns)
        rec = judge.recognise(cand, pending)
        ok = ~rec.recognised & (rec.face | ~own.face[pending])
        for j, i in enumerate(pending.tolist()):
            score = float(rec.score[j])
            if bool(ok[j]):
                out[i] = cand[j]
                codes[i] = {"row": i, "attempt": attempt, "score": _num(score), "cosine": _num(rec.cosine[j]),
                            "face": bool(rec.face[j]), "person_recognised": bool(own.recognised[i])}
            elif bool(rec.recognised[j]):
                seen += 1
                closest = score if closest is None or _closer(judge.rule, score, closest) else closest
            else:
                faceless += 1
        pending = pending[~ok]
        if not len(pending):
            break
    if len(pending):
        from .errors import TargetError

        why = []
        if seen:
            why.append(f"{seen} still recognised as the person (the closest: {judge.rule.metric} {closest:.3f}; a "
                       "larger target_distance moves targets farther)")
        if faceless:
            why.append(f"{faceless} rendered no face while the person's code does (too far from the model's faces; "
                       "a smaller target_distance keeps targets on faces)")
        raise TargetError(
            f"no target of request row(s) {pending.tolist()} is someone other than the person for {judge.name} "
            f"({_rule_text(judge.rule)}) after {tries} tries: {'; '.join(why)}. Nothing was trained. Erasing "
            "without an identity judge (judge=None) would erase the person into a face that may still be them")
    rule = {k: v for k, v in judge.rule.to_dict().items() if k in ("network", "metric", "cut")}
    return out, {"judge": judge.name, "rule": rule, "tries": tries, "moved": sum(c["attempt"] > 0 for c in codes),
                 "codes": codes}


def _closer(rule, a: float, b: float) -> bool:
    """Whether score ``a`` is more like the person than ``b`` under ``rule`` (smaller distance / larger cosine)."""
    return a < b if rule.metric == "euclidean" else a > b


def _rule_text(rule) -> str:
    """A same-person rule in words, e.g. "euclidean < 0.6165"."""
    return f"{rule.metric} {'<' if rule.metric == 'euclidean' else '>='} {rule.cut:g}"


def _num(x) -> Optional[float]:
    x = float(x)
    return round(x, 4) if x == x else None
