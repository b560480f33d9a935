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
    """Per-person early stop of a joint run (``cfg.joint_done_ratio`` = f in (0, 1); 0 = off).

    A person's progress is their L_local (the detached per-person value :func:`_record_people` keeps, mean over
    their codes) against its value at their first visit (the untouched model's when they are visited at step 0,
    i.e. persons_per_step >= P): a person whose L_local has fallen to f times that start counts as done and drops
    out of the loss (their L_local rows weigh 0 and no adjacency sample starts from them) until a later visit finds
    them above it again (the other people's updates may pull them back), when they rejoin. People kept from
    earlier patches (``keep``, index >= ``erased_people``) are preservation rows: never done. When every erased
    person is done at once the run stops (:attr:`finished`): the patch changes the model no more than the slowest
    person needs. Only visited people are re-judged, so with persons_per_step < P a done person is checked again
    at their next visit.

    ``active(person_rows)`` -> bool [k_s] for an iteration's code rows (person index per row);
    ``update(person_rows [k_s], local [k_s], step)`` after the loss.
    """

    def __init__(self, ratio: float, erased_people: int, people: int):
        self.ratio = float(ratio)
        self.erased_people = erased_people
        self.start: list[Optional[float]] = [None] * people  # L_local at the first visit
        self.done = [False] * people
        self.done_step: list[Optional[int]] = [None] * people  # the step a person last became done (None = not)

    def active(self, person_rows: Sequence[int]) -> torch.Tensor:
        """bool [k_s]: which of the iteration's code rows (given as person indices) still train."""
        return torch.tensor([not self.done[int(p)] for p in person_rows], dtype=torch.bool)

    def update(self, person_rows: Sequence[int], local: Sequence[float], step: int) -> None:
        """Judge the visited people from their rows' detached L_local values."""
        values: dict[int, list[float]] = {}
        for p, v in zip(person_rows, local):
            values.setdefault(int(p), []).append(float(v))
        for p, vs in values.items():
            if p >= self.erased_people:
                continue
            value = sum(vs) / len(vs)
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
