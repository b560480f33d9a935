"""Joint runs, several people in one erase: which people each iteration visits (:class:`PersonSchedule`), how
the preservation term is weighted for them (:class:`JointBalance`), and per-person bookkeeping. Used by
:func:`guide_unlearn.engine.run_erase`; docs/queue.md explains the choices."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .config import EraseConfig
from .errors import LatentError


class JointBalance:
    """The loss settings of one iteration of a joint run (``cfg.joint_balance`` = b in [0, 1]).

    With n > 1 erased people visited in an iteration, L_global is weighted by 1 + b·(n - 1): b = 1 makes the loss
    the SUM over the visited erased people of each one's single-erase loss (their own L_local, the adjacency
    samples that start from their codes, and the shared L_global counted once per person), so every person's
    L_local meets the preservation pressure of a single erase; b = 0 keeps one L_global against all the visited
    people's L_local. People kept from earlier patches (``keep``) are preservation rows and do not count; with one
    erased person the config is returned unchanged.

    __call__(visited: the person indices visited in the iteration, ``PersonSchedule.people(step)``) -> the
    EraseConfig for that iteration's loss.
    """

    def __init__(self, cfg: EraseConfig, erased_people: int):
        self.cfg = cfg
        self.erased_people = erased_people
        self._cache: dict[float, EraseConfig] = {}

    def scale(self, visited: Sequence[int]) -> float:
        """The factor on L_global: 1 + b·(n - 1), n = the erased people among ``visited`` (at least 1)."""
        if self.erased_people <= 1 or self.cfg.joint_balance == 0:
            return 1.0
        n = max(1, len({int(p) for p in visited if int(p) < self.erased_people}))
        return 1.0 + self.cfg.joint_balance * (n - 1)

    def __call__(self, visited: Sequence[int]) -> EraseConfig:
        scale = self.scale(visited)
        if scale == 1.0:
            return self.cfg
        if scale not in self._cache:
            self._cache[scale] = self.cfg.replace(global_weight=self.cfg.global_weight * scale)
        return self._cache[scale]


class PersonProgress:
    """Per-person early stop of a joint run: who is done, judged at every visit from the iteration's own renders.

    Two criteria (EraseConfig; both 0 = off, and only one is used):
    - ``joint_done_ratio`` = f in (0, 1): a person is done when their L_local (the detached per-person value
      :func:`_record_people` keeps) has fallen to f times its value at their first visit;
    - ``joint_done_identity`` = t in (0, 2]: with an identity model, a person is done when the identity distance
      1 - cos(ID(G_u(w_u)), ID at their first visit) is at least t, i.e. the identity network no longer sees the
      person the untouched model rendered (their first visit is at step 0 when persons_per_step >= P). It takes
      precedence over the ratio.
    A done person drops out of the loss (their L_local rows weigh 0 and no adjacency sample starts from them)
    until a later visit finds them short of the criterion again (the other people's updates may pull them back),
    when they rejoin. People kept from earlier patches (``keep``, index >= ``erased_people``) are preservation rows:
    never done. When every erased person is done at once the run stops (:attr:`finished`): the patch changes the
    model no more than the slowest person needs. Only visited people are re-judged, so with persons_per_step < P a
    done person is checked again at their next visit.

    ``active(person_rows)`` -> bool [k_s] for an iteration's code rows (person index per row);
    ``update(person_rows [k_s], local [k_s], step, embeddings [k_s, D] or None)`` after the loss.
    """

    def __init__(self, erased_people: int, people: int, ratio: float = 0.0, identity: float = 0.0):
        self.ratio, self.identity = float(ratio), float(identity)
        self.erased_people = erased_people
        self.start: list = [None] * people  # per person: L_local (ratio) or the unit embedding list (identity)
        self.done = [False] * people
        self.done_step: list[Optional[int]] = [None] * people  # the step a person last became done (None = not)

    def active(self, person_rows: Sequence[int]) -> torch.Tensor:
        """bool [k_s]: which of the iteration's code rows (given as person indices) still train."""
        return torch.tensor([not self.done[int(p)] for p in person_rows], dtype=torch.bool)

    def update(self, person_rows: Sequence[int], local: Sequence[float], step: int,
               embeddings: Optional[torch.Tensor] = None) -> None:
        """Judge the visited people from their rows' detached L_local values or identity embeddings [k_s, D]
        (a person's value is the mean over their codes)."""
        rows: dict[int, list[int]] = {}
        for r, p in enumerate(person_rows):
            rows.setdefault(int(p), []).append(r)
        for p, idx in rows.items():
            if p >= self.erased_people:
                continue
            if self.identity > 0:
                if embeddings is None:
                    raise ValueError("the identity criterion needs the rows' embeddings")
                e = torch.nn.functional.normalize(embeddings[idx].float().mean(0), dim=0).cpu()
                if self.start[p] is None:  # first visit: the untouched model's rendering when visited at step 0
                    self.start[p] = e.tolist()
                done = 1.0 - float(e @ torch.tensor(self.start[p])) >= self.identity
            else:
                value = sum(float(local[r]) for r in idx) / len(idx)
                if self.start[p] is None:
                    self.start[p] = value
                done = value <= self.ratio * self.start[p]
            if done and not self.done[p]:
                self.done_step[p] = step
            elif not done:
                self.done_step[p] = None
            self.done[p] = done

    @property
    def finished(self) -> bool:
        """Every erased person done."""
        return all(self.done[:self.erased_people])


class PersonSchedule:
    """Which people enter L_local at each iteration of a joint run: a fixed seeded permutation of the P people,
    read cyclically ``per_step`` at a time (iteration t takes positions t·S .. t·S+S-1 mod P, S = min(per_step,
    P)). No person appears twice in one iteration, every person is visited exactly once every P/S iterations
    (at most ceil(P/S) apart), and the schedule is a pure function of the step, so resuming needs no state.

    person_of: [K] long person index of each code. rows(step) -> the code indices [k_s] of the visited people.
    """

    def __init__(self, person_of: torch.Tensor, per_step: int, seed: int):
        people = int(person_of.max()) + 1
        self.per_step = min(per_step, people)
        g = torch.Generator().manual_seed(seed + 0x5EED)
        self.order = torch.randperm(people, generator=g).tolist()
        self.codes = [torch.nonzero(person_of == p).flatten() for p in range(people)]
        counts = torch.bincount(person_of, minlength=people).to(torch.float32)
        self.weights = 1.0 / counts[person_of]  # [K] local-row weights: each visited person's codes sum to 1

    def people(self, step: int) -> list[int]:
        """The person indices visited at ``step``."""
        n = len(self.order)
        return [self.order[(step * self.per_step + j) % n] for j in range(self.per_step)]

    def rows(self, step: int) -> torch.Tensor:
        """The code indices [k_s] of the people visited at ``step``."""
        return torch.cat([self.codes[p] for p in self.people(step)])

    def person_rows(self, step: int) -> list[int]:
        """The person index of each of :meth:`rows` (host ints, same order: no device sync)."""
        return [p for p in self.people(step) for _ in range(len(self.codes[p]))]


def _person_index(person_of: Optional[torch.Tensor], k: int, person_ids: Optional[Sequence[str]],
                  device: torch.device) -> tuple[torch.Tensor, int]:
    """Validate ``person_of`` [K] (default: all codes one person). -> (person_of on device, number of people)."""
    if person_of is None:
        person_of = torch.zeros(k, dtype=torch.long)
    person_of = torch.as_tensor(person_of)
    if person_of.shape != (k,) or person_of.dtype not in (torch.int32, torch.int64) or int(person_of.min()) < 0:
        raise LatentError(f"person_of must be [K={k}] person indices >= 0, got {list(person_of.shape)} "
                          f"{person_of.dtype}")
    people = int(person_of.max()) + 1
    if set(person_of.tolist()) != set(range(people)):
        raise LatentError("person_of must use every person index 0..P-1 at least once")
    if person_ids is not None and len(person_ids) != people:
        raise LatentError(f"{len(person_ids)} person ids for {people} people; give one id per person")
    return person_of.to(device=device, dtype=torch.long), people


def _record_people(per_person: list[dict[str, float]], visited: torch.Tensor,
                   rows: Optional[dict[str, torch.Tensor]], step: int) -> None:
    """Keep, per person, the mean L_local terms over their codes at their latest visit."""
    if rows is None:
        return
    for p in visited.unique().tolist():
        mask = visited == p
        per_person[p] = {name: float(v[mask].mean()) for name, v in rows.items()}
        per_person[p]["step"] = float(step)
